//! Routes through the tunnel: the desired set comes from Docker, the current
//! set from the OS; [`plan`] decides, an executor applies.

mod plan;

pub use plan::{overlaps, plan, RoutePlan, Skipped, SystemRoute};

//! Routes through the tunnel: the desired set comes from Docker, the current
//! set from the OS; [`plan`] decides, an executor applies (netlink on Linux,
//! `route` commands on macOS).

#[cfg(target_os = "linux")]
mod linux;
mod plan;

#[cfg(target_os = "linux")]
pub use linux::{
    add_via, delete_link, marked_vm_routes, remove_via, NetlinkError, NetlinkRouter,
    VM_ROUTE_PROTOCOL,
};
pub use plan::{overlaps, plan, RoutePlan, Skipped, SystemRoute};

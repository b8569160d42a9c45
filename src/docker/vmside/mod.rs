//! The VM side as the host reaches it through Docker: the helper image
//! ([`image`]), the helper container and how it is invoked ([`container`]),
//! and one-shot containers of the same image that look into or clean the VM
//! ([`oneshot`]). `up` starts the helper; `status`, `doctor` and `down`
//! find it and run one-shots; all through this module, so the container's
//! privileges and the helper's command line are written once.

pub mod container;
pub mod image;
pub mod oneshot;

pub use container::{HelperError, HelperSpec, RunningHelper, LABEL};
pub use oneshot::{container_addresses, helpers, image_present, run_oneshot, Oneshot, Shadow};

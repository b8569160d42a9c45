//! The data plane: userspace WireGuard on a TUN device, built on boringtun's
//! sans-IO `noise::Tunn` and driven by tokio.
//!
//! [`Device`] is the one implementation; the UAPI socket (`crate::uapi`),
//! `netconnect up` and the VM-side helper all configure it through
//! [`DeviceUpdate`] and read it through [`DeviceStatus`].

mod allowed_ips;
mod batch;
mod config;
mod device;
mod peer;

pub use allowed_ips::AllowedIps;
pub use config::{DeviceStatus, DeviceUpdate, PeerStatus, PeerUpdate};
pub use device::{libc_errno, ConfigError, Device, Tun};

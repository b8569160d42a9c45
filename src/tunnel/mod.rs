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
#[cfg(test)]
mod mem_tests;
mod net;
mod packet_io;
mod peer;
mod timers;

// What the data plane asks of the OS (batched UDP, socket options), one file
// per OS under the same names.
#[cfg(target_os = "linux")]
#[path = "sys_linux.rs"]
mod sys;
#[cfg(target_os = "macos")]
#[path = "sys_macos.rs"]
mod sys;

// The TUN as batches: offloads on Linux, one packet per call on macOS.
#[cfg(target_os = "linux")]
#[path = "tunio_linux.rs"]
mod tunio;
#[cfg(target_os = "macos")]
#[path = "tunio_macos.rs"]
mod tunio;

pub use allowed_ips::AllowedIps;
pub use config::{DeviceStatus, DeviceUpdate, PeerStatus, PeerUpdate};
pub use device::{libc_errno, ConfigError, Device};
pub(crate) use device::{Received, Receiver};
pub use net::{KernelNet, MemNet, Net, NetSocket};
pub use packet_io::{mem_tun, MemTun, MemTunPeer, TunIo};
pub use tunio::Tun;

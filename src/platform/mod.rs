//! The one seam between netconnect and the operating system: everything
//! that differs between macOS and Linux on the host side lives behind the
//! same names in `linux/` and `macos.rs`, chosen at the `mod` line as
//! boringtun does with its `tun_linux.rs`/`tun_darwin.rs`. `up`, `doctor`,
//! `down` and `main` call only what this module exports.
//!
//! What an OS provides:
//! - [`create_tun`]: a bare TUN for `netconnect device`, left unaddressed as
//!   `wireguard-go` leaves it;
//! - [`create_tunnel`]: the tunnel of `up`, with exactly its point-to-point
//!   addresses (no alias, no route of the OS's own choosing), and the
//!   [`OsRouter`] that keeps the routes through it;
//! - [`open_router`]: the router of an existing tunnel (`doctor`);
//! - [`watch`]: a [`RouteWatch`] on the routing table and the tunnel, so
//!   that `up` restores a route someone deleted, and notices its tunnel
//!   gone, when it happens rather than at the next poll. Its
//!   `next().await` gives a [`WatchEvent`] per change (a burst folded into
//!   one), `None` once it fails; cancel-safe, for a `select!` loop. At rest
//!   it costs one blocked read: no timer;
//! - [`cleanup`]: what a crashed or stopped run left on this machine
//!   (tailscale's router `Cleanup`), for `down`;
//! - [`ENGINE_MAY_BE_LOCAL`]: whether a Docker engine can share this
//!   machine's network, as it does on Linux, so that `up` has nothing to do;
//! - [`HAS_LAUNCHD`]: whether `netconnect service` can install a daemon.
//!
//! The VM side (`crate::helper`) runs only on Linux; it reaches netlink
//! through [`netlink`].

#[cfg(target_os = "linux")]
#[path = "linux/mod.rs"]
mod os;
#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod os;

pub use crate::routes::WatchEvent;
pub use os::{
    cleanup, create_tun, interface_exists, open_router, watch, OsRouter, RouteWatch,
    ENGINE_MAY_BE_LOCAL, HAS_LAUNCHD,
};

/// Routes and WireGuard links over netlink: the Linux host's router, and the
/// VM-side helper's.
#[cfg(target_os = "linux")]
pub use os::netlink;

use std::net::IpAddr;

/// WireGuard's usual MTU: 1500 minus the largest (IPv6) encapsulation.
pub const DEFAULT_MTU: u16 = 1420;

/// A tunnel made by [`create_tunnel`]: the device for the data plane, the
/// name the OS gave it, and its router.
pub struct Tunnel {
    pub tun: crate::tunnel::Tun,
    pub name: String,
    pub router: OsRouter,
}

/// The tunnel of `up`: a TUN, up, with its MTU and its point-to-point
/// address pairs (local, peer; one a family), and nothing else: the OS
/// derives the route to each peer, and no address or route of its own
/// choosing is added. On an error the TUN is closed and the OS removes it.
pub async fn create_tunnel(
    name: &str,
    mtu: u16,
    pairs: &[(IpAddr, IpAddr)],
) -> Result<Tunnel, PlatformError> {
    let (tun, name) = create_tun(name, mtu)?;
    let router = open_router(&name).await?;
    crate::routes::Router::configure(&router, pairs, u32::from(mtu))
        .await
        .map_err(|e| PlatformError::System {
            what: format!("configuring the tunnel interface {name}"),
            error: Box::new(e),
        })?;
    Ok(Tunnel { tun, name, router })
}

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("netconnect must run as root to create network interfaces; try: sudo netconnect {0}")]
    NotRoot(String),
    #[error("{0}")]
    NoTun(String),
    #[error("interface {0} already exists; pick another name or remove it with `ip link del {0}`")]
    InterfaceExists(String),
    #[error(
        "{0:?} is not a valid interface name (1-15 characters: letters, digits, '-', '_', '.'; not starting with '-')"
    )]
    BadName(String),
    #[error("cannot create TUN device {name}: {source}")]
    Tun {
        name: String,
        source: std::io::Error,
    },
    /// Addressing the tunnel, reading or changing its routes, removing it.
    #[error("{what}: {error}")]
    System {
        what: String,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An error that already says what was being done.
    #[error(transparent)]
    Os(Box<dyn std::error::Error + Send + Sync>),
    #[error("interface {0} is still held by a running process; stop it (`sudo netconnect down`) and try again")]
    Busy(String),
}

/// Root is what every TUN and route change needs; asking up front gives one
/// clear error instead of a half-made device.
pub fn require_root(command: &str) -> Result<(), PlatformError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(PlatformError::NotRoot(command.to_owned()))
    }
}

/// Linux limits names to IFNAMSIZ-1 bytes; we also refuse characters that
/// `ip` and `ifconfig` would need quoting for.
pub fn validate_interface_name(name: &str) -> Result<(), PlatformError> {
    // A leading '-' would read as an option to `ip`, `ifconfig` and `route`.
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(PlatformError::BadName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for good in ["wg0", "nc-host_1", "utun7", "a.b"] {
            assert!(validate_interface_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "sixteen-chars-xx",
            "a b",
            "x/y",
            "..",
            "wg0\n",
            "-wg0",
            "--help",
        ] {
            assert!(validate_interface_name(bad).is_err(), "{bad:?}");
        }
    }
}

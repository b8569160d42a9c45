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
//! - [`HAS_LAUNCHD`]: whether `netconnect service` can install a daemon;
//! - [`os_name`], [`system_log`], [`resolver_report`]: what a bug report
//!   says of the OS (its name and version, the daemon's journal where
//!   there is one, how it resolves);
//! - [`system_resolvers`]: the resolvers the OS resolves with (macOS's
//!   `scutil --dns`; none on Linux), to read back a resolver file;
//! - [`port_holder`]: which process holds a port we could not bind (the
//!   DNS server's 53), for an error that names it: from `/proc` on Linux,
//!   from `lsof` on macOS.
//!
//! The VM side (`crate::helper`) runs only on Linux; it reaches netlink
//! through [`netlink`].

#[cfg(target_os = "linux")]
#[path = "linux/mod.rs"]
mod os;
#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod os;

/// Parses `lsof -F` for the macOS [`port_holder`]; compiled for tests on
/// every OS so that its golden tests run where our tests run.
#[cfg(any(test, target_os = "macos"))]
mod lsof;

pub use crate::routes::WatchEvent;
pub use os::{
    cleanup, create_tun, interface_exists, open_router, os_name, port_holder, resolver_report,
    system_log, system_resolvers, watch, OsRouter, RouteWatch, ENGINE_MAY_BE_LOCAL, HAS_LAUNCHD,
    RESOLVER_DIR,
};

/// Routes and WireGuard links over netlink: the Linux host's router, and the
/// VM-side helper's.
#[cfg(target_os = "linux")]
pub use os::netlink;

use std::net::IpAddr;

/// The addresses of this network namespace's interfaces: what the engine's
/// bridge gateway is compared with on the host (is the engine local?), and
/// what the VM-side helper never sends its handshakes to.
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// WireGuard's usual MTU: 1500 minus the largest (IPv6) encapsulation.
pub const DEFAULT_MTU: u16 = 1420;

/// A tunnel made by [`create_tunnel`]: the device for the data plane, the
/// name the OS gave it, and its router.
pub struct Tunnel {
    pub tun: crate::tunnel::Tun,
    pub name: String,
    pub router: OsRouter,
}

/// `PRETTY_NAME="Ubuntu 24.04.1 LTS"` in /etc/os-release → `Ubuntu
/// 24.04.1 LTS`. Here, not in `linux/`, so its test runs on every OS.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn os_release_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix("PRETTY_NAME=")
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
    })
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

/// The transport of a port, for [`port_holder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// Only listening sockets hold a TCP port against a new listener.
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        })
    }
}

/// Whether a socket bound to `local` stands in the way of binding `wanted`
/// (same port): the same address, or a wildcard covering it. An IPv6
/// wildcard is taken to cover IPv4 too, as it does unless the socket is
/// IPV6_V6ONLY, which neither `/proc` nor `lsof` shows.
fn binds_over(local: IpAddr, wanted: IpAddr) -> bool {
    let (local, wanted) = (local.to_canonical(), wanted.to_canonical());
    wanted.is_unspecified()
        || local == wanted
        || match local {
            IpAddr::V6(a) => a.is_unspecified(),
            IpAddr::V4(a) => a.is_unspecified() && wanted.is_ipv4(),
        }
}

/// "dnsmasq (pid 812)", from (pid, command name) pairs: each process once,
/// by pid; a few at most (a server's forked workers share its socket).
fn describe_holders(mut holders: Vec<(u32, String)>) -> Option<String> {
    const SHOWN: usize = 3;
    holders.sort();
    holders.dedup_by_key(|(pid, _)| *pid);
    let mut text = holders
        .iter()
        .take(SHOWN)
        .map(|(pid, name)| format!("{name} (pid {pid})"))
        .collect::<Vec<_>>()
        .join(", ");
    if holders.len() > SHOWN {
        text.push_str(&format!(" and {} more", holders.len() - SHOWN));
    }
    (!holders.is_empty()).then_some(text)
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
    fn a_socket_stands_in_the_way_of_its_own_address_and_those_its_wildcard_covers() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (local, wanted, clash) in [
            ("10.33.33.1", "10.33.33.1", true),
            ("127.0.0.53", "10.33.33.1", false),
            ("0.0.0.0", "10.33.33.1", true),
            ("0.0.0.0", "fd33:33:33::1", false),
            ("::", "10.33.33.1", true),
            ("::", "fd33:33:33::1", true),
            ("::ffff:10.33.33.1", "10.33.33.1", true),
            ("fd33:33:33::1", "fd33:33:33::1", true),
            ("::1", "fd33:33:33::1", false),
            ("127.0.0.53", "0.0.0.0", true),
        ] {
            assert_eq!(binds_over(ip(local), ip(wanted)), clash, "{local} {wanted}");
        }
    }

    #[test]
    fn holders_are_named_once_each_by_pid() {
        assert_eq!(describe_holders(vec![]), None);
        assert_eq!(
            describe_holders(vec![(812, "dnsmasq".into())]).unwrap(),
            "dnsmasq (pid 812)"
        );
        assert_eq!(
            describe_holders(vec![
                (900, "nginx".into()),
                (812, "nginx".into()),
                (812, "nginx".into()),
                (901, "nginx".into()),
                (902, "nginx".into()),
            ])
            .unwrap(),
            "nginx (pid 812), nginx (pid 900), nginx (pid 901) and 1 more"
        );
    }

    #[test]
    fn os_release_pretty_name() {
        let t = "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nPRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\n";
        assert_eq!(os_release_name(t).as_deref(), Some("Ubuntu 24.04.1 LTS"));
        assert_eq!(os_release_name("ID=alpine\n"), None);
    }

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

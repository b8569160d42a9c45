//! Linux: TUN devices through `/dev/net/tun`; addresses, routes and links
//! through rtnetlink ([`netlink`]); their changes through rtnetlink
//! notifications ([`watch`]); who holds a port, from `/proc` ([`holder`]).

mod holder;
pub mod netlink;
mod watch;

use std::path::Path;

use super::PlatformError;
use crate::tunnel::Tun;

pub use holder::port_holder;

/// The distribution's name (`/etc/os-release`'s PRETTY_NAME), a line.
pub async fn os_name() -> String {
    match std::fs::read_to_string("/etc/os-release") {
        Ok(t) => format!(
            "{}\n",
            super::os_release_name(&t)
                .unwrap_or_else(|| "(no PRETTY_NAME in /etc/os-release)".into())
        ),
        Err(e) => format!("/etc/os-release: {e}\n"),
    }
}

/// The daemon's log of the last `minutes` from the journal of a systemd
/// unit `netconnect`: `None` is never said here (Linux may have one), an
/// error says why there is none (then the log file is read instead).
pub async fn system_log(minutes: u64) -> Option<Result<String, String>> {
    use crate::command::{Cmd, Runner as _, SystemRunner};
    let since = format!("-{minutes}min");
    let cmd = Cmd::new(
        "journalctl",
        [
            "-u",
            "netconnect",
            "--since",
            &since,
            "--no-pager",
            "-o",
            "short-iso",
        ],
    );
    Some(match SystemRunner.run(&cmd).await {
        Ok(t) if !t.trim().is_empty() && !t.trim().starts_with("-- No entries --") => {
            Ok(format!("(journalctl -u netconnect)\n{t}"))
        }
        Ok(_) => Err(format!(
            "the journal has no entries for netconnect in the last {minutes} minutes"
        )),
        Err(e) => Err(e.to_string()),
    })
}

/// How this machine resolves: resolv.conf, and systemd-resolved's view
/// when it runs.
pub async fn resolver_report() -> Result<String, String> {
    use crate::command::{Cmd, Runner as _, SystemRunner};
    let mut o = match std::fs::read_to_string("/etc/resolv.conf") {
        Ok(t) => format!("(/etc/resolv.conf)\n{t}"),
        Err(e) => format!("/etc/resolv.conf: {e}\n"),
    };
    if let Ok(t) = SystemRunner.run(&Cmd::new("resolvectl", ["status"])).await {
        o.push_str(&format!("(resolvectl status)\n{t}"));
    }
    Ok(o)
}

/// The system's resolvers as macOS's `scutil --dns` lists them: Linux has
/// no such list (a resolver file there is read back from the file).
pub async fn system_resolvers() -> Option<Vec<crate::readback::ResolverView>> {
    None
}
pub use netlink::NetlinkRouter as OsRouter;
pub use watch::RouteWatch;

/// A Docker engine on Linux may run in this very network namespace, where
/// its bridges are local interfaces and containers are reachable already.
pub const ENGINE_MAY_BE_LOCAL: bool = true;

/// Linux has no per-domain resolver files; a host with systemd-resolved
/// gets per-link DNS instead (`crate::dns::resolved`).
pub const RESOLVER_DIR: Option<&str> = None;

/// `netconnect service` manages a launchd daemon; Linux has none.
pub const HAS_LAUNCHD: bool = false;

pub fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Create TUN `name` (left down and unaddressed, as `wireguard-go` leaves it).
/// Closing the returned device removes the interface.
pub fn create_tun(name: &str, mtu: u16) -> Result<(Tun, String), PlatformError> {
    if !Path::new("/dev/net/tun").exists() {
        return Err(PlatformError::NoTun(
            "/dev/net/tun is missing: load the module with `modprobe tun`, or run the container \
             with `--device /dev/net/tun`"
                .into(),
        ));
    }
    // TUNSETIFF would attach to an existing persistent TUN of that name, and
    // refuses other kinds with an unhelpful EINVAL: check first.
    if interface_exists(name) {
        return Err(PlatformError::InterfaceExists(name.to_owned()));
    }
    // Offloads first; a kernel that refuses TUNSETOFFLOAD gets the plain
    // TUN, which works the same a packet at a time.
    let build = |offload: bool| {
        tun_rs::DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .enable(false)
            .offload(offload)
            .build_async()
    };
    let tun = build(true)
        .or_else(|e| {
            tracing::debug!(error = %e, "TUN offloads refused; a packet per read and write");
            build(false)
        })
        .map_err(|source| PlatformError::Tun {
            name: name.to_owned(),
            source,
        })?;
    Ok((tun, name.to_owned()))
}

/// The router of tunnel interface `name`. Needs a tokio runtime: the netlink
/// connection is a task.
pub async fn open_router(name: &str) -> Result<OsRouter, PlatformError> {
    OsRouter::new(name)
        .await
        .map_err(|e| PlatformError::System {
            what: format!("tunnel interface {name}"),
            error: Box::new(e),
        })
}

/// Watch the routing table and interface `name` (see [`RouteWatch`]).
/// Needs a tokio runtime: the socket registers with its reactor.
pub async fn watch(name: &str) -> Result<RouteWatch, PlatformError> {
    RouteWatch::new(name).map_err(|e| PlatformError::System {
        what: "subscribing to netlink route notifications".into(),
        error: Box::new(e),
    })
}

/// Remove tunnel interface `name` if it is still there; its addresses and
/// routes go with it. Our TUNs are not persistent, so one that outlives its
/// process is someone else's or a `down` racing a slow exit: either way the
/// operator asked for it gone. Returns whether anything was removed.
pub async fn cleanup(name: &str) -> Result<bool, PlatformError> {
    if !interface_exists(name) {
        return Ok(false);
    }
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| PlatformError::System {
        what: "opening netlink".into(),
        error: Box::new(e),
    })?;
    tokio::spawn(conn);
    netlink::delete_link(&handle, name)
        .await
        .map_err(|e| PlatformError::Os(Box::new(e)))?;
    Ok(true)
}

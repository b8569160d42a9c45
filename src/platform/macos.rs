//! macOS: `utun` devices and the `ifconfig`/`route` plans of
//! `crate::routes::macos`. The kernel numbers a utun itself, so the
//! requested name is ignored and the real one returned.
//!
//! We open the utun ourselves and hand `tun` the descriptor: given no
//! address, `tun` 0.7 would alias the utun 10.0.0.1/24 and run `route add
//! -net 10.0.0.1/24`, which on a Mac whose LAN is 10.0.0.0/24 takes the
//! LAN's traffic. This way the utun gets exactly the addresses of the
//! golden-tested plan and the routes the kernel derives from them.
//!
//! Changes to the routing table are read from `route -n monitor`, whose
//! output `crate::routes::macos_monitor` parses (golden-tested on Linux);
//! who holds a port, from `lsof`, parsed by `super::lsof` (the same).

use std::ffi::CStr;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use futures::FutureExt;
use nix::libc;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use super::{PlatformError, Transport};
use crate::command::{Runner as _, SystemRunner};
use crate::routes::macos_monitor::{monitor_command, MonitorParser};
use crate::routes::{MacRouter, WatchEvent};
use crate::tunnel::Tun;

pub type OsRouter = MacRouter<SystemRunner>;

/// Docker on a Mac always runs in a VM: there is always work for `up`.
pub const ENGINE_MAY_BE_LOCAL: bool = false;

/// resolver(5): a file per domain sends that domain's questions to the
/// server it names, and leaves every other name to the usual resolvers.
pub const RESOLVER_DIR: Option<&str> = Some(crate::dns::resolver::MACOS_DIR);

/// `netconnect service` installs a launchd daemon.
pub const HAS_LAUNCHD: bool = true;

/// The kernel control that hands out utun interfaces.
const UTUN_CONTROL_NAME: &CStr = c"com.apple.net.utun_control";

pub fn interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// A new utun, unaddressed and down, as `wireguard-go` leaves it.
pub fn create_tun(_name: &str, mtu: u16) -> Result<(Tun, String), PlatformError> {
    let tun_err = |source: std::io::Error| PlatformError::Tun {
        name: "utun".into(),
        source,
    };
    let (fd, name) = open_utun().map_err(tun_err)?;
    let mut config = tun::Configuration::default();
    config
        .raw_fd(fd.into_raw_fd())
        .close_fd_on_drop(true)
        .mtu(mtu);
    let tun =
        tun::create_as_async(&config).map_err(|e| tun_err(std::io::Error::other(e.to_string())))?;
    Ok((tun, name))
}

pub async fn open_router(name: &str) -> Result<OsRouter, PlatformError> {
    Ok(MacRouter::new(name, SystemRunner))
}

/// Watches the routing table and utun `name` through `route -n monitor`,
/// a child process that lives as long as this value (killed on drop). At
/// rest both it and we are blocked in a read. Needs a tokio runtime.
///
/// Caveat, from route(8)'s source: it flushes stdout only after a message
/// with addresses, so an RTM_IFINFO (which has none) waits in its buffer
/// for the next message that has. Route changes are never held back.
pub async fn watch(name: &str) -> Result<RouteWatch, PlatformError> {
    let cmd = monitor_command();
    let mut child = tokio::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| PlatformError::System {
            what: format!("starting `{cmd}`"),
            error: Box::new(e),
        })?;
    let stdout = child.stdout.take().ok_or_else(|| PlatformError::System {
        what: format!("reading `{cmd}`"),
        error: "no stdout pipe".into(),
    })?;
    // After the monitor started, so that a utun gone in between is reported
    // (the monitor may not have opened its socket yet: a small window).
    let index = nix::net::if_::if_nametoindex(name).ok();
    Ok(RouteWatch {
        _child: child,
        lines: BufReader::new(stdout).lines(),
        parser: MonitorParser::new(index),
        gone_at_start: index.is_none(),
    })
}

/// See [`watch`].
pub struct RouteWatch {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    parser: MonitorParser,
    gone_at_start: bool,
}

impl RouteWatch {
    /// The next change, with the lines already available folded into it.
    /// `None` once `route` exited or its output failed: watch again.
    ///
    /// Cancel-safe: `next_line` is, and a message half read stays in the
    /// parser for the next call.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        if std::mem::take(&mut self.gone_at_start) {
            return Some(WatchEvent::InterfaceGone);
        }
        let mut event = None;
        while event.is_none() {
            let line = self.lines.next_line().await.ok()??;
            event = self.parser.line(&line);
        }
        while let Some(Ok(Some(line))) = self.lines.next_line().now_or_never() {
            event = WatchEvent::coalesce(event.into_iter().chain(self.parser.line(&line)));
        }
        event
    }
}

/// A utun lives exactly as long as its descriptor: when `up` exits, however
/// it exits, the kernel removes the utun with its addresses and routes.
/// So there is nothing to remove; a utun still there after a short wait is
/// held by a live process, which is reported rather than touched.
pub async fn cleanup(name: &str) -> Result<bool, PlatformError> {
    let t0 = Instant::now();
    while interface_exists(name) {
        if t0.elapsed() > Duration::from_secs(3) {
            return Err(PlatformError::Busy(name.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

/// "dnsmasq (pid 812)" for the process(es) bound to `addr`'s port over
/// `transport` on `addr`'s address or a wildcard covering it; `None` if
/// none is found. `lsof` exits 1 when it finds nothing, and an error is
/// no answer either: this only adds a name to an error already at hand.
pub async fn port_holder(transport: Transport, addr: SocketAddr) -> Option<String> {
    let out = SystemRunner
        .run(&super::lsof::command(transport, addr.port()))
        .await
        .ok()?;
    super::describe_holders(super::lsof::holders(&out, addr))
}

/// macOS's name and version (`sw_vers`).
pub async fn os_name() -> String {
    match SystemRunner
        .run(&crate::command::Cmd::new(
            "/usr/bin/sw_vers",
            Vec::<String>::new(),
        ))
        .await
    {
        Ok(t) => t,
        Err(e) => format!("sw_vers: {e}\n"),
    }
}

/// macOS keeps the daemon's log in launchd's log file (read by the
/// caller), not in a journal.
pub async fn system_log(_minutes: u64) -> Option<Result<String, String>> {
    None
}

/// How macOS resolves: `scutil --dns`, as the system does.
pub async fn resolver_report() -> Result<String, String> {
    let t = SystemRunner
        .run(&crate::readback::scutil_dns_command())
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("(scutil --dns)\n{t}"))
}

/// The resolvers macOS resolves with (`scutil --dns`), to read back the
/// resolver file `up` wrote; `None` when scutil does not answer.
pub async fn system_resolvers() -> Option<Vec<crate::readback::ResolverView>> {
    let out = SystemRunner
        .run(&crate::readback::scutil_dns_command())
        .await
        .ok()?;
    Some(crate::readback::parse_scutil_dns(&out))
}

/// socket(PF_SYSTEM) + CTLIOCGINFO + connect(unit 0: the kernel picks the
/// number) + UTUN_OPT_IFNAME, as `tun` and wireguard-go do.
fn open_utun() -> std::io::Result<(OwnedFd, String)> {
    // SAFETY: plain system calls on a descriptor we own; every pointer is to
    // a local of the size passed with it.
    unsafe {
        let raw = libc::socket(libc::PF_SYSTEM, libc::SOCK_DGRAM, libc::SYSPROTO_CONTROL);
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        if libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut info: libc::ctl_info = std::mem::zeroed();
        for (dst, src) in info
            .ctl_name
            .iter_mut()
            .zip(UTUN_CONTROL_NAME.to_bytes_with_nul())
        {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(fd.as_raw_fd(), libc::CTLIOCGINFO, &mut info) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let addr = libc::sockaddr_ctl {
            sc_len: std::mem::size_of::<libc::sockaddr_ctl>() as u8,
            sc_family: libc::AF_SYSTEM as u8,
            ss_sysaddr: libc::AF_SYS_CONTROL as u16,
            sc_id: info.ctl_id,
            sc_unit: 0,
            sc_reserved: [0; 5],
        };
        if libc::connect(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_ctl as *const libc::sockaddr,
            std::mem::size_of_val(&addr) as libc::socklen_t,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let mut name = [0u8; libc::IFNAMSIZ];
        let mut len = name.len() as libc::socklen_t;
        if libc::getsockopt(
            fd.as_raw_fd(),
            libc::SYSPROTO_CONTROL,
            libc::UTUN_OPT_IFNAME,
            name.as_mut_ptr().cast(),
            &mut len,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let name = CStr::from_bytes_until_nul(&name)
            .map_err(|_| std::io::Error::other("utun name without a terminating NUL"))?
            .to_string_lossy()
            .into_owned();
        Ok((fd, name))
    }
}

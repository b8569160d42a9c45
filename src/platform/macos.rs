//! macOS: `utun` devices and the `ifconfig`/`route` plans of
//! `crate::routes::macos`. The kernel numbers a utun itself, so the
//! requested name is ignored and the real one returned.
//!
//! We open the utun ourselves and hand `tun` the descriptor: given no
//! address, `tun` 0.7 would alias the utun 10.0.0.1/24 and run `route add
//! -net 10.0.0.1/24`, which on a Mac whose LAN is 10.0.0.0/24 takes the
//! LAN's traffic. This way the utun gets exactly the addresses of the
//! golden-tested plan and the routes the kernel derives from them.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::libc;

use super::PlatformError;
use crate::command::SystemRunner;
use crate::routes::MacRouter;
use crate::tunnel::Tun;

pub type OsRouter = MacRouter<SystemRunner>;

/// Docker on a Mac always runs in a VM: there is always work for `up`.
pub const ENGINE_MAY_BE_LOCAL: bool = false;

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

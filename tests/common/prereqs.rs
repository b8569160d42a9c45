//! What the e2e tests need (root, tools, TUN) and the cleanup of what
//! earlier, killed test processes left behind. Checked once per process; a
//! missing prerequisite is a one-line panic, never a skip.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nix::unistd::geteuid;

use crate::process::{run_timeout, send_signal, CMD_TIMEOUT, SIGKILL};
use crate::uapi::UAPI_DIR;

/// Packages that provide every tool these tests need.
pub const APT_HINT: &str =
    "apt-get install -y --no-install-recommends wireguard-go wireguard-tools iperf3 iproute2 iputils-ping util-linux bind9-dnsutils";

pub(crate) fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(tool))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Panics (never skips) unless running as root.
pub fn require_root() {
    let euid = geteuid();
    if !euid.is_root() {
        panic!(
            "netconnect e2e tests must run as root (euid is {euid}); run e.g. `sudo -E cargo test`"
        );
    }
}

/// Panics with a one-line message unless root and every needed tool is present.
/// Checked once per process.
pub fn require_prereqs() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let res = CHECK.get_or_init(|| {
        if !geteuid().is_root() {
            return Err("netconnect e2e tests must run as root; run e.g. `sudo -E cargo test`".into());
        }
        let missing: Vec<&str> = ["wg", "wireguard-go", "ip", "ss", "iperf3", "ping", "setpriv", "dig"]
            .into_iter()
            .filter(|t| find_in_path(t).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing tool(s) {}: install with `{APT_HINT}`",
                missing.join(", ")
            ));
        }
        if !Path::new("/dev/net/tun").exists() {
            return Err("/dev/net/tun is missing: the e2e tests need TUN support (modprobe tun / --device /dev/net/tun)".into());
        }
        sweep_stale();
        Ok(())
    });
    if let Err(msg) = res {
        panic!("{msg}");
    }
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes what earlier, killed test processes of this harness left behind:
/// namespaces `nct-<pid>-*`, UAPI sockets `nct<pid36>x*.sock` nobody serves,
/// temp dirs `netconnect-e2e-<pid>-*` — only for pids that no longer exist.
fn sweep_stale() {
    if let Ok(rd) = fs::read_dir("/var/run/netns") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("nct-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid_alive(pid) {
                continue;
            }
            if let Ok(o) = run_timeout(
                Command::new("ip").args(["netns", "pids", &name]),
                CMD_TIMEOUT,
            ) {
                for p in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    if let Ok(p) = p.parse() {
                        send_signal(p, SIGKILL);
                    }
                }
            }
            let _ = run_timeout(
                Command::new("ip").args(["netns", "del", &name]),
                CMD_TIMEOUT,
            );
        }
    }
    if let Ok(rd) = fs::read_dir(UAPI_DIR) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("nct")
                .and_then(|r| r.split('x').next())
                .and_then(|p| u32::from_str_radix(p, 36).ok())
            else {
                continue;
            };
            if !name.ends_with(".sock") || pid_alive(pid) || UnixStream::connect(e.path()).is_ok() {
                continue;
            }
            let _ = fs::remove_file(e.path());
        }
    }
    if let Ok(rd) = fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("netconnect-e2e-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !pid_alive(pid) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

//! WireGuard device processes: netconnect (the binary under test) or
//! wireguard-go (the reference), started in a namespace, ready once their
//! UAPI socket answers, stopped by signal, their log shown on failure.

use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cargo::netconnect_bin;
use crate::names::TempDir;
use crate::netns::Netns;
use crate::prereqs::require_prereqs;
use crate::process::{
    describe, die_with_parent, send_signal, wait_child_timeout, SIGKILL, SIGTERM,
};
use crate::uapi::uapi_socket_path;

/// Bound for a daemon to create its UAPI socket.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for a daemon to exit after SIGTERM.
pub const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Which WireGuard implementation runs a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// The binary under test: `netconnect device IFACE`.
    Netconnect,
    /// The reference: `wireguard-go -f IFACE`.
    WireguardGo,
}

impl Impl {
    /// argv that starts a device named `iface` in the foreground.
    pub fn argv(self, iface: &str, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = match self {
            Impl::Netconnect => vec![netconnect_bin().into(), "device".into(), iface.into()],
            Impl::WireguardGo => vec!["wireguard-go".into(), "-f".into(), iface.into()],
        };
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }
}

/// A running WireGuard device process inside a namespace. Drop: SIGTERM,
/// wait up to 3 s, SIGKILL, remove the UAPI socket; the log is printed if the
/// test is panicking.
pub struct Daemon {
    ns: String,
    iface: String,
    imp: Impl,
    child: Option<Child>,
    status: Option<ExitStatus>,
    log: PathBuf,
    _dir: TempDir,
}

impl Daemon {
    /// Starts `imp` for `iface` in `ns` and waits (≤ 10 s) until its UAPI
    /// socket accepts connections. Panics (with the log) otherwise.
    pub fn start(ns: &Netns, imp: Impl, iface: &str) -> Daemon {
        Self::start_with_args(ns, imp, iface, &[])
    }

    pub fn start_with_args(ns: &Netns, imp: Impl, iface: &str, extra: &[&str]) -> Daemon {
        let mut d = Self::spawn(ns, imp, iface, extra);
        if let Err(e) = d.wait_ready(DAEMON_START_TIMEOUT) {
            panic!(
                "{imp:?} device {iface} in {}: {e}\n--- log ---\n{}",
                ns.name(),
                d.log()
            );
        }
        d
    }

    /// Like [`Daemon::start`] but leaves a stale socket file of `iface` in
    /// place, so the daemon has to cope with it.
    pub fn start_keeping_stale_socket(ns: &Netns, imp: Impl, iface: &str) -> Daemon {
        let mut d = Self::spawn_inner(ns, imp, iface, &[], false);
        if let Err(e) = d.wait_ready(DAEMON_START_TIMEOUT) {
            panic!(
                "{imp:?} device {iface} in {}: {e}\n--- log ---\n{}",
                ns.name(),
                d.log()
            );
        }
        d
    }

    /// Spawns without waiting for readiness.
    pub fn spawn(ns: &Netns, imp: Impl, iface: &str, extra: &[&str]) -> Daemon {
        Self::spawn_inner(ns, imp, iface, extra, true)
    }

    fn spawn_inner(
        ns: &Netns,
        imp: Impl,
        iface: &str,
        extra: &[&str],
        remove_stale: bool,
    ) -> Daemon {
        require_prereqs();
        assert!(iface.len() <= 15, "interface name {iface} too long");
        // A leftover socket can only be from a dead process of an earlier run
        // with a recycled pid, or of a daemon this test killed: names are
        // unique per live process.
        if remove_stale {
            let _ = fs::remove_file(uapi_socket_path(iface));
        }
        let dir = TempDir::new("daemon");
        let log = dir.join(&format!("{iface}.log"));
        let f = File::create(&log).unwrap();
        let argv = imp.argv(iface, extra);
        let mut c = ns.command(&argv);
        c.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        die_with_parent(&mut c);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", describe(&c)));
        Daemon {
            ns: ns.name().to_string(),
            iface: iface.to_string(),
            imp,
            child: Some(child),
            status: None,
            log,
            _dir: dir,
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let sock = self.socket_path();
        let deadline = Instant::now() + timeout;
        loop {
            if sock.exists() && UnixStream::connect(&sock).is_ok() {
                return Ok(());
            }
            if let Some(st) = self.try_status() {
                return Err(format!("exited ({st}) before its UAPI socket was ready"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "UAPI socket {} not ready within {timeout:?}",
                    sock.display()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    pub fn imp(&self) -> Impl {
        self.imp
    }

    pub fn socket_path(&self) -> PathBuf {
        uapi_socket_path(&self.iface)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Exit status if the process has exited (non-blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.status = Some(st);
                }
            }
        }
        self.status
    }

    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            if let Some(p) = self.pid() {
                send_signal(p, sig);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = wait_child_timeout(c, timeout);
            }
        }
        self.status
    }

    /// Sends `sig`, waits up to `timeout`. On timeout SIGKILLs and returns `None`.
    /// Returns the exit status and the time it took to exit.
    pub fn stop_with(&mut self, sig: i32, timeout: Duration) -> (Option<ExitStatus>, Duration) {
        let t0 = Instant::now();
        if self.try_status().is_some() {
            return (self.status, Duration::ZERO);
        }
        self.signal(sig);
        let st = self.wait_exit(timeout);
        let took = t0.elapsed();
        if st.is_none() {
            self.signal(SIGKILL);
            let _ = self.wait_exit(Duration::from_secs(5));
            return (None, took);
        }
        (st, took)
    }

    /// SIGTERM, wait ≤ 3 s; panics (after SIGKILL) if it did not exit.
    /// Does not remove the socket, so callers can check the daemon did.
    pub fn terminate(&mut self) -> ExitStatus {
        match self.stop_with(SIGTERM, DAEMON_STOP_TIMEOUT) {
            (Some(st), _) => st,
            (None, took) => panic!(
                "{:?} device {} did not exit within {took:?} of SIGTERM (killed)\n--- log ---\n{}",
                self.imp,
                self.iface,
                self.log()
            ),
        }
    }

    /// Contents of the daemon's combined stdout/stderr log.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Last `max` bytes of the log.
    pub fn log_tail(&self, max: usize) -> String {
        let l = self.log();
        if l.len() <= max {
            return l;
        }
        let mut cut = l.len() - max;
        while !l.is_char_boundary(cut) {
            cut += 1;
        }
        format!("...{}", &l[cut..])
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop_with(SIGTERM, DAEMON_STOP_TIMEOUT);
        }
        let _ = fs::remove_file(self.socket_path());
        if thread::panicking() {
            eprintln!(
                "--- {:?} device {} (netns {}) exit {:?}; log tail ---\n{}\n--- end log ---",
                self.imp,
                self.iface,
                self.ns,
                self.status,
                self.log_tail(8192)
            );
        }
    }
}

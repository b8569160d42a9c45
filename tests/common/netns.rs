//! Network namespaces (`ip netns`): commands and threads inside one, and
//! their removal, with whatever still runs in them, on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use crate::names::next_id;
use crate::prereqs::require_prereqs;
use crate::process::{
    describe, die_with_parent, run_ok, run_timeout, send_signal, wait_child_timeout, CMD_TIMEOUT,
    SIGKILL,
};

/// A network namespace, created with `ip netns add` (with `lo` up) and deleted
/// on drop, after killing every process still inside it.
pub struct Netns {
    name: String,
    children: Mutex<Vec<Child>>,
}

impl Netns {
    /// Creates a namespace named `nct-<pid>-<n>-<tag>`.
    pub fn new(tag: &str) -> Netns {
        require_prereqs();
        let name = format!("nct-{}-{}-{tag}", std::process::id(), next_id());
        let mut last_err = String::new();
        for attempt in 0..5 {
            match run_timeout(
                Command::new("ip").args(["netns", "add", &name]),
                CMD_TIMEOUT,
            ) {
                Ok(o) if o.status.success() => {
                    last_err.clear();
                    break;
                }
                Ok(o) => last_err = String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => last_err = e,
            }
            // A stale namespace of a dead process with a recycled pid, or a
            // race on the first creation of /var/run/netns: clean and retry.
            let _ = run_timeout(
                Command::new("ip").args(["netns", "del", &name]),
                CMD_TIMEOUT,
            );
            thread::sleep(Duration::from_millis(50 * (attempt + 1)));
        }
        if !last_err.is_empty() {
            panic!("ip netns add {name} failed: {}", last_err.trim());
        }
        let ns = Netns {
            name,
            children: Mutex::new(Vec::new()),
        };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` for `ip netns exec NAME args...` (not started).
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// The namespace's own `/etc/resolv.conf`: `ip netns exec` binds
    /// `/etc/netns/NAME/resolv.conf` over it, so every program started
    /// that way (curl, getaddrinfo) asks `nameserver`, as a Mac's programs
    /// ask what /etc/resolver names. Removed with the namespace.
    pub fn set_resolver(&self, nameserver: &str) {
        let dir = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:1 attempts:2\n"),
        )
        .unwrap();
    }

    /// Runs `ip netns exec NAME args...`, bounded by [`CMD_TIMEOUT`].
    /// Panics on timeout (with captured output); returns the output otherwise.
    pub fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.exec_timeout(args, CMD_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ip netns exec NAME args...`, killing it after `timeout`.
    pub fn exec_timeout<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        timeout: Duration,
    ) -> Result<Output, String> {
        run_timeout(&mut self.command(args), timeout)
    }

    /// Runs `ip netns exec NAME args...`; panics unless it exits 0. Returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        run_ok(&mut self.command(args))
    }

    /// Starts a background process in the namespace; it is killed when the
    /// namespace guard drops. Output goes to `log` (or is discarded).
    pub fn spawn_tracked<S: AsRef<OsStr>>(&self, args: &[S], log: Option<&Path>) -> u32 {
        let mut c = self.command(args);
        c.stdin(Stdio::null());
        die_with_parent(&mut c);
        match log {
            Some(p) => {
                let f = File::create(p).unwrap();
                c.stdout(f.try_clone().unwrap()).stderr(f);
            }
            None => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", describe(&c)));
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        pid
    }

    /// Runs `f` on a fresh thread whose network namespace is this one; sockets
    /// created there live in this namespace (and may be returned).
    pub fn run_in<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match self.spawn_in(f).join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Like [`Netns::run_in`] but returns the join handle.
    pub fn spawn_in<F, R>(&self, f: F) -> thread::JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        thread::spawn(move || {
            let nsf = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid fd; affects only this (fresh) thread.
            // (nix's wrapper needs its `sched` feature, unused by netconnect.)
            let rc = unsafe { nix::libc::setns(nsf.as_raw_fd(), nix::libc::CLONE_NEWNET) };
            if rc != 0 {
                panic!("setns({path}): {}", io::Error::last_os_error());
            }
            drop(nsf);
            f()
        })
    }

    /// Whether network interface `iface` exists in this namespace.
    pub fn link_exists(&self, iface: &str) -> bool {
        let out = run_timeout(
            Command::new("ip").args(["-n", &self.name, "link", "show", "dev", iface]),
            CMD_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        out.status.success()
    }

    /// `ip -o link show dev IFACE` (one line), panics if absent.
    pub fn link_show(&self, iface: &str) -> String {
        self.ok(&["ip", "-d", "-o", "link", "show", "dev", iface])
    }

    /// PIDs of all processes in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        match run_timeout(
            Command::new("ip").args(["netns", "pids", &self.name]),
            CMD_TIMEOUT,
        ) {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Tracked children first (so they are reaped), then anything else left
        // inside the namespace (it can only have been started by this test).
        let mut children = std::mem::take(&mut *self.children.lock().unwrap());
        for c in children.iter_mut() {
            let _ = c.kill();
            let _ = wait_child_timeout(c, Duration::from_secs(3));
        }
        for pid in self.pids() {
            send_signal(pid, SIGKILL);
        }
        for attempt in 0..20 {
            let ok = run_timeout(
                Command::new("ip").args(["netns", "del", &self.name]),
                CMD_TIMEOUT,
            )
            .map(|o| o.status.success())
            .unwrap_or(false);
            if ok || !Path::new("/var/run/netns").join(&self.name).exists() {
                break;
            }
            thread::sleep(Duration::from_millis(50 * (attempt + 1)));
        }
        // Files `ip netns exec` binds over /etc (a resolv.conf).
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

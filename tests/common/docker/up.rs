//! `netconnect up` in the Mac namespace, and its VM side (helper container,
//! interface, rules) in the root namespace, each removed on drop.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use super::commands::{docker_try, host};
use super::images::helper_image;
use super::iptables::delete_netconnect_rules;
use super::mac::MacNs;
use super::things::container_running;
use super::{DOCKER_SOCK, DOCKER_TIMEOUT, MAC_TUN};
use crate::cargo::netconnect_bin;
use crate::names::{unique_ifname_stem, TempDir};
use crate::process::{
    describe, die_with_parent, run_timeout, send_signal, wait_child_timeout, CMD_TIMEOUT, SIGINT,
    SIGKILL, SIGTERM,
};

/// The VM side of one `up`: its helper container
/// `netconnect-helper-<vm_if>`, the interface `vm_if` in the root
/// namespace and the `netconnect` iptables rules naming it. Drop removes
/// them all (drop the `up` process first).
pub struct VmSide {
    pub vm_if: String,
}

impl VmSide {
    // Not `Default`: each call takes a fresh interface name.
    #[allow(clippy::new_without_default)]
    pub fn new() -> VmSide {
        VmSide {
            vm_if: format!("{}v", unique_ifname_stem()),
        }
    }

    pub fn helper_name(&self) -> String {
        format!("netconnect-helper-{}", self.vm_if)
    }

    pub fn link_exists(&self) -> bool {
        host(&["ip", "link", "show", "dev", &self.vm_if])
            .status
            .success()
    }

    pub fn helper_running(&self) -> bool {
        container_running(&self.helper_name())
    }

    /// The helper's container id (full), if it exists.
    pub fn helper_id(&self) -> Option<String> {
        docker_try(&["inspect", "--format", "{{.Id}}", &self.helper_name()])
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// `docker logs` of the helper, stdout and stderr.
    pub fn helper_logs(&self) -> (String, String) {
        let mut c = Command::new("docker");
        c.args(["logs", &self.helper_name()]);
        match run_timeout(&mut c, DOCKER_TIMEOUT) {
            Ok(o) => (
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(e) => (String::new(), e),
        }
    }

    pub fn cleanup(&self) {
        let _ = docker_try(&["rm", "-f", "-v", &self.helper_name()]);
        delete_netconnect_rules(&self.vm_if);
        if self.link_exists() {
            let _ = run_timeout(
                Command::new("ip").args(["link", "del", &self.vm_if]),
                CMD_TIMEOUT,
            );
        }
    }
}

impl Drop for VmSide {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A `netconnect up` process in the Mac namespace, its stdout and
/// stderr in a log file. Drop: SIGTERM, ≤ 5 s, then SIGKILL; the log is
/// printed if the test is panicking.
pub struct UpProcess {
    child: Option<Child>,
    status: Option<ExitStatus>,
    log: PathBuf,
    pub started: Instant,
    pub argv: Vec<String>,
    _dir: TempDir,
}

/// Arguments for `up` with the test defaults: engine at
/// [`DOCKER_SOCK`], the Mac's veth address as endpoint, any free port,
/// [`MAC_TUN`], the VM side's interface and a control socket named
/// after it.
pub fn up_args(mac: &MacNs, vm: &VmSide) -> Vec<String> {
    [
        "up",
        "--docker-host",
        &format!("unix://{DOCKER_SOCK}"),
        "--host-endpoint",
        &mac.addr,
        "--listen-port",
        "0",
        "--interface",
        MAC_TUN,
        "--vm-interface",
        &vm.vm_if,
        "--helper-image",
        &helper_image(),
        // Its own control socket: the Mac namespace shares the file
        // system, and a test without the lock may run `up` meanwhile.
        "--control-socket",
        &format!("/tmp/netconnect-e2e-{}.sock", vm.vm_if),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Replaces the value of flag `flag` in `args`.
pub fn set_arg(args: &mut [String], flag: &str, value: &str) {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} not in {args:?}"));
    args[i + 1] = value.to_string();
}

impl UpProcess {
    /// `ip netns exec MAC netconnect ARGS...` (`ip` execs, so the pid
    /// is netconnect's).
    pub fn spawn(mac: &MacNs, args: &[String]) -> UpProcess {
        let dir = TempDir::new("up");
        let log = dir.join("up.log");
        let f = File::create(&log).unwrap();
        let out = f.try_clone().unwrap();
        UpProcess::launch(mac, args, dir, log, [Stdio::null(), out.into(), f.into()])
    }

    /// Like [`UpProcess::spawn`], with stdin, stdout and stderr on a
    /// pseudo-terminal (120 columns), as in `sudo netconnect up` typed
    /// by hand; what it draws is copied to the log.
    pub fn spawn_on_terminal(mac: &MacNs, args: &[String]) -> UpProcess {
        use std::os::fd::FromRawFd;
        let (mut master, mut slave) = (-1, -1);
        let size = nix::libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: out-pointers to two ints, no name, default termios.
        // (nix's wrapper needs its `term` feature, unused by netconnect.)
        let rc = unsafe {
            nix::libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two fresh descriptors we now own.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        // Not inherited by other children spawned meanwhile (the copy
        // below would never see EIO), nor by netconnect.
        for fd in [&master, &slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                .unwrap_or_else(|e| panic!("fcntl FD_CLOEXEC on the terminal: {e}"));
        }
        let mut master = File::from(master);
        let dir = TempDir::new("up");
        let log = dir.join("up.log");
        let mut copy = File::create(&log).unwrap();
        let stdio = [
            slave.try_clone().unwrap().into(),
            slave.try_clone().unwrap().into(),
            slave.into(),
        ];
        // launch drops its Command, and with it our copies of the
        // terminal's side: the copy below ends (EIO) when netconnect exits.
        let up = UpProcess::launch(mac, args, dir, log, stdio);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 || copy.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        up
    }

    /// `ip netns exec MAC netconnect ARGS...` with `stdio` as its
    /// stdin, stdout and stderr, and the harness's environment.
    fn launch(
        mac: &MacNs,
        args: &[String],
        dir: TempDir,
        log: PathBuf,
        stdio: [Stdio; 3],
    ) -> UpProcess {
        let mut argv = vec![netconnect_bin().to_string()];
        argv.extend(args.iter().cloned());
        let mut c = mac.ns.command(&argv);
        let [stdin, stdout, stderr] = stdio;
        c.stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("NETCONNECT_LOG")
            .env("NO_COLOR", "1")
            .env("TERM", "xterm");
        die_with_parent(&mut c);
        let started = Instant::now();
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", describe(&c)));
        UpProcess {
            child: Some(child),
            status: None,
            log,
            started,
            argv,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn count(&self, pat: &str) -> usize {
        self.log().matches(pat).count()
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.status = Some(st);
            }
        }
        self.status
    }

    /// Waits until `pat` occurs at least `n` times in the log; `Err`
    /// (with the log) on timeout or if `up` exits first.
    pub fn wait_log(&mut self, pat: &str, n: usize, timeout: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        loop {
            if self.count(pat) >= n {
                return Ok(t0.elapsed());
            }
            if let Some(st) = self.try_status() {
                return Err(format!(
                    "up exited ({st}) before logging {pat:?} x{n}:\n{}",
                    self.log()
                ));
            }
            if t0.elapsed() >= timeout {
                return Err(format!(
                    "up did not log {pat:?} x{n} within {timeout:?}:\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits ≤ `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = wait_child_timeout(c, timeout);
            }
        }
        self.status
    }

    /// SIGTERM, wait ≤ `timeout`; `None` if it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stop_with(SIGTERM, timeout)
    }

    /// SIGINT (Ctrl-C in a terminal), wait ≤ `timeout`.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stop_with(SIGINT, timeout)
    }

    /// Sends `sig`, waits ≤ `timeout`; `None` if it had to be killed.
    pub fn stop_with(&mut self, sig: i32, timeout: Duration) -> Option<ExitStatus> {
        if self.try_status().is_some() {
            return self.status;
        }
        send_signal(self.pid(), sig);
        let st = self.wait_exit(timeout);
        if st.is_none() {
            send_signal(self.pid(), SIGKILL);
            if let Some(c) = self.child.as_mut() {
                let _ = wait_child_timeout(c, Duration::from_secs(5));
            }
        }
        st
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate(Duration::from_secs(5));
        }
        if thread::panicking() {
            let log = self.log();
            let tail = if log.len() > 12000 {
                let mut cut = log.len() - 12000;
                while !log.is_char_boundary(cut) {
                    cut += 1;
                }
                &log[cut..]
            } else {
                &log[..]
            };
            eprintln!(
                "--- netconnect {} (exit {:?}); log ---\n{tail}\n--- end log ---",
                self.argv[1..].join(" "),
                self.status
            );
        }
    }
}

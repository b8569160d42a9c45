//! Shared end-to-end test harness: network namespaces, veth fixtures, WireGuard
//! daemons (netconnect or wireguard-go), key handling, `wg` helpers, UAPI client,
//! bounded process execution and in-namespace TCP transfers.
//!
//! Every helper is bounded in time and every guard cleans up on `Drop`, including
//! when a test panics. All names (namespaces, interfaces, UAPI sockets) are unique
//! per process and per call, so tests can run in parallel under `cargo test` and
//! `cargo nextest`.
//!
//! These tests need root and a few tools; they never skip: a missing prerequisite
//! is a test failure with a one-line message naming the packages to install.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// Packages that provide every tool these tests need.
pub const APT_HINT: &str =
    "apt-get install -y --no-install-recommends wireguard-go wireguard-tools iperf3 iproute2 iputils-ping util-linux";

/// Directory of WireGuard cross-platform UAPI sockets (shared by all namespaces).
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// Underlay (veth) addresses of the two-namespace fixture.
pub const HOST_UNDERLAY4: &str = "10.200.1.1";
pub const VM_UNDERLAY4: &str = "10.200.1.2";
pub const HOST_UNDERLAY6: &str = "fd00:200::1";
pub const VM_UNDERLAY6: &str = "fd00:200::2";

/// Tunnel (inner) addresses.
pub const HOST_TUN4: &str = "10.33.33.1";
pub const VM_TUN4: &str = "10.33.33.2";
pub const HOST_TUN6: &str = "fd33::1";
pub const VM_TUN6: &str = "fd33::2";

/// WireGuard listen ports of the two sides.
pub const HOST_PORT: u16 = 51820;
pub const VM_PORT: u16 = 51821;

/// Default bound for one helper command (`ip`, `wg`, ...).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound for a daemon to create its UAPI socket.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for a daemon to exit after SIGTERM.
pub const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// libc bits (std links libc; no extra crate needed)
// ---------------------------------------------------------------------------

mod sys {
    use std::os::raw::{c_int, c_ulong};
    extern "C" {
        pub fn setns(fd: c_int, nstype: c_int) -> c_int;
        pub fn geteuid() -> u32;
        pub fn kill(pid: c_int, sig: c_int) -> c_int;
        pub fn prctl(option: c_int, arg2: c_ulong, ...) -> c_int;
        pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
        pub fn openpty(
            amaster: *mut c_int,
            aslave: *mut c_int,
            name: *mut std::os::raw::c_char,
            termp: *const std::ffi::c_void,
            winp: *const Winsize,
        ) -> c_int;
    }
    #[repr(C)]
    pub struct Winsize {
        pub ws_row: u16,
        pub ws_col: u16,
        pub ws_xpixel: u16,
        pub ws_ypixel: u16,
    }
    pub const CLONE_NEWNET: c_int = 0x4000_0000;
    pub const F_SETFD: c_int = 2;
    pub const FD_CLOEXEC: c_int = 1;
    pub const PR_SET_PDEATHSIG: c_int = 1;
    pub const SIGINT: c_int = 2;
    pub const SIGKILL: c_int = 9;
    pub const SIGTERM: c_int = 15;
}

pub use sys::{SIGINT, SIGKILL, SIGTERM};

/// Makes the child get SIGKILL if the thread that spawned it dies (e.g. the
/// test process is killed by a runner timeout), so no daemon outlives its
/// test. Spawn from the thread that owns the guard (the test's thread).
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs in the hook.
    unsafe {
        cmd.pre_exec(|| {
            sys::prctl(sys::PR_SET_PDEATHSIG, SIGKILL as std::os::raw::c_ulong);
            Ok(())
        });
    }
}

/// Send `sig` to process `pid`. Returns false if the process does not exist.
pub fn send_signal(pid: u32, sig: i32) -> bool {
    // SAFETY: plain syscall wrapper.
    unsafe { sys::kill(pid as i32, sig) == 0 }
}

// ---------------------------------------------------------------------------
// Prerequisites
// ---------------------------------------------------------------------------

fn find_in_path(tool: &str) -> Option<PathBuf> {
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
    // SAFETY: plain syscall wrapper.
    let euid = unsafe { sys::geteuid() };
    if euid != 0 {
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
        // SAFETY: plain syscall wrapper.
        if unsafe { sys::geteuid() } != 0 {
            return Err("netconnect e2e tests must run as root; run e.g. `sudo -E cargo test`".into());
        }
        let missing: Vec<&str> = ["wg", "wireguard-go", "ip", "ss", "iperf3", "ping", "setpriv"]
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

fn pid_alive(pid: u32) -> bool {
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

// ---------------------------------------------------------------------------
// Unique names, temp dirs
// ---------------------------------------------------------------------------

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut s = Vec::new();
    while n > 0 {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

/// A fresh interface-name stem, unique across concurrently running processes
/// (full pid in base36) and calls: `nct<pid36>x<n36>`, at most 14 chars, so
/// appending one side letter (`a`/`b`) stays within IFNAMSIZ-1 = 15.
pub fn unique_ifname_stem() -> String {
    format!(
        "nct{}x{}",
        base36(std::process::id() as u64),
        base36(next_id())
    )
}

/// Returns a pair of unique interface names `(<stem>a, <stem>b)`.
pub fn unique_ifnames() -> (String, String) {
    let s = unique_ifname_stem();
    (format!("{s}a"), format!("{s}b"))
}

/// Path of the UAPI socket of `iface`.
pub fn uapi_socket_path(iface: &str) -> PathBuf {
    Path::new(UAPI_DIR).join(format!("{iface}.sock"))
}

/// A temporary directory (mode 0700 unless widened), removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "netconnect-e2e-{}-{}-{tag}",
            std::process::id(),
            next_id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Bounded command execution
// ---------------------------------------------------------------------------

fn spawn_reader<R: Read + Send + 'static>(r: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Human-readable rendering of a command line.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Polls `child` until it exits or `timeout` passes. Does not kill it.
pub fn wait_child_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("try_wait: {e}"),
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(25));
    }
}

/// Runs `cmd` with optional stdin bytes; kills it after `timeout`.
/// `Err` (with whatever output was captured) if it timed out or could not start.
pub fn run_timeout_input(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, String> {
    let desc = describe(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    die_with_parent(cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{desc}`: {e}"))?;
    if let Some(data) = input {
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let out_rx = spawn_reader(child.stdout.take());
    let err_rx = spawn_reader(child.stderr.take());
    let status = wait_child_timeout(&mut child, timeout);
    let timed_out = status.is_none();
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            child.wait().expect("wait after kill")
        }
    };
    // A grandchild may keep the pipes open; don't wait for it forever.
    let stdout = out_rx
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    let stderr = err_rx
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    let out = Output {
        status,
        stdout,
        stderr,
    };
    if timed_out {
        Err(format!(
            "`{desc}` did not finish within {timeout:?} (killed); stdout: {:?}; stderr: {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    } else {
        Ok(out)
    }
}

/// Runs `cmd`, killing it after `timeout`.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    run_timeout_input(cmd, None, timeout)
}

/// Runs `cmd` (bounded by [`CMD_TIMEOUT`]); panics unless it exits 0. Returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let desc = describe(cmd);
    let out = run_timeout(cmd, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    if !out.status.success() {
        panic!(
            "`{desc}` failed ({}): stdout: {:?} stderr: {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cmd<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(&args[0]);
    c.args(&args[1..]);
    c
}

/// Non-empty lines of `s`.
pub fn nonempty_lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

// ---------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------

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
            let rc = unsafe { sys::setns(nsf.as_raw_fd(), sys::CLONE_NEWNET) };
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
    }
}

// ---------------------------------------------------------------------------
// Two hosts joined by veth
// ---------------------------------------------------------------------------

/// Two namespaces, "host" and "vm", joined by a veth pair (MTU 1500, up):
/// host `vh0` = 10.200.1.1/24, fd00:200::1/64; vm `vv0` = 10.200.1.2/24, fd00:200::2/64.
pub struct TwoHosts {
    pub host: Netns,
    pub vm: Netns,
}

pub type VethPair = TwoHosts;

impl TwoHosts {
    pub const HOST_VETH: &'static str = "vh0";
    pub const VM_VETH: &'static str = "vv0";

    pub fn new() -> TwoHosts {
        let host = Netns::new("host");
        let vm = Netns::new("vm");
        host.ok(&[
            "ip",
            "link",
            "add",
            Self::HOST_VETH,
            "mtu",
            "1500",
            "type",
            "veth",
            "peer",
            "name",
            Self::VM_VETH,
            "mtu",
            "1500",
            "netns",
            vm.name(),
        ]);
        for (ns, dev, a4, a6) in [
            (&host, Self::HOST_VETH, HOST_UNDERLAY4, HOST_UNDERLAY6),
            (&vm, Self::VM_VETH, VM_UNDERLAY4, VM_UNDERLAY6),
        ] {
            ns.ok(&["ip", "addr", "add", &format!("{a4}/24"), "dev", dev]);
            ns.ok(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{a6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ns.ok(&["ip", "link", "set", dev, "mtu", "1500", "up"]);
        }
        let th = TwoHosts { host, vm };
        wait_ping(&th.host, VM_UNDERLAY4, Duration::from_secs(10));
        wait_ping(&th.host, VM_UNDERLAY6, Duration::from_secs(10));
        th
    }
}

// ---------------------------------------------------------------------------
// Daemons
// ---------------------------------------------------------------------------

/// Which WireGuard implementation runs a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// The binary under test: `netconnect device IFACE`.
    Netconnect,
    /// The reference: `wireguard-go -f IFACE`.
    WireguardGo,
}

/// Path of the netconnect binary built by cargo for these tests.
pub fn netconnect_bin() -> &'static str {
    env!("CARGO_BIN_EXE_netconnect")
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

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// A WireGuard key pair. The private key lives only in memory and in a 0600
/// file (`key_file`), never on a command line. `Debug` does not show it.
pub struct KeyPair {
    private_b64: String,
    pub public: String,
    pub key_file: PathBuf,
    _dir: TempDir,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// `wg genkey`
pub fn wg_genkey() -> String {
    require_prereqs();
    run_ok(Command::new("wg").arg("genkey")).trim().to_string()
}

/// `wg pubkey` (private key on stdin).
pub fn wg_pubkey(private_b64: &str) -> String {
    let out = run_timeout_input(
        &mut cmd(&["wg", "pubkey"]),
        Some(format!("{private_b64}\n").as_bytes()),
        CMD_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "wg pubkey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes `content` to a new file with mode 0600.
pub fn write_private_file(path: &Path, content: &str) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(content.as_bytes()).unwrap();
    f.write_all(b"\n").unwrap();
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        let private_b64 = wg_genkey();
        let public = wg_pubkey(&private_b64);
        let dir = TempDir::new("key");
        let key_file = dir.join("private.key");
        write_private_file(&key_file, &private_b64);
        KeyPair {
            private_b64,
            public,
            key_file,
            _dir: dir,
        }
    }

    /// Private key as the lowercase hex used by the UAPI.
    pub fn private_hex(&self) -> String {
        b64_to_hex(&self.private_b64)
    }

    pub fn public_hex(&self) -> String {
        b64_to_hex(&self.public)
    }

    pub fn key_file_str(&self) -> &str {
        self.key_file.to_str().unwrap()
    }
}

/// Base64 WireGuard key → 64 lowercase hex chars (UAPI form).
pub fn b64_to_hex(b64: &str) -> String {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap_or_else(|e| panic!("bad base64 key: {e}"));
    assert_eq!(raw.len(), 32, "key is not 32 bytes");
    hex::encode(raw)
}

/// UAPI hex key → base64 (as printed by `wg`).
pub fn hex_to_b64(h: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(hex::decode(h).expect("bad hex key"))
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// `wg set IFACE listen-port P private-key FILE peer PUB [endpoint E] allowed-ips A [persistent-keepalive K]`
#[allow(clippy::too_many_arguments)]
pub fn wg_set(
    ns: &Netns,
    iface: &str,
    keyfile: &Path,
    listen_port: u16,
    peer_pub: &str,
    endpoint: Option<&str>,
    allowed_ips: &str,
    keepalive: Option<u16>,
) {
    let port = listen_port.to_string();
    let mut args: Vec<String> = vec![
        "wg".into(),
        "set".into(),
        iface.into(),
        "listen-port".into(),
        port,
        "private-key".into(),
        keyfile.to_str().unwrap().into(),
        "peer".into(),
        peer_pub.into(),
    ];
    if let Some(e) = endpoint {
        args.push("endpoint".into());
        args.push(e.into());
    }
    args.push("allowed-ips".into());
    args.push(allowed_ips.into());
    if let Some(k) = keepalive {
        args.push("persistent-keepalive".into());
        args.push(k.to_string());
    }
    ns.ok(&args);
}

/// `mtu 1420 up` and point-to-point tunnel addresses on `iface`.
///
/// The link goes up first: an IPv6 `peer` address added while the link is
/// down gets no route to the peer when the link comes up later (kernel quirk).
pub fn addr_up(ns: &Netns, iface: &str, local4: &str, peer4: &str, local6: &str, peer6: &str) {
    ns.ok(&["ip", "link", "set", iface, "mtu", "1420", "up"]);
    ns.ok(&["ip", "addr", "add", local4, "peer", peer4, "dev", iface]);
    ns.ok(&[
        "ip", "-6", "addr", "add", local6, "peer", peer6, "dev", iface, "nodad",
    ]);
}

/// [`wg_set`] followed by [`addr_up`]; allowed-ips are the peer's /32 and /128.
#[allow(clippy::too_many_arguments)]
pub fn configure(
    ns: &Netns,
    iface: &str,
    keyfile: &Path,
    listen_port: u16,
    peer_pub: &str,
    endpoint: Option<&str>,
    local4: &str,
    peer4: &str,
    local6: &str,
    peer6: &str,
) {
    let allowed = format!("{peer4}/32,{peer6}/128");
    wg_set(
        ns,
        iface,
        keyfile,
        listen_port,
        peer_pub,
        endpoint,
        &allowed,
        None,
    );
    addr_up(ns, iface, local4, peer4, local6, peer6);
}

// ---------------------------------------------------------------------------
// Ping
// ---------------------------------------------------------------------------

fn ping_args(addr: &str, count: u32) -> Vec<String> {
    let mut v = vec!["ping".to_string(), "-n".into()];
    if addr.contains(':') {
        v.push("-6".into());
    }
    v.extend([
        "-c".into(),
        count.to_string(),
        "-W".into(),
        "1".into(),
        "-i".into(),
        "0.2".into(),
    ]);
    v.push(addr.into());
    v
}

/// One bounded ping; true if a reply came back.
pub fn ping_once(ns: &Netns, addr: &str) -> bool {
    ns.exec_timeout(&ping_args(addr, 1), Duration::from_secs(5))
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings until a reply arrives or `timeout` passes; returns whether it got one.
pub fn try_ping_until(ns: &Netns, addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ping_once(ns, addr) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Like [`try_ping_until`] but panics on timeout.
pub fn wait_ping(ns: &Netns, addr: &str, timeout: Duration) {
    let t0 = Instant::now();
    if !try_ping_until(ns, addr, timeout) {
        panic!(
            "no ping reply from {addr} in netns {} within {:?}",
            ns.name(),
            t0.elapsed()
        );
    }
}

/// Sends `count` pings (0.2 s apart, 1 s wait each) and returns the number of replies.
pub fn ping_count(ns: &Netns, addr: &str, count: u32) -> u32 {
    run_ping(ns, ping_args(addr, count), count)
}

/// Like [`ping_count`] with `size` payload bytes, and the DF bit set
/// (`-M do`) if `dont_fragment`.
pub fn ping_sized(ns: &Netns, addr: &str, count: u32, size: u32, dont_fragment: bool) -> u32 {
    let mut args = ping_args(addr, count);
    let target = args.pop().unwrap();
    args.extend(["-s".to_string(), size.to_string()]);
    if dont_fragment {
        args.extend(["-M".to_string(), "do".to_string()]);
    }
    args.push(target);
    run_ping(ns, args, count)
}

fn run_ping(ns: &Netns, args: Vec<String>, count: u32) -> u32 {
    let out = ns
        .exec_timeout(&args, Duration::from_secs(count as u64 + 10))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    // "3 packets transmitted, 0 received, ..."
    text.lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "cannot parse ping output: {text:?} {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

// ---------------------------------------------------------------------------
// `wg show IFACE dump`
// ---------------------------------------------------------------------------

/// Interface line of `wg show IFACE dump` (the private key is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgDump {
    pub has_private_key: bool,
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerDump>,
}

/// One peer line of `wg show IFACE dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDump {
    pub public_key: String,
    pub has_preshared_key: bool,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Unix seconds; 0 = never.
    pub latest_handshake: u64,
    pub rx: u64,
    pub tx: u64,
    /// Seconds; `None` = off.
    pub keepalive: Option<u16>,
}

fn none_if(s: &str) -> Option<String> {
    if s == "(none)" || s == "off" {
        None
    } else {
        Some(s.to_string())
    }
}

/// Parses the output of `wg show IFACE dump`.
pub fn parse_wg_dump(text: &str) -> Result<WgDump, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().ok_or("empty dump")?;
    let f: Vec<&str> = first.split('\t').collect();
    if f.len() != 4 {
        return Err(format!("interface line has {} fields, want 4", f.len()));
    }
    let mut dump = WgDump {
        has_private_key: f[0] != "(none)",
        public_key: none_if(f[1]),
        listen_port: f[2]
            .parse()
            .map_err(|e| format!("listen port {:?}: {e}", f[2]))?,
        fwmark: match f[3] {
            "off" => None,
            s => Some(
                if let Some(h) = s.strip_prefix("0x") {
                    u32::from_str_radix(h, 16)
                } else {
                    s.parse()
                }
                .map_err(|e| format!("fwmark {s:?}: {e}"))?,
            ),
        },
        peers: Vec::new(),
    };
    for line in lines {
        let p: Vec<&str> = line.split('\t').collect();
        if p.len() != 8 {
            return Err(format!(
                "peer line has {} fields, want 8: {line:?}",
                p.len()
            ));
        }
        let num = |i: usize| -> Result<u64, String> {
            p[i].parse()
                .map_err(|e| format!("field {i} {:?}: {e}", p[i]))
        };
        dump.peers.push(PeerDump {
            public_key: p[0].to_string(),
            has_preshared_key: p[1] != "(none)",
            endpoint: none_if(p[2]),
            allowed_ips: match p[3] {
                "(none)" => Vec::new(),
                s => s.split(',').map(|x| x.trim().to_string()).collect(),
            },
            latest_handshake: num(4)?,
            rx: num(5)?,
            tx: num(6)?,
            keepalive: match p[7] {
                "off" => None,
                s => Some(s.parse().map_err(|e| format!("keepalive {s:?}: {e}"))?),
            },
        });
    }
    Ok(dump)
}

/// Runs and parses `wg show IFACE dump` in `ns`.
pub fn wg_dump(ns: &Netns, iface: &str) -> WgDump {
    let text = ns.ok(&["wg", "show", iface, "dump"]);
    parse_wg_dump(&text)
        .unwrap_or_else(|e| panic!("bad `wg show {iface} dump` output ({e}): {text:?}"))
}

impl WgDump {
    pub fn peer(&self, public_key: &str) -> &PeerDump {
        self.peers
            .iter()
            .find(|p| p.public_key == public_key)
            .unwrap_or_else(|| panic!("peer {public_key} not in dump {self:?}"))
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------
// UAPI client
// ---------------------------------------------------------------------------

/// What came back for one UAPI request.
#[derive(Debug, Clone)]
pub struct UapiReply {
    /// Everything read before "\n\n", EOF, error or timeout.
    pub text: String,
    /// Error writing the request (e.g. the daemon closed early), if any.
    pub write_error: Option<String>,
    /// Error reading (other than EOF), e.g. timeout.
    pub read_error: Option<String>,
}

impl UapiReply {
    /// Value of the `errno=` line, if any.
    pub fn errno(&self) -> Option<i64> {
        self.text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("errno="))
            .and_then(|v| v.trim().parse().ok())
    }

    /// `key=value` pairs before `errno=`.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| *k != "errno")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Sends raw `request` to the UAPI socket of `iface`; if `close_write`, shuts
/// down the write half afterwards. Reads the reply (bounded by `timeout`).
pub fn uapi_raw(iface: &str, request: &[u8], close_write: bool, timeout: Duration) -> UapiReply {
    let path = uapi_socket_path(iface);
    let mut s =
        UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    let mut write_error = None;
    if let Err(e) = s.write_all(request) {
        write_error = Some(e.to_string());
    }
    if close_write {
        let _ = s.shutdown(Shutdown::Write);
    }
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut read_error = None;
    loop {
        if buf.ends_with(b"\n\n") {
            break;
        }
        if Instant::now() >= deadline {
            read_error = Some("timed out".into());
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
    }
    UapiReply {
        text: String::from_utf8_lossy(&buf).into_owned(),
        write_error,
        read_error,
    }
}

/// A complete UAPI transaction (`request` must end with the blank line).
pub fn uapi(iface: &str, request: &str) -> UapiReply {
    uapi_raw(iface, request.as_bytes(), false, Duration::from_secs(5))
}

/// `get=1` → reply; panics unless `errno=0`.
pub fn uapi_get(iface: &str) -> UapiReply {
    let r = uapi(iface, "get=1\n\n");
    assert_eq!(
        r.errno(),
        Some(0),
        "get=1 on {iface} did not answer errno=0: {r:?}"
    );
    r
}

// ---------------------------------------------------------------------------
// TCP transfer between namespaces
// ---------------------------------------------------------------------------

/// Result of [`tcp_transfer`].
#[derive(Debug, Clone)]
pub struct TransferReport {
    pub sent: u64,
    pub received: u64,
    pub sha_sent: String,
    pub sha_received: String,
    pub elapsed: Duration,
}

impl TransferReport {
    pub fn mbit_per_s(&self) -> f64 {
        self.received as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    pub fn assert_ok(&self, expected: u64) {
        assert_eq!(
            self.sent, expected,
            "sender did not send everything: {self:?}"
        );
        assert_eq!(
            self.received, expected,
            "receiver byte count differs: {self:?}"
        );
        assert_eq!(
            self.sha_sent, self.sha_received,
            "SHA-256 mismatch: {self:?}"
        );
    }
}

/// xorshift64* stream: fast incompressible test data.
struct Prng(u64);

impl Prng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Streams `bytes` pseudo-random bytes over TCP from a socket in `sender` to a
/// listener on `dst:port` in `receiver`, hashing SHA-256 on both ends. Every
/// step is bounded by `timeout` (overall) and a 20 s stall limit.
pub fn tcp_transfer(
    sender: &Netns,
    receiver: &Netns,
    dst: IpAddr,
    port: u16,
    bytes: u64,
    timeout: Duration,
) -> Result<TransferReport, String> {
    let deadline = Instant::now() + timeout;
    let stall = Duration::from_secs(20).min(timeout);
    let addr = SocketAddr::new(dst, port);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();

    let rx_handle = receiver.spawn_in(move || -> Result<(u64, String), String> {
        let l = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("bind {addr}: {e}");
                let _ = ready_tx.send(Err(msg.clone()));
                return Err(msg);
            }
        };
        l.set_nonblocking(true).unwrap();
        let _ = ready_tx.send(Ok(()));
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err("receiver: no connection before deadline".into());
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(stall)).unwrap();
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if Instant::now() >= deadline {
                return Err(format!("receiver: deadline passed after {n} bytes"));
            }
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("receiver: read after {n} bytes: {e}")),
            }
        }
        drop(s);
        Ok((n, hex::encode(h.finalize())))
    });

    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = rx_handle.join();
            return Err(e);
        }
        Err(_) => return Err("receiver thread did not start".into()),
    }

    let t0 = Instant::now();
    let tx_handle = sender.spawn_in(move || -> Result<(u64, String), String> {
        let mut s = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => break s,
                Err(e) => {
                    if Instant::now() + Duration::from_secs(1) >= deadline {
                        return Err(format!("sender: connect {addr}: {e}"));
                    }
                    thread::sleep(Duration::from_millis(200));
                }
            }
        };
        s.set_write_timeout(Some(stall)).unwrap();
        s.set_read_timeout(Some(stall)).unwrap();
        let seed = (unix_now() << 20)
            ^ (std::process::id() as u64)
            ^ (next_id() << 40)
            ^ 0x9E37_79B9_7F4A_7C15;
        let mut prng = Prng(seed | 1);
        let mut h = Sha256::new();
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        while sent < bytes {
            if Instant::now() >= deadline {
                return Err(format!("sender: deadline passed after {sent} bytes"));
            }
            let k = ((bytes - sent) as usize).min(buf.len());
            prng.fill(&mut buf[..k]);
            s.write_all(&buf[..k])
                .map_err(|e| format!("sender: write after {sent} bytes: {e}"))?;
            h.update(&buf[..k]);
            sent += k as u64;
        }
        s.shutdown(Shutdown::Write)
            .map_err(|e| format!("sender: shutdown: {e}"))?;
        // Wait for the receiver to close: it has read everything.
        let mut tmp = [0u8; 16];
        loop {
            match s.read(&mut tmp) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("sender: waiting for receiver close: {e}")),
            }
        }
        Ok((sent, hex::encode(h.finalize())))
    });

    let join = |h: thread::JoinHandle<Result<(u64, String), String>>, who: &str| match h.join() {
        Ok(r) => r,
        Err(_) => Err(format!("{who} thread panicked")),
    };
    let txr = join(tx_handle, "sender");
    let rxr = join(rx_handle, "receiver");
    let elapsed = t0.elapsed();
    match (txr, rxr) {
        (Ok((sent, sha_sent)), Ok((received, sha_received))) => Ok(TransferReport {
            sent,
            received,
            sha_sent,
            sha_received,
            elapsed,
        }),
        (t, r) => Err(format!(
            "transfer to {addr} failed: sender {t:?}; receiver {r:?}"
        )),
    }
}

/// Sends `count` UDP datagrams with `payload` from `src` (bound inside `ns`) to `dst`.
pub fn udp_send_from(ns: &Netns, src: SocketAddr, dst: SocketAddr, payload: &[u8], count: u32) {
    let payload = payload.to_vec();
    ns.run_in(move || {
        let s = UdpSocket::bind(src).unwrap_or_else(|e| panic!("bind udp {src}: {e}"));
        for _ in 0..count {
            s.send_to(&payload, dst)
                .unwrap_or_else(|e| panic!("send {src} -> {dst}: {e}"));
            thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Datagrams received on `sock` within `window` (each paired with its source).
pub fn udp_collect(sock: &UdpSocket, window: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return got;
        }
        sock.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => got.push((buf[..n].to_vec(), from)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("recv_from: {e}"),
        }
    }
}

/// Number of open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Binds a UDP socket on `addr` inside `ns` and returns it (it stays in `ns`).
pub fn bind_udp_in(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    ns.run_in(move || UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}")))
}

// ---------------------------------------------------------------------------
// Tunnel fixture
// ---------------------------------------------------------------------------

/// One end of a tunnel.
pub struct Side {
    pub daemon: Option<Daemon>,
    pub imp: Impl,
    pub iface: String,
    pub key: KeyPair,
    pub port: u16,
    /// Public key this side is configured with for its peer.
    pub peer_pub: String,
    /// Endpoint this side is configured with for its peer (`None`: it has to
    /// learn it from the peer's first authenticated packet).
    pub endpoint: Option<String>,
}

impl Side {
    pub fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("daemon not running")
    }
}

/// Options for [`Tunnel::with`].
#[derive(Default, Clone)]
pub struct TunnelOpts {
    /// Use the IPv6 veth addresses as endpoints.
    pub underlay_v6: bool,
    /// Configure the host side with this peer public key instead of the vm's.
    pub host_peer_pub: Option<String>,
    /// Give the host side no endpoint for its peer.
    pub host_no_endpoint: bool,
}

/// Two namespaces joined by veth, a WireGuard device in each ("host" side
/// 10.33.33.1/fd33::1 port 51820, "vm" side 10.33.33.2/fd33::2 port 51821),
/// configured as each other's peer and up. No traffic sent yet.
///
/// Field order matters: daemons drop before the namespaces.
pub struct Tunnel {
    pub host: Side,
    pub vm: Side,
    pub net: TwoHosts,
}

impl Tunnel {
    pub fn new(host_imp: Impl, vm_imp: Impl) -> Tunnel {
        Self::with(host_imp, vm_imp, TunnelOpts::default())
    }

    pub fn with(host_imp: Impl, vm_imp: Impl, opts: TunnelOpts) -> Tunnel {
        let net = TwoHosts::new();
        let (ha, vb) = unique_ifnames();
        let host_key = KeyPair::generate();
        let vm_key = KeyPair::generate();
        let (host_ep, vm_ep) = if opts.underlay_v6 {
            (
                format!("[{VM_UNDERLAY6}]:{VM_PORT}"),
                format!("[{HOST_UNDERLAY6}]:{HOST_PORT}"),
            )
        } else {
            (
                format!("{VM_UNDERLAY4}:{VM_PORT}"),
                format!("{HOST_UNDERLAY4}:{HOST_PORT}"),
            )
        };
        let host_peer_pub = opts
            .host_peer_pub
            .clone()
            .unwrap_or_else(|| vm_key.public.clone());
        let vm_peer_pub = host_key.public.clone();
        let mut t = Tunnel {
            host: Side {
                daemon: None,
                imp: host_imp,
                iface: ha,
                key: host_key,
                port: HOST_PORT,
                peer_pub: host_peer_pub,
                endpoint: if opts.host_no_endpoint {
                    None
                } else {
                    Some(host_ep)
                },
            },
            vm: Side {
                daemon: None,
                imp: vm_imp,
                iface: vb,
                key: vm_key,
                port: VM_PORT,
                peer_pub: vm_peer_pub,
                endpoint: Some(vm_ep),
            },
            net,
        };
        t.start_host();
        t.start_vm();
        t
    }

    fn start_side(
        ns: &Netns,
        side: &mut Side,
        local4: &str,
        peer4: &str,
        local6: &str,
        peer6: &str,
    ) {
        assert!(side.daemon.is_none());
        side.daemon = Some(Daemon::start(ns, side.imp, &side.iface));
        configure(
            ns,
            &side.iface,
            &side.key.key_file,
            side.port,
            &side.peer_pub,
            side.endpoint.as_deref(),
            local4,
            peer4,
            local6,
            peer6,
        );
    }

    /// Starts and configures the host side (must not be running).
    pub fn start_host(&mut self) {
        Self::start_side(
            &self.net.host,
            &mut self.host,
            HOST_TUN4,
            VM_TUN4,
            HOST_TUN6,
            VM_TUN6,
        );
    }

    /// Starts and configures the vm side (must not be running).
    pub fn start_vm(&mut self) {
        Self::start_side(
            &self.net.vm,
            &mut self.vm,
            VM_TUN4,
            HOST_TUN4,
            VM_TUN6,
            HOST_TUN6,
        );
    }

    /// Stops the host side with SIGTERM (SIGKILL after 3 s); returns its exit status.
    pub fn stop_host(&mut self) -> Option<ExitStatus> {
        let mut d = self.host.daemon.take().expect("host not running");
        let (st, _) = d.stop_with(SIGTERM, DAEMON_STOP_TIMEOUT);
        drop(d);
        st
    }

    /// Stops the vm side with SIGTERM (SIGKILL after 3 s); returns its exit status.
    pub fn stop_vm(&mut self) -> Option<ExitStatus> {
        let mut d = self.vm.daemon.take().expect("vm not running");
        let (st, _) = d.stop_with(SIGTERM, DAEMON_STOP_TIMEOUT);
        drop(d);
        st
    }

    pub fn host_dump(&self) -> WgDump {
        wg_dump(&self.net.host, &self.host.iface)
    }

    pub fn vm_dump(&self) -> WgDump {
        wg_dump(&self.net.vm, &self.vm.iface)
    }

    /// Pings from host to vm until a reply (bounded), panicking with both dumps otherwise.
    pub fn wait_host_to_vm(&self, addr: &str, timeout: Duration) {
        if !try_ping_until(&self.net.host, addr, timeout) {
            panic!(
                "host -> {addr}: no ping reply within {timeout:?}\n{}",
                self.diagnostics()
            );
        }
    }

    /// Pings from vm to host until a reply (bounded), panicking with both dumps otherwise.
    pub fn wait_vm_to_host(&self, addr: &str, timeout: Duration) {
        if !try_ping_until(&self.net.vm, addr, timeout) {
            panic!(
                "vm -> {addr}: no ping reply within {timeout:?}\n{}",
                self.diagnostics()
            );
        }
    }

    /// `wg show` of both sides (for failure messages); never panics.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for (label, ns, side) in [
            ("host", &self.net.host, &self.host),
            ("vm", &self.net.vm, &self.vm),
        ] {
            let out = ns.exec_timeout(&["wg", "show", &side.iface], Duration::from_secs(5));
            let text = match out {
                Ok(o) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => e,
            };
            let _ = writeln!(
                s,
                "--- {label} ({:?} {}) wg show ---\n{}",
                side.imp,
                side.iface,
                text.trim_end()
            );
        }
        s
    }
}

// ===========================================================================
// Docker: `netconnect up` against the real engine (tests/docker_e2e.rs)
// ===========================================================================

/// Fixtures for the end-to-end tests of `netconnect up`. The root network
/// namespace plays the Docker VM (dockerd runs there); a namespace joined to
/// it by veth plays the Mac.
///
/// Every `up` starts a helper container with host networking that creates a
/// tunnel interface in the root namespace and inserts iptables rules for it,
/// so these tests must not overlap: [`DockerSession`] holds a file lock for
/// the whole test, across threads and processes (`cargo test`, nextest).
/// Whatever a test creates (containers, networks, rules, the helper and its
/// interface) is removed on drop, and what a killed test process left behind
/// is swept when the next one takes the lock.
pub mod docker {
    use super::*;

    pub const DOCKER_SOCK: &str = "/var/run/docker.sock";
    /// Serialises the Docker tests (they share the root namespace and dockerd).
    pub const DOCKER_LOCK: &str = "/run/netconnect-docker-e2e.lock";
    pub const BUSYBOX_IMAGE: &str = "netconnect-test-busybox:1";
    /// Label on every container and network a test creates; value: its pid.
    pub const TEST_LABEL: &str = "io.netconnect.e2e";
    /// Label the helper containers carry (`src/up/container.rs`).
    pub const HELPER_LABEL: &str = "io.netconnect.helper";
    /// Comment on the iptables rules that the tests themselves insert.
    pub fn test_rule_comment() -> String {
        format!("nct-e2e-{}", std::process::id())
    }
    /// Name of the tunnel interface inside the Mac namespace.
    pub const MAC_TUN: &str = "nctun0";
    /// Bound for one `docker` command (`run` is slow on fuse-overlayfs).
    pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
    /// Bound for waiting for the lock (the other tests run meanwhile).
    pub const LOCK_TIMEOUT: Duration = Duration::from_secs(25 * 60);
    /// Bound for building the helper image (a static release build).
    pub const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

    mod sys {
        use std::os::raw::c_int;
        extern "C" {
            pub fn flock(fd: c_int, op: c_int) -> c_int;
            pub fn setsid() -> c_int;
        }
        pub const LOCK_EX: c_int = 2;
        pub const LOCK_NB: c_int = 4;
    }

    /// `netconnect-helper:<crate version>-e2e-<source fingerprint>`: the
    /// helper built from exactly these sources. A tag per fingerprint, not
    /// the release tag, so that work trees testing different sources on one
    /// engine do not keep replacing each other's image (a 7-minute build).
    pub fn helper_image() -> String {
        static TAG: OnceLock<String> = OnceLock::new();
        TAG.get_or_init(|| {
            format!(
                "netconnect-helper:{}-e2e-{}",
                env!("CARGO_PKG_VERSION"),
                &helper_fingerprint()[..12]
            )
        })
        .clone()
    }

    /// What the helper image is built from.
    fn helper_fingerprint() -> String {
        static FP: OnceLock<String> = OnceLock::new();
        FP.get_or_init(|| {
            source_fingerprint(
                Path::new(env!("CARGO_MANIFEST_DIR")),
                &["src", "Cargo.toml", "Cargo.lock", "helper-image"],
            )
        })
        .clone()
    }

    /// Whether this is CI (`CI=true`, as `.ci/run` sets it).
    pub fn in_ci() -> bool {
        std::env::var("CI")
            .map(|v| !v.is_empty() && v != "false" && v != "0")
            .unwrap_or(false)
    }

    // -----------------------------------------------------------------------
    // Commands
    // -----------------------------------------------------------------------

    /// Runs `docker args...` (bounded); `Err` with stderr unless it exits 0.
    pub fn docker_try<S: AsRef<OsStr>>(args: &[S]) -> Result<String, String> {
        let mut c = Command::new("docker");
        c.args(args);
        let desc = describe(&c);
        let out = run_timeout(&mut c, DOCKER_TIMEOUT)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`{desc}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs `docker args...`; panics unless it exits 0. Returns stdout.
    pub fn docker<S: AsRef<OsStr>>(args: &[S]) -> String {
        docker_try(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a command in the root namespace (bounded); returns its output.
    pub fn host<S: AsRef<OsStr>>(args: &[S]) -> Output {
        run_timeout(&mut cmd(args), CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a command in the root namespace; panics unless it exits 0.
    pub fn host_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
        run_ok(&mut cmd(args))
    }

    /// Rules (and a chain) a test inserted; removed on drop.
    #[derive(Default)]
    pub struct InsertedRules {
        /// `(table, args after -A/-I)` in insertion order.
        pub rules: Vec<(&'static str, Vec<String>)>,
        pub created_chain: Option<String>,
    }

    impl InsertedRules {
        pub fn add(&mut self, table: &'static str, op: &[&str], spec: &[String]) {
            let mut args: Vec<String> = ["iptables", "-w", "5", "-t", table]
                .iter()
                .chain(op)
                .map(|s| s.to_string())
                .collect();
            args.extend(spec.iter().cloned());
            host_ok(&args);
            // -D takes the chain and the spec, not the position of -I.
            let mut del = vec![op[1].to_string()];
            del.extend(spec.iter().cloned());
            self.rules.push((table, del));
        }
    }

    impl Drop for InsertedRules {
        fn drop(&mut self) {
            for (table, rest) in self.rules.iter().rev() {
                let mut c = Command::new("iptables");
                c.args(["-w", "5", "-t", table, "-D"]).args(rest);
                let _ = run_timeout(&mut c, CMD_TIMEOUT);
            }
            if let Some(chain) = &self.created_chain {
                let _ = run_timeout(
                    Command::new("iptables").args(["-w", "5", "-X", chain]),
                    CMD_TIMEOUT,
                );
            }
        }
    }

    // -----------------------------------------------------------------------
    // Prerequisites, lock, images
    // -----------------------------------------------------------------------

    /// Everything but the engine: root, tools, a static busybox.
    fn check_tools() -> Result<(), String> {
        // SAFETY: plain syscall wrapper.
        if unsafe { super::sys::geteuid() } != 0 {
            return Err(
                "the Docker e2e tests must run as root; run e.g. `sudo -E cargo test`".into(),
            );
        }
        let missing: Vec<&str> = [
            "docker",
            "ip",
            "curl",
            "ping",
            "iptables",
            "iptables-legacy",
            "iptables-nft",
            "nsenter",
            "setpriv",
        ]
        .into_iter()
        .filter(|t| find_in_path(t).is_none())
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing tool(s) {}: install with `apt-get install -y docker.io curl iproute2 iputils-ping iptables util-linux` (or run scripts/setup.sh)",
                missing.join(", ")
            ));
        }
        Ok(())
    }

    /// The engine's version, or why it does not answer.
    pub fn engine_version() -> Result<String, String> {
        let out = run_timeout(
            Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]),
            Duration::from_secs(20),
        )?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !v.is_empty() {
            Ok(v)
        } else {
            Err(String::from_utf8_lossy(&out.stderr)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no answer")
                .trim()
                .to_string())
        }
    }

    /// An exclusive `flock` on a file, released on drop (when the file closes).
    pub struct FileLock {
        _file: File,
    }

    impl FileLock {
        /// Waits (polling, bounded by `timeout`) for the lock.
        pub fn acquire(path: &str, timeout: Duration) -> FileLock {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(path)
                .unwrap_or_else(|e| panic!("open lock file {path}: {e}"));
            let deadline = Instant::now() + timeout;
            loop {
                // SAFETY: flock on an fd we own.
                let rc = unsafe { sys::flock(file.as_raw_fd(), sys::LOCK_EX | sys::LOCK_NB) };
                if rc == 0 {
                    return FileLock { _file: file };
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                    panic!("flock {path}: {e}");
                }
                if Instant::now() >= deadline {
                    panic!("waited {timeout:?} for {path}: another Docker e2e test holds it");
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Held for the whole of one Docker test: the lock, once the engine
    /// answers, stale leftovers are swept and both images exist.
    pub struct DockerSession {
        pub engine_version: String,
        _lock: FileLock,
    }

    impl DockerSession {
        /// Checks the prerequisites (a failure is a one-line panic, never a
        /// skip), takes the lock, sweeps, builds missing images.
        pub fn start() -> DockerSession {
            if let Err(e) = check_tools() {
                panic!("{e}");
            }
            // The lock first: the dockerd restart test stops the engine
            // while it holds it.
            let lock = FileLock::acquire(DOCKER_LOCK, LOCK_TIMEOUT);
            let version = match engine_version() {
                Ok(v) => v,
                Err(e) => match restart_dockerd_left_down() {
                    Some(v) => v,
                    None => panic!(
                        "the Docker engine does not answer ({e}); these tests need a running dockerd{}",
                        if in_ci() { " (CI=true)" } else { "" }
                    ),
                },
            };
            // Namespaces of dead test processes first (they hold veths).
            super::require_prereqs();
            sweep_stale_docker();
            ensure_images();
            DockerSession {
                engine_version: version,
                _lock: lock,
            }
        }
    }

    fn source_fingerprint(root: &Path, rels: &[&str]) -> String {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if p.is_dir() {
                if let Ok(rd) = fs::read_dir(p) {
                    for e in rd.flatten() {
                        walk(&e.path(), out);
                    }
                }
            } else if p.is_file() {
                out.push(p.to_path_buf());
            }
        }
        let mut files = Vec::new();
        for r in rels {
            walk(&root.join(r), &mut files);
        }
        files.sort();
        let mut h = Sha256::new();
        for f in files {
            h.update(
                f.strip_prefix(root)
                    .unwrap_or(&f)
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.update([0]);
            h.update(fs::read(&f).unwrap_or_default());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }

    fn image_id(tag: &str) -> Option<String> {
        docker_try(&["image", "inspect", "--format", "{{.Id}}", tag])
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Builds `tag` with `build` unless the stamp says the image was built
    /// from exactly these sources (so the helper runs the code under test).
    fn ensure_image(tag: &str, fingerprint: &str, build: impl FnOnce() -> Result<(), String>) {
        let stamp = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("docker-e2e-{}.stamp", tag.replace([':', '/'], "_")));
        let current = image_id(tag);
        if let Some(id) = &current {
            if fs::read_to_string(&stamp).ok().as_deref() == Some(&format!("{id} {fingerprint}")) {
                return;
            }
        }
        eprintln!(
            "docker e2e: building {tag} ({})",
            if current.is_some() {
                "sources changed or unstamped"
            } else {
                "missing"
            }
        );
        let t0 = Instant::now();
        if let Err(e) = build() {
            panic!("building test image {tag} failed: {e}");
        }
        let id = image_id(tag).unwrap_or_else(|| panic!("{tag} still missing after its build"));
        let _ = fs::create_dir_all(env!("CARGO_TARGET_TMPDIR"));
        let _ = fs::write(&stamp, format!("{id} {fingerprint}"));
        eprintln!("docker e2e: built {tag} in {:?}", t0.elapsed());
    }

    /// A static busybox on this machine (Debian: busybox-static).
    fn static_busybox() -> Result<PathBuf, String> {
        for p in ["/bin/busybox", "/usr/bin/busybox"] {
            let Ok(b) = fs::read(p) else { continue };
            // ELF64: no PT_INTERP program header means statically linked.
            if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
                continue;
            }
            let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
            let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
            let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
            let dynamic = (0..phnum).any(|i| {
                let o = phoff + i * phentsize;
                o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3
            });
            if !dynamic {
                return Ok(PathBuf::from(p));
            }
        }
        Err("no static busybox: apt-get install -y busybox-static".into())
    }

    /// The helper image (from `helper-image/build.sh`) and the busybox test
    /// image (from `tests/images/busybox`), built when missing or stale.
    /// Callers hold the lock; a process checks once.
    pub fn ensure_images() {
        static DONE: OnceLock<()> = OnceLock::new();
        DONE.get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let fp = helper_fingerprint();
            ensure_image(&helper_image(), &fp, || {
                let out = run_timeout(
                    Command::new("bash")
                        .arg(root.join("helper-image/build.sh"))
                        .arg(helper_image())
                        .current_dir(root),
                    BUILD_TIMEOUT,
                )?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "helper-image/build.sh: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            });
            remove_stale_helper_images();
            let busybox = static_busybox().unwrap_or_else(|e| panic!("{e}"));
            let dockerfile = root.join("tests/images/busybox/Dockerfile");
            let mut h = Sha256::new();
            h.update(
                fs::read(&dockerfile).unwrap_or_else(|e| panic!("{}: {e}", dockerfile.display())),
            );
            h.update(fs::read(&busybox).unwrap());
            let fp = hex::encode(h.finalize());
            ensure_image(BUSYBOX_IMAGE, &fp, || {
                let ctx = TempDir::new("busybox-ctx");
                fs::copy(&dockerfile, ctx.join("Dockerfile")).map_err(|e| e.to_string())?;
                fs::copy(&busybox, ctx.join("busybox")).map_err(|e| e.to_string())?;
                let out = run_timeout(
                    Command::new("docker")
                        .args(["build", "--quiet", "-t", BUSYBOX_IMAGE])
                        .arg(ctx.path())
                        .env("DOCKER_BUILDKIT", "0"),
                    Duration::from_secs(300),
                )?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            });
        });
    }

    /// Where each run notes the e2e helper image it uses (the file's mtime).
    const IMAGE_STAMPS: &str = "/var/tmp/netconnect-e2e-images";

    /// Each change to the sources gets its own e2e helper image; without
    /// this they pile up in the engine (a few MB each). An image goes when
    /// it was built more than two hours ago and no run has noted using it
    /// for two hours: every test process notes its own at start, and a run
    /// (CI's limit is 90 min) outlives neither.
    fn remove_stale_helper_images() {
        let stamp = |image: &str| Path::new(IMAGE_STAMPS).join(image.replace([':', '/'], "_"));
        let _ = fs::create_dir_all(IMAGE_STAMPS);
        let _ = File::create(stamp(&helper_image()));
        let used_lately = |image: &str| {
            fs::metadata(stamp(image))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(2 * 3600))
        };
        let Ok(listing) = docker_try(&[
            "images",
            "--filter",
            "reference=netconnect-helper:*-e2e-*",
            "--format",
            "{{.Repository}}:{{.Tag}}\t{{.CreatedSince}}",
        ]) else {
            return;
        };
        let current = helper_image();
        for line in listing.lines() {
            let Some((image, since)) = line.split_once('\t') else {
                continue;
            };
            if image != current
                && created_hours_ago(since).is_some_and(|h| h >= 2)
                && !used_lately(image)
            {
                let _ = docker_try(&["rmi", image]);
                let _ = fs::remove_file(stamp(image));
            }
        }
    }

    /// Docker's "CreatedSince" ("45 minutes ago", "3 hours ago", "2 days
    /// ago", "About an hour ago") in whole hours.
    fn created_hours_ago(since: &str) -> Option<u64> {
        let mut words = since.split_whitespace();
        let n = match words.next()? {
            "About" | "an" | "a" => 1,
            w => w.parse().ok()?,
        };
        let unit = words.find(|w| !matches!(*w, "an" | "a"))?;
        let hours = match unit.trim_end_matches('s') {
            "second" | "minute" => 0,
            "hour" => 1,
            "day" => 24,
            "week" => 24 * 7,
            "month" => 24 * 30,
            "year" => 24 * 365,
            _ => return None,
        };
        Some(n * hours)
    }

    // -----------------------------------------------------------------------
    // Sweeping what killed test processes left behind
    // -----------------------------------------------------------------------

    /// Whether `name` is an interface stem `nct<pid36>x<n36>...` of a test
    /// process that no longer exists. Base 36 has an `x` digit, so every
    /// split is a candidate pid, and all of them must be dead.
    fn stem_of_dead(name: &str) -> bool {
        let Some(rest) = name.strip_prefix("nct") else {
            return false;
        };
        let pids: Vec<u32> = rest
            .match_indices('x')
            .filter_map(|(i, _)| u32::from_str_radix(&rest[..i], 36).ok())
            .collect();
        !pids.is_empty() && pids.iter().all(|p| !pid_alive(*p))
    }

    /// Removes, for test processes that no longer exist: their containers and
    /// networks (by label), helpers of their interfaces, those interfaces,
    /// and iptables rules that name them.
    pub fn sweep_stale_docker() {
        let dead = |pid: Option<u32>| pid.is_some_and(|p| !pid_alive(p));
        let lines = |args: &[&str]| -> Vec<String> {
            docker_try(args)
                .map(|s| {
                    s.lines()
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let label_fmt = format!("{{{{.ID}}}} {{{{.Label \"{TEST_LABEL}\"}}}}");
        for l in lines(&[
            "ps",
            "-a",
            "--filter",
            &format!("label={TEST_LABEL}"),
            "--format",
            &label_fmt,
        ]) {
            if let Some((id, pid)) = l.split_once(' ') {
                if dead(pid.parse().ok()) {
                    let _ = docker_try(&["rm", "-f", id]);
                }
            }
        }
        let helper_fmt = format!("{{{{.ID}}}} {{{{.Label \"{HELPER_LABEL}\"}}}}");
        for l in lines(&[
            "ps",
            "-a",
            "--filter",
            &format!("label={HELPER_LABEL}"),
            "--format",
            &helper_fmt,
        ]) {
            if let Some((id, iface)) = l.split_once(' ') {
                if stem_of_dead(iface) {
                    // -v: the helper's key volume goes with it.
                    let _ = docker_try(&["rm", "-f", "-v", id]);
                }
            }
        }
        let net_fmt = format!("{{{{.ID}}}} {{{{.Label \"{TEST_LABEL}\"}}}}");
        for l in lines(&[
            "network",
            "ls",
            "--filter",
            &format!("label={TEST_LABEL}"),
            "--format",
            &net_fmt,
        ]) {
            if let Some((id, pid)) = l.split_once(' ') {
                if dead(pid.parse().ok()) {
                    let _ = docker_try(&["network", "rm", id]);
                }
            }
        }
        // Engine 28's DOCKER-FORWARD as the firewall test made it on an
        // older engine: once its rules are gone, an empty, unreferenced
        // chain (`-X` refuses a referenced one; Engine 28's is never empty).
        let stale_chain = |r: &IptRule| {
            r.tokens
                .iter()
                .any(|t| dead(t.strip_prefix("nct-e2e-").and_then(|p| p.parse().ok())))
        };
        let had_stale_forward = list_rules()
            .iter()
            .any(|r| r.table == "filter" && r.has_token("DOCKER-FORWARD") && stale_chain(r));
        // Rules naming a dead test's interface, or carrying its comment.
        for r in list_rules() {
            let stale = r.tokens.iter().any(|t| stem_of_dead(t))
                || r.tokens
                    .iter()
                    .any(|t| dead(t.strip_prefix("nct-e2e-").and_then(|p| p.parse().ok())));
            if stale {
                r.delete();
            }
        }
        if had_stale_forward {
            let rules = run_timeout(
                Command::new("iptables").args(["-w", "5", "-S", "DOCKER-FORWARD"]),
                CMD_TIMEOUT,
            );
            if rules.is_ok_and(|o| {
                o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("-A ")
            }) {
                let _ = run_timeout(
                    Command::new("iptables").args(["-w", "5", "-X", "DOCKER-FORWARD"]),
                    CMD_TIMEOUT,
                );
            }
        }
        if let Ok(o) = run_timeout(Command::new("ip").args(["-o", "link", "show"]), CMD_TIMEOUT) {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                let name = l.split(':').nth(1).unwrap_or("").trim();
                let name = name.split('@').next().unwrap_or("");
                if stem_of_dead(name) {
                    let _ =
                        run_timeout(Command::new("ip").args(["link", "del", name]), CMD_TIMEOUT);
                }
            }
        }
    }

    // -----------------------------------------------------------------------
    // iptables
    // -----------------------------------------------------------------------

    /// One rule as `iptables -S` prints it.
    #[derive(Debug, Clone)]
    pub struct IptRule {
        pub binary: &'static str,
        pub table: &'static str,
        /// `-A CHAIN ...` split on whitespace.
        pub tokens: Vec<String>,
    }

    impl IptRule {
        pub fn line(&self) -> String {
            format!(
                "{} -t {} {}",
                self.binary,
                self.table,
                self.tokens.join(" ")
            )
        }

        /// `iptables -t TABLE -D CHAIN ...`; true if it was deleted.
        pub fn delete(&self) -> bool {
            let mut args: Vec<String> =
                vec!["-w".into(), "5".into(), "-t".into(), self.table.into()];
            args.push("-D".into());
            args.extend(
                self.tokens[1..]
                    .iter()
                    .map(|t| t.trim_matches('"').to_string()),
            );
            run_timeout(Command::new(self.binary).args(&args), CMD_TIMEOUT)
                .map(|o| o.status.success())
                .unwrap_or(false)
        }

        pub fn has_token(&self, t: &str) -> bool {
            self.tokens.iter().any(|x| x.trim_matches('"') == t)
        }
    }

    /// Every rule (not policies or chains) of both families, tables
    /// raw/filter/nat/mangle.
    pub fn list_rules() -> Vec<IptRule> {
        let mut out = Vec::new();
        for binary in ["iptables", "ip6tables"] {
            for table in ["raw", "filter", "nat", "mangle"] {
                let Ok(o) = run_timeout(
                    Command::new(binary).args(["-w", "5", "-t", table, "-S"]),
                    CMD_TIMEOUT,
                ) else {
                    continue;
                };
                for l in String::from_utf8_lossy(&o.stdout).lines() {
                    if l.starts_with("-A ") {
                        out.push(IptRule {
                            binary,
                            table,
                            tokens: l.split_whitespace().map(String::from).collect(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Rules commented `netconnect` that name interface `iface`.
    pub fn netconnect_rules(iface: &str) -> Vec<IptRule> {
        list_rules()
            .into_iter()
            .filter(|r| r.has_token("netconnect") && r.has_token(iface))
            .collect()
    }

    /// Deletes [`netconnect_rules`]; returns how many went.
    pub fn delete_netconnect_rules(iface: &str) -> usize {
        netconnect_rules(iface)
            .iter()
            .filter(|r| r.delete())
            .count()
    }

    // -----------------------------------------------------------------------
    // The Mac: a namespace joined to the root namespace by veth
    // -----------------------------------------------------------------------

    /// A namespace with veth `<stem>m` in the root namespace (10.212.N.1/24)
    /// and `eth0` inside (10.212.N.2/24). Dropping the namespace removes the
    /// veth pair.
    pub struct MacNs {
        pub ns: Netns,
        pub root_veth: String,
        /// The Mac's address, what the VM side uses as the endpoint.
        pub addr: String,
        pub root_addr: String,
    }

    impl MacNs {
        pub fn new(n: u8) -> MacNs {
            let prefix = format!("10.212.{n}.");
            let used = host_ok(&["ip", "-o", "-4", "addr", "show"]);
            assert!(
                !used.contains(&format!(" {prefix}")),
                "10.212.{n}.0/24 is already in use in the root namespace: {used}"
            );
            let ns = Netns::new("mac");
            let root_veth = format!("{}m", unique_ifname_stem());
            host_ok(&[
                "ip",
                "link",
                "add",
                &root_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ]);
            let mac = MacNs {
                ns,
                root_veth,
                addr: format!("{prefix}2"),
                root_addr: format!("{prefix}1"),
            };
            host_ok(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", mac.root_addr),
                "dev",
                &mac.root_veth,
            ]);
            host_ok(&["ip", "link", "set", &mac.root_veth, "up"]);
            mac.ns.ok(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", mac.addr),
                "dev",
                "eth0",
            ]);
            mac.ns.ok(&["ip", "link", "set", "eth0", "up"]);
            wait_ping(&mac.ns, &mac.root_addr, Duration::from_secs(10));
            // The IPv6 link-local address (and its route in table local)
            // appears once DAD is done; wait, so that before/after
            // comparisons of the routes see a settled namespace.
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                let a = mac
                    .ns
                    .ok(&["ip", "-6", "addr", "show", "dev", "eth0", "scope", "link"]);
                if a.contains("inet6") && !a.contains("tentative") {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            mac
        }

        /// `ip route` (both families) in the Mac namespace, sorted lines.
        pub fn routes(&self) -> Vec<String> {
            let mut v: Vec<String> = ["-4", "-6"]
                .iter()
                .flat_map(|f| {
                    self.ns
                        .ok(&["ip", f, "route", "show", "table", "all"])
                        .lines()
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect::<Vec<_>>()
                })
                .collect();
            v.sort();
            v
        }

        /// Names of the links in the Mac namespace, sorted.
        pub fn links(&self) -> Vec<String> {
            let mut v: Vec<String> = self
                .ns
                .ok(&["ip", "-o", "link", "show"])
                .lines()
                .filter_map(|l| l.split(':').nth(1))
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
                .collect();
            v.sort();
            v
        }

        /// The Mac's route for `subnet`, if any (`ip route show SUBNET`).
        pub fn route_for(&self, subnet: &str) -> Option<String> {
            let family = if subnet.contains(':') { "-6" } else { "-4" };
            let out = self.ns.ok(&["ip", family, "route", "show", subnet]);
            let l = out.trim();
            (!l.is_empty()).then(|| l.to_string())
        }

        /// Waits until the route for `subnet` is present (`want`) or gone.
        pub fn wait_route(
            &self,
            subnet: &str,
            want: bool,
            timeout: Duration,
        ) -> Result<Duration, String> {
            let t0 = Instant::now();
            loop {
                let r = self.route_for(subnet);
                if r.is_some() == want {
                    return Ok(t0.elapsed());
                }
                if t0.elapsed() >= timeout {
                    return Err(format!(
                        "route for {subnet} still {} after {timeout:?}; routes: {:?}",
                        if want { "missing" } else { "present" },
                        self.routes()
                    ));
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    // -----------------------------------------------------------------------
    // HTTP and ping from the Mac
    // -----------------------------------------------------------------------

    /// One `curl http://ADDR/` from `ns` (connect ≤ 1 s, whole ≤ `max`).
    pub fn curl_once(ns: &Netns, addr: &str, max: Duration) -> Result<String, String> {
        let m = format!("{:.1}", max.as_secs_f64());
        let url = format!("http://{addr}/");
        let out = ns.exec_timeout(
            &[
                "curl",
                "-sS",
                "--noproxy",
                "*",
                "--connect-timeout",
                "1",
                "-m",
                &m,
                &url,
            ],
            max + Duration::from_secs(5),
        )?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "curl {url}: exit {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Retries `curl http://ADDR/` until it answers `expect` or `timeout`
    /// passes; returns how long it took.
    pub fn wait_curl(
        ns: &Netns,
        addr: &str,
        expect: &str,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let t0 = Instant::now();
        let mut last;
        loop {
            last = match curl_once(ns, addr, Duration::from_secs(2)) {
                Ok(body) if body == expect => return Ok(t0.elapsed()),
                Ok(body) => format!("answered {body:?}, expected {expect:?}"),
                Err(e) => e,
            };
            if t0.elapsed() >= timeout {
                return Err(format!(
                    "no answer from http://{addr}/ within {timeout:?}: {last}"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    // -----------------------------------------------------------------------
    // Containers and networks the test creates
    // -----------------------------------------------------------------------

    /// Containers and networks of one test, named `nct-<pid>-<n>-<tag>` and
    /// labelled with the pid; removed (containers first) on drop.
    #[derive(Default)]
    pub struct DockerThings {
        containers: Mutex<Vec<String>>,
        networks: Mutex<Vec<String>>,
    }

    impl DockerThings {
        pub fn new() -> DockerThings {
            DockerThings::default()
        }

        fn name(tag: &str) -> String {
            format!("nct-{}-{}-{tag}", std::process::id(), next_id())
        }

        fn label() -> String {
            format!("{TEST_LABEL}={}", std::process::id())
        }

        /// `docker network create --subnet SUBNET [opts] NAME`; returns NAME.
        pub fn network(&self, tag: &str, subnet: &str, opts: &[&str]) -> String {
            let name = Self::name(tag);
            self.networks.lock().unwrap().push(name.clone());
            let mut args: Vec<String> = vec![
                "network".into(),
                "create".into(),
                "--label".into(),
                Self::label(),
                "--subnet".into(),
                subnet.into(),
            ];
            args.extend(opts.iter().map(|s| s.to_string()));
            args.push(name.clone());
            docker(&args);
            name
        }

        /// `docker network rm NAME` now (it is no longer removed on drop).
        pub fn remove_network(&self, name: &str) {
            docker(&["network", "rm", name]);
            self.networks.lock().unwrap().retain(|n| n != name);
        }

        /// Runs a busybox web server whose `/` answers its own name, on
        /// `network` (default: the default bridge), optionally at `ip`.
        /// `--init` makes it stop at once on SIGTERM. Returns its name.
        pub fn web(
            &self,
            tag: &str,
            network: Option<&str>,
            ip: Option<&str>,
            extra: &[&str],
        ) -> String {
            let name = Self::name(tag);
            self.containers.lock().unwrap().push(name.clone());
            let mut args: Vec<String> = vec![
                "run".into(),
                "-d".into(),
                "--init".into(),
                "--name".into(),
                name.clone(),
                "--label".into(),
                Self::label(),
            ];
            if let Some(n) = network {
                args.extend(["--network".into(), n.into()]);
            }
            if let Some(ip) = ip {
                args.extend(["--ip".into(), ip.into()]);
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            args.extend([
                BUSYBOX_IMAGE.into(),
                "sh".into(),
                "-c".into(),
                format!(
                    "mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www"
                ),
            ]);
            docker(&args);
            name
        }

        /// `docker run -d --name NAME --label ... ARGS...` (ARGS: options,
        /// image, command); returns NAME. Removed, with its volumes, on drop.
        pub fn run(&self, tag: &str, args: &[&str]) -> String {
            let name = Self::name(tag);
            self.containers.lock().unwrap().push(name.clone());
            let mut all: Vec<String> = vec![
                "run".into(),
                "-d".into(),
                "--name".into(),
                name.clone(),
                "--label".into(),
                Self::label(),
            ];
            all.extend(args.iter().map(|s| s.to_string()));
            docker(&all);
            name
        }

        pub fn remove_container(&self, name: &str) {
            docker(&["rm", "-f", "-v", name]);
            self.containers.lock().unwrap().retain(|n| n != name);
        }
    }

    impl Drop for DockerThings {
        fn drop(&mut self) {
            for c in self.containers.lock().unwrap().drain(..) {
                let _ = docker_try(&["rm", "-f", "-v", &c]);
            }
            for n in self.networks.lock().unwrap().drain(..) {
                let _ = docker_try(&["network", "rm", &n]);
            }
        }
    }

    /// The address of container `name` on `network` ("bridge": the default).
    pub fn container_ip(name: &str, network: &str) -> String {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        docker(&["inspect", "--format", &f, name])
            .trim()
            .to_string()
    }

    pub fn container_running(name: &str) -> bool {
        docker_try(&["inspect", "--format", "{{.State.Running}}", name])
            .map(|s| s.trim() == "true")
            .unwrap_or(false)
    }

    /// `docker inspect NAME` as JSON (the one object).
    pub fn inspect(name: &str) -> serde_json::Value {
        let text = docker(&["inspect", name]);
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("docker inspect {name}: {e}"));
        v[0].clone()
    }

    // -----------------------------------------------------------------------
    // `netconnect up` and its VM side
    // -----------------------------------------------------------------------

    /// The VM side of one `up`: its helper container
    /// `netconnect-helper-<vm_if>`, the interface `vm_if` in the root
    /// namespace and the `netconnect` iptables rules naming it. Drop removes
    /// them all (drop the `up` process first).
    pub struct VmSide {
        pub vm_if: String,
    }

    impl VmSide {
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
            use std::os::fd::{FromRawFd, OwnedFd};
            let (mut master, mut slave) = (-1, -1);
            let size = super::sys::Winsize {
                ws_row: 40,
                ws_col: 120,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: out-pointers to two ints, no name, default termios.
            let rc = unsafe {
                super::sys::openpty(
                    &mut master,
                    &mut slave,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    &size,
                )
            };
            assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
            // Not inherited by other children spawned meanwhile (the copy
            // below would never see EIO), nor by netconnect.
            for fd in [master, slave] {
                // SAFETY: fcntl on descriptors openpty just returned.
                unsafe { super::sys::fcntl(fd, super::sys::F_SETFD, super::sys::FD_CLOEXEC) };
            }
            // SAFETY: openpty returned two fresh descriptors we now own.
            let (mut master, slave) = unsafe {
                (
                    File::from(OwnedFd::from_raw_fd(master)),
                    OwnedFd::from_raw_fd(slave),
                )
            };
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
        pub fn wait_log(
            &mut self,
            pat: &str,
            n: usize,
            timeout: Duration,
        ) -> Result<Duration, String> {
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

    // -----------------------------------------------------------------------
    // dockerd: restarting it the way it was started
    // -----------------------------------------------------------------------

    /// How the running dockerd was started, read from /proc, so that it can
    /// be started again the same way.
    #[derive(Clone)]
    pub enum DockerdStart {
        /// systemd manages it: `systemctl restart docker`.
        Systemd,
        /// A plain process (e.g. start-stop-daemon at boot): its argv,
        /// environment, directory and the file its output went to.
        Plain {
            argv: Vec<std::ffi::OsString>,
            env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
            cwd: PathBuf,
            stdout: Option<PathBuf>,
            stderr: Option<PathBuf>,
        },
    }

    /// Whether `pid` is a zombie (exited, not yet reaped). Where PID 1 reaps
    /// orphans late, a stopped dockerd lingers as one for a while.
    pub fn is_zombie(pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(false)
    }

    /// Shows how, not the environment (it may hold credentials).
    impl std::fmt::Debug for DockerdStart {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                DockerdStart::Systemd => f.write_str("systemctl (docker.service)"),
                DockerdStart::Plain {
                    argv,
                    env,
                    cwd,
                    stdout,
                    ..
                } => write!(
                    f,
                    "{argv:?} in {} with {} environment variables, output to {stdout:?}",
                    cwd.display(),
                    env.len()
                ),
            }
        }
    }

    /// The lowest pid whose comm is `dockerd`, zombies excepted.
    pub fn dockerd_pid() -> Option<u32> {
        let mut pids: Vec<u32> = fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        pids.into_iter().find(|p| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim_end() == "dockerd")
                && !is_zombie(*p)
        })
    }

    impl DockerdStart {
        pub fn of(pid: u32) -> Result<DockerdStart, String> {
            use std::os::unix::ffi::OsStrExt;
            let init = fs::read_to_string("/proc/1/comm").unwrap_or_default();
            if init.trim() == "systemd" {
                let active = run_timeout(
                    Command::new("systemctl").args(["is-active", "--quiet", "docker"]),
                    CMD_TIMEOUT,
                );
                if active.is_ok_and(|o| o.status.success()) {
                    return Ok(DockerdStart::Systemd);
                }
            }
            let read = |f: &str| {
                fs::read(format!("/proc/{pid}/{f}")).map_err(|e| format!("/proc/{pid}/{f}: {e}"))
            };
            let split = |b: &[u8]| -> Vec<std::ffi::OsString> {
                b.split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| OsStr::from_bytes(s).to_os_string())
                    .collect()
            };
            let argv = split(&read("cmdline")?);
            if argv.is_empty() {
                return Err(format!("dockerd {pid} has no command line"));
            }
            let env = split(&read("environ")?)
                .into_iter()
                .filter_map(|kv| {
                    let b = kv.as_bytes();
                    let i = b.iter().position(|c| *c == b'=')?;
                    Some((
                        OsStr::from_bytes(&b[..i]).to_os_string(),
                        OsStr::from_bytes(&b[i + 1..]).to_os_string(),
                    ))
                })
                .collect();
            let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| "/".into());
            let file = |fd: u32| {
                fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .ok()
                    .filter(|p| p.is_absolute() && p.is_file())
            };
            Ok(DockerdStart::Plain {
                argv,
                env,
                cwd,
                stdout: file(1),
                stderr: file(2),
            })
        }

        /// Starts dockerd again, detached (own session, not our child for
        /// long: a thread reaps it), output appended where it went before.
        pub fn start(&self) -> Result<(), String> {
            match self {
                DockerdStart::Systemd => {
                    let o = run_timeout(
                        Command::new("systemctl").args(["start", "docker"]),
                        Duration::from_secs(90),
                    )?;
                    if o.status.success() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&o.stderr).into_owned())
                    }
                }
                DockerdStart::Plain {
                    argv,
                    env,
                    cwd,
                    stdout,
                    stderr,
                } => {
                    use std::os::unix::process::CommandExt;
                    let open = |p: &Option<PathBuf>| -> Stdio {
                        p.as_ref()
                            .and_then(|p| OpenOptions::new().append(true).open(p).ok())
                            .map(Stdio::from)
                            .unwrap_or_else(Stdio::null)
                    };
                    let mut c = Command::new(&argv[0]);
                    c.args(&argv[1..])
                        .env_clear()
                        .envs(env.iter().map(|(k, v)| (k, v)))
                        .current_dir(cwd)
                        .stdin(Stdio::null())
                        .stdout(open(stdout))
                        .stderr(open(stderr));
                    // SAFETY: setsid is async-signal-safe.
                    unsafe {
                        c.pre_exec(|| {
                            sys::setsid();
                            Ok(())
                        });
                    }
                    let mut child = c.spawn().map_err(|e| format!("start {:?}: {e}", argv[0]))?;
                    thread::spawn(move || {
                        let _ = child.wait();
                    });
                    Ok(())
                }
            }
        }
    }

    /// Waits until `docker version` answers.
    pub fn wait_engine(timeout: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        loop {
            match engine_version() {
                Ok(_) => return Ok(t0.elapsed()),
                Err(e) if t0.elapsed() >= timeout => {
                    return Err(format!("the engine did not answer within {timeout:?}: {e}"))
                }
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Restarts dockerd the way it was started, and guarantees on drop that
    /// one is running and answering again, whatever happened in between.
    pub struct DockerdRestart {
        pub how: DockerdStart,
        pub old_pid: u32,
    }

    impl DockerdRestart {
        pub fn prepare() -> DockerdRestart {
            let pid = dockerd_pid().expect("no dockerd process visible in /proc");
            let how = DockerdStart::of(pid).unwrap_or_else(|e| panic!("{e}"));
            DockerdRestart { how, old_pid: pid }
        }

        /// Stops dockerd (SIGTERM, or systemctl) and waits ≤ `timeout` for it
        /// to be gone. Returns how long that took.
        pub fn stop(&self, timeout: Duration) -> Result<Duration, String> {
            // If this process dies before dockerd is back (a runner's
            // timeout), the next Docker test starts it from this record.
            let record = serde_json::json!({
                "pid": std::process::id(),
                "how": self.how.to_json(),
            });
            OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(DOCKERD_RECORD)
                .and_then(|mut f| f.write_all(record.to_string().as_bytes()))
                .map_err(|e| format!("writing {DOCKERD_RECORD}: {e}"))?;
            let t0 = Instant::now();
            match self.how {
                DockerdStart::Systemd => {
                    run_timeout(Command::new("systemctl").args(["stop", "docker"]), timeout)?;
                }
                DockerdStart::Plain { .. } => {
                    send_signal(self.old_pid, SIGTERM);
                }
            }
            while pid_alive(self.old_pid) && !is_zombie(self.old_pid) {
                if t0.elapsed() >= timeout {
                    return Err(format!(
                        "dockerd {} still running {timeout:?} after SIGTERM",
                        self.old_pid
                    ));
                }
                thread::sleep(Duration::from_millis(100));
            }
            Ok(t0.elapsed())
        }

        pub fn start(&self) -> Result<(), String> {
            self.how.start()
        }
    }

    impl Drop for DockerdRestart {
        fn drop(&mut self) {
            if dockerd_pid().is_none() {
                eprintln!(
                    "docker e2e: dockerd is not running; starting it again ({:?})",
                    self.how
                );
                if let Err(e) = self.how.start() {
                    eprintln!("docker e2e: CANNOT RESTART dockerd: {e}");
                }
            }
            match wait_engine(Duration::from_secs(90)) {
                Ok(_) => {
                    let _ = fs::remove_file(DOCKERD_RECORD);
                }
                Err(e) => {
                    eprintln!("docker e2e: dockerd does not answer after the restart test: {e}")
                }
            }
        }
    }

    /// Where [`DockerdRestart::stop`] notes how to start dockerd again.
    pub const DOCKERD_RECORD: &str = "/run/netconnect-docker-e2e-dockerd.json";

    /// The engine does not answer: if a restart test died with dockerd
    /// stopped (its record is there, its process is gone, no dockerd runs),
    /// start dockerd the way it was started. Returns the engine's version.
    fn restart_dockerd_left_down() -> Option<String> {
        let text = fs::read_to_string(DOCKERD_RECORD).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let pid = v["pid"].as_u64()? as u32;
        if pid_alive(pid) || dockerd_pid().is_some() {
            return None;
        }
        let how = DockerdStart::from_json(&v["how"])?;
        eprintln!(
            "docker e2e: dockerd was left stopped by test process {pid}; starting it ({how:?})"
        );
        how.start().ok()?;
        wait_engine(Duration::from_secs(90)).ok()?;
        let _ = fs::remove_file(DOCKERD_RECORD);
        engine_version().ok()
    }

    impl DockerdStart {
        fn to_json(&self) -> serde_json::Value {
            let s = |v: &std::ffi::OsStr| v.to_string_lossy().into_owned();
            match self {
                DockerdStart::Systemd => serde_json::json!("systemd"),
                DockerdStart::Plain {
                    argv,
                    env,
                    cwd,
                    stdout,
                    stderr,
                } => serde_json::json!({
                    "argv": argv.iter().map(|a| s(a)).collect::<Vec<_>>(),
                    "env": env.iter().map(|(k, v)| [s(k), s(v)]).collect::<Vec<_>>(),
                    "cwd": cwd,
                    "stdout": stdout,
                    "stderr": stderr,
                }),
            }
        }

        fn from_json(v: &serde_json::Value) -> Option<DockerdStart> {
            if v == "systemd" {
                return Some(DockerdStart::Systemd);
            }
            let strs = |v: &serde_json::Value| -> Option<Vec<String>> {
                v.as_array()?
                    .iter()
                    .map(|x| x.as_str().map(String::from))
                    .collect()
            };
            let path = |v: &serde_json::Value| v.as_str().map(PathBuf::from);
            Some(DockerdStart::Plain {
                argv: strs(&v["argv"])?.into_iter().map(Into::into).collect(),
                env: v["env"]
                    .as_array()?
                    .iter()
                    .filter_map(|kv| Some((kv[0].as_str()?.into(), kv[1].as_str()?.into())))
                    .collect(),
                cwd: path(&v["cwd"]).unwrap_or_else(|| "/".into()),
                stdout: path(&v["stdout"]),
                stderr: path(&v["stderr"]),
            })
        }
    }
}

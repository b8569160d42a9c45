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
    }
    pub const CLONE_NEWNET: c_int = 0x4000_0000;
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

//! Running processes: bounded (every helper command is killed after a
//! timeout, its output captured even then), never outliving the test
//! (`die_with_parent`), and signalled by pid.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use nix::libc::{SIGINT, SIGKILL, SIGTERM};

/// Default bound for one helper command (`ip`, `wg`, ...).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Makes the child get SIGKILL if the thread that spawned it dies (e.g. the
/// test process is killed by a runner timeout), so no daemon outlives its
/// test. Spawn from the thread that owns the guard (the test's thread).
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs in the hook.
    // (nix's wrapper, set_pdeathsig, needs its `process` feature, which
    // netconnect does not use.)
    unsafe {
        cmd.pre_exec(|| {
            nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, SIGKILL as nix::libc::c_ulong);
            Ok(())
        });
    }
}

/// Send `sig` to process `pid` (0: only check that it exists). Returns false
/// if the process does not exist (or `sig` is no signal).
pub fn send_signal(pid: u32, sig: i32) -> bool {
    let Ok(sig) = (sig != 0).then(|| Signal::try_from(sig)).transpose() else {
        return false;
    };
    kill(Pid::from_raw(pid as i32), sig).is_ok()
}

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

pub(crate) fn cmd<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(&args[0]);
    c.args(&args[1..]);
    c
}

/// Non-empty lines of `s`.
pub fn nonempty_lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

//! One Docker test at a time: the prerequisites, the engine, the lock held
//! for the whole test, and what it sets up before the test runs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::geteuid;

use super::dockerd::restart_dockerd_left_down;
use super::images::ensure_images;
use super::in_ci;
use super::sweep::sweep_stale_docker;
use crate::prereqs::{find_in_path, require_prereqs};
use crate::process::run_timeout;

/// Serialises the Docker tests (they share the root namespace and dockerd).
pub const DOCKER_LOCK: &str = "/run/netconnect-docker-e2e.lock";
/// Bound for waiting for the lock (the other tests run meanwhile).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(25 * 60);

/// Everything but the engine: root, tools, a static busybox.
fn check_tools() -> Result<(), String> {
    if !geteuid().is_root() {
        return Err("the Docker e2e tests must run as root; run e.g. `sudo -E cargo test`".into());
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

/// An exclusive `flock` on a file, released on drop.
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Waits (polling, bounded by `timeout`) for the lock.
    pub fn acquire(path: &str, timeout: Duration) -> FileLock {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .unwrap_or_else(|e| panic!("open lock file {path}: {e}"));
        let deadline = Instant::now() + timeout;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return FileLock { _lock: lock },
                Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => file = f,
                Err((_, e)) => panic!("flock {path}: {e}"),
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
        require_prereqs();
        sweep_stale_docker();
        ensure_images();
        DockerSession {
            engine_version: version,
            _lock: lock,
        }
    }
}

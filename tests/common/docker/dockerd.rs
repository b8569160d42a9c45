//! Restarting dockerd the way it was started (systemd or a plain process),
//! and starting it again if a test died with it stopped.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::session::engine_version;
use crate::prereqs::pid_alive;
use crate::process::{run_timeout, send_signal, CMD_TIMEOUT, SIGTERM};

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
                // SAFETY: setsid is async-signal-safe. (nix's wrapper needs
                // its `process` feature, unused by netconnect.)
                unsafe {
                    c.pre_exec(|| {
                        nix::libc::setsid();
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
pub(crate) fn restart_dockerd_left_down() -> Option<String> {
    let text = fs::read_to_string(DOCKERD_RECORD).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = v["pid"].as_u64()? as u32;
    if pid_alive(pid) || dockerd_pid().is_some() {
        return None;
    }
    let how = DockerdStart::from_json(&v["how"])?;
    eprintln!("docker e2e: dockerd was left stopped by test process {pid}; starting it ({how:?})");
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

//! Docker Compose v1 (`docker-compose`, Debian's 1.29) projects that a
//! test writes and starts in the root namespace (the VM): a project name
//! of this process, `down` on drop. A test's compose file labels every
//! service and network with [`TEST_LABEL`] (see
//! [`ComposeProject::test_label`]), so that what a killed test left is
//! swept by the next one ([`super::sweep_stale_docker`]).

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use super::commands::docker_try;
use super::{DOCKER_TIMEOUT, TEST_LABEL};
use crate::names::TempDir;
use crate::prereqs::find_in_path;
use crate::process::{describe, run_timeout};

/// What installs Compose v1 (scripts/setup.sh does).
pub const COMPOSE_HINT: &str =
    "apt-get install -y --no-install-recommends docker-compose (or run scripts/setup.sh)";

/// The label Compose v1 and v2 put on a project's containers and networks.
pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";

/// `docker-compose version --short` of a Compose v1 on PATH; panics with a
/// one-line message otherwise (never a skip). Checked once per process.
pub fn require_compose() -> String {
    static CHECK: OnceLock<Result<String, String>> = OnceLock::new();
    let res = CHECK.get_or_init(|| {
        if find_in_path("docker-compose").is_none() {
            return Err(format!("missing tool docker-compose: install with `{COMPOSE_HINT}`"));
        }
        let out = run_timeout(
            Command::new("docker-compose").args(["version", "--short"]),
            DOCKER_TIMEOUT,
        )?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || v.is_empty() {
            return Err(format!(
                "`docker-compose version --short` failed ({}): {}; reinstall with `{COMPOSE_HINT}`",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // v1 names containers PROJECT_SERVICE_N, which these tests rely on.
        if !v.starts_with("1.") {
            return Err(format!(
                "docker-compose {v} is not Compose v1 (containers named project_service_1): install with `{COMPOSE_HINT}`"
            ));
        }
        Ok(v)
    });
    match res {
        Ok(v) => v.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

/// A Compose project named `nct<pid hex><3 hex digits>` (letters and
/// digits only, so Compose keeps it as it is and the names it makes are
/// predictable), its file in a temporary directory. Drop runs `down`
/// (containers, networks, volumes), then removes whatever still carries
/// the project's label.
pub struct ComposeProject {
    pub name: String,
    pub file: PathBuf,
    downed: bool,
    _dir: TempDir,
}

impl ComposeProject {
    /// Writes `yaml(project name)` as the project's compose file.
    pub fn new(yaml: impl FnOnce(&str) -> String) -> ComposeProject {
        require_compose();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("nct{:x}{:03x}", std::process::id(), (nanos >> 10) % 0x1000);
        let dir = TempDir::new("compose");
        let file = dir.join("docker-compose.yml");
        fs::write(&file, yaml(&name)).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        ComposeProject {
            name,
            file,
            downed: false,
            _dir: dir,
        }
    }

    /// `TEST_LABEL: "PID"`, a YAML mapping entry for a service's or a
    /// network's `labels:`.
    pub fn test_label() -> String {
        format!("{TEST_LABEL}: \"{}\"", std::process::id())
    }

    /// `docker-compose -p NAME -f FILE ARGS...`, bounded; `Err` with its
    /// output unless it exits 0.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new("docker-compose");
        c.arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(&self.file)
            .args(args)
            .env_remove("COMPOSE_PROJECT_NAME")
            .env_remove("COMPOSE_FILE");
        let desc = describe(&c);
        let out = run_timeout(&mut c, DOCKER_TIMEOUT)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("`{desc}` failed ({}): {}", out.status, text.trim()))
        }
    }

    /// Like [`ComposeProject::try_run`]; panics unless it exits 0.
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `up -d SERVICES...` (every service when empty). The images are
    /// local: Compose pulls only a missing one, and `--no-build` keeps
    /// it from building.
    pub fn up(&self, services: &[&str]) -> String {
        let mut args = vec!["up", "-d", "--no-build"];
        args.extend(services);
        self.run(&args)
    }

    /// `down -v --remove-orphans -t 1`; drop does it no more.
    pub fn down(&mut self) -> String {
        let out = self.run(&["down", "-v", "--remove-orphans", "-t", "1"]);
        self.downed = true;
        out
    }

    /// Compose v1's name for replica `n` of `service`: `PROJECT_SERVICE_N`.
    pub fn container(&self, service: &str, n: u32) -> String {
        format!("{}_{service}_{n}", self.name)
    }

    /// The Docker name of the project's network `net`: `PROJECT_NET`.
    pub fn network(&self, net: &str) -> String {
        format!("{}_{net}", self.name)
    }

    /// Ids of the containers (`ps -a`) or networks (`network ls`) that
    /// carry the project's label.
    pub fn leftovers(&self) -> (Vec<String>, Vec<String>) {
        let filter = format!("label={COMPOSE_PROJECT_LABEL}={}", self.name);
        let ids = |args: &[&str]| -> Vec<String> {
            docker_try(args)
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        (
            ids(&["ps", "-a", "-q", "--filter", &filter]),
            ids(&["network", "ls", "-q", "--filter", &filter]),
        )
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if !self.downed {
            if let Err(e) = self.try_run(&["down", "-v", "--remove-orphans", "-t", "1"]) {
                eprintln!("compose project {}: {e}", self.name);
            }
        }
        let (containers, networks) = self.leftovers();
        for c in containers {
            let _ = docker_try(&["rm", "-f", "-v", &c]);
        }
        for n in networks {
            let _ = docker_try(&["network", "rm", &n]);
        }
    }
}

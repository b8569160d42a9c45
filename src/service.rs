//! `netconnect service install|uninstall|status`: netconnect as a macOS
//! LaunchDaemon, for users who do not use Homebrew's `brew services`.
//!
//! The plist is built with the `launchd` crate and the `launchctl` calls
//! are a plan of [`Step`]s, both pure and golden-tested; [`execute`] runs a
//! plan. `--dry-run` prints the plan instead, on any OS, so that the plan
//! can be read (and tested) where no launchd exists.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use launchd::Launchd;

use crate::cli::{ServiceAction, ServiceArgs};
use crate::command::{Cmd, Runner, SystemRunner};

/// The job's label; the plist is `/Library/LaunchDaemons/<LABEL>.plist`.
pub const LABEL: &str = "dev.netconnect.daemon";
pub const PLIST_PATH: &str = "/Library/LaunchDaemons/dev.netconnect.daemon.plist";
/// By absolute path: root never runs what a PATH set by someone else finds.
pub const LAUNCHCTL: &str = "/bin/launchctl";
/// stdout and stderr of the daemon (tracing writes to stderr).
pub const LOG_PATH: &str = "/var/log/netconnect.log";
/// What the service runs after the program path; the Homebrew formula's
/// `service do` block runs the same (a test checks that they agree).
pub const SERVICE_ARGS: &[&str] = &["up"];
/// The plist `brew services` writes for the formula: running both would
/// start two `up`s fighting over the same routes.
pub const HOMEBREW_PLIST: &str = "/Library/LaunchDaemons/homebrew.mxcl.netconnect.plist";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "`netconnect service` manages a macOS LaunchDaemon; on this OS run `netconnect up` \
         under your own service manager (add --dry-run to see what it would do on macOS)"
    )]
    NotMacos,
    #[error(
        "netconnect already runs as a Homebrew service ({HOMEBREW_PLIST}); use \
         `sudo brew services start|stop netconnect`, or first `sudo brew services stop netconnect`"
    )]
    HomebrewService,
    #[error("cannot build the launchd plist: {0}")]
    Plist(String),
    #[error(
        "{problem}, so a user other than root could replace what root runs at every boot; \
         {fix}; or make a copy only root can change (sudo install -d -o root -m 755 \
         /opt/netconnect && sudo install -o root -m 755 {binary} /opt/netconnect/) and run \
         `sudo /opt/netconnect/netconnect service install`"
    )]
    Replaceable {
        binary: String,
        problem: String,
        fix: String,
    },
    #[error("cannot check {}: {error}", path.display())]
    Inspect {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A LaunchDaemon runs its program as root at every boot: if anyone but
/// root can change that program (the file itself, a symlink to it, or any
/// folder on the way to either), they own the machine. Checks the path as
/// given (its folders, and the link itself) and the file it resolves to
/// (its folders, and the file), with the config file's rule
/// ([`crate::config::trust`]): root's, writable by no group or other user,
/// a sticky folder excepted.
pub fn check_only_root_can_replace(binary: &Path) -> Result<(), ServiceError> {
    use std::os::unix::fs::MetadataExt as _;
    let inspect = |path: &Path, e| ServiceError::Inspect {
        path: path.to_owned(),
        error: e,
    };
    let absolute = std::path::absolute(binary).map_err(|e| inspect(binary, e))?;
    let real = std::fs::canonicalize(&absolute).map_err(|e| inspect(&absolute, e))?;
    let mut checked = std::collections::BTreeSet::new();
    for path in [&absolute, &real] {
        for p in path.ancestors() {
            if !checked.insert(p.to_owned()) {
                continue;
            }
            // lstat: a link is checked as a link (whoever owns its folder
            // can swap it), its target on the canonical pass.
            let m = std::fs::symlink_metadata(p).map_err(|e| inspect(p, e))?;
            let is_dir = m.file_type().is_dir();
            let mode = if m.file_type().is_symlink() {
                // A link's own mode means nothing; its folder decides.
                0o755
            } else {
                m.mode()
            };
            crate::config::trust(p, m.uid(), mode, is_dir).map_err(|(problem, fix)| {
                ServiceError::Replaceable {
                    binary: binary.display().to_string(),
                    problem,
                    fix,
                }
            })?;
        }
    }
    Ok(())
}

/// The LaunchDaemon: run `BINARY up` at boot, restart it whenever it
/// exits (`up` exits only on a fatal error or a signal), log to one file.
pub fn plist(binary: &Path) -> Result<Launchd, ServiceError> {
    let perr = |e: launchd::Error| ServiceError::Plist(e.to_string());
    let mut args = vec![binary.to_string_lossy().into_owned()];
    args.extend(SERVICE_ARGS.iter().map(|a| a.to_string()));
    Launchd::new(LABEL, binary)
        .map_err(perr)?
        .with_program_arguments(args)
        .with_run_at_load(true)
        .with_keep_alive(true.into())
        .with_standard_out_path(LOG_PATH)
        .map_err(perr)?
        .with_standard_error_path(LOG_PATH)
        .map_err(perr)
}

pub fn plist_xml(binary: &Path) -> Result<String, ServiceError> {
    let mut buf = Vec::new();
    plist(binary)?
        .to_writer_xml(&mut buf)
        .map_err(|e| ServiceError::Plist(e.to_string()))?;
    buf.push(b'\n');
    String::from_utf8(buf).map_err(|e| ServiceError::Plist(e.to_string()))
}

/// One thing a plan does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run; failure stops the plan.
    Run(Cmd),
    /// Run; failure is expected when there is nothing to undo (a job
    /// that is not loaded).
    RunMayFail(Cmd),
    /// Write a root-owned 0644 file (launchd ignores a plist that others
    /// can write).
    Write { path: PathBuf, contents: String },
    /// Remove a file if it exists.
    Remove { path: PathBuf },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Run(c) => write!(f, "{c}"),
            Step::RunMayFail(c) => write!(f, "{c}  # may fail: nothing loaded"),
            Step::Write { path, contents } => {
                write!(f, "write {} (0644):\n{contents}", path.display())
            }
            Step::Remove { path } => write!(f, "rm -f {}", path.display()),
        }
    }
}

fn bootout() -> Cmd {
    Cmd::new(
        LAUNCHCTL,
        ["bootout".to_string(), format!("system/{LABEL}")],
    )
}

/// Unload any older version, write the plist, load it (which starts it:
/// RunAtLoad).
pub fn install_plan(binary: &Path) -> Result<Vec<Step>, ServiceError> {
    Ok(vec![
        Step::RunMayFail(bootout()),
        Step::Write {
            path: PLIST_PATH.into(),
            contents: plist_xml(binary)?,
        },
        Step::Run(Cmd::new(LAUNCHCTL, ["bootstrap", "system", PLIST_PATH])),
    ])
}

/// Stop and unload the job (launchd sends SIGTERM; `up` removes its routes,
/// interface and helper), then remove the plist.
pub fn uninstall_plan() -> Vec<Step> {
    vec![
        Step::RunMayFail(bootout()),
        Step::Remove {
            path: PLIST_PATH.into(),
        },
    ]
}

pub fn status_command() -> Cmd {
    Cmd::new(LAUNCHCTL, ["print".to_string(), format!("system/{LABEL}")])
}

/// Run a plan; stops at the first failing step, with the command line and
/// stderr in the error.
pub async fn execute(plan: &[Step], runner: &impl Runner) -> anyhow::Result<()> {
    for step in plan {
        match step {
            Step::Run(c) => {
                runner.run(c).await?;
            }
            Step::RunMayFail(c) => {
                if let Err(e) = runner.run(c).await {
                    tracing::debug!(error = %e, "nothing to undo");
                }
            }
            Step::Write { path, contents } => {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::write(path, contents)
                    .with_context(|| format!("writing {}", path.display()))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .with_context(|| format!("setting the mode of {}", path.display()))?;
            }
            Step::Remove { path } => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => {}
            },
        }
    }
    Ok(())
}

fn render(title: &str, plan: &[Step]) -> String {
    let mut out = format!("# {title} (dry run: nothing is changed)\n");
    for s in plan {
        out.push_str(&s.to_string());
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

pub async fn run(args: ServiceArgs) -> anyhow::Result<()> {
    let dry_run = match &args.action {
        ServiceAction::Install { dry_run, .. } | ServiceAction::Uninstall { dry_run } => *dry_run,
        ServiceAction::Status => false,
    };
    if !dry_run && !crate::platform::HAS_LAUNCHD {
        return Err(ServiceError::NotMacos.into());
    }
    match args.action {
        ServiceAction::Install { dry_run, binary } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe().context("finding this program's path")?,
            };
            let plan = install_plan(&binary)?;
            if dry_run {
                print!("{}", render("netconnect service install", &plan));
                return Ok(());
            }
            if Path::new(HOMEBREW_PLIST).exists() {
                return Err(ServiceError::HomebrewService.into());
            }
            crate::platform::require_root("service install")?;
            check_only_root_can_replace(&binary)?;
            execute(&plan, &SystemRunner).await?;
            println!("installed and started {LABEL}; logs: {LOG_PATH}");
        }
        ServiceAction::Uninstall { dry_run } => {
            let plan = uninstall_plan();
            if dry_run {
                print!("{}", render("netconnect service uninstall", &plan));
                return Ok(());
            }
            crate::platform::require_root("service uninstall")?;
            execute(&plan, &SystemRunner).await?;
            println!("stopped and removed {LABEL}");
        }
        ServiceAction::Status => {
            match SystemRunner.run(&status_command()).await {
                Ok(out) => print!("{out}"),
                Err(_) if !Path::new(PLIST_PATH).exists() => {
                    anyhow::bail!("{LABEL} is not installed; install it with `sudo netconnect service install`")
                }
                Err(e) => return Err(e).context(format!("{PLIST_PATH} exists but is not loaded")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::RecordingRunner;

    const PLIST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>dev.netconnect.daemon</string>
	<key>Program</key>
	<string>/usr/local/bin/netconnect</string>
	<key>ProgramArguments</key>
	<array>
		<string>/usr/local/bin/netconnect</string>
		<string>up</string>
	</array>
	<key>KeepAlive</key>
	<true/>
	<key>RunAtLoad</key>
	<true/>
	<key>StandardOutPath</key>
	<string>/var/log/netconnect.log</string>
	<key>StandardErrorPath</key>
	<string>/var/log/netconnect.log</string>
</dict>
</plist>
"#;

    #[test]
    fn plist_golden() {
        assert_eq!(
            plist_xml(Path::new("/usr/local/bin/netconnect")).unwrap(),
            PLIST
        );
    }

    #[test]
    fn install_and_uninstall_plans_golden() {
        let plan = install_plan(Path::new("/usr/local/bin/netconnect")).unwrap();
        assert_eq!(
            render("netconnect service install", &plan),
            format!(
                "# netconnect service install (dry run: nothing is changed)\n\
                 /bin/launchctl bootout system/dev.netconnect.daemon  # may fail: nothing loaded\n\
                 write /Library/LaunchDaemons/dev.netconnect.daemon.plist (0644):\n\
                 {PLIST}\
                 /bin/launchctl bootstrap system /Library/LaunchDaemons/dev.netconnect.daemon.plist\n"
            )
        );
        assert_eq!(
            render("netconnect service uninstall", &uninstall_plan()),
            "# netconnect service uninstall (dry run: nothing is changed)\n\
             /bin/launchctl bootout system/dev.netconnect.daemon  # may fail: nothing loaded\n\
             rm -f /Library/LaunchDaemons/dev.netconnect.daemon.plist\n"
        );
        assert_eq!(
            status_command().to_string(),
            "/bin/launchctl print system/dev.netconnect.daemon"
        );
    }

    /// Run as root (as CI does) each case is made for real; as anyone else,
    /// every file is theirs, which the check must refuse.
    #[test]
    fn install_refuses_a_binary_others_can_replace() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = nix::unistd::geteuid().is_root();
        let dir = std::env::temp_dir().join(format!("nc-svc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bin_dir = dir.join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        let set_mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set_mode(&dir, 0o755);
        set_mode(&bin_dir, 0o755);
        let bin = bin_dir.join("netconnect");
        std::fs::write(&bin, b"#!").unwrap();
        set_mode(&bin, 0o755);
        let link = dir.join("netconnect-link");
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        let refused = |p: &Path| match check_only_root_can_replace(p) {
            Err(e @ ServiceError::Replaceable { .. }) => Some(e.to_string()),
            Err(e) => panic!("{e}"),
            Ok(()) => None,
        };
        if !root {
            let e = refused(&bin).expect("a binary its user owns must be refused");
            assert!(e.contains("not root"), "{e}");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        assert_eq!(refused(&bin), None, "root's 0755 binary in root's folders");
        assert_eq!(refused(&link), None, "a root link to it");

        set_mode(&bin, 0o775);
        let e = refused(&bin).expect("group-writable binary");
        assert!(e.contains("writable by group or others"), "{e}");
        assert!(
            e.contains(&format!("sudo chmod go-w {}", bin.display())),
            "{e}"
        );
        // Through a link, the target is checked too.
        assert!(
            refused(&link).is_some(),
            "group-writable target behind a link"
        );
        set_mode(&bin, 0o755);

        // A folder on the way that a user owns: they can swap the file.
        nix::unistd::chown(&bin_dir, Some(65534.into()), None).unwrap();
        let e = refused(&bin).expect("folder owned by uid 65534");
        assert!(
            e.starts_with(&format!(
                "its folder {} is owned by uid 65534, not root, so a user other than root",
                bin_dir.display()
            )),
            "{e}"
        );
        assert!(refused(&link).is_some(), "a link into that folder");
        nix::unistd::chown(&bin_dir, Some(0.into()), None).unwrap();

        // The link's own folder is writable by others: the link can be swapped.
        set_mode(&dir, 0o777);
        assert!(refused(&link).is_some(), "link in a world-writable folder");
        assert!(refused(&bin).is_some(), "and the binary below it too");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn execute_tolerates_only_the_expected_failure() {
        let dir = std::env::temp_dir().join(format!("nc-service-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("x.plist");
        let plan = vec![
            Step::RunMayFail(bootout()),
            Step::Write {
                path: file.clone(),
                contents: "<plist/>".into(),
            },
            Step::Run(Cmd::new(LAUNCHCTL, ["bootstrap", "system", "x"])),
            Step::Remove { path: file.clone() },
        ];
        let runner = RecordingRunner::new()
            .fail(
                "/bin/launchctl bootout",
                "Boot-out failed: 3: No such process",
            )
            .fail(
                "/bin/launchctl bootstrap",
                "Bootstrap failed: 5: Input/output error",
            );
        let e = execute(&plan, &runner).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/bin/launchctl bootstrap system x` failed (exit status: 1): Bootstrap failed: 5: Input/output error"
        );
        // Stopped there: the file was written with launchd's mode, not removed.
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(runner.ran().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! `netconnect bugreport`: everything a stranger's machine can tell us
//! about a failure, in one archive they can attach as it is. The first run
//! on a machine we never tested (the first real Mac) fails in ways no test
//! here foresaw; this is how that run reaches us.
//!
//! Each section is read on its own and bounded in time; one that cannot
//! be read (no root for the control socket, no engine, no journal access)
//! is named in `missing.txt` with the reason, and the report is still
//! written. Only failing to write the archive is an error. Every section
//! passes through [`redact`] before it is kept.
//!
//! The reading is here ([`collect`]); the report's forms are in
//! [`bundle`], the rules of what may leave the machine in [`redact`].

pub mod bundle;
pub mod redact;

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bollard::query_parameters::{InspectContainerOptions, LogsOptionsBuilder};
use futures::StreamExt as _;

use crate::cli::BugreportArgs;
use crate::command::{Cmd, Runner, SystemRunner};
use crate::config::Config;
use crate::control::{self, ControlError};
use crate::docker::Engine;
use crate::settings::Target;
use bundle::{Missing, Section};
use redact::Redaction;

/// How far back the daemon's log is read, and at most how much of it.
const LOG_MINUTES: u64 = 30;
const LOG_LINES: usize = 2000;
const HELPER_LOG_LINES: &str = "200";
/// A section that takes longer is left out (named in `missing.txt`): a
/// wedged engine must not keep the user from sending the rest.
const SECTION_TIMEOUT: Duration = Duration::from_secs(20);
/// Doctor probes through the tunnel with its own timeouts (10 s at most
/// a probe); it gets more than a section.
const DOCTOR_TIMEOUT: Duration = Duration::from_secs(60);

/// What `/info` says about the engine's VM; its `Name` (the host name)
/// and the rest are left out.
const INFO_FIELDS: &[&str] = &[
    "ServerVersion",
    "OperatingSystem",
    "KernelVersion",
    "Architecture",
    "NCPU",
    "MemTotal",
    "Driver",
    "CgroupVersion",
    "SecurityOptions",
];
const VERSION_FIELDS: &[&str] = &[
    "Version",
    "ApiVersion",
    "MinAPIVersion",
    "Os",
    "Arch",
    "KernelVersion",
    "Components",
];

/// `matches` are the subcommand's, for the flags' precedence over the
/// file ([`crate::settings::target`]).
pub async fn run(
    args: BugreportArgs,
    matches: &clap::ArgMatches,
    config_path: &Path,
    socket: &Path,
) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // A file that cannot be read is one more thing the report says, not a
    // reason to send nothing: the flags and defaults stand in for it.
    let (config, config_error) = match crate::config::load(config_path, false) {
        Ok(l) => (l.config, None),
        Err(e) => (crate::config::Config::default(), Some(e.to_string())),
    };
    let target = crate::settings::target(&args.target, matches, &config);
    let mut report = collect(&target, socket, &config, now).await;
    if let Some(e) = config_error {
        report.missing.push(Missing {
            name: "config",
            reason: format!("{e} (the defaults were used)"),
        });
    }
    let sections = finish(&report, &Redaction::from_env());
    if args.stdout {
        print!("{}", bundle::render_text(&sections));
        return Ok(ExitCode::SUCCESS);
    }
    let path = bundle::archive_path(args.output.as_deref(), now);
    bundle::write_archive(&path, &sections, now, sudo_user()).with_context(|| {
        format!(
            "cannot write the bug report to {}; name a folder you can write with --output DIR, \
             or print it with --stdout",
            path.display()
        )
    })?;
    println!("{}", display_path(&path));
    if !report.missing.is_empty() {
        eprintln!(
            "netconnect: {} section(s) could not be read (listed in missing.txt){}",
            report.missing.len(),
            if nix::unistd::geteuid().is_root() {
                ""
            } else {
                "; `sudo netconnect bugreport` reads more"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Under sudo the archive would be root's and readable by root only: the
/// user who asked for it could not attach it. It becomes theirs.
fn sudo_user() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let id = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    Some((id("SUDO_UID")?, id("SUDO_GID")?))
}

/// The path as a user can open it: absolute, so it can be found from the
/// Finder or another shell.
fn display_path(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_owned())
        .display()
        .to_string()
}

/// The sections read, unredacted, and those that could not be.
#[derive(Debug, Default)]
pub struct Report {
    pub sections: Vec<Section>,
    pub missing: Vec<Missing>,
}

impl Report {
    fn keep(&mut self, name: &'static str, r: Result<String, String>) {
        match r {
            Ok(text) => self.sections.push(Section { name, text }),
            Err(reason) => self.missing.push(Missing { name, reason }),
        }
    }
}

/// What is written: every section and `missing.txt`, each redacted
/// (a reason can quote a tool's output too).
pub fn finish(report: &Report, redaction: &Redaction) -> Vec<Section> {
    bundle::with_missing(&report.sections, &report.missing)
        .into_iter()
        .map(|s| Section {
            name: s.name,
            text: redaction.apply(&s.text),
        })
        .collect()
}

/// A section's reading, bounded by `limit`; an error becomes its reason.
async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {}s", limit.as_secs())),
    }
}

/// Every section, in the order of the archive.
pub async fn collect(target: &Target, socket: &Path, config: &Config, now: u64) -> Report {
    let mut r = Report::default();
    r.keep("version.txt", Ok(version_text()));
    r.keep("os.txt", bounded(SECTION_TIMEOUT, os_text()).await);

    // The daemon says which engine and interfaces it uses; without one
    // (or without the right to ask it), the flags and defaults do.
    let mut target = target.clone();
    let snap = match control::status(socket).await {
        Ok(s) => Ok(s),
        Err(ControlError::NotRunning(_)) => {
            Ok(crate::status::offline(&target, socket, config).await)
        }
        Err(e) => Err(e.to_string()),
    };
    match &snap {
        Ok(s) => {
            if let Some(e) = s.engine.as_ref().filter(|_| s.running) {
                target.docker_host = Some(e.host.clone());
            }
            if let Some(t) = &s.tunnel {
                target.interface = t.interface.clone();
            }
            if s.running && !s.helper.vm_interface.is_empty() {
                target.vm_interface = s.helper.vm_interface.clone();
            }
            r.keep(
                "status.json",
                serde_json::to_string_pretty(s)
                    .map(|j| j + "\n")
                    .map_err(|e| e.to_string()),
            );
        }
        Err(e) => r.keep("status.json", Err(e.clone())),
    }

    r.keep(
        "doctor.txt",
        bounded(DOCTOR_TIMEOUT, doctor_text(&target, socket)).await,
    );
    r.keep("log.txt", bounded(SECTION_TIMEOUT, log_text(now)).await);

    let router = bounded(
        SECTION_TIMEOUT,
        crate::platform::open_router(&target.interface),
    )
    .await;
    match router {
        Ok(router) => {
            r.keep(
                "interface.txt",
                bounded(SECTION_TIMEOUT, interface_text(&router, &target.interface)).await,
            );
            r.keep(
                "routes.txt",
                bounded(SECTION_TIMEOUT, routes_text(&router, &target.interface)).await,
            );
        }
        Err(e) => {
            r.keep("interface.txt", Err(e.clone()));
            r.keep("routes.txt", Err(e));
        }
    }
    r.keep(
        "resolver.txt",
        bounded(SECTION_TIMEOUT, resolver_text()).await,
    );

    match bounded(SECTION_TIMEOUT, crate::status::connect(&target)).await {
        Ok(engine) => {
            r.keep(
                "engine.json",
                bounded(SECTION_TIMEOUT, engine_text(&engine)).await,
            );
            r.keep(
                "helper.txt",
                bounded(SECTION_TIMEOUT, helper_text(&engine, &target.vm_interface)).await,
            );
        }
        Err(e) => {
            let reason = format!("no Docker engine: {e}");
            r.keep("engine.json", Err(reason.clone()));
            r.keep("helper.txt", Err(reason));
        }
    }
    r
}

/// The version and the build's target, as `--version` and the release's
/// asset names say them.
fn version_text() -> String {
    format!(
        "netconnect {}\ntarget: {}-{}\nuid: {}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
        nix::unistd::geteuid()
    )
}

/// The OS's name and version (`crate::platform::os_name`), then the
/// kernel: `uname` rather than nix's `utsname`, which needs a nix feature
/// this crate does not otherwise build.
async fn os_text() -> Result<String, String> {
    let mut o = crate::platform::os_name().await;
    let kernel = SystemRunner
        .run(&Cmd::new("uname", ["-srm"]))
        .await
        .map_err(|e| e.to_string())?;
    o.push_str(&kernel);
    Ok(o)
}

/// Doctor prints its verdicts as it checks; running this very binary is
/// how its text is had without a second copy of its walk. Its exit code is
/// part of the answer (1: a link is broken), not a failure to read it.
async fn doctor_text(target: &Target, socket: &Path) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--control-socket")
        .arg(socket)
        .args(["doctor", "--interface", &target.interface])
        .args(["--vm-interface", &target.vm_interface])
        .args(["--helper-image", &target.helper_image])
        .env("LC_ALL", "C")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(h) = &target.docker_host {
        cmd.args(["--docker-host", h]);
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run doctor: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        text.push_str(&format!("(stderr)\n{err}"));
    }
    text.push_str(&format!("(exit: {})\n", out.status));
    Ok(text)
}

/// The daemon's log: macOS's launchd log file; on Linux the journal of a
/// systemd unit, else the same file a service may have been told to use.
async fn log_text(now: u64) -> Result<String, String> {
    let since = bundle::rfc3339_utc(now.saturating_sub(LOG_MINUTES * 60));
    let journal = match crate::platform::system_log(LOG_MINUTES).await {
        Some(Ok(t)) => return Ok(bundle::tail_lines(&t, LOG_LINES)),
        Some(Err(e)) => Some(e),
        None => None,
    };
    log_file(Path::new(crate::service::LOG_PATH), &since).map_err(|e| match journal {
        Some(j) => format!("{j}; {e}"),
        None => e,
    })
}

fn log_file(path: &Path, since: &str) -> Result<String, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&text);
    Ok(format!(
        "({}, since {since}Z)\n{}",
        path.display(),
        bundle::tail_recent(&text, since, LOG_LINES)
    ))
}

async fn interface_text(router: &crate::platform::OsRouter, name: &str) -> Result<String, String> {
    let v = router.view().await.map_err(|e| e.to_string())?;
    let mut o = format!(
        "{name}: {} mtu {}\n",
        if v.up { "UP" } else { "DOWN" },
        v.mtu.map_or_else(|| "?".into(), |m| m.to_string())
    );
    for (a, peer) in &v.addresses {
        match peer {
            Some(p) => o.push_str(&format!("  {a} --> {p}\n")),
            None => o.push_str(&format!("  {a}\n")),
        }
    }
    Ok(o)
}

async fn routes_text(router: &crate::platform::OsRouter, name: &str) -> Result<String, String> {
    let (ours, others) = router.current().await.map_err(|e| e.to_string())?;
    let mut o = format!("through {name}:\n");
    for n in &ours {
        o.push_str(&format!("  {n}\n"));
    }
    o.push_str("others:\n");
    for r in &others {
        o.push_str(&format!("  {r}\n"));
    }
    Ok(o)
}

/// macOS: `scutil --dns` as the system resolves, and our resolver files;
/// Linux: resolv.conf (and systemd-resolved's view when it runs).
async fn resolver_text() -> Result<String, String> {
    let mut o = String::new();
    o.push_str(&crate::platform::resolver_report().await?);
    if let Some(dir) = crate::platform::RESOLVER_DIR {
        o.push_str(&format!("({dir})\n"));
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let p = e.path();
                    let body = std::fs::read_to_string(&p).unwrap_or_else(|e| format!("{e}\n"));
                    o.push_str(&format!("-- {}\n{body}", p.display()));
                }
            }
            Err(e) => o.push_str(&format!("{e}\n")),
        }
    }
    Ok(o)
}

async fn engine_text(engine: &Engine) -> Result<String, String> {
    let d = &engine.docker;
    let version = crate::docker::client::timed(d.version())
        .await
        .map_err(|e| format!("/version: {e}"))?;
    let info = crate::docker::client::timed(d.info())
        .await
        .map_err(|e| format!("/info: {e}"))?;
    fn json(v: impl serde::Serialize) -> serde_json::Value {
        serde_json::to_value(v).unwrap_or_default()
    }
    let out = serde_json::json!({
        "host": engine.host,
        "found_by": engine.source.describe(),
        "runtime": engine.runtime.as_str(),
        "rootless": engine.rootless,
        "version": bundle::select(&json(version), VERSION_FIELDS),
        "info": bundle::select(&json(info), INFO_FIELDS),
    });
    serde_json::to_string_pretty(&out)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}

/// What the helper was started with and what it said: its inspect (the
/// fields that decide whether WireGuard can run in it) and its log.
async fn helper_text(engine: &Engine, vm_interface: &str) -> Result<String, String> {
    let d = &engine.docker;
    let helpers = crate::docker::vmside::helpers(d, vm_interface)
        .await
        .map_err(|e| e.to_string())?;
    if helpers.is_empty() {
        return Err(format!(
            "no helper container for VM interface {vm_interface} in the engine"
        ));
    }
    let mut o = String::new();
    for h in helpers {
        o.push_str(&format!("== {} {} ({})\n", h.name, h.id, h.state));
        match crate::docker::client::timed(
            d.inspect_container(&h.id, None::<InspectContainerOptions>),
        )
        .await
        {
            Ok(i) => {
                let v = serde_json::to_value(i).unwrap_or_default();
                let picked = helper_fields(&v);
                o.push_str(&serde_json::to_string_pretty(&picked).unwrap_or_default());
                o.push('\n');
            }
            Err(e) => o.push_str(&format!("inspect: {e}\n")),
        }
        o.push_str(&format!("-- last {HELPER_LOG_LINES} log lines\n"));
        let mut logs = d.logs(
            &h.id,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .timestamps(true)
                    .tail(HELPER_LOG_LINES)
                    .build(),
            ),
        );
        while let Some(item) = logs.next().await {
            match item {
                Ok(l) => o.push_str(&String::from_utf8_lossy(&l.into_bytes())),
                Err(e) => {
                    o.push_str(&format!("logs: {e}\n"));
                    break;
                }
            }
        }
    }
    Ok(o)
}

/// The inspect's fields that matter to the helper: its image, its state
/// (exit code, OOM, error), the capabilities WireGuard needs, its network
/// (host, to reach the VM's), and where its mounts go (not their sources,
/// which are the engine's paths).
pub fn helper_fields(v: &serde_json::Value) -> serde_json::Value {
    let mut out = bundle::select(v, &["Name", "Image", "State"]);
    let host = v.get("HostConfig").cloned().unwrap_or_default();
    let hc = bundle::select(&host, &["CapAdd", "NetworkMode"]);
    let mounts: Vec<serde_json::Value> = v
        .get("Mounts")
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("Destination").cloned())
                .collect()
        })
        .unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut out {
        // The image by the name it was run as (the top-level Image is its
        // ID); the rest of Config (its environment, hostname) stays out.
        if let Some(name) = v.pointer("/Config/Image") {
            m.insert("ImageName".into(), name.clone());
        }
        m.insert("HostConfig".into(), hc);
        m.insert("MountDestinations".into(), mounts.into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_and_reason_is_redacted() {
        let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let report = Report {
            sections: vec![Section {
                name: "helper.txt",
                text: format!("2026-12-08T01:00:00Z PrivateKey = {key}\n"),
            }],
            missing: vec![Missing {
                name: "log.txt",
                reason: "/home/ana/netconnect.log: permission denied".into(),
            }],
        };
        let redaction = Redaction {
            secrets: vec![],
            homes: vec!["/home/ana".into()],
        };
        let out = finish(&report, &redaction);
        let all: String = out.iter().map(|s| s.text.as_str()).collect();
        assert!(!all.contains(key), "{all}");
        assert_eq!(out[1].name, bundle::MISSING);
        assert_eq!(
            out[1].text,
            "log.txt: ~/netconnect.log: permission denied\n"
        );
    }

    #[test]
    fn helper_inspect_keeps_the_chosen_fields() {
        let inspect = serde_json::json!({
            "Id": "3f2a9c1d7b4e", "Name": "/netconnect-helper-netconnect0",
            "Image": "sha256:abc", "State": {"Status": "running", "ExitCode": 0},
            "Config": {"Env": ["SECRET=1"], "Hostname": "docker-desktop", "Image": "netconnect-helper:0.1.0"},
            "HostConfig": {"CapAdd": ["NET_ADMIN"], "NetworkMode": "host", "Binds": ["/Users/ana:/x"]},
            "Mounts": [{"Type": "volume", "Source": "/var/lib/docker/volumes/k", "Destination": "/var/lib/netconnect"}],
        });
        assert_eq!(
            helper_fields(&inspect),
            serde_json::json!({
                "Name": "/netconnect-helper-netconnect0",
                "Image": "sha256:abc",
                "ImageName": "netconnect-helper:0.1.0",
                "State": {"Status": "running", "ExitCode": 0},
                "HostConfig": {"CapAdd": ["NET_ADMIN"], "NetworkMode": "host"},
                "MountDestinations": ["/var/lib/netconnect"],
            })
        );
    }

    #[test]
    fn bugreport_log_file_that_cannot_be_read_says_why() {
        let e = log_file(Path::new("/nonexistent/netconnect.log"), "2026").unwrap_err();
        assert!(e.starts_with("/nonexistent/netconnect.log: "), "{e}");
    }
}

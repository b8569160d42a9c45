//! `netconnect down`: stop a running `up` and remove everything netconnect
//! made, on this machine (tunnel interface and its routes) and in the VM
//! (helper container, tunnel interface, firewall rules, extra routes).
//!
//! It works without a daemon too (after a crash, or to uninstall): the
//! interface names and extra routes then come from flags and the config
//! file. The VM side is cleaned by a one-shot container of the helper image
//! (`helper-cleanup`), which picks the iptables backend that holds Docker's
//! chains, as the helper did.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ipnet::IpNet;

use crate::cli::{HelperCommand, VmArgs};
use crate::config::Config;
use crate::control::{self, ControlError, Snapshot};
use crate::settings::Target;

/// How long the daemon gets to remove its routes, interface and helper.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(mut target: Target, socket: &Path, config: &Config) -> anyhow::Result<()> {
    crate::platform::require_root("down")?;
    crate::platform::validate_interface_name(&target.interface)?;
    crate::platform::validate_interface_name(&target.vm_interface)?;
    let mut routes: Vec<(IpNet, IpAddr)> = config
        .routes
        .iter()
        .filter_map(|r| Some((r.subnet(), r.via()?)))
        .collect();
    match control::status(socket).await {
        Ok(snap) => {
            adopt(&mut target, &mut routes, &snap);
            stop_daemon(socket, snap.pid).await?;
            println!("stopped netconnect up (pid {})", snap.pid);
        }
        Err(ControlError::NotRunning(_)) => {
            println!("netconnect up is not running; removing what is left");
        }
        Err(e) => return Err(e.into()),
    }

    // This machine: the interface, and with it its addresses and routes.
    if crate::platform::cleanup(&target.interface).await? {
        println!("removed interface {}", target.interface);
    }

    // This machine's resolver: the files a crashed `up` left (a daemon that
    // stopped removed its own): its domain's, and those of the zones it
    // answered besides (clusters', label domains', reverse zones'). Only
    // netconnect's files are removed.
    if let Some(dir) = crate::dns::resolver_dir(&config.dns) {
        for file in crate::dns::resolver::ResolverFile::all_ours(&dir) {
            match file.remove() {
                Ok(true) => println!("removed resolver file {}", file.path().display()),
                Ok(false) => {}
                Err(e) => println!("left {}: {e}", file.path().display()),
            }
        }
    }

    // The VM.
    let engine = crate::status::connect(&target).await.context(
        "cannot reach the Docker engine to clean the VM side; start it and run `netconnect down` again",
    )?;
    for h in crate::docker::vmside::helpers(&engine.docker, &target.vm_interface).await? {
        crate::docker::vmside::container::remove(&engine.docker, &h.id).await?;
        println!("removed helper container {}", h.name);
    }
    let command = HelperCommand::Cleanup(VmArgs {
        interface: target.vm_interface.clone(),
        routes: routes.clone(),
    });
    let out = crate::docker::vmside::run_oneshot(
        &engine.docker,
        &target.helper_image,
        &target.vm_interface,
        &command,
    )
    .await
    .context("cleaning the VM side")?;
    for l in out.output.lines().filter(|l| !l.trim().is_empty()) {
        println!("vm: {}", l.trim());
    }
    if out.exit_code != 0 {
        anyhow::bail!(
            "the VM-side cleanup failed (exit {}); see the lines above",
            out.exit_code
        );
    }
    println!("netconnect down: done");
    Ok(())
}

/// A running daemon knows best what it made.
fn adopt(target: &mut Target, routes: &mut Vec<(IpNet, IpAddr)>, s: &Snapshot) {
    if let Some(e) = &s.engine {
        target.docker_host = Some(e.host.clone());
    }
    if let Some(t) = &s.tunnel {
        target.interface = t.interface.clone();
    }
    if !s.helper.vm_interface.is_empty() {
        target.vm_interface = s.helper.vm_interface.clone();
    }
    if !s.helper.image.is_empty() {
        target.helper_image = s.helper.image.clone();
    }
    for r in &s.extra_routes {
        if let (Ok(net), Some(Ok(gw))) = (r.subnet.parse(), r.via.as_ref().map(|v| v.parse())) {
            if !routes.contains(&(net, gw)) {
                routes.push((net, gw));
            }
        }
    }
}

/// Ask the daemon to stop and wait until its socket is gone, which it
/// removes last, after its own cleanup; SIGTERM if it does not answer.
async fn stop_daemon(socket: &Path, pid: u32) -> anyhow::Result<()> {
    let asked = control::stop(socket).await;
    let t0 = Instant::now();
    while t0.elapsed() < STOP_TIMEOUT {
        if !socket.exists() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if asked.is_ok() {
        tracing::warn!(pid, "the daemon did not stop in time; sending SIGTERM");
    }
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if !socket.exists() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "netconnect up (pid {pid}) did not stop; kill it with `sudo kill -9 {pid}` and run `netconnect down` again"
    )
}

//! Sweeping what killed test processes left behind in the engine and the
//! root namespace: containers, networks, helpers, interfaces, rules.

use std::process::Command;

use super::commands::docker_try;
use super::iptables::{list_rules, IptRule};
use super::{HELPER_LABEL, TEST_LABEL};
use crate::prereqs::pid_alive;
use crate::process::{run_timeout, CMD_TIMEOUT};

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
                let _ = run_timeout(Command::new("ip").args(["link", "del", name]), CMD_TIMEOUT);
            }
        }
    }
}

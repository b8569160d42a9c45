//! Running `docker` and other commands in the root namespace (the VM), and
//! iptables rules a test inserts itself.

use std::ffi::OsStr;
use std::process::{Command, Output};

use super::DOCKER_TIMEOUT;
use crate::process::{cmd, describe, run_ok, run_timeout, CMD_TIMEOUT};

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

//! The VM-side firewall rules that let tunnel traffic reach containers.
//!
//! Rules are data ([`rules`]) so that their text is tested here; they are
//! applied with dockerd's *own* `iptables`, run inside dockerd's mount
//! namespace, so they land in whichever backend (legacy or nft) dockerd
//! writes to. A helper with its own iptables can pick the other backend and
//! write rules that Docker's chains never meet (docker-mac-net-connect #26).
//!
//! Every rule is checked (`-C`) before it is inserted, so running the helper
//! twice adds nothing twice, and each carries the comment `netconnect` so
//! that `netconnect down` can find them.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The comment that marks our rules.
pub const COMMENT: &str = "netconnect";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `iptables` or `ip6tables`.
    pub family: Family,
    pub table: &'static str,
    pub chain: &'static str,
    /// The match and target, without `-t`, `-I`/`-C` and chain.
    pub spec: Vec<String>,
    /// Why the rule exists: the Docker behaviour it answers.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn binary(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

impl Rule {
    /// Arguments for `iptables` with `op` = `-C` (check) or `-I` (insert at
    /// the top) or `-D` (delete).
    pub fn args(&self, op: &str) -> Vec<String> {
        let mut a = vec![
            "-w".to_string(),
            "5".to_string(),
            "-t".to_string(),
            self.table.to_string(),
            op.to_string(),
            self.chain.to_string(),
        ];
        // The comment goes before the target, where iptables-save prints it.
        let target = self
            .spec
            .iter()
            .position(|x| x == "-j")
            .unwrap_or(self.spec.len());
        a.extend(self.spec[..target].iter().cloned());
        a.extend(["-m", "comment", "--comment", COMMENT].map(String::from));
        a.extend(self.spec[target..].iter().cloned());
        a
    }
}

/// The rules for tunnel interface `iface`, for both address families.
pub fn rules(iface: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        out.push(Rule {
            family,
            table: "raw",
            chain: "PREROUTING",
            spec: s(&["-i", iface, "-j", "ACCEPT"]),
            reason: "Engine 28 drops, in raw PREROUTING, packets for a container that did not \
                     arrive on its bridge (moby #49325, #49829); the raw table runs before filter, \
                     so only an ACCEPT here, ahead of Docker's appended drops, lets them pass",
        });
        out.push(Rule {
            family,
            table: "filter",
            chain: "DOCKER-USER",
            spec: s(&["-i", iface, "-j", "ACCEPT"]),
            reason: "FORWARD's policy is DROP and Engine 28 ends each bridge with \
                     `! -i br -o br -j DROP`; DOCKER-USER is jumped to first from FORWARD in \
                     every engine version, and must be inserted at the top because older \
                     engines end it with RETURN",
        });
        out.push(Rule {
            family,
            table: "filter",
            chain: "DOCKER-USER",
            spec: s(&[
                "-o",
                iface,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ]),
            reason: "replies from containers on --internal networks and across Docker's \
                     isolation chains are otherwise dropped on their way back into the tunnel",
        });
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("dockerd is not visible in /proc; run the helper with --pid=host")]
    NoDockerd,
    #[error(
        "cannot enter dockerd's mount namespace ({0}); the helper needs SYS_ADMIN and SYS_PTRACE"
    )]
    Namespace(io::Error),
    #[error(
        "{binary} not found in dockerd's filesystem; is dockerd running with iptables disabled?"
    )]
    NoIptables { binary: &'static str },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
}

/// Runs iptables the way dockerd does: its binary, its mount namespace.
pub struct DockerIptables {
    pid: u32,
}

impl DockerIptables {
    /// Find dockerd among the processes visible through `/proc`.
    pub fn find() -> Result<Self, FirewallError> {
        find_process("dockerd")
            .map(|pid| DockerIptables { pid })
            .ok_or(FirewallError::NoDockerd)
    }

    fn binary(&self, family: Family) -> Result<PathBuf, FirewallError> {
        let root = PathBuf::from(format!("/proc/{}/root", self.pid));
        for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"] {
            let p = Path::new(dir).join(family.binary());
            // lstat, not stat: iptables is usually a symlink into
            // /etc/alternatives, which must be resolved in dockerd's
            // filesystem (after setns), not in ours.
            if root
                .join(p.strip_prefix("/").unwrap_or(&p))
                .symlink_metadata()
                .is_ok()
            {
                return Ok(p);
            }
        }
        Err(FirewallError::NoIptables {
            binary: family.binary(),
        })
    }

    /// Run dockerd's `iptables`/`ip6tables` with `args` (for `down` and
    /// `doctor`, which list and delete rules).
    pub fn run_args(&self, family: Family, args: &[String]) -> Result<Output, FirewallError> {
        self.run(family, args)
    }

    fn run(&self, family: Family, args: &[String]) -> Result<Output, FirewallError> {
        let binary = self.binary(family)?;
        let ns =
            File::open(format!("/proc/{}/ns/mnt", self.pid)).map_err(FirewallError::Namespace)?;
        let fd = ns.as_raw_fd();
        let mut cmd = Command::new(&binary);
        cmd.args(args)
            .env_clear()
            .env("LC_ALL", "C")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        // SAFETY: between fork and exec we only call setns(2), which is
        // async-signal-safe; the child is single-threaded there, as
        // entering a mount namespace requires.
        unsafe {
            cmd.pre_exec(move || {
                if nix::libc::setns(fd, nix::libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().map_err(FirewallError::Namespace)?;
        drop(ns);
        Ok(out)
    }

    /// Insert every rule that is not there yet. Returns how many were added.
    /// IPv6 rules are skipped, with a log line, where dockerd has no
    /// ip6tables or no IPv6 DOCKER-USER chain (IPv6 disabled).
    pub fn ensure(&self, rules: &[Rule]) -> Result<usize, FirewallError> {
        let mut added = 0;
        for rule in rules {
            if self.binary(rule.family).is_err() && rule.family == Family::V6 {
                tracing::info!("no ip6tables in dockerd's filesystem; IPv6 rules skipped");
                continue;
            }
            let check = self.run(rule.family, &rule.args("-C"))?;
            if check.status.success() {
                continue;
            }
            let insert = self.run(rule.family, &rule.args("-I"))?;
            if !insert.status.success() {
                let stderr = String::from_utf8_lossy(&insert.stderr).trim().to_string();
                if rule.family == Family::V6 {
                    tracing::info!(error = %stderr, "IPv6 rule skipped");
                    continue;
                }
                return Err(FirewallError::Command {
                    command: command_line(rule.family, &rule.args("-I")),
                    stderr,
                });
            }
            tracing::info!(table = rule.table, chain = rule.chain, rule = %rule.spec.join(" "), "firewall rule added");
            added += 1;
        }
        Ok(added)
    }
}

fn command_line(family: Family, args: &[String]) -> String {
    let mut s = OsString::from(family.binary());
    for a in args {
        s.push(" ");
        s.push(a);
    }
    s.to_string_lossy().into_owned()
}

/// The lowest pid of a live process whose `comm` is `name`. Exited
/// processes not yet reaped (zombies) are skipped: right after dockerd
/// restarts, the old one can linger for seconds, and its namespaces are gone.
pub fn find_process(name: &str) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        is_live_process_named(&stat, name)
    })
}

/// Parses `/proc/PID/stat`: `pid (comm) state ...`; comm may hold spaces
/// and parentheses, so split at the last `)`.
fn is_live_process_named(stat: &str, name: &str) -> bool {
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    comm == name && !matches!(state, Some('Z' | 'X' | 'x'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_and_other_names_are_not_dockerd() {
        assert!(is_live_process_named(
            "1420 (dockerd) S 1 1420 1420 0 -1",
            "dockerd"
        ));
        assert!(!is_live_process_named(
            "1420 (dockerd) Z 1 1420 1420 0 -1",
            "dockerd"
        ));
        assert!(!is_live_process_named("7 (dockerd-x) S 1", "dockerd"));
        assert!(is_live_process_named("9 (a) b) R 1", "a) b"));
        assert!(!is_live_process_named("garbage", "dockerd"));
    }

    #[test]
    fn rule_text_is_what_iptables_gets() {
        let r = rules("netconnect0");
        assert_eq!(r.len(), 6);
        assert_eq!(
            r[0].args("-I").join(" "),
            "-w 5 -t raw -I PREROUTING -i netconnect0 -m comment --comment netconnect -j ACCEPT"
        );
        assert_eq!(
            r[1].args("-C").join(" "),
            "-w 5 -t filter -C DOCKER-USER -i netconnect0 -m comment --comment netconnect -j ACCEPT"
        );
        assert_eq!(
            r[2].args("-D").join(" "),
            "-w 5 -t filter -D DOCKER-USER -o netconnect0 -m conntrack --ctstate RELATED,ESTABLISHED \
             -m comment --comment netconnect -j ACCEPT"
        );
        assert!(r[..3].iter().all(|x| x.family == Family::V4));
        assert!(r[3..].iter().all(|x| x.family == Family::V6));
        assert_eq!(r[3].spec, r[0].spec);
    }
}

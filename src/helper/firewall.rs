//! The VM-side firewall rules that let tunnel traffic reach containers.
//!
//! Rules are data ([`rules`]) so that their text is tested here. They are
//! applied with the helper image's *own* iptables, run by absolute path
//! (nothing from outside the image is executed: an earlier helper entered
//! dockerd's mount namespace to run dockerd's iptables, which let any
//! process calling itself `dockerd` have its binary run with the helper's
//! capabilities). The image carries both backends, legacy and nft, and
//! [`choose`] picks the one that holds Docker's chains, as
//! kubernetes-sigs/iptables-wrappers does for kubelet's: a helper writing
//! to the other backend would add rules that Docker's chains never meet
//! (docker-mac-net-connect #26).
//!
//! Every rule is checked (`-C`) before it is inserted, so running the helper
//! twice adds nothing twice, and each carries the comment `netconnect` so
//! that `netconnect down` can find them.
//!
//! The xtables lock (`/run/xtables.lock`, taken by `-w`) is now the
//! container's own (a tmpfs), so it no longer orders our writes with
//! dockerd's. nft needs no lock: each command is one netlink transaction
//! the kernel applies whole. Legacy replaces a whole table at once, and the
//! kernel refuses the replacement with EAGAIN when the table changed since
//! it was read (a concurrent dockerd write); such a command is run again,
//! up to [`LEGACY_RETRIES`] times.

use std::io;
use std::process::{Command, Output};
use std::time::Duration;

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

/// The rules for tunnel interface `iface`, for both address families,
/// where Docker's chains are ([`rules_in`] with `DOCKER-USER`).
pub fn rules(iface: &str) -> Vec<Rule> {
    rules_in(iface, ForwardChain::DockerUser)
}

/// Where the forward accepts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardChain {
    /// Docker's `DOCKER-USER`, jumped to first from `FORWARD`.
    DockerUser,
    /// `FORWARD` itself, at its top: a VM with no Docker chains (a Podman
    /// machine: netavark jumps to its own chains from `FORWARD`).
    Forward,
}

impl ForwardChain {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardChain::DockerUser => "DOCKER-USER",
            ForwardChain::Forward => "FORWARD",
        }
    }

    /// `DOCKER-USER` when the IPv4 `-save` output declares it.
    pub fn of(save: &str) -> ForwardChain {
        if save.lines().any(|l| l.starts_with(":DOCKER-USER ")) {
            ForwardChain::DockerUser
        } else {
            ForwardChain::Forward
        }
    }
}

/// The rules for `iface` with the forward accepts in `forward`.
pub fn rules_in(iface: &str, forward: ForwardChain) -> Vec<Rule> {
    let forward = forward.as_str();
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
            chain: forward,
            spec: s(&["-i", iface, "-j", "ACCEPT"]),
            reason: "FORWARD's policy is DROP and Engine 28 ends each bridge with \
                     `! -i br -o br -j DROP`; DOCKER-USER is jumped to first from FORWARD in \
                     every engine version, and must be inserted at the top because older \
                     engines end it with RETURN",
        });
        out.push(Rule {
            family,
            table: "filter",
            chain: forward,
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

/// Where the helper image keeps iptables (`helper-image/iptables-rootfs.sh`).
pub const SBIN: &str = "/usr/sbin";
/// How often a legacy write refused with EAGAIN (see the module comment) is
/// tried again.
pub const LEGACY_RETRIES: u32 = 2;

/// An iptables backend of the helper image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-legacy`: the kernel's x_tables, through a raw socket
    /// (`socket(AF_INET, SOCK_RAW, IPPROTO_RAW)` in libiptc, hence the
    /// helper's `NET_RAW`).
    Legacy,
    /// `iptables-nft`: nf_tables over netlink (`NET_ADMIN` alone).
    Nft,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }

    /// The image's `iptables-legacy`, `ip6tables-nft`...: absolute, so no
    /// `PATH` is searched.
    pub fn path(self, family: Family) -> String {
        format!("{SBIN}/{}-{}", family.binary(), self.as_str())
    }

    /// The image's `iptables-legacy-save`...
    pub fn save_path(self, family: Family) -> String {
        format!("{}-save", self.path(family))
    }
}

/// The lines of `iptables-save` output `save` that name one of Docker's
/// chains (`DOCKER`, `DOCKER-USER`, `DOCKER-FORWARD`,
/// `DOCKER-ISOLATION-STAGE-1`...), as a declaration (`:DOCKER-USER - [0:0]`),
/// a rule in it (`-A DOCKER ...`) or a jump to it (`-j DOCKER-USER`).
pub fn docker_lines(save: &str) -> usize {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split_whitespace().any(|w| {
                let w = w.trim_start_matches(':');
                w == "DOCKER" || w.starts_with("DOCKER-")
            })
        })
        .count()
}

/// The backend whose tables hold Docker's chains, from the `-save` output
/// of each (IPv4 and IPv6 together), the way kubernetes-sigs/iptables-wrappers
/// decides for kubelet's chains: legacy only when it holds more of Docker's
/// lines than nft; on a tie, and when neither holds any (dockerd started
/// with `--iptables=false`), nft, the default of iptables since 1.8 and of
/// every current distribution.
pub fn choose(legacy_save: &str, nft_save: &str) -> Backend {
    if docker_lines(legacy_save) > docker_lines(nft_save) {
        Backend::Legacy
    } else {
        Backend::Nft
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run {path} ({source}); the helper image lacks its iptables: rebuild it with helper-image/build.sh")]
    Exec { path: String, source: io::Error },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
}

/// The image's iptables of the backend that holds Docker's chains.
#[derive(Debug, Clone, Copy)]
pub struct Iptables {
    backend: Backend,
    forward: ForwardChain,
}

impl Iptables {
    /// Look at both backends' tables and pick with [`choose`].
    pub fn detect() -> Result<Self, FirewallError> {
        let save = |backend: Backend| -> Result<String, FirewallError> {
            let mut text = String::new();
            for family in [Family::V4, Family::V6] {
                // Without `-t`: naming a table makes the legacy kernel code
                // create it (iptables-wrappers notes the same). A failure
                // (no IPv6, no permission) counts as no lines.
                let out = exec(&backend.save_path(family), &[])?;
                if out.status.success() {
                    text.push_str(&String::from_utf8_lossy(&out.stdout));
                } else {
                    tracing::debug!(
                        backend = backend.as_str(),
                        family = family.binary(),
                        error = %String::from_utf8_lossy(&out.stderr).trim(),
                        "iptables-save failed; counted as empty"
                    );
                }
            }
            Ok(text)
        };
        let (legacy, nft) = (save(Backend::Legacy)?, save(Backend::Nft)?);
        let backend = choose(&legacy, &nft);
        let forward = ForwardChain::of(match backend {
            Backend::Legacy => &legacy,
            Backend::Nft => &nft,
        });
        tracing::info!(
            backend = backend.as_str(),
            legacy_docker_lines = docker_lines(&legacy),
            nft_docker_lines = docker_lines(&nft),
            forward_chain = forward.as_str(),
            "iptables backend chosen"
        );
        Ok(Iptables { backend, forward })
    }

    /// A given backend, for tests and for callers that already know.
    pub fn with_backend(backend: Backend) -> Self {
        Iptables {
            backend,
            forward: ForwardChain::DockerUser,
        }
    }

    /// The rules for `iface` in this VM's chains.
    pub fn rules(&self, iface: &str) -> Vec<Rule> {
        rules_in(iface, self.forward)
    }

    /// Where the forward accepts go in this VM.
    pub fn forward_chain(&self) -> ForwardChain {
        self.forward
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Run the image's `iptables`/`ip6tables` of the chosen backend with
    /// `args` (for `down` and `doctor`, which list and delete rules).
    pub fn run_args(&self, family: Family, args: &[String]) -> Result<Output, FirewallError> {
        self.run(family, args)
    }

    fn run(&self, family: Family, args: &[String]) -> Result<Output, FirewallError> {
        let path = self.backend.path(family);
        let mut attempt = 0;
        loop {
            let out = exec(&path, args)?;
            if self.backend == Backend::Legacy
                && attempt < LEGACY_RETRIES
                && concurrent_change(&out)
            {
                attempt += 1;
                tracing::debug!(attempt, command = %command_line(&path, args), "legacy table changed under us (EAGAIN); again");
                std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
                continue;
            }
            return Ok(out);
        }
    }

    /// Insert every rule that is not there yet. Returns how many were added.
    /// IPv6 rules are skipped, with a log line, where the VM has no IPv6
    /// tables or no IPv6 DOCKER-USER chain (dockerd's IPv6 off).
    pub fn ensure(&self, rules: &[Rule]) -> Result<usize, FirewallError> {
        let mut added = 0;
        for rule in rules {
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
                    command: command_line(&self.backend.path(rule.family), &rule.args("-I")),
                    stderr,
                });
            }
            tracing::info!(backend = self.backend.as_str(), table = rule.table, chain = rule.chain, rule = %rule.spec.join(" "), "firewall rule added");
            added += 1;
        }
        Ok(added)
    }
}

/// Runs one of the image's binaries: absolute path, empty environment but
/// `LC_ALL=C` (messages we match are English), no shell.
fn exec(path: &str, args: &[String]) -> Result<Output, FirewallError> {
    Command::new(path)
        .args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| FirewallError::Exec {
            path: path.to_owned(),
            source,
        })
}

/// iptables-legacy's answer when the kernel refused its table replacement
/// because the table changed meanwhile: exit status 4 (RESOURCE_PROBLEM)
/// and EAGAIN's message.
fn concurrent_change(out: &Output) -> bool {
    out.status.code() == Some(4)
        && String::from_utf8_lossy(&out.stderr).contains("Resource temporarily unavailable")
}

fn command_line(path: &str, args: &[String]) -> String {
    let mut s = path.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `iptables-save` prints on a host where dockerd (Engine 20.10)
    /// set up one bridge, trimmed.
    const DOCKER_SAVE: &str =
        "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Wed Dec  2 05:40:00 2026\n\
        *filter\n\
        :INPUT ACCEPT [0:0]\n\
        :FORWARD DROP [0:0]\n\
        :OUTPUT ACCEPT [0:0]\n\
        :DOCKER - [0:0]\n\
        :DOCKER-ISOLATION-STAGE-1 - [0:0]\n\
        :DOCKER-USER - [0:0]\n\
        -A FORWARD -j DOCKER-USER\n\
        -A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
        -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
        -A FORWARD -o docker0 -j DOCKER\n\
        -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n\
        -A DOCKER-USER -j RETURN\n\
        COMMIT\n\
        *nat\n\
        :POSTROUTING ACCEPT [0:0]\n\
        -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n\
        COMMIT\n";

    /// Tables that exist but hold nothing of Docker's (a host where
    /// someone ran `iptables-legacy -S` once, or kube-proxy's own chains).
    const OTHER_SAVE: &str =
        "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n\
        *filter\n\
        :INPUT ACCEPT [0:0]\n\
        :FORWARD ACCEPT [0:0]\n\
        :OUTPUT ACCEPT [0:0]\n\
        :KUBE-FORWARD - [0:0]\n\
        -A FORWARD -j KUBE-FORWARD\n\
        -A INPUT -m comment --comment \"DOCKER-USER is not a chain here\" -j ACCEPT\n\
        COMMIT\n";

    /// A Podman machine's filter table (netavark's iptables driver, as
    /// `iptables-save` prints it), with no Docker: the accepts go to the
    /// top of FORWARD; with Docker's chains, to DOCKER-USER.
    #[test]
    fn the_forward_accepts_go_where_this_vm_s_chains_are() {
        let netavark = "*filter\n\
            :INPUT ACCEPT [0:0]\n\
            :FORWARD ACCEPT [0:0]\n\
            :OUTPUT ACCEPT [0:0]\n\
            :NETAVARK_FORWARD - [0:0]\n\
            -A FORWARD -m comment --comment \"netavark firewall plugin rules\" -j NETAVARK_FORWARD\n\
            -A NETAVARK_FORWARD -d 10.88.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A NETAVARK_FORWARD -s 10.88.0.0/16 -j ACCEPT\n\
            COMMIT\n";
        assert_eq!(ForwardChain::of(netavark), ForwardChain::Forward);
        assert_eq!(ForwardChain::of(OTHER_SAVE), ForwardChain::Forward);
        assert_eq!(ForwardChain::of(DOCKER_SAVE), ForwardChain::DockerUser);
        let r = rules_in("nc0", ForwardChain::Forward);
        let filter: Vec<String> = r
            .iter()
            .filter(|r| r.table == "filter" && r.family == Family::V4)
            .map(|r| r.args("-I").join(" "))
            .collect();
        assert_eq!(
            filter,
            vec![
                "-w 5 -t filter -I FORWARD -i nc0 -m comment --comment netconnect -j ACCEPT",
                "-w 5 -t filter -I FORWARD -o nc0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment netconnect -j ACCEPT",
            ]
        );
        assert_eq!(rules("nc0"), rules_in("nc0", ForwardChain::DockerUser));
    }

    #[test]
    fn docker_lines_counts_declarations_rules_and_jumps_to_dockers_chains() {
        assert_eq!(docker_lines(DOCKER_SAVE), 8);
        // A comment that merely mentions a chain (quoted, so one word with
        // the quote) is not Docker's; nor is another chain or a # line.
        assert_eq!(docker_lines(OTHER_SAVE), 0);
        assert_eq!(docker_lines(""), 0);
        // Engine 28's DOCKER-FORWARD, in raw and in IPv6 output alike.
        assert_eq!(
            docker_lines(":DOCKER-FORWARD - [0:0]\n-A FORWARD -j DOCKER-FORWARD\n-A PREROUTING -d fd00::2/128 ! -i br-1 -j DROP\n"),
            2
        );
    }

    #[test]
    fn the_backend_holding_dockers_chains_is_chosen() {
        // Debian's dockerd (nft), as on this machine and CI's.
        assert_eq!(choose(OTHER_SAVE, DOCKER_SAVE), Backend::Nft);
        assert_eq!(choose("", DOCKER_SAVE), Backend::Nft);
        // A VM whose dockerd runs iptables-legacy (older Docker Desktop,
        // Alpine-based VMs): legacy, even with other nft tables present.
        assert_eq!(choose(DOCKER_SAVE, OTHER_SAVE), Backend::Legacy);
        assert_eq!(choose(DOCKER_SAVE, ""), Backend::Legacy);
        // Stale chains in both (a host switched backends): the larger set.
        let more = format!("{DOCKER_SAVE}:DOCKER-ISOLATION-STAGE-2 - [0:0]\n");
        assert_eq!(choose(&more, DOCKER_SAVE), Backend::Legacy);
        assert_eq!(choose(DOCKER_SAVE, &more), Backend::Nft);
        // Ties and nothing anywhere (dockerd --iptables=false): nft.
        assert_eq!(choose(DOCKER_SAVE, DOCKER_SAVE), Backend::Nft);
        assert_eq!(choose("", ""), Backend::Nft);
        assert_eq!(choose(OTHER_SAVE, ""), Backend::Nft);
    }

    #[test]
    fn binaries_are_the_images_own_by_absolute_path() {
        assert_eq!(
            Backend::Legacy.path(Family::V4),
            "/usr/sbin/iptables-legacy"
        );
        assert_eq!(Backend::Nft.path(Family::V6), "/usr/sbin/ip6tables-nft");
        assert_eq!(
            Backend::Legacy.save_path(Family::V6),
            "/usr/sbin/ip6tables-legacy-save"
        );
        // The names helper-image/iptables-rootfs.sh links to the multi
        // binaries: the script and this code must agree.
        let script = include_str!("../../helper-image/iptables-rootfs.sh");
        assert!(script.contains("for fam in iptables ip6tables; do"));
        assert!(script.contains("for backend in legacy nft; do"));
        assert!(script.contains("for suffix in \"\" -save; do"));
        assert!(script
            .contains("ln -sfn \"xtables-$backend-multi\" \"$OUT/usr/sbin/$fam-$backend$suffix\""));
    }

    #[test]
    fn only_legacy_eagain_is_a_concurrent_change() {
        use std::os::unix::process::ExitStatusExt;
        let out = |code: i32, stderr: &str| Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: vec![],
            stderr: stderr.as_bytes().to_vec(),
        };
        assert!(concurrent_change(&out(
            4,
            "iptables: Resource temporarily unavailable.\n"
        )));
        assert!(!concurrent_change(&out(
            4,
            "iptables: Memory allocation problem.\n"
        )));
        assert!(!concurrent_change(&out(
            1,
            "Resource temporarily unavailable"
        )));
        assert!(!concurrent_change(&out(0, "")));
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

//! The VM side of `down` and `doctor`, run in a one-shot container of the
//! helper image (the helper's network namespace and capabilities, without
//! its TUN device): remove, or check, what the helper leaves in the VM
//! beyond its own lifetime.
//!
//! Firewall rules are found by their `netconnect` comment and interface in
//! `iptables -S` of the image's iptables, of the backend that holds
//! Docker's chains (the helper's own choice, [`firewall::choose`]), not
//! rebuilt from today's rule list, so rules written by an older or newer
//! helper go too.

use std::io::Write as _;

use anyhow::Context as _;

use super::firewall::{self, Family, Iptables};
use crate::cli::VmArgs;
pub use crate::docker::vmside::Shadow;

const TABLES: [&str; 4] = ["raw", "filter", "nat", "mangle"];

/// A rule of ours as `iptables -S` prints it (`-A CHAIN ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub family: Family,
    pub table: &'static str,
    pub tokens: Vec<String>,
}

impl Marked {
    pub fn line(&self) -> String {
        let bin = match self.family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        format!("{bin} -t {} {}", self.table, self.tokens.join(" "))
    }
}

/// The rules in `iptables -S` output `text` that carry our comment and name
/// interface `iface` as their `-i` or `-o`.
pub fn marked_rules(text: &str, family: Family, table: &'static str, iface: &str) -> Vec<Marked> {
    text.lines()
        .filter(|l| l.starts_with("-A "))
        .map(words)
        .filter(|t| {
            let ours = t
                .windows(2)
                .any(|w| w[0] == "--comment" && w[1] == firewall::COMMENT);
            let names_iface = t
                .windows(2)
                .any(|w| (w[0] == "-i" || w[0] == "-o") && w[1] == iface);
            ours && names_iface
        })
        .map(|tokens| Marked {
            family,
            table,
            tokens,
        })
        .collect()
}

/// The words of an `iptables -S` line; a quoted comment is one word.
pub(crate) fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

/// The rules of `iptables -v -S CHAIN` output `text` (`chain` being where
/// our forward accepts went: `DOCKER-USER`, or `FORWARD` where the VM has
/// no Docker chains) that sit above
/// our own for `iface` and can drop what the tunnel forwards (target DROP
/// or REJECT, and no `-i` that rules the interface out). Our rules are
/// inserted first, so a rule found here was put above them later, usually
/// by the user's own firewall. Whether it really meets the tunnel's
/// packets its counter tells: `doctor` reads it before and after its
/// probe and names only the rules that counted the probe.
pub fn shadowing_rules(text: &str, chain: &str, iface: &str) -> Vec<Shadow> {
    let mut out = Vec::new();
    let head = format!("-A {chain} ");
    for line in text.lines().filter(|l| l.starts_with(&head)) {
        let mut t = words(line);
        let ours = t
            .windows(2)
            .any(|w| w[0] == "--comment" && w[1] == firewall::COMMENT)
            && t.windows(2).any(|w| w[0] == "-i" && w[1] == iface);
        if ours {
            break;
        }
        let mut packets = 0;
        if let Some(i) = t.iter().position(|w| w == "-c") {
            packets = t.get(i + 1).and_then(|p| p.parse().ok()).unwrap_or(0);
            t.drain(i..(i + 3).min(t.len()));
        }
        let drops = t
            .windows(2)
            .any(|w| w[0] == "-j" && (w[1] == "DROP" || w[1] == "REJECT"));
        let in_iface = |name: &str| match name.strip_suffix('+') {
            Some(prefix) => iface.starts_with(prefix),
            None => name == iface,
        };
        let admits = t.windows(2).enumerate().all(|(i, w)| {
            if w[0] != "-i" {
                return true;
            }
            let negated = i > 0 && t[i - 1] == "!";
            in_iface(&w[1]) != negated
        });
        if drops && admits {
            let rule = t
                .iter()
                .map(|w| {
                    if w.contains(char::is_whitespace) {
                        format!("\"{w}\"")
                    } else {
                        w.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            out.push(Shadow { packets, rule });
        }
    }
    out
}

fn list(ipt: &Iptables, iface: &str) -> Vec<Marked> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        for table in TABLES {
            let args = ["-w", "5", "-t", table, "-S"].map(String::from);
            let Ok(o) = ipt.run_args(family, &args) else {
                continue;
            };
            if o.status.success() {
                out.extend(marked_rules(
                    &String::from_utf8_lossy(&o.stdout),
                    family,
                    table,
                    iface,
                ));
            }
        }
    }
    out
}

/// `helper-cleanup`: delete our rules, the extra routes (marked with
/// [`crate::platform::netlink::VM_ROUTE_PROTOCOL`], plus any `--route`) and the
/// interface.
/// Prints one `removed ...` line per thing, then a summary line.
pub async fn cleanup(args: VmArgs) -> anyhow::Result<()> {
    crate::platform::validate_interface_name(&args.interface)?;
    let ipt = Iptables::detect()?;
    let mut out = std::io::stdout().lock();
    let mut rules = 0;
    for r in list(&ipt, &args.interface) {
        let mut del = vec!["-w".to_string(), "5".into(), "-t".into(), r.table.into()];
        del.push("-D".into());
        del.extend(r.tokens[1..].iter().cloned());
        let o = ipt.run_args(r.family, &del)?;
        if o.status.success() {
            writeln!(out, "removed rule: {}", r.line())?;
            rules += 1;
        } else {
            anyhow::bail!(
                "`{}` failed: {}",
                r.line().replacen(" -A ", " -D ", 1),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
    let mut routes = 0;
    let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
    tokio::spawn(conn);
    // Marked routes, and those named (from a helper that did not mark them).
    let mut all = crate::platform::netlink::marked_vm_routes(&handle).await?;
    for r in &args.routes {
        if !all.contains(r) {
            all.push(*r);
        }
    }
    for (net, gw) in all {
        if crate::platform::netlink::remove_via(&handle, net, gw)
            .await
            .is_ok()
        {
            writeln!(out, "removed route: {net} via {gw}")?;
            routes += 1;
        }
    }
    let mut link = false;
    if crate::platform::interface_exists(&args.interface) {
        crate::platform::netlink::delete_link(&handle, &args.interface).await?;
        writeln!(out, "removed interface: {}", args.interface)?;
        link = true;
    }
    writeln!(
        out,
        "total: rules={rules} routes={routes} interface={}",
        if link { "removed" } else { "absent" }
    )?;
    Ok(())
}

/// `helper-routes`: make netconnect's VM routes exactly the `--route`s
/// (`up` runs it when a cluster's ranges or nodes change, without
/// restarting the helper). Prints `added`/`removed`/`failed` lines and a
/// summary; exits non-zero if a route could not be set.
pub async fn routes(args: VmArgs) -> anyhow::Result<()> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
    tokio::spawn(conn);
    let set = crate::platform::netlink::set_vm_routes(&handle, &args.routes).await?;
    let mut out = std::io::stdout().lock();
    for (net, gw) in &set.removed {
        writeln!(out, "removed route: {net} via {gw}")?;
    }
    for (net, gw) in &set.added {
        writeln!(out, "added route: {net} via {gw}")?;
    }
    for ((net, gw), e) in &set.failed {
        writeln!(out, "failed route: {net} via {gw}: {e}")?;
    }
    writeln!(
        out,
        "total: added={} removed={} failed={}",
        set.added.len(),
        set.removed.len(),
        set.failed.len()
    )?;
    if let Some(((net, gw), e)) = set.failed.first() {
        anyhow::bail!("route {net} via {gw} not set: {e}");
    }
    Ok(())
}

/// `helper-check`: is the interface there, and every rule of
/// [`firewall::rules`]? Prints `ok ...`/`missing ...` lines; fails if an
/// IPv4 rule or the interface is missing (IPv6 rules are optional, as in
/// the helper).
pub async fn check(args: VmArgs) -> anyhow::Result<()> {
    crate::platform::validate_interface_name(&args.interface)?;
    let ipt = Iptables::detect()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "backend {}", ipt.backend().as_str())?;
    let mut broken = Vec::new();
    if crate::platform::interface_exists(&args.interface) {
        writeln!(out, "ok interface {}", args.interface)?;
    } else {
        writeln!(out, "missing interface {}", args.interface)?;
        broken.push(format!("interface {}", args.interface));
    }
    for rule in ipt.rules(&args.interface) {
        let o = ipt.run_args(rule.family, &rule.args("-C"));
        let present = o.as_ref().is_ok_and(|o| o.status.success());
        let text = format!("-t {} {} {}", rule.table, rule.chain, rule.spec.join(" "));
        if present {
            writeln!(out, "ok rule {text}")?;
        } else if rule.family == Family::V4 {
            writeln!(out, "missing rule {text}")?;
            broken.push(format!("rule {text}"));
        } else {
            writeln!(out, "absent (optional) ip6 rule {text}")?;
        }
    }
    // Not a failure of ours: reported for `doctor`'s probe to name.
    let chain = ipt.forward_chain().as_str();
    let list = ["-w", "5", "-v", "-S", chain].map(String::from);
    if let Ok(o) = ipt.run_args(Family::V4, &list) {
        let text = String::from_utf8_lossy(&o.stdout);
        for shadow in shadowing_rules(&text, chain, &args.interface) {
            writeln!(out, "{}", shadow.line())?;
        }
    }
    drop(out);
    if broken.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("missing in the VM: {}", broken.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_our_rules_for_this_interface() {
        let s = "-P PREROUTING ACCEPT\n\
                 -A PREROUTING -i nc0 -m comment --comment netconnect -j ACCEPT\n\
                 -A PREROUTING -i nc1 -m comment --comment netconnect -j ACCEPT\n\
                 -A PREROUTING -i nc0 -m comment --comment other -j ACCEPT\n\
                 -A DOCKER-USER -o nc0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"netconnect\" -j ACCEPT\n\
                 -A DOCKER-USER -j RETURN\n";
        let m = marked_rules(s, Family::V4, "raw", "nc0");
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].line(),
            "iptables -t raw -A PREROUTING -i nc0 -m comment --comment netconnect -j ACCEPT"
        );
        assert_eq!(m[1].tokens[1], "DOCKER-USER");
        assert_eq!(m[1].tokens.last().unwrap(), "ACCEPT");
    }

    #[test]
    fn names_the_drops_above_our_rules_that_can_meet_the_tunnel() {
        let s = "-N DOCKER-USER\n\
                 -A DOCKER-USER -i nc0 -m comment --comment e2e -c 7 420 -j DROP\n\
                 -A DOCKER-USER -i eth0 -c 0 0 -j DROP\n\
                 -A DOCKER-USER -i nc+ -p tcp -c 1 60 -j REJECT --reject-with icmp-port-unreachable\n\
                 -A DOCKER-USER ! -i nc0 -c 0 0 -j DROP\n\
                 -A DOCKER-USER ! -i eth0 -s 10.0.0.0/8 -m comment --comment \"netconnect too\" -c 0 0 -j DROP\n\
                 -A DOCKER-USER -d 10.1.0.0/16 -c 0 0 -j LOG\n\
                 -A DOCKER-USER -i nc0 -m comment --comment netconnect -c 5 342 -j ACCEPT\n\
                 -A DOCKER-USER -c 0 0 -j DROP\n\
                 -A DOCKER-USER -c 6 360 -j RETURN\n";
        let found = shadowing_rules(s, "DOCKER-USER", "nc0");
        assert_eq!(
            found,
            [
                Shadow {
                    packets: 7,
                    rule: "-A DOCKER-USER -i nc0 -m comment --comment e2e -j DROP".into()
                },
                Shadow {
                    packets: 1,
                    rule: "-A DOCKER-USER -i nc+ -p tcp -j REJECT --reject-with icmp-port-unreachable"
                        .into()
                },
                // A quoted comment that starts with our word is not ours.
                Shadow {
                    packets: 0,
                    rule: "-A DOCKER-USER ! -i eth0 -s 10.0.0.0/8 -m comment --comment \"netconnect too\" -j DROP"
                        .into()
                },
            ]
        );
        for f in &found {
            assert_eq!(Shadow::parse(&f.line()).as_ref(), Some(f));
        }
        // Ours on top (as the helper inserts them): nothing shadows.
        let s = "-A DOCKER-USER -i nc0 -m comment --comment netconnect -c 0 0 -j ACCEPT\n\
                 -A DOCKER-USER -c 0 0 -j DROP\n";
        assert!(shadowing_rules(s, "DOCKER-USER", "nc0").is_empty());
    }

    /// A Podman VM: our accepts went to FORWARD, so a drop put above them
    /// there is what shadows them, and DOCKER-USER's lines are not read.
    #[test]
    fn shadowing_rules_in_forward_where_there_is_no_docker_user() {
        let s = "-P FORWARD DROP\n\
                 -A FORWARD -i nc0 -c 3 180 -j DROP\n\
                 -A FORWARD -i nc0 -m comment --comment netconnect -c 0 0 -j ACCEPT\n\
                 -A FORWARD -m comment --comment \"netavark firewall plugin rules\" -c 9 540 -j NETAVARK_FORWARD\n\
                 -A DOCKER-USER -i nc0 -c 0 0 -j DROP\n";
        assert_eq!(
            shadowing_rules(s, "FORWARD", "nc0"),
            vec![Shadow {
                packets: 3,
                rule: "-A FORWARD -i nc0 -j DROP".into()
            }]
        );
        assert_eq!(shadowing_rules(s, "DOCKER-USER", "nc0").len(), 1);
    }
}

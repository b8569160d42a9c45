//! iptables rules as `iptables -S` prints them: listed, matched, deleted.

use std::process::Command;

use crate::process::{run_timeout, CMD_TIMEOUT};

/// One rule as `iptables -S` prints it.
#[derive(Debug, Clone)]
pub struct IptRule {
    pub binary: &'static str,
    pub table: &'static str,
    /// `-A CHAIN ...` split on whitespace.
    pub tokens: Vec<String>,
}

impl IptRule {
    pub fn line(&self) -> String {
        format!(
            "{} -t {} {}",
            self.binary,
            self.table,
            self.tokens.join(" ")
        )
    }

    /// `iptables -t TABLE -D CHAIN ...`; true if it was deleted.
    pub fn delete(&self) -> bool {
        let mut args: Vec<String> = vec!["-w".into(), "5".into(), "-t".into(), self.table.into()];
        args.push("-D".into());
        args.extend(
            self.tokens[1..]
                .iter()
                .map(|t| t.trim_matches('"').to_string()),
        );
        run_timeout(Command::new(self.binary).args(&args), CMD_TIMEOUT)
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    pub fn has_token(&self, t: &str) -> bool {
        self.tokens.iter().any(|x| x.trim_matches('"') == t)
    }
}

/// Every rule (not policies or chains) of both families, tables
/// raw/filter/nat/mangle.
pub fn list_rules() -> Vec<IptRule> {
    let mut out = Vec::new();
    for binary in ["iptables", "ip6tables"] {
        for table in ["raw", "filter", "nat", "mangle"] {
            let Ok(o) = run_timeout(
                Command::new(binary).args(["-w", "5", "-t", table, "-S"]),
                CMD_TIMEOUT,
            ) else {
                continue;
            };
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                if l.starts_with("-A ") {
                    out.push(IptRule {
                        binary,
                        table,
                        tokens: l.split_whitespace().map(String::from).collect(),
                    });
                }
            }
        }
    }
    out
}

/// Rules commented `netconnect` that name interface `iface`.
pub fn netconnect_rules(iface: &str) -> Vec<IptRule> {
    list_rules()
        .into_iter()
        .filter(|r| r.has_token("netconnect") && r.has_token(iface))
        .collect()
}

/// Deletes [`netconnect_rules`]; returns how many went.
pub fn delete_netconnect_rules(iface: &str) -> usize {
    netconnect_rules(iface)
        .iter()
        .filter(|r| r.delete())
        .count()
}

//! DNS questions as a user asks them: `dig` (bind9-dnsutils), inside a
//! namespace, straight to a server or through the namespace's resolver.

use std::thread;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// What `dig` printed, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dig {
    /// `NOERROR`, `NXDOMAIN`, `REFUSED`...; `TIMEOUT` when no answer came.
    pub status: String,
    /// The answer section's data (addresses), sorted.
    pub answers: Vec<String>,
    /// The authoritative-answer flag.
    pub aa: bool,
    pub raw: String,
}

/// `dig [@server] name qtype [+tcp]`, one try of one second.
pub fn dig(ns: &Netns, server: Option<&str>, name: &str, qtype: &str, tcp: bool) -> Dig {
    let mut args: Vec<String> = vec![
        "dig".into(),
        "+noall".into(),
        "+comments".into(),
        "+answer".into(),
        "+time=1".into(),
        "+tries=1".into(),
    ];
    if tcp {
        args.push("+tcp".into());
    }
    if let Some(s) = server {
        args.push(format!("@{s}"));
    }
    args.extend([name.to_string(), qtype.to_string()]);
    let o = ns.exec(&args);
    let raw = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    parse(&raw)
}

fn parse(raw: &str) -> Dig {
    let status = raw
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("TIMEOUT")
        .trim()
        .to_string();
    let aa = raw
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .and_then(|l| l.split(';').nth(2))
        .is_some_and(|f| f.split_whitespace().any(|w| w == "aa"));
    let mut answers: Vec<String> = raw
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    answers.sort();
    Dig {
        status,
        answers,
        aa,
        raw: raw.to_string(),
    }
}

/// Asks until `done` holds; how long that took, or the last answer.
pub fn wait_dig(
    ns: &Netns,
    server: Option<&str>,
    name: &str,
    qtype: &str,
    timeout: Duration,
    done: impl Fn(&Dig) -> bool,
) -> Result<Duration, Dig> {
    let t0 = Instant::now();
    loop {
        let d = dig(ns, server, name, qtype, false);
        if done(&d) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return Err(d);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_digs_output() {
        let d = super::parse(
            ";; Got answer:\n;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 4242\n\
             ;; flags: qr aa rd; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1\n\n\
             ;; OPT PSEUDOSECTION:\n; EDNS: version: 0, flags:; udp: 1232\n\
             api.shop.docker.internal. 2 IN A 172.19.0.4\napi.shop.docker.internal. 2 IN A 172.19.0.3\n",
        );
        assert_eq!(d.status, "NOERROR");
        assert!(d.aa);
        assert_eq!(d.answers, ["172.19.0.3", "172.19.0.4"]);
        let d = super::parse(
            ";; ->>HEADER<<- opcode: QUERY, status: REFUSED, id: 1\n;; flags: qr rd; QUERY: 1\n",
        );
        assert_eq!((d.status.as_str(), d.aa), ("REFUSED", false));
        assert_eq!(
            super::parse(";; communications error to 10.33.33.1#53: timed out\n").status,
            "TIMEOUT"
        );
    }
}

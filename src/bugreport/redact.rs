//! What leaves the machine in a bug report: a WireGuard private key never
//! (whoever holds it can impersonate this end of the tunnel), and not the
//! user's name either, which their home path spells out. Public keys stay:
//! matching them against the other side's is half of debugging a tunnel.
//! Container names stay too: they are how a report names what failed.
//!
//! One pure function over text, so that every section goes through the
//! same rules whatever tool printed it.

/// What replaces a secret: says something was there, and what kind.
pub const REDACTED: &str = "(redacted)";

/// How a private key is introduced: `private_key=` (UAPI, `wg showconf`'s
/// cousins), `PrivateKey = ` (wg-quick files), `private key: ` (`wg show`
/// with keys shown), in any case. Compared in lower case.
const MARKERS: &[&str] = &["private_key", "privatekey", "private key", "private-key"];

/// What the rules apply to besides the key patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redaction {
    /// Strings known to be secret, replaced wherever they appear: the
    /// patterns miss a key printed without its marker.
    pub secrets: Vec<String>,
    /// Home directories, each shortened to `~`.
    pub homes: Vec<String>,
}

impl Redaction {
    /// The homes a report may show: this user's, and under sudo the
    /// invoking user's (HOME is then root's, and the paths that matter,
    /// such as a Docker Desktop socket, are the user's).
    pub fn from_env() -> Redaction {
        let mut homes = Vec::new();
        if let Some(h) = std::env::var_os("HOME") {
            homes.push(h.to_string_lossy().into_owned());
        }
        if let Ok(u) = std::env::var("SUDO_USER") {
            if !u.is_empty() && !u.contains('/') {
                homes.push(format!("/Users/{u}"));
                homes.push(format!("/home/{u}"));
            }
        }
        Redaction {
            secrets: Vec::new(),
            homes,
        }
    }

    pub fn apply(&self, text: &str) -> String {
        redact(text, &self.secrets, &self.homes)
    }
}

/// Keys after their markers, then each known secret, then each home.
pub fn redact(text: &str, secrets: &[String], homes: &[String]) -> String {
    let mut out = redact_marked_keys(text);
    for s in secrets {
        // A short "secret" would shred the text; no key is this short.
        if s.len() >= 16 {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    let mut homes: Vec<&str> = homes
        .iter()
        .map(|h| h.trim_end_matches('/'))
        // `/` or empty as HOME (a service's environment) is no one's name.
        .filter(|h| h.len() > 1 && h.starts_with('/'))
        .collect();
    // The longest first: /Users/ana/work as HOME inside /Users/ana.
    homes.sort_by_key(|h| std::cmp::Reverse(h.len()));
    homes.dedup();
    for h in homes {
        out = shorten_home(&out, h);
    }
    out
}

/// `home` replaced by `~` where it is a whole path component: not in
/// `/Users/anastasia` for `/Users/ana`.
fn shorten_home(text: &str, home: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(home) {
        let after = &rest[i + home.len()..];
        let whole = after
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'));
        out.push_str(&rest[..i]);
        out.push_str(if whole { "~" } else { home });
        rest = after;
    }
    out.push_str(rest);
    out
}

fn is_base64_key(t: &str) -> bool {
    t.len() == 44
        && t.ends_with('=')
        && t[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn is_hex_key(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The token after each marker (past `=`, `:`, quotes and blanks), when
/// it has a key's shape: 44 characters of base64, or 64 hex digits.
fn redact_marked_keys(text: &str) -> String {
    // ASCII lower-casing keeps every byte offset.
    let lower = text.to_ascii_lowercase();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for m in MARKERS {
        let mut from = 0;
        while let Some(i) = lower[from..].find(m) {
            let start = from + i + m.len();
            from = start;
            let bytes = text.as_bytes();
            let mut s = start;
            while s < bytes.len() && matches!(bytes[s], b' ' | b'\t' | b':' | b'=' | b'"' | b'\'') {
                s += 1;
            }
            let mut e = s;
            while e < bytes.len()
                && (bytes[e].is_ascii_alphanumeric() || matches!(bytes[e], b'+' | b'/' | b'='))
            {
                e += 1;
            }
            let token = &text[s..e];
            if is_base64_key(token) || is_hex_key(token) {
                cuts.push((s, e));
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in cuts {
        if s < at {
            continue;
        }
        out.push_str(&text[at..s]);
        out.push_str(REDACTED);
        at = e;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIV_B64: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PUB_B64: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const PRIV_HEX: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    const PUB_HEX: &str = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";

    fn homes() -> Vec<String> {
        vec!["/Users/ana".into()]
    }

    #[test]
    fn redaction_table() {
        let status_json = format!(
            "{{\n  \"tunnel\": {{\n    \"interface\": \"utun4\",\n    \"host_public_key\": \"{PUB_B64}\",\n    \"vm_public_key\": \"{PUB_B64}\"\n  }}\n}}"
        );
        let uapi = format!(
            "private_key={PRIV_HEX}\nlisten_port=51820\npublic_key={PUB_HEX}\nendpoint=192.168.65.3:51820\nerrno=0\n"
        );
        let cases: Vec<(&str, String, String)> = vec![
            (
                "status json: public keys stay",
                status_json.clone(),
                status_json,
            ),
            (
                "UAPI dump: the hex private key goes, the public key stays",
                uapi.clone(),
                uapi.replace(PRIV_HEX, REDACTED),
            ),
            (
                "helper log, wg-quick style",
                format!("2026-12-08T01:00:00Z helper: [Interface] PrivateKey = {PRIV_B64}\n"),
                "2026-12-08T01:00:00Z helper: [Interface] PrivateKey = (redacted)\n".into(),
            ),
            (
                "wg show with keys",
                format!("interface: wg0\n  public key: {PUB_B64}\n  private key: {PRIV_B64}\n"),
                format!("interface: wg0\n  public key: {PUB_B64}\n  private key: (redacted)\n"),
            ),
            (
                "json field",
                format!("{{\"private_key\": \"{PRIV_B64}\", \"public_key\": \"{PUB_B64}\"}}"),
                format!("{{\"private_key\": \"(redacted)\", \"public_key\": \"{PUB_B64}\"}}"),
            ),
            (
                "a marker with no key after it stays",
                "private_key=(none: the helper keeps its own)\n".into(),
                "private_key=(none: the helper keeps its own)\n".into(),
            ),
            (
                "home shortened",
                "engine: unix:///Users/ana/.docker/run/docker.sock".into(),
                "engine: unix://~/.docker/run/docker.sock".into(),
            ),
            (
                "home alone, at the end",
                "HOME is /Users/ana".into(),
                "HOME is ~".into(),
            ),
            (
                "another user whose name starts the same stays",
                "/Users/anastasia/.docker/run/docker.sock".into(),
                "/Users/anastasia/.docker/run/docker.sock".into(),
            ),
            (
                "container names stay",
                "helper: running netconnect-helper-netconnect0 3f2a9c1d7b4e".into(),
                "helper: running netconnect-helper-netconnect0 3f2a9c1d7b4e".into(),
            ),
        ];
        for (what, input, want) in cases {
            assert_eq!(redact(&input, &[], &homes()), want, "{what}");
        }
    }

    #[test]
    fn a_known_secret_goes_wherever_it_is() {
        let text = format!("peer said {PRIV_B64} unprompted");
        assert_eq!(
            redact(&text, &[PRIV_B64.to_owned()], &[]),
            "peer said (redacted) unprompted"
        );
        // Too short to be a key: left alone rather than shredding the text.
        assert_eq!(redact("a b a", &["a".into()], &[]), "a b a");
    }

    #[test]
    fn the_sudo_users_home_and_an_odd_home() {
        let homes = vec![
            "/".to_owned(),
            "/var/root".to_owned(),
            "/Users/ana/".to_owned(),
            "/home/ana".to_owned(),
        ];
        assert_eq!(
            redact(
                "/Users/ana/.docker/run/docker.sock /home/ana/x /var/root/y /etc/z",
                &[],
                &homes
            ),
            "~/.docker/run/docker.sock ~/x ~/y /etc/z"
        );
    }
}

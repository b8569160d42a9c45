//! The fuzz target of the helper's `iptables -S` parsers, Linux-only as
//! they are; listed in [`super::FUZZ_TARGETS`] and run by the driver in
//! `crate::fuzzing`.

use crate::fuzzing::text;

/// `iptables -S` words as the parser splits them, quoted back.
fn render_words(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) {
                format!("\"{w}\"")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `iptables -S` and `iptables -v -S DOCKER-USER` as `down` and `doctor`
/// read them: a rule found as ours carries our comment and interface and
/// its words survive a quote/split round trip (`down` deletes by them);
/// a shadowing rule drops, and its `helper-check` line reads back as
/// itself.
pub fn iptables(data: &[u8]) {
    use crate::helper::cleanup::{marked_rules, shadowing_rules, words, Shadow};
    use crate::helper::firewall::{Family, COMMENT};
    let text = text(data);
    for m in marked_rules(&text, Family::V4, "filter", "nc0") {
        assert_eq!(m.tokens[0], "-A");
        let has = |a: &str, b: &str| m.tokens.windows(2).any(|w| w[0] == a && w[1] == b);
        assert!(has("--comment", COMMENT));
        assert!(has("-i", "nc0") || has("-o", "nc0"));
        assert_eq!(
            words(&render_words(&m.tokens)),
            m.tokens,
            "words round trip"
        );
    }
    for s in shadowing_rules(&text, "DOCKER-USER", "nc0") {
        let w = words(&s.rule);
        assert!(w
            .windows(2)
            .any(|w| w[0] == "-j" && (w[1] == "DROP" || w[1] == "REJECT")));
        assert_eq!(Shadow::parse(&s.line()), Some(s.clone()), "shadow line");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_iptables() {
        crate::fuzzing::tests::run("iptables");
    }
}

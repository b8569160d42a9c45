//! Each effect `up` has on this machine, read back through the OS's own
//! view and compared with what was asked. The first run on a machine we
//! never tested on (the first real Mac) is where `route add` may succeed
//! and `netstat -rn` still not show the route, or a resolver file be
//! written and `scutil --dns` not list it: without this, the user sees a
//! timeout and nothing else. A disagreement is one line that names the
//! effect, what was asked and what the OS shows.
//!
//! Plain data: the readings of macOS's tools are parsers over their text
//! (tested here, on every OS, against recorded output), the comparisons
//! pure functions; the OS layer only runs the tool or asks netlink.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

/// What the OS shows and what was asked, for one effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// `interface utun4`, `route 172.18.0.0/16`, `resolver docker.internal`.
    pub effect: String,
    pub asked: String,
    pub seen: String,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: asked {}, the OS shows {}",
            self.effect, self.asked, self.seen
        )
    }
}

/// An interface as the OS shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceView {
    pub mtu: Option<u32>,
    pub up: bool,
    /// Each address with its point-to-point peer, if it has one.
    pub addresses: Vec<(IpAddr, Option<IpAddr>)>,
}

/// The tunnel interface against its point-to-point pairs and MTU. Other
/// addresses (an IPv6 link-local one macOS adds) are not a disagreement.
pub fn check_interface(
    name: &str,
    pairs: &[(IpAddr, IpAddr)],
    mtu: u32,
    seen: &InterfaceView,
) -> Vec<Disagreement> {
    let effect = format!("interface {name}");
    let mut out = Vec::new();
    if seen.mtu != Some(mtu) {
        out.push(Disagreement {
            effect: effect.clone(),
            asked: format!("MTU {mtu}"),
            seen: seen
                .mtu
                .map_or_else(|| "no MTU".to_owned(), |m| format!("MTU {m}")),
        });
    }
    if !seen.up {
        out.push(Disagreement {
            effect: effect.clone(),
            asked: "up".into(),
            seen: "down".into(),
        });
    }
    for &(local, peer) in pairs {
        let found = seen.addresses.iter().find(|(a, _)| *a == local);
        let shown = |p: Option<IpAddr>| match p {
            Some(p) => format!("{local} --> {p}"),
            None => format!("{local} with no peer"),
        };
        match found {
            Some((_, p)) if *p == Some(peer) => {}
            Some((_, p)) => out.push(Disagreement {
                effect: effect.clone(),
                asked: format!("{local} --> {peer}"),
                seen: shown(*p),
            }),
            None => out.push(Disagreement {
                effect: effect.clone(),
                asked: format!("{local} --> {peer}"),
                seen: "no such address".into(),
            }),
        }
    }
    out
}

/// Our routes through the interface, as the routing table shows them,
/// against those `up` added and did not remove.
pub fn check_routes(
    iface: &str,
    wanted: &BTreeSet<IpNet>,
    seen: &BTreeSet<IpNet>,
) -> Vec<Disagreement> {
    let missing = wanted.difference(seen).map(|n| Disagreement {
        effect: format!("route {n}"),
        asked: format!("via {iface}"),
        seen: format!("no route for {n} via {iface}"),
    });
    let extra = seen.difference(wanted).map(|n| Disagreement {
        effect: format!("route {n}"),
        asked: "removed".into(),
        seen: format!("still a route via {iface}"),
    });
    missing.chain(extra).collect()
}

/// `ifconfig NAME` on macOS: the flags line's MTU and `UP`, each `inet`
/// and `inet6` with its `-->` peer. `None` when the text is no interface.
pub fn parse_ifconfig(text: &str) -> Option<InterfaceView> {
    let mut lines = text.lines();
    let head = lines.find(|l| !l.trim().is_empty())?;
    let (_, rest) = head.split_once(": flags=")?;
    let flags = rest
        .split_once('<')
        .and_then(|(_, f)| f.split_once('>'))
        .map(|(f, _)| f)
        .unwrap_or("");
    let mut view = InterfaceView {
        up: flags.split(',').any(|f| f == "UP"),
        mtu: rest
            .split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1)
            .and_then(|m| m.parse().ok()),
        addresses: Vec::new(),
    };
    for l in lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (Some(&kind), Some(addr)) = (w.first(), w.get(1)) else {
            continue;
        };
        if kind != "inet" && kind != "inet6" {
            continue;
        }
        // A link-local inet6 carries its scope: `fe80::1%utun4`.
        let addr = addr.split('%').next().unwrap_or(addr);
        let Ok(addr) = addr.parse::<IpAddr>() else {
            continue;
        };
        let peer = match (w.get(2), w.get(3)) {
            (Some(&"-->"), Some(p)) => p.split('%').next().and_then(|p| p.parse().ok()),
            _ => None,
        };
        view.addresses.push((addr, peer));
    }
    Some(view)
}

/// macOS's resolver configuration as the system resolves with it.
pub fn scutil_dns_command() -> crate::command::Cmd {
    crate::command::Cmd::new("/usr/sbin/scutil", ["--dns"])
}

/// One resolver of `scutil --dns`'s first section (the one that sends a
/// domain's questions to its servers; the scoped section after it is for
/// per-interface queries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverView {
    pub domain: Option<String>,
    pub nameservers: Vec<IpAddr>,
    pub port: Option<u16>,
}

pub fn parse_scutil_dns(text: &str) -> Vec<ResolverView> {
    let mut out: Vec<ResolverView> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("DNS configuration (") {
            break;
        }
        if l.starts_with("resolver #") {
            out.push(ResolverView::default());
            continue;
        }
        let (Some(cur), Some((key, value))) = (out.last_mut(), l.split_once(':')) else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "domain" {
            cur.domain = Some(value.trim_end_matches('.').to_ascii_lowercase());
        } else if key.starts_with("nameserver[") {
            if let Ok(a) = value.split('%').next().unwrap_or(value).parse() {
                cur.nameservers.push(a);
            }
        } else if key == "port" {
            cur.port = value.parse().ok();
        }
    }
    out
}

/// The system's resolver for `domain` against our server: some resolver
/// for exactly that domain lists `server` on `port` (53 when none shown).
pub fn check_resolver(
    domain: &str,
    server: IpAddr,
    port: u16,
    seen: &[ResolverView],
) -> Option<Disagreement> {
    let effect = format!("resolver {domain}");
    let asked = format!("nameserver {server} port {port}");
    let mine: Vec<&ResolverView> = seen
        .iter()
        .filter(|r| r.domain.as_deref() == Some(domain))
        .collect();
    if mine
        .iter()
        .any(|r| r.nameservers.contains(&server) && r.port.unwrap_or(53) == port)
    {
        return None;
    }
    let shown = mine
        .iter()
        .map(|r| {
            let ns: Vec<String> = r.nameservers.iter().map(|a| a.to_string()).collect();
            format!(
                "nameserver {} port {}",
                if ns.is_empty() {
                    "none".to_owned()
                } else {
                    ns.join(" ")
                },
                r.port.unwrap_or(53)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Some(Disagreement {
        effect,
        asked,
        seen: if shown.is_empty() {
            format!("no resolver for {domain} (scutil --dns)")
        } else {
            shown
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pairs() -> Vec<(IpAddr, IpAddr)> {
        vec![
            (ip("10.33.33.1"), ip("10.33.33.2")),
            (ip("fd33::1"), ip("fd33::2")),
        ]
    }

    /// `ifconfig utun4` on macOS 14 after `up`'s address commands
    /// (`ifconfig utun4 inet 10.33.33.1 10.33.33.2 netmask 255.255.255.255
    /// mtu 1420 up`, `ifconfig utun4 inet6 fd33::1 fd33::2 prefixlen 128`):
    /// macOS adds a link-local address of its own.
    const IFCONFIG: &str = "utun4: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> mtu 1420
\toptions=6460<TSO4,TSO6,CHANNEL_IO,PARTIAL_CSUM,ZEROINVERT_CSUM>
\tinet 10.33.33.1 --> 10.33.33.2 netmask 0xffffffff
\tinet6 fe80::e0b:1cff:fe2a:9b0c%utun4 prefixlen 64 scopeid 0x17
\tinet6 fd33::1 --> fd33::2 prefixlen 128
\tnd6 options=201<PERFORMNUD,DAD>
";

    #[test]
    fn ifconfig_of_a_utun_reads_back_as_asked() {
        let v = parse_ifconfig(IFCONFIG).unwrap();
        assert_eq!(v.mtu, Some(1420));
        assert!(v.up);
        assert_eq!(
            v.addresses,
            [
                (ip("10.33.33.1"), Some(ip("10.33.33.2"))),
                (ip("fe80::e0b:1cff:fe2a:9b0c"), None),
                (ip("fd33::1"), Some(ip("fd33::2"))),
            ]
        );
        assert!(check_interface("utun4", &pairs(), 1420, &v).is_empty());
    }

    #[test]
    fn an_mtu_that_did_not_take_a_missing_address_and_a_wrong_peer_are_each_said() {
        // The MTU left at the utun default, the IPv6 pair never added, the
        // IPv4 peer another; and the interface down.
        let text = "utun4: flags=8010<POINTOPOINT,MULTICAST> mtu 1500
\tinet 10.33.33.1 --> 10.33.33.9 netmask 0xffffffff
";
        let v = parse_ifconfig(text).unwrap();
        let d: Vec<String> = check_interface("utun4", &pairs(), 1420, &v)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            d,
            [
                "interface utun4: asked MTU 1420, the OS shows MTU 1500",
                "interface utun4: asked up, the OS shows down",
                "interface utun4: asked 10.33.33.1 --> 10.33.33.2, the OS shows 10.33.33.1 --> 10.33.33.9",
                "interface utun4: asked fd33::1 --> fd33::2, the OS shows no such address",
            ]
        );
        assert_eq!(
            parse_ifconfig("ifconfig: interface utun9 does not exist\n"),
            None
        );
        assert_eq!(parse_ifconfig(""), None);
    }

    /// `scutil --dns` on macOS 14 with /etc/resolver/docker.internal
    /// written by `up` (its `port 53` line shows as `port`), a VPN's
    /// domain, and the scoped section, whose resolvers do not count.
    const SCUTIL: &str = "DNS configuration

resolver #1
  search domain[0] : lan
  nameserver[0] : 192.168.1.1
  if_index : 14 (en0)
  flags    : Request A records
  reach    : 0x00020002 (Reachable,Directly Reachable Address)

resolver #2
  domain   : local
  options  : mdns
  timeout  : 5
  flags    : Request A records
  reach    : 0x00000000 (Not Reachable)
  order    : 300000

resolver #3
  domain   : docker.internal
  nameserver[0] : 10.33.33.1
  port     : 53
  flags    : Request A records, Request AAAA records
  reach    : 0x00000003 (Reachable,Transient Connection)

resolver #4
  domain   : corp.example
  nameserver[0] : 10.8.0.1
  nameserver[1] : fe80::1%utun3
  flags    : Request A records
  reach    : 0x00000003 (Reachable,Transient Connection)

DNS configuration (for scoped queries)

resolver #1
  domain   : shop.test
  nameserver[0] : 10.33.33.1
  if_index : 23 (utun4)
  flags    : Scoped, Request A records
  reach    : 0x00000003 (Reachable,Transient Connection)
";

    #[test]
    fn scutil_lists_our_resolver() {
        assert_eq!(scutil_dns_command().to_string(), "/usr/sbin/scutil --dns");
        let r = parse_scutil_dns(SCUTIL);
        assert_eq!(r.len(), 4, "the scoped section is not read: {r:?}");
        assert_eq!(
            r[2],
            ResolverView {
                domain: Some("docker.internal".into()),
                nameservers: vec![ip("10.33.33.1")],
                port: Some(53),
            }
        );
        assert_eq!(r[3].nameservers, [ip("10.8.0.1"), ip("fe80::1")]);
        assert_eq!(r[0].domain, None);
        assert_eq!(
            check_resolver("docker.internal", ip("10.33.33.1"), 53, &r),
            None
        );
    }

    #[test]
    fn a_resolver_scutil_does_not_list_or_lists_otherwise_is_said() {
        let r = parse_scutil_dns(SCUTIL);
        // Only in the scoped section: not a resolver for the domain.
        assert_eq!(
            check_resolver("shop.test", ip("10.33.33.1"), 53, &r)
                .unwrap()
                .to_string(),
            "resolver shop.test: asked nameserver 10.33.33.1 port 53, the OS shows no resolver for shop.test (scutil --dns)"
        );
        assert_eq!(
            check_resolver("docker.internal", ip("10.33.33.1"), 5353, &r)
                .unwrap()
                .to_string(),
            "resolver docker.internal: asked nameserver 10.33.33.1 port 5353, the OS shows nameserver 10.33.33.1 port 53"
        );
        assert_eq!(
            check_resolver("corp.example", ip("10.33.33.1"), 53, &r)
                .unwrap()
                .seen,
            "nameserver 10.8.0.1 fe80::1 port 53"
        );
    }

    #[test]
    fn routes_missing_or_left_are_said() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let wanted: BTreeSet<IpNet> = [n("172.17.0.0/16"), n("172.18.0.0/16")].into();
        let seen: BTreeSet<IpNet> = [n("172.18.0.0/16"), n("10.89.0.0/24")].into();
        let d: Vec<String> = check_routes("utun4", &wanted, &seen)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            d,
            [
                "route 172.17.0.0/16: asked via utun4, the OS shows no route for 172.17.0.0/16 via utun4",
                "route 10.89.0.0/24: asked removed, the OS shows still a route via utun4",
            ]
        );
        assert!(check_routes("utun4", &wanted, &wanted).is_empty());
    }
}

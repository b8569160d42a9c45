//! Who holds a port on macOS, where no `/proc` exists: `lsof` asked for
//! its field output (`-F`), one field a line, each line's first character
//! naming it: `p` a process id, `c` its command name, `n` a file's name,
//! for a socket `LOCAL` or `LOCAL->REMOTE`. The command is made and the
//! output parsed here, with no macOS API, so both are golden-tested on
//! Linux; `macos.rs` runs it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{binds_over, Transport};
use crate::command::Cmd;

/// By absolute path, as every command root runs.
pub const LSOF: &str = "/usr/sbin/lsof";

/// `-n -P`: addresses and ports as numbers, never looked up (a DNS lookup
/// while our DNS server is what failed would be slow at best). `-i` also
/// matches a socket whose *remote* port is `port`; [`holders`] keeps only
/// local ones.
pub fn command(transport: Transport, port: u16) -> Cmd {
    let mut args = vec![
        "-nP".to_owned(),
        "-F".into(),
        "pcn".into(),
        "-i".into(),
        format!("{transport}:{port}"),
    ];
    if transport == Transport::Tcp {
        args.push("-sTCP:LISTEN".into());
    }
    Cmd::new(LSOF, args)
}

/// The (pid, command name) of each process in `lsof -F pcn` output with a
/// socket bound to `wanted`'s port on its address or a wildcard covering
/// it. Fields other than p, c and n (lsof adds `f` on some versions) are
/// skipped.
pub fn holders(output: &str, wanted: SocketAddr) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let mut process: Option<(u32, String)> = None;
    for line in output.lines() {
        let Some(field) = line.chars().next() else {
            continue;
        };
        let value = &line[field.len_utf8()..];
        match field {
            'p' => process = value.parse().ok().map(|pid| (pid, String::new())),
            'c' => {
                if let Some((_, name)) = &mut process {
                    *name = value.to_owned();
                }
            }
            'n' => {
                let Some(p) = &process else { continue };
                let holds = local_address(value)
                    .is_some_and(|(ip, port)| port == wanted.port() && binds_over(ip, wanted.ip()));
                if holds && !found.contains(p) {
                    found.push(p.clone());
                }
            }
            _ => {}
        }
    }
    found
}

/// The local end of a socket's name: `*:53`, `10.33.33.1:53`,
/// `[::1]:5353`, `[fe80::1%lo0]:53`, each maybe followed by `->REMOTE`.
/// `*` is a wildcard of either family; lsof does not say which.
fn local_address(name: &str) -> Option<(IpAddr, u16)> {
    let local = name.split("->").next()?;
    let (host, port) = local.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let ip = if host == "*" {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = host.split('%').next()?;
        host.parse().ok()?
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_commands() {
        assert_eq!(
            command(Transport::Udp, 53).to_string(),
            "/usr/sbin/lsof -nP -F pcn -i UDP:53"
        );
        assert_eq!(
            command(Transport::Tcp, 53).to_string(),
            "/usr/sbin/lsof -nP -F pcn -i TCP:53 -sTCP:LISTEN"
        );
    }

    /// `lsof -nP -F pcn -i UDP:53` with dnsmasq on the wildcard and on
    /// 10.33.33.1, and mDNSResponder with a query of its own out to port 53
    /// and a link-local socket. The first process is in the form lsof 4.95
    /// printed on Linux (no `f` lines); the second has the `f` lines some
    /// versions add unasked.
    const UDP_53: &str = "p812
cdnsmasq
n*:53
n10.33.33.1:53
p305
cmDNSResponder
f9
n192.168.1.20:60512->192.168.1.1:53
f12
n[fe80::1%lo0]:53
";

    #[test]
    fn local_sockets_on_the_port_name_their_processes() {
        assert_eq!(
            holders(UDP_53, sa("10.33.33.1:53")),
            [(812, "dnsmasq".to_owned())]
        );
        // The wildcard is taken to cover IPv6; the link-local one is exact.
        assert_eq!(
            holders(UDP_53, sa("[fe80::1]:53")),
            [
                (812, "dnsmasq".to_owned()),
                (305, "mDNSResponder".to_owned())
            ]
        );
        // A remote port 53 is not a local one.
        assert_eq!(
            holders(UDP_53, sa("192.168.1.20:53")),
            [(812, "dnsmasq".to_owned())]
        );
        assert_eq!(
            holders(UDP_53, sa("192.168.1.20:60512")),
            [(305, "mDNSResponder".to_owned())]
        );
        // Nothing found: lsof prints nothing (and exits 1).
        assert_eq!(holders("", sa("10.33.33.1:53")), []);
        // Cut or foreign lines are skipped.
        assert_eq!(
            holders("pnope\ncx\nn*:53\n\nn*:53\n", sa("10.33.33.1:53")),
            []
        );
    }

    #[test]
    fn socket_names() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(local_address("*:53"), Some((ip("::"), 53)));
        assert_eq!(
            local_address("127.0.0.1:8053"),
            Some((ip("127.0.0.1"), 8053))
        );
        assert_eq!(local_address("[::1]:5353"), Some((ip("::1"), 5353)));
        assert_eq!(
            local_address("10.0.0.2:49838->8.8.8.8:53"),
            Some((ip("10.0.0.2"), 49838))
        );
        assert_eq!(local_address("localhost:domain"), None);
    }
}

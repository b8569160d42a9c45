//! macOS routes and interface addresses as command plans: `ifconfig` and
//! `route` command lines made by pure functions, and the routing table read
//! back by parsing `netstat -rn`. Nothing here needs macOS to compile or to
//! be tested; only the choice of this router as the platform's is macOS-only
//! (`routes/mod.rs`). The commands are those docker-mac-net-connect and
//! wg-quick run on macOS, so their behaviour is known from the field.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::SystemRoute;
use crate::command::{Cmd, CommandError, Runner};

// By absolute path: root never runs what a PATH chosen by someone else
// finds first. These are where macOS keeps them (the sealed system volume).
pub const IFCONFIG: &str = "/sbin/ifconfig";
pub const ROUTE: &str = "/sbin/route";
pub const NETSTAT: &str = "/usr/sbin/netstat";

/// `ifconfig` commands that give the utun its MTU and its point-to-point
/// addresses, one pair (local, peer) per family. The kernel adds the host
/// route to each peer itself. `up` goes with the IPv4 address, as in
/// wg-quick; utun is point-to-point, so IPv6 needs no link-local first.
pub fn address_commands(iface: &str, pairs: &[(IpAddr, IpAddr)], mtu: u32) -> Vec<Cmd> {
    let mut out = vec![Cmd::new(IFCONFIG, [iface, "mtu", &mtu.to_string()])];
    for (local, peer) in pairs {
        out.push(match local {
            IpAddr::V4(_) => Cmd::new(
                IFCONFIG,
                [
                    iface.to_owned(),
                    "inet".into(),
                    format!("{local}/32"),
                    peer.to_string(),
                    "up".into(),
                ],
            ),
            IpAddr::V6(_) => Cmd::new(
                IFCONFIG,
                [
                    iface.to_owned(),
                    "inet6".into(),
                    local.to_string(),
                    peer.to_string(),
                    "prefixlen".into(),
                    "128".into(),
                ],
            ),
        });
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOp {
    Add,
    Delete,
}

/// `route -q -n add|delete -inet|-inet6 NET -interface IFACE`. Delete names
/// the interface too, so that it removes our route and never a route of the
/// same prefix that a VPN added through its own interface.
pub fn route_command(op: RouteOp, iface: &str, net: IpNet) -> Cmd {
    let verb = match op {
        RouteOp::Add => "add",
        RouteOp::Delete => "delete",
    };
    let family = match net {
        IpNet::V4(_) => "-inet",
        IpNet::V6(_) => "-inet6",
    };
    Cmd::new(
        ROUTE,
        [
            "-q".to_owned(),
            "-n".into(),
            verb.into(),
            family.into(),
            net.trunc().to_string(),
            "-interface".into(),
            iface.into(),
        ],
    )
}

/// The interface's flags, MTU and addresses (`crate::readback::parse_ifconfig`).
pub fn ifconfig_command(iface: &str) -> Cmd {
    Cmd::new(IFCONFIG, [iface])
}

/// Both routing tables, numeric.
pub fn netstat_command() -> Cmd {
    Cmd::new(NETSTAT, ["-rn"])
}

/// One row of `netstat -rn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetstatRoute {
    pub destination: IpNet,
    pub gateway: String,
    pub flags: String,
    pub netif: String,
}

/// Parse `netstat -rn` as macOS prints it: an `Internet:` and an
/// `Internet6:` section, each with its own header (macOS 11.3 dropped the
/// `Refs` and `Use` columns from the IPv4 one, so columns are found by
/// name). IPv4 destinations are abbreviated the BSD way: `127`,
/// `192.168.1`, `10.10.10/24`, `224.0.0/4`; a missing length is the
/// classful mask (netstat omits it exactly when the mask is classful), and a
/// host route (`H`) is /32. IPv6 ones may carry a scope: `fe80::%utun3/64`.
/// Rows that do not parse are skipped: the table is informational, a
/// conflict check must not fail on one odd line.
pub fn parse_netstat(text: &str) -> Vec<NetstatRoute> {
    #[derive(Clone, Copy)]
    enum Family {
        V4,
        V6,
    }
    let mut family = None;
    let mut cols: Option<(usize, usize, usize)> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        match t {
            "Internet:" => {
                (family, cols) = (Some(Family::V4), None);
                continue;
            }
            "Internet6:" => {
                (family, cols) = (Some(Family::V6), None);
                continue;
            }
            _ => {}
        }
        let Some(fam) = family else { continue };
        let fields: Vec<&str> = t.split_whitespace().collect();
        if fields.first() == Some(&"Destination") {
            let at = |name: &str| fields.iter().position(|f| *f == name);
            cols = at("Gateway")
                .zip(at("Flags"))
                .zip(at("Netif"))
                .map(|((g, f), n)| (g, f, n));
            continue;
        }
        let Some((g, f, n)) = cols else { continue };
        // Columns are wherever the header put them, Netif not always last.
        if fields.len() <= g.max(f).max(n) {
            continue;
        }
        let (dest, flags) = (fields[0], fields[f]);
        let destination = match fam {
            Family::V4 => parse_v4_destination(dest, flags.contains('H')),
            Family::V6 => parse_v6_destination(dest),
        };
        if let Some(destination) = destination {
            out.push(NetstatRoute {
                destination,
                gateway: fields[g].to_owned(),
                flags: flags.to_owned(),
                netif: fields[n].to_owned(),
            });
        }
    }
    out
}

fn parse_v4_destination(dest: &str, host: bool) -> Option<IpNet> {
    if dest == "default" {
        return Some(IpNet::V4(Default::default()));
    }
    let (addr, len) = match dest.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (dest, None),
    };
    let parts: Vec<u8> = addr
        .split('.')
        .map(|p| p.parse::<u8>().ok())
        .collect::<Option<_>>()?;
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    octets[..parts.len()].copy_from_slice(&parts);
    let ip = Ipv4Addr::from(octets);
    let len = len.unwrap_or(if host {
        32
    } else {
        // The classful mask; a full address with host bits set under it
        // can only have been printed as a host.
        let classful = match octets[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        };
        if parts.len() == 4 && u32::from(ip) & (u32::MAX >> classful) != 0 {
            32
        } else {
            classful
        }
    });
    IpNet::new(IpAddr::V4(ip), len).ok()
}

fn parse_v6_destination(dest: &str) -> Option<IpNet> {
    if dest == "default" {
        return Some(IpNet::V6(Default::default()));
    }
    let (addr, len) = match dest.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok()?),
        None => (dest, 128),
    };
    let addr = addr.split('%').next()?;
    IpNet::new(IpAddr::V6(addr.parse::<Ipv6Addr>().ok()?), len).ok()
}

/// Split the table into the routes we added through `iface` (static, `S`)
/// and the machine's other routes, which a Docker subnet must not shadow.
/// Neither are: the kernel's own routes on `iface` (the peer's host route,
/// `fe80::%utunN/64`), entries cloned from a route (`W`: the ARP and
/// neighbour caches), multicast (`m`) and broadcast (`b`) entries.
pub fn split_routes(rows: &[NetstatRoute], iface: &str) -> (BTreeSet<IpNet>, Vec<SystemRoute>) {
    let mut ours = BTreeSet::new();
    let mut system = Vec::new();
    for r in rows {
        if r.netif == iface {
            if r.flags.contains('S') {
                ours.insert(r.destination.trunc());
            }
        } else if !r.flags.contains(['W', 'm', 'b']) {
            system.push(SystemRoute {
                destination: r.destination,
                interface: r.netif.clone(),
            });
        }
    }
    (ours, system)
}

/// Routes through one utun, by running the plans above.
pub struct MacRouter<R: Runner> {
    runner: R,
    name: String,
}

impl<R: Runner> MacRouter<R> {
    pub fn new(interface: &str, runner: R) -> Self {
        MacRouter {
            runner,
            name: interface.to_owned(),
        }
    }

    pub fn interface(&self) -> &str {
        &self.name
    }

    pub async fn configure(
        &self,
        pairs: &[(IpAddr, IpAddr)],
        mtu: u32,
    ) -> Result<(), CommandError> {
        for cmd in address_commands(&self.name, pairs, mtu) {
            self.runner.run(&cmd).await?;
        }
        Ok(())
    }

    pub async fn current(&self) -> Result<(BTreeSet<IpNet>, Vec<SystemRoute>), CommandError> {
        let table = self.runner.run(&netstat_command()).await?;
        Ok(split_routes(&parse_netstat(&table), &self.name))
    }

    /// What `ifconfig` shows; an answer that is no interface reads as
    /// one with nothing (every asked address then a disagreement).
    pub async fn view(&self) -> Result<crate::readback::InterfaceView, CommandError> {
        let text = self.runner.run(&ifconfig_command(&self.name)).await?;
        Ok(crate::readback::parse_ifconfig(&text).unwrap_or_default())
    }

    pub async fn add(&self, net: IpNet) -> Result<(), CommandError> {
        self.runner
            .run(&route_command(RouteOp::Add, &self.name, net))
            .await
            .map(drop)
    }

    pub async fn remove(&self, net: IpNet) -> Result<(), CommandError> {
        self.runner
            .run(&route_command(RouteOp::Delete, &self.name, net))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::RecordingRunner;
    use crate::routes::plan;

    fn lines(cmds: &[Cmd]) -> Vec<String> {
        cmds.iter().map(Cmd::to_string).collect()
    }
    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn nets(s: &[&str]) -> BTreeSet<IpNet> {
        s.iter().map(|n| net(n)).collect()
    }

    /// The whole of what `platform::create_tunnel` runs on a Mac after it
    /// opened the utun itself: its MTU and its own point-to-point pairs. No
    /// `alias`, no `route` and no 10.0.0.x, the address `tun` gives a utun
    /// it configures (and routes as 10.0.0.0/24, a common home LAN).
    #[test]
    fn the_utun_gets_exactly_its_own_addresses() {
        let default = [
            ("10.33.33.1".parse().unwrap(), "10.33.33.2".parse().unwrap()),
            (
                "fd33:33:33::1".parse().unwrap(),
                "fd33:33:33::2".parse().unwrap(),
            ),
        ];
        let v6_only = [("fd00:aa::1".parse().unwrap(), "fd00:aa::2".parse().unwrap())];
        for (pairs, want) in [
            (
                &default[..],
                &[
                    "/sbin/ifconfig utun7 mtu 1420",
                    "/sbin/ifconfig utun7 inet 10.33.33.1/32 10.33.33.2 up",
                    "/sbin/ifconfig utun7 inet6 fd33:33:33::1 fd33:33:33::2 prefixlen 128",
                ][..],
            ),
            (
                &v6_only[..],
                &[
                    "/sbin/ifconfig utun7 mtu 1420",
                    "/sbin/ifconfig utun7 inet6 fd00:aa::1 fd00:aa::2 prefixlen 128",
                ][..],
            ),
        ] {
            let plan = lines(&address_commands("utun7", pairs, 1420));
            assert_eq!(plan, want);
            for l in &plan {
                assert!(!l.contains("10.0.0."), "{l}");
                assert!(!l.contains("alias") && !l.starts_with("/sbin/route"), "{l}");
            }
        }
    }

    #[test]
    fn route_plans_both_families() {
        assert_eq!(
            route_command(RouteOp::Add, "utun4", net("172.18.0.0/16")).to_string(),
            "/sbin/route -q -n add -inet 172.18.0.0/16 -interface utun4"
        );
        assert_eq!(
            route_command(RouteOp::Delete, "utun4", net("172.18.0.0/16")).to_string(),
            "/sbin/route -q -n delete -inet 172.18.0.0/16 -interface utun4"
        );
        assert_eq!(
            route_command(RouteOp::Add, "utun4", net("fc00:f853:ccd:e793::/64")).to_string(),
            "/sbin/route -q -n add -inet6 fc00:f853:ccd:e793::/64 -interface utun4"
        );
        assert_eq!(
            route_command(RouteOp::Delete, "utun4", net("fc00:f853:ccd:e793::/64")).to_string(),
            "/sbin/route -q -n delete -inet6 fc00:f853:ccd:e793::/64 -interface utun4"
        );
        // Host bits never reach `route`.
        assert_eq!(
            route_command(RouteOp::Add, "utun4", net("172.18.0.1/16")).to_string(),
            "/sbin/route -q -n add -inet 172.18.0.0/16 -interface utun4"
        );
    }

    /// The seed article's table after docker-mac-net-connect started
    /// (macOS 12+ format, no Refs/Use), verbatim.
    const SEED_AFTER: &str = "\
Routing tables

Internet:
Destination        Gateway            Flags           Netif Expire
default            192.168.1.1        UGScg             en0
default            link#17            UCSIg       bridge100      !
10.33.33.2         10.33.33.1         UH              utun0
127                127.0.0.1          UCS               lo0
127.0.0.1          127.0.0.1          UH                lo0
169.254            link#6             UCS               en0      !
172.17             utun0              USc             utun0
172.18             utun0              USc             utun0
192.168.1          link#6             UCS               en0      !
192.168.1.1/32     link#6             UCS               en0      !
192.168.1.1        84:90:a:3e:a2:4    UHLWIir           en0   1126
192.168.1.10/32    link#6             UCS               en0      !
192.168.1.11       80:c:f9:6b:68:84   UHLWI             en0   1100
192.168.64         link#17            UC          bridge100      !
192.168.64.1       16.7d.da.9a.15.64  UHLWI             lo0
192.168.64.3       6.c5.4b.b4.32.aa   UHLWIi      bridge100    248
224.0.0/4          link#6             UmCS              en0      !
224.0.0.251        1:0:5e:0:0:fb      UHmLWI            en0
224.0.0.251        1:0:5e:0:0:fb      UHmLWIg     bridge100
239.255.255.250    1:0:5e:7f:ff:fa    UHmLWI            en0
255.255.255.255/32 link#6             UCS               en0      !
";

    /// An older macOS (with Refs and Use), from a public Q&A thread, plus
    /// an IPv6 section as macOS prints it, with scoped link-local and
    /// multicast routes, a VPN on utun3 and our own routes on utun5.
    const OLD_WITH_V6: &str = "\
Routing tables

Internet:
Destination        Gateway            Flags        Refs      Use   Netif Expire
default            10.10.10.1         UGSc           20       16     en0
10.10.10/24        link#4             UCS             1        0     en0
10.10.10.1/32      link#4             UCS             1        0     en0
10.10.10.1         bc:67:1c:40:3:f6   UHLWIir        21       14     en0   1193
10.10.10.104/32    link#4             UCS             0        0     en0
127                127.0.0.1          UCS             0        0     lo0
127.0.0.1          127.0.0.1          UH             54  2734893     lo0
169.254            link#4             UCS             0        0     en0
172.16.111/24      link#11            UC              1        0  vmnet1
192.168.220        link#12            UC              1        0  vmnet8
224.0.0/4          link#4             UmCS            2        0     en0
255.255.255.255/32 link#4             UCS             0        0     en0

Internet6:
Destination                             Gateway                         Flags         Netif Expire
default                                 fe80::%utun0                    UGcIg         utun0
::1                                     ::1                             UHL             lo0
fd7a:115c:a1e0::/48                     fe80::%utun3                    UGcS          utun3
fd33:33:33::2                           fd33:33:33::1                   UH            utun5
fc00:f853:ccd:e793::/64                 link#21                         USc           utun5
fe80::%lo0/64                           fe80::1%lo0                     UcI             lo0
fe80::1%lo0                             link#1                          UHLI            lo0
fe80::%en0/64                           link#4                          UCI             en0
fe80::1c6b:2a4f:8c3:9a7%en0             a4:83:e7:1a:2b:3c               UHLI            lo0
fe80::%utun3/64                         fe80::ce81:b1c:bd2c:69e%utun3   UcI           utun3
ff00::/8                                ::1                             UmCI            lo0
ff02::%en0/32                           link#4                          UmCI            en0
";

    fn dests(rows: &[NetstatRoute]) -> Vec<String> {
        rows.iter()
            .map(|r| format!("{} {} {}", r.destination, r.flags, r.netif))
            .collect()
    }

    #[test]
    fn parses_the_seed_articles_table() {
        let rows = parse_netstat(SEED_AFTER);
        assert_eq!(
            dests(&rows),
            [
                "0.0.0.0/0 UGScg en0",
                "0.0.0.0/0 UCSIg bridge100",
                "10.33.33.2/32 UH utun0",
                "127.0.0.0/8 UCS lo0",
                "127.0.0.1/32 UH lo0",
                "169.254.0.0/16 UCS en0",
                "172.17.0.0/16 USc utun0",
                "172.18.0.0/16 USc utun0",
                "192.168.1.0/24 UCS en0",
                "192.168.1.1/32 UCS en0",
                "192.168.1.1/32 UHLWIir en0",
                "192.168.1.10/32 UCS en0",
                "192.168.1.11/32 UHLWI en0",
                "192.168.64.0/24 UC bridge100",
                "192.168.64.1/32 UHLWI lo0",
                "192.168.64.3/32 UHLWIi bridge100",
                "224.0.0.0/4 UmCS en0",
                "224.0.0.251/32 UHmLWI en0",
                "224.0.0.251/32 UHmLWIg bridge100",
                "239.255.255.250/32 UHmLWI en0",
                "255.255.255.255/32 UCS en0",
            ]
        );
        assert_eq!(rows[6].gateway, "utun0");
        // docker-mac-net-connect's routes are "ours" for a router on utun0;
        // the peer's host route (UH, not static) is not.
        let (ours, system) = split_routes(&rows, "utun0");
        assert_eq!(ours, nets(&["172.17.0.0/16", "172.18.0.0/16"]));
        let sys: Vec<String> = system.iter().map(ToString::to_string).collect();
        assert_eq!(
            sys,
            [
                "0.0.0.0/0 via en0",
                "0.0.0.0/0 via bridge100",
                "127.0.0.0/8 via lo0",
                "127.0.0.1/32 via lo0",
                "169.254.0.0/16 via en0",
                "192.168.1.0/24 via en0",
                "192.168.1.1/32 via en0",
                "192.168.1.10/32 via en0",
                "192.168.64.0/24 via bridge100",
                "255.255.255.255/32 via en0",
            ]
        );
    }

    #[test]
    fn parses_old_columns_and_the_ipv6_section() {
        let rows = parse_netstat(OLD_WITH_V6);
        assert_eq!(
            dests(&rows)[..4],
            [
                "0.0.0.0/0 UGSc en0",
                "10.10.10.0/24 UCS en0",
                "10.10.10.1/32 UCS en0",
                "10.10.10.1/32 UHLWIir en0",
            ]
        );
        assert!(dests(&rows).contains(&"172.16.111.0/24 UC vmnet1".to_string()));
        assert!(dests(&rows).contains(&"192.168.220.0/24 UC vmnet8".to_string()));
        let v6: Vec<String> = dests(&rows)
            .into_iter()
            .filter(|d| d.contains(':'))
            .collect();
        assert_eq!(
            v6,
            [
                "::/0 UGcIg utun0",
                "::1/128 UHL lo0",
                "fd7a:115c:a1e0::/48 UGcS utun3",
                "fd33:33:33::2/128 UH utun5",
                "fc00:f853:ccd:e793::/64 USc utun5",
                "fe80::/64 UcI lo0",
                "fe80::1/128 UHLI lo0",
                "fe80::/64 UCI en0",
                "fe80::1c6b:2a4f:8c3:9a7/128 UHLI lo0",
                "fe80::/64 UcI utun3",
                "ff00::/8 UmCI lo0",
                "ff02::/32 UmCI en0",
            ]
        );
        let (ours, _) = split_routes(&rows, "utun5");
        assert_eq!(ours, nets(&["fc00:f853:ccd:e793::/64"]));
    }

    /// The point of reading the table: a Docker subnet that a LAN or a VPN
    /// already routes is skipped, on macOS as on Linux.
    #[test]
    fn conflicts_found_in_netstat_reach_the_planner() {
        let (ours, system) = split_routes(&parse_netstat(OLD_WITH_V6), "utun5");
        let p = plan(
            &nets(&[
                "10.10.10.0/24",
                "172.18.0.0/16",
                "fd7a:115c:a1e0:ab12::/64",
                "fc00:f853:ccd:e793::/64",
                "192.168.220.0/24",
            ]),
            &ours,
            &system,
        );
        assert_eq!(p.add, vec![net("172.18.0.0/16")]);
        assert!(p.remove.is_empty());
        let skipped: Vec<String> = p
            .skipped
            .iter()
            .map(|s| format!("{} / {}", s.subnet, s.conflicts_with().unwrap()))
            .collect();
        assert_eq!(
            skipped,
            [
                "10.10.10.0/24 / 10.10.10.0/24 via en0",
                "192.168.220.0/24 / 192.168.220.0/24 via vmnet8",
                "fd7a:115c:a1e0:ab12::/64 / fd7a:115c:a1e0::/48 via utun3",
            ]
        );
    }

    #[test]
    fn odd_lines_are_skipped_not_fatal() {
        let rows = parse_netstat(
            "Routing tables\n\nInternet:\nDestination Gateway Flags Netif Expire\n\
             300.1 link#4 UCS en0\n10.1.2.3.4 link#4 UCS en0\nshort\n172.30 link#9 UC en7\n",
        );
        assert_eq!(dests(&rows), ["172.30.0.0/16 UC en7"]);
        assert!(parse_netstat("").is_empty());
    }

    /// Found by the netstat fuzz target (fuzz/seeds/netstat/short-row-
    /// netif-first): a header with Netif before Flags, then a row long
    /// enough for Netif but not for Flags, indexed past its end.
    #[test]
    fn a_row_shorter_than_a_column_after_netif_is_skipped() {
        let rows = parse_netstat(
            "Internet:\nDestination Netif Gateway Flags\n10.1/16 en0 link#4\n10.2/16 en1 link#5 UCS\n",
        );
        assert_eq!(dests(&rows), ["10.2.0.0/16 UCS en1"]);
    }

    #[tokio::test]
    async fn mac_router_runs_the_plans_and_reads_the_table() {
        let runner = RecordingRunner::new().answer("/usr/sbin/netstat -rn", SEED_AFTER);
        let r = MacRouter::new("utun0", runner);
        r.configure(
            &[("10.33.33.1".parse().unwrap(), "10.33.33.2".parse().unwrap())],
            1420,
        )
        .await
        .unwrap();
        let (ours, system) = r.current().await.unwrap();
        assert_eq!(ours, nets(&["172.17.0.0/16", "172.18.0.0/16"]));
        assert_eq!(system.len(), 10);
        r.remove(net("172.17.0.0/16")).await.unwrap();
        r.add(net("172.19.0.0/16")).await.unwrap();
        assert_eq!(
            r.runner.ran(),
            [
                "/sbin/ifconfig utun0 mtu 1420",
                "/sbin/ifconfig utun0 inet 10.33.33.1/32 10.33.33.2 up",
                "/usr/sbin/netstat -rn",
                "/sbin/route -q -n delete -inet 172.17.0.0/16 -interface utun0",
                "/sbin/route -q -n add -inet 172.19.0.0/16 -interface utun0",
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_route_command_names_itself_and_says_why() {
        let runner = RecordingRunner::new().fail(
            "/sbin/route -q -n add",
            "route: writing to routing socket: File exists",
        );
        let e = MacRouter::new("utun2", runner)
            .add(net("10.8.0.0/24"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/sbin/route -q -n add -inet 10.8.0.0/24 -interface utun2` failed (exit status: 1): \
             route: writing to routing socket: File exists"
        );
    }
}

//! The way home: which address the VM side sends its handshakes to.
//!
//! Every runtime names the Mac differently inside its VM. Docker Desktop
//! maps the engine's `host-gateway` to the Mac; a plain dockerd (Colima,
//! Rancher Desktop, a Lima VM) maps it to `--host-gateway-ip`, by default
//! its own `docker0` address, so there the Mac is `host.lima.internal` in
//! the VM's `/etc/hosts` (a host-network container gets a copy of it), or
//! the VM's default gateway. No one name is right everywhere, so the
//! helper makes a list ([`candidates`], a pure function of what the VM
//! shows it) and keeps the first candidate through which a handshake with
//! the Mac completes ([`find`]); the helper then tells `up` which one it
//! was ([`Report`], one line of its output).
//!
//! An address of the VM itself is never a candidate: handshakes sent
//! there would go to the VM, and the tunnel would never come up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The name `up` maps to the engine's `host-gateway` in the helper's
/// `/etc/hosts` (`ExtraHosts`): a name of our own, so that the runtime's
/// own names (`host.docker.internal` among them) keep the VM's answer.
pub const HOST_GATEWAY_NAME: &str = "host-gateway.netconnect.internal";

/// Where `up` mounts the VM's own `/etc/hosts` in the helper, read-only:
/// a host-network container with `ExtraHosts` gets a fresh file instead of
/// a copy of the VM's, and the runtime's names for the Mac are in the VM's.
pub const VM_HOSTS: &str = "/etc/vm-hosts";

/// What each runtime calls the Mac inside its VM, in the order tried:
/// Docker Desktop, Lima (and so Colima), Podman, Rancher Desktop.
pub const RUNTIME_NAMES: [&str; 4] = [
    "host.docker.internal",
    "host.lima.internal",
    "host.containers.internal",
    "host.rancher-desktop.internal",
];

/// Where a candidate came from; shown in `status` as `vm.endpoint_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--host-endpoint`: the user's choice, the only candidate.
    Flag,
    /// The engine's `host-gateway`.
    HostGateway,
    /// One of [`RUNTIME_NAMES`], as the VM resolves it.
    Name(&'static str),
    /// The VM's default route's gateway.
    DefaultGateway,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "--host-endpoint",
            Source::HostGateway => "host-gateway",
            Source::Name(n) => n,
            Source::DefaultGateway => "default-gateway",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "--host-endpoint" => Source::Flag,
            "host-gateway" => Source::HostGateway,
            "default-gateway" => Source::DefaultGateway,
            n => Source::Name(RUNTIME_NAMES.into_iter().find(|r| *r == n)?),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    pub source: Source,
}

/// A source that gave an address which cannot be the Mac.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub addr: IpAddr,
    pub source: Source,
}

/// What the VM shows the helper, gathered by the caller.
pub struct Inputs<'a> {
    /// `--host-endpoint`, HOST or HOST:PORT.
    pub explicit: Option<&'a str>,
    /// The Mac's UDP port (`up`'s listen port).
    pub port: u16,
    /// The helper's `/etc/hosts`.
    pub hosts: &'a str,
    /// The VM's own addresses (the helper has host networking).
    pub local: &'a [IpAddr],
    /// Gateways of the VM's default routes.
    pub gateways: &'a [IpAddr],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("--host-endpoint {0:?} is not HOST, HOST:PORT or [IPv6]:PORT")]
    Malformed(String),
    #[error("--host-endpoint {0:?}: the VM cannot resolve {1:?} (not in its /etc/hosts, no DNS answer); give an address instead")]
    Unresolved(String, String),
}

/// The candidates in the order to try, and the addresses left out as the
/// VM's own. An explicit endpoint is the only candidate (a user who named
/// one wants that one or an error, never a silent fallback), kept even if
/// local. Otherwise: `host-gateway`, the runtime names, the default
/// gateways; each address once, under the first source that gave it.
/// A runtime name is looked up in `/etc/hosts` (the VM's, where Lima
/// writes its name for the Mac), then, if absent there, with `resolve`:
/// the VM's DNS, which is where Podman machine's gvproxy answers
/// `host.containers.internal`. `resolve` must be bounded in time (the
/// helper asks all names at once, under one deadline).
pub fn candidates(
    inp: &Inputs,
    resolve: &dyn Fn(&str) -> Option<IpAddr>,
) -> Result<(Vec<Candidate>, Vec<Rejected>), EndpointError> {
    if let Some(e) = inp.explicit {
        let (host, port) = split_host_port(e, inp.port)?;
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => lookup_hosts(inp.hosts, host)
                .or_else(|| resolve(host))
                .ok_or_else(|| EndpointError::Unresolved(e.to_owned(), host.to_owned()))?,
        };
        let c = Candidate {
            addr: SocketAddr::new(ip, port),
            source: Source::Flag,
        };
        return Ok((vec![c], Vec::new()));
    }
    let mut found: Vec<(IpAddr, Source)> = Vec::new();
    if let Some(ip) = lookup_hosts(inp.hosts, HOST_GATEWAY_NAME) {
        found.push((ip, Source::HostGateway));
    }
    for name in RUNTIME_NAMES {
        if let Some(ip) = lookup_hosts(inp.hosts, name).or_else(|| resolve(name)) {
            found.push((ip, Source::Name(name)));
        }
    }
    found.extend(inp.gateways.iter().map(|g| (*g, Source::DefaultGateway)));

    let mut out: Vec<Candidate> = Vec::new();
    let mut rejected: Vec<Rejected> = Vec::new();
    for (ip, source) in found {
        if is_vm_local(ip, inp.local) {
            if !rejected.iter().any(|r| r.addr == ip) {
                rejected.push(Rejected { addr: ip, source });
            }
            continue;
        }
        if !out.iter().any(|c| c.addr.ip() == ip) {
            out.push(Candidate {
                addr: SocketAddr::new(ip, inp.port),
                source,
            });
        }
    }
    Ok((out, rejected))
}

/// An address that can only be the VM itself: one of its interfaces',
/// loopback, unspecified.
pub fn is_vm_local(ip: IpAddr, local: &[IpAddr]) -> bool {
    ip.is_loopback() || ip.is_unspecified() || local.contains(&ip)
}

/// Whether `e` has the shape `--host-endpoint` takes, for `up` to refuse
/// a bad one before it starts anything (only the VM can resolve it).
pub fn check_shape(e: &str) -> Result<(), EndpointError> {
    split_host_port(e, 1).map(|_| ())
}

/// `HOST`, `HOST:PORT`, `IP`, `[IPv6]:PORT`; `port` when none is given.
/// Port 0 is no port to send to.
fn split_host_port(e: &str, port: u16) -> Result<(&str, u16), EndpointError> {
    let bad = || EndpointError::Malformed(e.to_owned());
    if let Ok(sa) = e.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(bad());
        }
        let host = e.rsplit_once(':').map(|(h, _)| h).unwrap_or(e);
        return Ok((host.trim_matches(['[', ']']), sa.port()));
    }
    let bare = e.trim_matches(['[', ']']);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok((bare, port));
    }
    match e.rsplit_once(':') {
        Some((h, p)) => {
            let p = p.parse::<u16>().map_err(|_| bad())?;
            if h.is_empty() || h.contains(':') || p == 0 {
                return Err(bad());
            }
            Ok((h, p))
        }
        None if !e.is_empty() && !e.contains(char::is_whitespace) => Ok((e, port)),
        None => Err(bad()),
    }
}

/// The first address `/etc/hosts` gives `name`, IPv4 preferred.
pub fn lookup_hosts(hosts: &str, name: &str) -> Option<IpAddr> {
    let mut found: Vec<IpAddr> = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let ip: IpAddr = f.next()?.parse().ok()?;
            f.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect();
    found.sort_by_key(|ip| !ip.is_ipv4());
    found.into_iter().next()
}

/// The gateways of the default routes in `/proc/net/route` (IPv4; fields
/// in host byte order as hex, `Flags` with RTF_GATEWAY).
pub fn default_gateways(proc_net_route: &str) -> Vec<IpAddr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    // (metric, gateway): the route the kernel would use first, first.
    let mut found: Vec<(u32, IpAddr)> = Vec::new();
    for line in proc_net_route.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (Some(dest), Some(gw), Some(flags), Some(metric), Some(mask)) = (
            hex(f[1]),
            hex(f[2]),
            hex(f[3]),
            f[6].parse::<u32>().ok(),
            hex(f[7]),
        ) else {
            continue;
        };
        if dest == 0 && mask == 0 && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY {
            // The kernel prints the u32 it stores (the address's bytes in
            // network order) as a number of this machine's byte order.
            found.push((metric, IpAddr::V4(Ipv4Addr::from(gw.to_ne_bytes()))));
        }
    }
    found.sort_by_key(|(metric, _)| *metric);
    let mut out = Vec::new();
    for (_, ip) in found {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// One try of one candidate: point the peer at `addr`, start a handshake,
/// and say whether one completed within `within`.
#[allow(async_fn_in_trait)]
pub trait Trial {
    async fn try_endpoint(&mut self, addr: SocketAddr, within: Duration) -> bool;
    /// Where the peer points now, when it can be read: after a handshake
    /// it is where the answer came from, which can be an earlier
    /// candidate whose reply came late.
    fn current_endpoint(&self) -> Option<SocketAddr> {
        None
    }
}

/// How long each candidate gets: the first try also waits for `up`, which
/// adds our key when it reads our announcement.
pub const FIRST_TRY: Duration = Duration::from_secs(5);
pub const NEXT_TRY: Duration = Duration::from_secs(3);

/// Each candidate in turn, once: the first through which a handshake
/// completes, else `None`.
pub async fn find(trial: &mut impl Trial, candidates: &[Candidate]) -> Option<Candidate> {
    for (i, c) in candidates.iter().enumerate() {
        let within = if i == 0 { FIRST_TRY } else { NEXT_TRY };
        tracing::info!(endpoint = %c.addr, source = c.source.as_str(), "trying the way to the host side");
        if trial.try_endpoint(c.addr, within).await {
            // A late reply through an earlier candidate completes the
            // handshake while this one is tried, and the peer roams to it:
            // report the way that answered.
            let answered = trial
                .current_endpoint()
                .and_then(|e| candidates.iter().find(|o| o.addr == e));
            return Some(*answered.unwrap_or(c));
        }
        tracing::info!(endpoint = %c.addr, source = c.source.as_str(), within_s = within.as_secs(), "no handshake through this address");
    }
    None
}

/// The helper's word on the way home, one line of its output after the
/// announcement: `endpoint=ADDR source=SOURCE rejected=ADDR(SOURCE),…`,
/// or `endpoint=none tried=ADDR(SOURCE),… rejected=ADDR(SOURCE),…` (`-`
/// for an empty list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The way home, and what was left out as the VM's own.
    Found {
        chosen: Candidate,
        rejected: Vec<Rejected>,
    },
    None {
        tried: Vec<Candidate>,
        rejected: Vec<Rejected>,
    },
}

pub const REPORT_PREFIX: &str = "endpoint=";

impl Report {
    pub fn line(&self) -> String {
        fn list(v: Vec<String>) -> String {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(",")
            }
        }
        let rejected = |r: &[Rejected]| {
            list(
                r.iter()
                    .map(|r| format!("{}({})", r.addr, r.source.as_str()))
                    .collect(),
            )
        };
        match self {
            Report::Found {
                chosen,
                rejected: r,
            } => format!(
                "{REPORT_PREFIX}{} source={} rejected={}\n",
                chosen.addr,
                chosen.source.as_str(),
                rejected(r)
            ),
            Report::None { tried, rejected: r } => format!(
                "{REPORT_PREFIX}none tried={} rejected={}\n",
                list(
                    tried
                        .iter()
                        .map(|c| format!("{}({})", c.addr, c.source.as_str()))
                        .collect()
                ),
                rejected(r),
            ),
        }
    }

    /// One line of the helper's output, if it is a report.
    pub fn parse(line: &str) -> Option<Report> {
        fn items(s: &str) -> Option<Vec<(String, Source)>> {
            if s == "-" {
                return Some(Vec::new());
            }
            s.split(',')
                .map(|item| {
                    let (a, src) = item.strip_suffix(')')?.rsplit_once('(')?;
                    Some((a.to_owned(), Source::parse(src)?))
                })
                .collect()
        }
        fn rejected(s: &str) -> Option<Vec<Rejected>> {
            items(s)?
                .into_iter()
                .map(|(a, source)| {
                    Some(Rejected {
                        addr: a.parse().ok()?,
                        source,
                    })
                })
                .collect()
        }
        let rest = line.trim().strip_prefix(REPORT_PREFIX)?;
        let mut words = rest.split_whitespace();
        let first = words.next()?;
        let field = |w: Option<&str>, key: &str| -> Option<String> {
            w?.strip_prefix(key)?.strip_prefix('=').map(str::to_owned)
        };
        if first == "none" {
            let tried = field(words.next(), "tried")?;
            let r = field(words.next(), "rejected")?;
            let tried = items(&tried)?
                .into_iter()
                .map(|(a, source)| {
                    Some(Candidate {
                        addr: a.parse().ok()?,
                        source,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            return Some(Report::None {
                tried,
                rejected: rejected(&r)?,
            });
        }
        let source = Source::parse(&field(words.next(), "source")?)?;
        let r = field(words.next(), "rejected")?;
        Some(Report::Found {
            chosen: Candidate {
                addr: first.parse().ok()?,
                source,
            },
            rejected: rejected(&r)?,
        })
    }

    /// What a person reads when no candidate answered: every address
    /// tried and the fix.
    pub fn describe_none(tried: &[Candidate], rejected: &[Rejected]) -> String {
        let t: Vec<String> = tried
            .iter()
            .map(|c| format!("{} ({})", c.addr, c.source.as_str()))
            .collect();
        let r: Vec<String> = rejected
            .iter()
            .map(|c| {
                format!(
                    "{} ({}, an address of the VM itself)",
                    c.addr,
                    c.source.as_str()
                )
            })
            .collect();
        let explicit = tried.iter().any(|c| c.source == Source::Flag);
        format!(
            "the VM side reached this machine through none of: {}{}; {}",
            if t.is_empty() {
                "no address".to_owned()
            } else {
                t.join(", ")
            },
            if r.is_empty() {
                String::new()
            } else {
                format!("; left out: {}", r.join(", "))
            },
            if explicit {
                "check that --host-endpoint is this machine's address as the VM sees it"
            } else {
                "pass this machine's address as the VM sees it with --host-endpoint HOST[:PORT]"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Podman machine: no runtime name in /etc/hosts, gvproxy's DNS
    /// answers host.containers.internal; the gateway is gvproxy too.
    #[test]
    fn a_runtime_name_only_the_vm_s_dns_knows_is_a_candidate() {
        let local = [ip("192.168.127.2"), ip("10.88.0.1")];
        let gateways = [ip("192.168.127.1")];
        let inp = Inputs {
            explicit: None,
            port: 51820,
            hosts: "127.0.0.1 localhost\n",
            local: &local,
            gateways: &gateways,
        };
        let dns = |n: &str| (n == "host.containers.internal").then(|| ip("192.168.127.254"));
        let (c, r) = candidates(&inp, &dns).unwrap();
        let got: Vec<(String, &str)> = c
            .iter()
            .map(|c| (c.addr.to_string(), c.source.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "192.168.127.254:51820".to_string(),
                    "host.containers.internal"
                ),
                ("192.168.127.1:51820".to_string(), "default-gateway"),
            ]
        );
        assert!(r.is_empty());
        // /etc/hosts first: DNS is not asked for a name the file has.
        let hosts = "192.168.5.2 host.containers.internal\n";
        let inp = Inputs { hosts, ..inp };
        let asked = std::cell::RefCell::new(Vec::new());
        let dns = |n: &str| {
            asked.borrow_mut().push(n.to_owned());
            None
        };
        let (c, _) = candidates(&inp, &dns).unwrap();
        assert_eq!(c[0].addr.to_string(), "192.168.5.2:51820");
        assert!(!asked
            .borrow()
            .contains(&"host.containers.internal".to_string()));
    }

    fn no_dns(_: &str) -> Option<IpAddr> {
        None
    }

    fn list(inp: &Inputs) -> Vec<(String, &'static str)> {
        candidates(inp, &no_dns)
            .unwrap()
            .0
            .iter()
            .map(|c| (c.addr.to_string(), c.source.as_str()))
            .collect()
    }

    /// A host-network container's /etc/hosts on a Lima VM (Colima, Rancher
    /// Desktop): the VM's own file, with Lima's name for the Mac, plus the
    /// ExtraHosts entry `up` asks for, which a plain dockerd maps to its
    /// docker0 address.
    const LIMA_HOSTS: &str = "127.0.0.1 localhost\n\
        ::1 localhost ip6-localhost ip6-loopback\n\
        192.168.5.2 host.lima.internal\n\
        172.17.0.1\thost-gateway.netconnect.internal\n";

    #[test]
    fn on_a_lima_vm_host_gateway_is_the_vm_and_lima_s_name_comes_first() {
        let local = [ip("127.0.0.1"), ip("192.168.5.15"), ip("172.17.0.1")];
        let gateways = [ip("192.168.5.2")];
        let inp = Inputs {
            explicit: None,
            port: 51820,
            hosts: LIMA_HOSTS,
            local: &local,
            gateways: &gateways,
        };
        // The gateway is the same address as host.lima.internal: once.
        assert_eq!(
            list(&inp),
            vec![("192.168.5.2:51820".to_owned(), "host.lima.internal")]
        );
        let (_, rejected) = candidates(&inp, &no_dns).unwrap();
        assert_eq!(
            rejected,
            vec![Rejected {
                addr: ip("172.17.0.1"),
                source: Source::HostGateway
            }]
        );
    }

    #[test]
    fn on_docker_desktop_host_gateway_is_the_mac_and_goes_first() {
        let hosts = "127.0.0.1 localhost\n192.168.65.254 host-gateway.netconnect.internal\n";
        let local = [ip("192.168.65.3"), ip("172.17.0.1")];
        let gateways = [ip("192.168.65.1")];
        // Docker Desktop's DNS names the Mac as host-gateway does: one
        // candidate, under the first source that gave it.
        let dns = |n: &str| (n == "host.docker.internal").then(|| ip("192.168.65.254"));
        let inp = Inputs {
            explicit: None,
            port: 4000,
            hosts,
            local: &local,
            gateways: &gateways,
        };
        let (c, r) = candidates(&inp, &dns).unwrap();
        let got: Vec<_> = c.iter().map(|c| (c.addr.to_string(), c.source)).collect();
        assert_eq!(
            got,
            vec![
                ("192.168.65.254:4000".to_owned(), Source::HostGateway),
                ("192.168.65.1:4000".to_owned(), Source::DefaultGateway),
            ]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn the_order_is_host_gateway_names_then_gateways() {
        let hosts = "10.0.0.9 host-gateway.netconnect.internal\n\
            10.0.0.4 host.rancher-desktop.internal\n\
            10.0.0.3 host.containers.internal\n\
            10.0.0.2 host.lima.internal\n\
            10.0.0.1 host.docker.internal\n";
        let gateways = [ip("10.0.0.254"), ip("10.0.0.1")];
        let inp = Inputs {
            explicit: None,
            port: 1,
            hosts,
            local: &[],
            gateways: &gateways,
        };
        assert_eq!(
            list(&inp),
            vec![
                ("10.0.0.9:1".to_owned(), "host-gateway"),
                ("10.0.0.1:1".to_owned(), "host.docker.internal"),
                ("10.0.0.2:1".to_owned(), "host.lima.internal"),
                ("10.0.0.3:1".to_owned(), "host.containers.internal"),
                ("10.0.0.4:1".to_owned(), "host.rancher-desktop.internal"),
                ("10.0.0.254:1".to_owned(), "default-gateway"),
            ]
        );
    }

    #[test]
    fn loopback_unspecified_and_own_addresses_are_never_candidates() {
        let hosts = "127.0.0.1 host.docker.internal\n0.0.0.0 host.lima.internal\n\
            ::1 host.containers.internal\n10.9.0.1 host-gateway.netconnect.internal\n";
        let local = [ip("10.9.0.1")];
        let inp = Inputs {
            explicit: None,
            port: 1,
            hosts,
            local: &local,
            gateways: &[],
        };
        let (c, r) = candidates(&inp, &no_dns).unwrap();
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(r[0].source, Source::HostGateway);
    }

    #[test]
    fn an_explicit_endpoint_is_the_only_candidate() {
        let local = [ip("10.9.0.1")];
        let gateways = [ip("10.9.0.254")];
        let mk = |e| Inputs {
            explicit: Some(e),
            port: 51820,
            hosts: LIMA_HOSTS,
            local: &local,
            gateways: &gateways,
        };
        for (given, want) in [
            ("10.1.2.3", "10.1.2.3:51820"),
            ("10.1.2.3:9", "10.1.2.3:9"),
            ("fd00::1", "[fd00::1]:51820"),
            ("[fd00::1]:7", "[fd00::1]:7"),
            ("host.lima.internal", "192.168.5.2:51820"),
            ("host.lima.internal:5", "192.168.5.2:5"),
            // The user's word over the VM-local rule.
            ("10.9.0.1", "10.9.0.1:51820"),
        ] {
            let (c, r) = candidates(&mk(given), &no_dns).unwrap();
            assert_eq!(c.len(), 1, "{given}");
            assert_eq!(c[0].addr.to_string(), want, "{given}");
            assert_eq!(c[0].source, Source::Flag);
            assert!(r.is_empty());
        }
        assert_eq!(
            candidates(&mk("no-such-host.invalid"), &no_dns),
            Err(EndpointError::Unresolved(
                "no-such-host.invalid".into(),
                "no-such-host.invalid".into()
            ))
        );
        for bad in [
            "host:notaport",
            "",
            "a b",
            "[fd00::1]:x",
            "10.1.2.3:0",
            "[fd00::1]:0",
            "host.lima.internal:0",
            "host:65536",
        ] {
            assert!(
                matches!(
                    candidates(&mk(bad), &no_dns),
                    Err(EndpointError::Malformed(_))
                ),
                "{bad}"
            );
        }
        let dns = |n: &str| (n == "mac.example").then(|| ip("10.7.7.7"));
        let (c, _) = candidates(&mk("mac.example"), &dns).unwrap();
        assert_eq!(c[0].addr.to_string(), "10.7.7.7:51820");
    }

    #[test]
    fn hosts_file_lookup() {
        let hosts = "127.0.0.1 localhost\n# comment host.docker.internal\n\
                     fdc4::1 host.docker.internal\n192.168.65.254 host.docker.internal gateway.docker.internal\n";
        assert_eq!(
            lookup_hosts(hosts, "host.docker.internal"),
            Some(ip("192.168.65.254"))
        );
        assert_eq!(
            lookup_hosts(hosts, "GATEWAY.docker.internal"),
            Some(ip("192.168.65.254"))
        );
        assert_eq!(lookup_hosts(hosts, "nope"), None);
    }

    /// `/proc/net/route` of a Lima VM with user-mode networking (written
    /// out as the kernel prints it): the default route via 192.168.5.2,
    /// and a non-default route with a gateway that must not count.
    #[test]
    fn default_gateways_from_proc_net_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0205A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0005A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
            docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            eth0\t00F4000A\t0105A8C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            eth1\t00000000\t0205A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n";
        assert_eq!(default_gateways(text), vec![ip("192.168.5.2")]);
        assert!(default_gateways("Iface\tDestination\n").is_empty());
        // A default route without RTF_GATEWAY (a point-to-point link).
        let ptp = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
            wg0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\n";
        assert!(default_gateways(ptp).is_empty());
        // Two ways out: the lower metric first, whatever the file's order.
        let two = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
            eth1\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\n\
            eth0\t00000000\t0205A8C0\t0003\t0\t0\t100\t00000000\n";
        assert_eq!(
            default_gateways(two),
            vec![ip("192.168.5.2"), ip("192.168.1.1")]
        );
    }

    #[test]
    fn reports_render_and_parse_back() {
        let found = Report::Found {
            chosen: Candidate {
                addr: "192.168.5.2:51820".parse().unwrap(),
                source: Source::Name("host.lima.internal"),
            },
            rejected: vec![Rejected {
                addr: ip("172.17.0.1"),
                source: Source::HostGateway,
            }],
        };
        assert_eq!(
            found.line(),
            "endpoint=192.168.5.2:51820 source=host.lima.internal rejected=172.17.0.1(host-gateway)\n"
        );
        let none = Report::None {
            tried: vec![
                Candidate {
                    addr: "10.0.0.1:4".parse().unwrap(),
                    source: Source::DefaultGateway,
                },
                Candidate {
                    addr: "[fd00::1]:4".parse().unwrap(),
                    source: Source::Name("host.docker.internal"),
                },
            ],
            rejected: vec![Rejected {
                addr: ip("172.17.0.1"),
                source: Source::HostGateway,
            }],
        };
        assert_eq!(
            none.line(),
            "endpoint=none tried=10.0.0.1:4(default-gateway),[fd00::1]:4(host.docker.internal) rejected=172.17.0.1(host-gateway)\n"
        );
        let empty = Report::None {
            tried: vec![],
            rejected: vec![],
        };
        assert_eq!(empty.line(), "endpoint=none tried=- rejected=-\n");
        for r in [found, none, empty] {
            assert_eq!(Report::parse(&r.line()), Some(r.clone()));
        }
        for junk in [
            "endpoint=",
            "endpoint=x source=host-gateway rejected=-",
            "endpoint=1.2.3.4:5 source=elsewhere rejected=-",
            "endpoint=1.2.3.4:5 source=host-gateway",
            "public_key=abc",
        ] {
            assert_eq!(Report::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn the_message_for_none_names_every_address_and_the_fix() {
        let tried = [Candidate {
            addr: "10.0.0.1:4".parse().unwrap(),
            source: Source::DefaultGateway,
        }];
        let rejected = [Rejected {
            addr: ip("172.17.0.1"),
            source: Source::HostGateway,
        }];
        let m = Report::describe_none(&tried, &rejected);
        assert!(m.contains("10.0.0.1:4 (default-gateway)"), "{m}");
        assert!(
            m.contains("172.17.0.1 (host-gateway, an address of the VM itself)"),
            "{m}"
        );
        assert!(m.contains("--host-endpoint HOST[:PORT]"), "{m}");
    }

    /// A trial that answers only at the addresses given.
    struct Answers(Vec<SocketAddr>, Vec<(SocketAddr, Duration)>);

    impl Trial for Answers {
        async fn try_endpoint(&mut self, addr: SocketAddr, within: Duration) -> bool {
            self.1.push((addr, within));
            self.0.contains(&addr)
        }
    }

    /// The first candidate's reply comes while the second is tried: the
    /// peer roamed back to the first, and that is what is reported.
    struct LateReply {
        tried: Vec<SocketAddr>,
        roamed_to: SocketAddr,
    }

    impl Trial for LateReply {
        async fn try_endpoint(&mut self, addr: SocketAddr, _: Duration) -> bool {
            self.tried.push(addr);
            self.tried.len() == 2
        }
        fn current_endpoint(&self) -> Option<SocketAddr> {
            Some(self.roamed_to)
        }
    }

    #[tokio::test]
    async fn a_late_reply_reports_the_way_that_answered() {
        let list = [
            Candidate {
                addr: "10.0.0.1:4".parse().unwrap(),
                source: Source::HostGateway,
            },
            Candidate {
                addr: "10.0.0.2:4".parse().unwrap(),
                source: Source::DefaultGateway,
            },
        ];
        let mut t = LateReply {
            tried: vec![],
            roamed_to: list[0].addr,
        };
        assert_eq!(find(&mut t, &list).await, Some(list[0]));
        // An endpoint no candidate has (NAT on the way): the one tried.
        let mut t = LateReply {
            tried: vec![],
            roamed_to: "192.0.2.9:4".parse().unwrap(),
        };
        assert_eq!(find(&mut t, &list).await, Some(list[1]));
    }

    #[tokio::test]
    async fn the_first_candidate_that_answers_is_kept_and_none_after_it_is_tried() {
        let c = |a: &str, source| Candidate {
            addr: a.parse().unwrap(),
            source,
        };
        let list = [
            c("10.0.0.1:4", Source::HostGateway),
            c("10.0.0.2:4", Source::Name("host.lima.internal")),
            c("10.0.0.3:4", Source::DefaultGateway),
        ];
        let mut t = Answers(vec![list[1].addr, list[2].addr], vec![]);
        assert_eq!(find(&mut t, &list).await, Some(list[1]));
        assert_eq!(
            t.1,
            vec![(list[0].addr, FIRST_TRY), (list[1].addr, NEXT_TRY)]
        );
        let mut t = Answers(vec![], vec![]);
        assert_eq!(find(&mut t, &list).await, None);
        assert_eq!(t.1.len(), 3);
    }
}

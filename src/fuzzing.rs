//! Fuzzing every parser of outside data: one entry point per parser, each
//! taking arbitrary bytes, running the parser as netconnect runs it, and
//! panicking when a property fails (a panic inside the parser counts too).
//!
//! Two drivers share these functions, so a property is written once: the
//! cargo-fuzz targets in `fuzz/` (coverage-guided, for long runs by hand;
//! nightly) and the tests at the bottom of this file, which replay every
//! seed in `fuzz/seeds/<target>/` and then mutate them for a time budget
//! (`NETCONNECT_FUZZ_SECS`), on stable, inside the library's own test
//! binary; CI's fuzz stage runs those. `fuzz/README.md` says how to run
//! either and how a found input becomes a seed.
//!
//! Not an API (hidden from the docs): it is the one place that reaches the
//! `pub(crate)` parsers from outside the crate.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::keys::{Key, PublicKey};
use crate::tunnel::{ConfigError, DeviceStatus, DeviceUpdate, PeerStatus, PeerUpdate};

/// A target: panics when its property fails.
pub type Target = fn(&[u8]);

/// Every target by name, with the VM helper's own ([`crate::helper::FUZZ_TARGETS`],
/// Linux-only as the helper is): the cargo-fuzz binary, the seed folder and
/// the tests use this name.
pub fn targets() -> impl Iterator<Item = (&'static str, Target)> {
    TARGETS.iter().chain(crate::helper::FUZZ_TARGETS).copied()
}

/// The targets of parsers built on every OS.
pub const TARGETS: &[(&str, Target)] = &[
    ("uapi_set", uapi_set),
    ("uapi", uapi),
    ("datagram", datagram),
    ("config", config),
    ("netstat", netstat),
    ("helper_lines", helper_lines),
    ("docker_networks", docker_networks),
    ("docker_context", docker_context),
    ("way_home", way_home),
    ("kube", kube),
    ("dns", dns),
];

/// Parsers of text see what `from_utf8_lossy` makes of the bytes, as the
/// readers of command output and container logs do.
pub(crate) fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// A `set` transaction's body in one canonical form: parse(render(u))
/// renders the same again.
fn render_set(u: &DeviceUpdate) -> String {
    let mut out = String::new();
    if let Some(k) = &u.private_key {
        let _ = writeln!(out, "private_key={}", k.to_hex());
    }
    if let Some(p) = u.listen_port {
        let _ = writeln!(out, "listen_port={p}");
    }
    if let Some(m) = u.fwmark {
        let _ = writeln!(out, "fwmark={m}");
    }
    if u.replace_peers {
        out.push_str("replace_peers=true\n");
    }
    for p in &u.peers {
        let _ = writeln!(out, "public_key={}", p.public_key.to_hex());
        for (set, key) in [(p.remove, "remove"), (p.update_only, "update_only")] {
            if set {
                let _ = writeln!(out, "{key}=true");
            }
        }
        if let Some(k) = &p.preshared_key {
            let _ = writeln!(out, "preshared_key={}", k.to_hex());
        }
        if let Some(ep) = p.endpoint {
            let _ = writeln!(out, "endpoint={ep}");
        }
        if let Some(ka) = p.persistent_keepalive {
            let _ = writeln!(out, "persistent_keepalive_interval={ka}");
        }
        if p.replace_allowed_ips {
            out.push_str("replace_allowed_ips=true\n");
        }
        for net in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    out
}

/// The UAPI `set` parser: whatever it accepts renders to a transaction
/// that parses to the same thing.
pub fn uapi_set(data: &[u8]) {
    let text = text(data);
    let Ok(update) = crate::uapi::parse_set(text.lines(), 2) else {
        return;
    };
    let rendered = render_set(&update);
    let again = crate::uapi::parse_set(rendered.lines(), 2)
        .unwrap_or_else(|e| panic!("own rendering {rendered:?} does not parse: {e}"));
    assert_eq!(render_set(&again), rendered, "set round trip");
}

/// A device for the UAPI framing: `status` reports the last applied
/// transaction, and every status handed out is kept to check the answer.
#[derive(Default)]
struct FakeDevice {
    status: RefCell<Option<DeviceStatus>>,
    answered: RefCell<Vec<DeviceStatus>>,
}

impl crate::uapi::Configure for FakeDevice {
    fn name(&self) -> &str {
        "fuzz0"
    }
    fn status(&self) -> DeviceStatus {
        let st = self.status.borrow().clone().unwrap_or(DeviceStatus {
            private_key: None,
            public_key: None,
            listen_port: 51820,
            fwmark: 0,
            peers: Vec::new(),
            tun_refused: 0,
        });
        self.answered.borrow_mut().push(st.clone());
        st
    }
    fn apply(&self, u: &DeviceUpdate) -> Result<(), ConfigError> {
        let peers = u
            .peers
            .iter()
            .filter(|p| !p.remove)
            .map(|p| PeerStatus {
                public_key: p.public_key,
                preshared_key: p.preshared_key.clone(),
                endpoint: p.endpoint,
                last_handshake: None,
                rx_bytes: 7,
                tx_bytes: 9,
                persistent_keepalive: p.persistent_keepalive,
                allowed_ips: p.allowed_ips.clone(),
            })
            .collect();
        *self.status.borrow_mut() = Some(DeviceStatus {
            private_key: u.private_key.clone(),
            public_key: None,
            listen_port: u.listen_port.unwrap_or(0),
            fwmark: u.fwmark.unwrap_or(0),
            peers,
            tun_refused: 0,
        });
        Ok(())
    }
}

/// What `wg` would read back from a `get` of `st`, as a `set` body.
fn status_as_update(st: &DeviceStatus) -> DeviceUpdate {
    DeviceUpdate {
        private_key: st.private_key.clone(),
        listen_port: Some(st.listen_port),
        fwmark: (st.fwmark != 0).then_some(st.fwmark),
        replace_peers: false,
        peers: st
            .peers
            .iter()
            .map(|p| PeerUpdate {
                preshared_key: p.preshared_key.clone(),
                endpoint: p.endpoint,
                persistent_keepalive: Some(p.persistent_keepalive.unwrap_or(0)),
                allowed_ips: p.allowed_ips.clone(),
                ..PeerUpdate::new(p.public_key)
            })
            .collect(),
    }
}

/// Keys a `get` answer has and a `set` does not take.
const GET_ONLY: [&str; 4] = [
    "last_handshake_time_sec",
    "last_handshake_time_nsec",
    "tx_bytes",
    "rx_bytes",
];

/// The UAPI connection as a client drives it (`get=1`/`set=1` framing,
/// line limits, transactions), bytes in, the bytes answered out. The
/// answers are whole (`...errno=N` and a blank line), an error answer is
/// the last (the server hangs up), and every `get` answer re-parses into
/// the status it was made from.
pub fn uapi(data: &[u8]) {
    let device = FakeDevice::default();
    let mut out = Vec::new();
    let stream = tokio::io::join(data, &mut out);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime
        .block_on(crate::uapi::handle(stream, &device))
        .expect("in-memory I/O does not fail");
    let out = String::from_utf8(out).expect("answers are UTF-8");
    assert!(out.is_empty() || out.ends_with("\n\n"), "{out:?}");
    let answers: Vec<&str> = out.split_terminator("\n\n").collect();
    let answered = device.answered.borrow();
    let mut gets = answered.iter();
    for (i, a) in answers.iter().enumerate() {
        let (body, errno) = match a.rsplit_once('\n') {
            Some((body, last)) => (Some(body), last),
            None => (None, *a),
        };
        let errno: i32 = errno
            .strip_prefix("errno=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("answer {a:?} does not end in errno=N"));
        assert!(errno <= 0, "positive errno in {a:?}");
        if errno != 0 {
            assert_eq!(i, answers.len() - 1, "answers after an error: {out:?}");
        }
        let Some(body) = body else { continue };
        let st = gets.next().expect("a get answer without a status asked");
        let lines = body
            .lines()
            .filter(|l| !GET_ONLY.iter().any(|k| l.split('=').next() == Some(*k)));
        let parsed = crate::uapi::parse_set(lines, 1)
            .unwrap_or_else(|e| panic!("get answer {body:?} does not re-parse: {e}"));
        assert_eq!(
            render_set(&parsed),
            render_set(&status_as_update(st)),
            "get answer differs from the status"
        );
    }
}

const OUR_KEY: [u8; 32] = [0x11; 32];
const PEER_KEY: [u8; 32] = [0x22; 32];
const PEER_NETS: [&str; 2] = ["10.9.0.0/24", "fd09::/64"];

/// The data plane's receive path, from a UDP datagram to what would be
/// written to the TUN, with a real peer (a boringtun `Tunn`) and an
/// attacker. The input is a little program, one op per byte:
/// `0 len bytes`: the peer sends that inner packet; `1 len bytes`: the
/// attacker sends that datagram; `2 pos xor`: the attacker replays the
/// peer's last datagram with one byte changed (xor 0: as it was); `3`: our
/// answers reach the peer, and its answers reach us; `4`: the peer starts
/// a handshake; `5 n`: the peer moves to another address.
///
/// Properties: only packets the peer sent reach the TUN, and only from its
/// allowed IPs; a decrypted packet from elsewhere is refused; the peer's
/// endpoint only ever moves to an address the peer really used.
pub fn datagram(data: &[u8]) {
    datagram_run(data);
}

/// What a `datagram` program reached: packets written to the TUN, and
/// decrypted packets refused. A test keeps the seeds reaching both, so
/// that the properties above are never vacuous.
#[derive(Debug, Default)]
struct Reached {
    tun: usize,
    refused: usize,
}

fn datagram_run(data: &[u8]) -> Reached {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519;

    let ours = Key::from_bytes(OUR_KEY);
    let peer_pk = PublicKey::from(&Key::from_bytes(PEER_KEY).public_key());
    let nets: Vec<IpNet> = PEER_NETS.iter().map(|n| n.parse().unwrap()).collect();
    let first_endpoint: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let attacker: SocketAddr = "198.51.100.66:4444".parse().unwrap();
    let mut receiver = crate::tunnel::Receiver::new(&DeviceUpdate {
        private_key: Some(ours.clone()),
        peers: vec![PeerUpdate {
            endpoint: Some(first_endpoint),
            allowed_ips: nets.clone(),
            ..PeerUpdate::new(peer_pk)
        }],
        ..DeviceUpdate::default()
    });
    let mut peer = Tunn::new(
        x25519::StaticSecret::from(PEER_KEY),
        x25519::PublicKey::from(*ours.public_key().as_bytes()),
        None,
        None,
        7,
        None,
    );

    let mut at = first_endpoint;
    let mut peer_addrs = vec![first_endpoint];
    let mut sent_inner: Vec<Vec<u8>> = Vec::new();
    let mut last_from_peer: Option<Vec<u8>> = None;
    let mut to_peer: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 65536 + 148];
    let mut reached = Reached::default();

    let mut ops = data.iter().copied();
    let mut steps = 0;
    while let Some(op) = ops.next() {
        steps += 1;
        if steps > 256 {
            break;
        }
        let mut from_peer: Vec<Vec<u8>> = Vec::new();
        match op % 6 {
            0 => {
                let len = ops.next().unwrap_or(0) as usize;
                let inner: Vec<u8> = ops.by_ref().take(len).collect();
                sent_inner.push(inner.clone());
                if let TunnResult::WriteToNetwork(d) = peer.encapsulate(&inner, &mut buf) {
                    from_peer.push(d.to_vec());
                }
            }
            1 => {
                let len = ops.next().unwrap_or(0) as usize;
                let d: Vec<u8> = ops.by_ref().take(len).collect();
                let got = receiver.receive(&d, attacker);
                check_received(
                    got,
                    &nets,
                    &sent_inner,
                    &peer_addrs,
                    &mut Vec::new(),
                    &mut reached,
                );
            }
            2 => {
                let (pos, xor) = (ops.next().unwrap_or(0), ops.next().unwrap_or(0));
                if let Some(mut d) = last_from_peer.clone() {
                    let i = pos as usize % d.len().max(1);
                    if let Some(b) = d.get_mut(i) {
                        *b ^= xor;
                    }
                    let got = receiver.receive(&d, attacker);
                    check_received(
                        got,
                        &nets,
                        &sent_inner,
                        &peer_addrs,
                        &mut Vec::new(),
                        &mut reached,
                    );
                }
            }
            3 => {
                for d in std::mem::take(&mut to_peer) {
                    let mut input: &[u8] = &d;
                    let from = Some(IpAddr::from([192, 0, 2, 254]));
                    while let TunnResult::WriteToNetwork(out) =
                        peer.decapsulate(from, input, &mut buf)
                    {
                        from_peer.push(out.to_vec());
                        input = &[];
                    }
                }
            }
            4 => {
                if let TunnResult::WriteToNetwork(d) =
                    peer.format_handshake_initiation(&mut buf, true)
                {
                    from_peer.push(d.to_vec());
                }
            }
            _ => {
                let n = ops.next().unwrap_or(0);
                at = SocketAddr::new(IpAddr::from([192, 0, 2, n | 1]), 51820 + u16::from(n));
                peer_addrs.push(at);
            }
        }
        for d in from_peer {
            let got = receiver.receive(&d, at);
            check_received(
                got,
                &nets,
                &sent_inner,
                &peer_addrs,
                &mut to_peer,
                &mut reached,
            );
            last_from_peer = Some(d);
        }
        let ep = receiver.endpoint(&peer_pk);
        assert!(
            ep.is_some_and(|e| peer_addrs.contains(&e)),
            "the endpoint moved to {ep:?}, where the peer never was"
        );
    }
    reached
}

/// What the receive path did with one datagram, checked; answers to the
/// peer's addresses are queued for it.
fn check_received(
    got: Vec<crate::tunnel::Received>,
    nets: &[IpNet],
    sent_inner: &[Vec<u8>],
    peer_addrs: &[SocketAddr],
    to_peer: &mut Vec<Vec<u8>>,
    reached: &mut Reached,
) {
    use crate::tunnel::Received;
    for r in got {
        match r {
            Received::Send { to, bytes } => {
                if to.is_some_and(|t| peer_addrs.contains(&t)) {
                    to_peer.push(bytes);
                }
            }
            Received::Tun { packet, source } => {
                reached.tun += 1;
                assert!(
                    nets.iter().any(|n| n.contains(&source)),
                    "TUN write from {source}, outside the peer's allowed IPs"
                );
                assert!(
                    sent_inner.iter().any(|s| s.starts_with(&packet)),
                    "TUN write of a packet the peer never sent"
                );
            }
            Received::NotAllowed(source) => {
                reached.refused += 1;
                assert!(
                    !nets.iter().any(|n| n.contains(&source)),
                    "refused {source}, which is the peer's"
                );
            }
        }
    }
}

/// The config file: no panic; an error's span lies in the text and maps
/// to a line and column; an accepted file holds what `parse` promises
/// (no default route, gateways of the route's family, valid names).
pub fn config(data: &[u8]) {
    let text = text(data);
    match crate::config::parse(&text) {
        Err((span, msg)) => {
            assert!(
                span.start <= span.end && span.end <= text.len(),
                "span {span:?}"
            );
            let (line, _col) = crate::config::line_col(&text, span.start);
            assert!(line <= text.lines().count() + 1);
            assert!(!msg.contains('\n'), "one-line message: {msg:?}");
        }
        Ok(c) => {
            for r in &c.routes {
                assert!(r.subnet().prefix_len() > 0, "default route accepted");
                if let Some(via) = r.via() {
                    assert_eq!(via.is_ipv4(), r.subnet().addr().is_ipv4());
                }
            }
            for name in [&c.interface, &c.vm_interface].into_iter().flatten() {
                assert!(crate::platform::validate_interface_name(name).is_ok());
            }
            let _ = c.networks.allows("bridge");
        }
    }
}

/// `netstat -rn` rows in one canonical form (full destinations with their
/// length), which the parser must read back as the same rows.
fn render_netstat(rows: &[crate::routes::macos::NetstatRoute]) -> String {
    let mut out = String::from("Routing tables\n");
    for (v4, header) in [(true, "Internet:"), (false, "Internet6:")] {
        let _ = writeln!(out, "\n{header}\nDestination Gateway Flags Netif Expire");
        for r in rows.iter().filter(|r| r.destination.addr().is_ipv4() == v4) {
            let _ = writeln!(
                out,
                "{} {} {} {}",
                r.destination, r.gateway, r.flags, r.netif
            );
        }
    }
    out
}

const UTUN: &str = "utun7";

/// `netstat -rn`: rows re-read from their rendering are the same rows, and
/// the split into ours and the system's follows the flags.
pub fn netstat(data: &[u8]) {
    use crate::routes::macos::{parse_netstat, split_routes};
    let rows = parse_netstat(&text(data));
    // The rendering groups rows by family; a table may repeat a section.
    let sorted = |mut r: Vec<crate::routes::macos::NetstatRoute>| {
        r.sort_by_key(|r| {
            (
                r.destination,
                r.gateway.clone(),
                r.flags.clone(),
                r.netif.clone(),
            )
        });
        r
    };
    let again = parse_netstat(&render_netstat(&rows));
    assert_eq!(sorted(again), sorted(rows.clone()), "netstat round trip");
    let (ours, system) = split_routes(&rows, UTUN);
    for net in &ours {
        assert!(rows
            .iter()
            .any(|r| r.netif == UTUN && r.flags.contains('S') && r.destination.trunc() == *net));
    }
    for s in &system {
        assert_ne!(s.interface, UTUN);
    }
}

/// The helper's lines as `up` and `doctor` read them from its output: the
/// announcement is found after any log noise that cannot be taken for it,
/// whatever the noise; a `shadow` line reads back as itself.
pub fn helper_lines(data: &[u8]) {
    use crate::docker::vmside::container::{parse_announcement, Announcement};
    use crate::docker::vmside::Shadow;
    use crate::helper::NO_KERNEL_WIREGUARD;
    use crate::helper::{announcement, Mode, MODE_PREFIX, PUBLIC_KEY_PREFIX};
    let text = text(data);
    let _ = parse_announcement(&text);
    for line in text.lines() {
        if let Some(s) = Shadow::parse(line) {
            assert_eq!(Shadow::parse(&s.line()), Some(s));
        }
    }
    let kernel = format!("{MODE_PREFIX}kernel");
    let noise: String = text
        .lines()
        .filter(|l| {
            !l.starts_with(PUBLIC_KEY_PREFIX)
                && l.trim() != kernel
                && l.trim() != NO_KERNEL_WIREGUARD
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let mut key = [0u8; 32];
    for (k, b) in key.iter_mut().zip(data) {
        *k = *b;
    }
    let key = PublicKey(key);
    for mode in [Mode::Kernel, Mode::Userspace] {
        let all = noise.clone() + &announcement(mode, &key);
        assert_eq!(
            parse_announcement(&all),
            Some(Announcement::Ready(key, mode)),
            "{all:?}"
        );
    }
}

/// What the helper reads to find the way home (its `/etc/hosts`, then
/// `/proc/net/route` after a `--` line) and the report lines `up` reads
/// back from it (every line of the input).
pub fn way_home(data: &[u8]) {
    use crate::helper::endpoint::{self, Inputs, Report, Source};
    use std::net::IpAddr;
    let (hosts, routes) = parts(data);
    let (hosts, routes) = (text(hosts), text(routes));
    let gateways = endpoint::default_gateways(&routes);
    let mut seen = std::collections::HashSet::new();
    assert!(
        gateways.iter().all(|g| g.is_ipv4() && seen.insert(*g)),
        "{gateways:?}"
    );
    let local: [IpAddr; 2] = [
        "172.17.0.1".parse().unwrap(),
        "192.168.5.15".parse().unwrap(),
    ];
    let inp = Inputs {
        explicit: None,
        port: 51820,
        hosts: &hosts,
        local: &local,
        gateways: &gateways,
    };
    // Only the runtime names are asked of DNS without --host-endpoint,
    // and only those /etc/hosts lacks; DNS knows none of them here.
    let no_dns = |n: &str| -> Option<IpAddr> {
        assert!(
            endpoint::RUNTIME_NAMES.contains(&n) && endpoint::lookup_hosts(&hosts, n).is_none(),
            "DNS asked for {n}"
        );
        None
    };
    let (cands, rejected) =
        endpoint::candidates(&inp, &no_dns).expect("no explicit endpoint, no error");
    let rank = |s: Source| match s {
        Source::Flag => 0,
        Source::HostGateway => 1,
        Source::Name(n) => {
            2 + endpoint::RUNTIME_NAMES
                .iter()
                .position(|r| *r == n)
                .unwrap()
        }
        Source::DefaultGateway => 9,
    };
    let mut ips = std::collections::HashSet::new();
    for c in &cands {
        assert!(
            !endpoint::is_vm_local(c.addr.ip(), &local),
            "a VM address kept: {c:?}"
        );
        assert!(ips.insert(c.addr.ip()), "tried twice: {c:?}");
        assert_eq!(c.addr.port(), 51820);
        assert_ne!(c.source, Source::Flag);
    }
    assert!(
        cands
            .windows(2)
            .all(|w| rank(w[0].source) <= rank(w[1].source)),
        "{cands:?}"
    );
    assert!(
        rejected
            .iter()
            .all(|r| endpoint::is_vm_local(r.addr, &local)),
        "{rejected:?}"
    );
    for line in text(data).lines() {
        if let Some(r) = Report::parse(line) {
            assert_eq!(Report::parse(&r.line()), Some(r.clone()), "{line:?}");
        }
    }
    let mut made = vec![Report::None {
        tried: cands.clone(),
        rejected: rejected.clone(),
    }];
    if let Some(c) = cands.first() {
        made.push(Report::Found {
            chosen: *c,
            rejected,
        });
    }
    for r in made {
        assert_eq!(Report::parse(&r.line()), Some(r.clone()), "{r:?}");
    }
}

/// Splits an input into the parts a target reads, at a line `--`.
/// What a control-plane node printed (kubectl's JSON, then after the
/// `--` line the manifests or k3s's arguments) to a cluster, its routes and
/// its DNS zones: parsing never panics; every range is its network's
/// address; each route in the VM goes via an address of a node container
/// of the range's family, and is one of the Mac's; every zone forwarded
/// is routed to its cluster's DNS, and an answer's names come back under
/// the zone asked.
pub fn kube(data: &[u8]) {
    use crate::kube::names::Forwards;
    use crate::kube::{self, Cluster, ClusterId, Flavor, NodeContainer, Role};
    let (objects, flags) = parts(data);
    let flags = kube::parse_flags(&text(flags));
    for n in flags.services.iter().chain(&flags.pods) {
        assert_eq!(*n, n.trunc(), "{n} is not its network's address");
    }
    if let Some(d) = &flags.domain {
        assert!(kube::names::is_domain(d), "{d:?}");
    }
    let Ok(objects) = kube::parse_objects(&text(objects)) else {
        return;
    };
    for n in objects.nodes.iter().flat_map(|n| &n.pod_cidrs) {
        assert_eq!(*n, n.trunc(), "{n} is not its network's address");
    }
    // Each node a container at its InternalIPs, the first a control plane.
    let containers: Vec<NodeContainer> = objects
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeContainer {
            id: format!("c{i}"),
            name: n.name.clone(),
            role: if i == 0 {
                Role::ControlPlane
            } else {
                Role::Worker
            },
            addresses: n.internal_ips.clone(),
        })
        .collect();
    let id = ClusterId {
        flavor: Flavor::Kind,
        name: "fuzz".into(),
    };
    let cluster = Cluster::new(id, objects, flags);
    let plan = kube::plan(&cluster, &containers);
    let all: Vec<IpAddr> = containers
        .iter()
        .flat_map(|c| c.addresses.clone())
        .collect();
    for (net, gw) in &plan.vm {
        assert!(plan.mac.contains(net), "{net} in the VM only");
        assert!(all.contains(gw), "{net} via {gw}, no node's address");
        assert_eq!(net.addr().is_ipv4(), gw.is_ipv4(), "{net} via {gw}");
    }
    let built = Forwards::build(&[&cluster], None, "docker.internal");
    for z in built.forwards.zones() {
        let q = format!("x.svc.{}", z.zone);
        let ask = built
            .forwards
            .route(&q)
            .expect("a zone's own name is routed");
        assert_eq!(ask.servers, z.servers);
        assert!(ask.name.ends_with(&cluster.domain), "{ask:?}");
        let back = ask.rename(&ask.name).unwrap_or_else(|| ask.name.clone());
        assert_eq!(back, q.to_ascii_lowercase(), "{ask:?}");
    }
}

/// The names' rules (`dns::names`) over containers described one a line,
/// then (after a `--` line) a DNS message as the server receives it.
/// A line is `NAME|SERVICE|PROJECT|DOMAINS LABEL|NETWORK|ALIAS,ALIAS`;
/// the network picks one of four routed /16s (or `far`, not routed) and
/// the container gets the next address on it. Properties: no panic; every
/// name served is one hickory can write and answers exactly its addresses,
/// all routed; every address answered in a reverse zone has a pointer, and
/// every pointer's name answers that address; the question asked gets an
/// answer of the kind its type allows, whose addresses are routed and
/// whose names are served.
pub fn dns(data: &[u8]) {
    use crate::dns::names::{reverse_name, Answer, QType};
    use hickory_proto::rr::Name;
    let (lines, message) = parts(data);
    let (t, nets) = dns_table(lines);
    let routed: BTreeSet<IpNet> = nets.iter().copied().collect();
    let is_routed = |a: &IpAddr| routed.iter().any(|n| n.contains(a));
    let in_reverse = |a: &IpAddr| nets[..3].iter().any(|n| n.contains(a));
    for (name, addrs) in t.entries() {
        assert!(
            Name::from_ascii(format!("{name}.")).is_ok(),
            "{name:?} is served but not a DNS name"
        );
        assert!(addrs.iter().all(is_routed), "{name}: {addrs:?}");
        let want: Vec<IpAddr> = addrs.iter().copied().collect();
        assert_eq!(
            t.lookup(name, QType::Any),
            Answer::Addresses(want),
            "{name}"
        );
        for a in addrs.iter().filter(|a| in_reverse(a)) {
            let r = reverse_name(*a);
            assert!(
                matches!(t.lookup(&r, QType::Ptr), Answer::Names(_)),
                "{a} ({name}) has no pointer"
            );
        }
    }
    for (r, name) in t.pointers() {
        assert_eq!(
            t.lookup(r, QType::Ptr),
            Answer::Names(vec![name.to_owned()])
        );
        let Answer::Addresses(a) = t.lookup(name, QType::Any) else {
            panic!("{r} names {name}, which has no address");
        };
        assert!(
            a.iter().any(|a| reverse_name(*a) == r),
            "{r} -> {name}: {a:?}"
        );
    }
    for zone in t.other_zones() {
        assert!(
            crate::dns::resolver::ResolverFile::new(std::path::Path::new("/nonexistent"), &zone)
                .path()
                .parent()
                == Some(std::path::Path::new("/nonexistent")),
            "{zone:?} would name a file outside the resolver folder"
        );
    }
    let Ok(msg) = hickory_proto::op::Message::from_vec(message) else {
        return;
    };
    for q in &msg.queries {
        let qname = q.name().to_string();
        let qtype = crate::dns::server::qtype(q.query_type());
        match t.lookup(&qname, qtype) {
            Answer::Addresses(a) => {
                assert!(a.iter().all(is_routed), "{qname}: {a:?}");
                assert!(
                    matches!(qtype, QType::A | QType::Aaaa | QType::Any),
                    "{qname} {qtype:?}: {a:?}"
                );
                assert!(
                    a.iter().all(|a| match qtype {
                        QType::A => a.is_ipv4(),
                        QType::Aaaa => a.is_ipv6(),
                        _ => true,
                    }),
                    "{qname} {qtype:?}: {a:?}"
                );
            }
            Answer::Names(n) => {
                assert!(
                    matches!(qtype, QType::Ptr | QType::Any),
                    "{qname} {qtype:?}"
                );
                for n in n {
                    assert!(
                        t.entries().any(|(e, _)| e == n),
                        "{qname} points at {n}, not served"
                    );
                }
            }
            Answer::Soa => assert!(matches!(qtype, QType::Soa | QType::Any), "{qname}"),
            Answer::Refused => {
                let q = qname.trim_end_matches('.').to_ascii_lowercase();
                assert!(t.apex(&q).is_none(), "{qname}: refused in a zone served");
            }
            Answer::NxDomain | Answer::NoData => {}
        }
    }
}

/// The table of [`dns`]'s container lines, and the routed subnets (the
/// first three with reverse zones).
fn dns_table(lines: &[u8]) -> (crate::dns::names::Table, [IpNet; 4]) {
    use crate::dns::names::{Domain, Options, Table};
    use crate::docker::client::{Attachment, ContainerInfo};
    let nets: [IpNet; 4] = [
        "172.18.0.0/16".parse().unwrap(),
        "172.19.0.0/16".parse().unwrap(),
        "10.89.0.0/24".parse().unwrap(),
        "fd00:18::/64".parse().unwrap(),
    ];
    let routed: BTreeSet<IpNet> = nets.iter().copied().collect();
    let mut containers = Vec::new();
    for (i, line) in text(lines).lines().take(64).enumerate() {
        let f: Vec<&str> = line.split('|').collect();
        let field = |n: usize| f.get(n).copied().unwrap_or("");
        let network = field(4);
        let host = u8::try_from(i + 2).unwrap_or(250);
        let address: IpAddr = if network == "far" {
            IpAddr::from([192, 0, 2, host])
        } else {
            let net = nets[network.len() % nets.len()];
            match net {
                IpNet::V4(n) => {
                    let o = n.addr().octets();
                    IpAddr::from([o[0], o[1], o[2], host])
                }
                IpNet::V6(n) => {
                    let mut o = n.addr().octets();
                    o[15] = host;
                    IpAddr::from(o)
                }
            }
        };
        let mut labels = std::collections::BTreeMap::new();
        for (k, n) in [
            (crate::dns::names::COMPOSE_SERVICE, 1),
            (crate::dns::names::COMPOSE_PROJECT, 2),
            (crate::dns::names::DOMAINS_LABEL, 3),
        ] {
            if !field(n).is_empty() {
                labels.insert(k.to_owned(), field(n).to_owned());
            }
        }
        containers.push(ContainerInfo {
            id: format!("{i:012x}"),
            name: field(0).to_owned(),
            labels,
            addresses: vec![address],
            networks: vec![Attachment {
                network: network.to_owned(),
                aliases: field(5)
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect(),
                addresses: vec![address],
            }],
        });
    }
    let domain: Domain = "docker.internal".parse().unwrap();
    let opts = Options {
        extra_domains: vec!["corp.example".parse().unwrap()],
        reverse: Some(nets[..3].iter().copied().collect()),
    };
    (
        Table::build_with(&domain, &containers, &routed, &opts),
        nets,
    )
}

fn parts(data: &[u8]) -> (&[u8], &[u8]) {
    const SEP: &[u8] = b"\n--\n";
    match data.windows(SEP.len()).position(|w| w == SEP) {
        Some(i) => (&data[..i], &data[i + SEP.len()..]),
        None => (data, &[]),
    }
}

/// Docker's network list (the engine's JSON) to the routes `up` adds,
/// against the Mac's routing table (`netstat -rn`, after the `--` line):
/// every route added is a subnet of a routable network and clashes with
/// no route of the machine's; only our own routes are removed; what is
/// skipped really clashes; after the plan, our routes are exactly the
/// wanted ones.
pub fn docker_networks(data: &[u8]) {
    use crate::docker::client::{desired_subnets, NetworkInfo};
    use crate::routes::macos::{parse_netstat, split_routes};
    use crate::routes::scope::{is_private, partition};
    use crate::routes::{overlaps, plan};
    let (json, table) = parts(data);
    let Ok(list) = serde_json::from_slice::<Vec<bollard::models::Network>>(json) else {
        return;
    };
    let infos: Vec<NetworkInfo> = list.iter().map(NetworkInfo::from_model).collect();
    let docker = desired_subnets(&infos);
    // As `up` does: only private subnets (none allowed by a config file).
    let (desired, public) = partition(docker.clone(), &[], &BTreeSet::new());
    assert!(desired.iter().all(is_private) && !public.iter().any(is_private));
    assert_eq!(desired.len() + public.len(), docker.len());
    let (ours, system) = split_routes(&parse_netstat(&text(table)), UTUN);
    let p = plan(&desired, &ours, &system);
    let clashes = |net: &IpNet| {
        system
            .iter()
            .any(|s| s.destination.prefix_len() > 0 && overlaps(&s.destination, net))
    };
    for net in &p.add {
        assert_eq!(*net, net.trunc());
        assert!(
            infos
                .iter()
                .any(|i| i.is_routable() && i.subnets.contains(net)),
            "{net} is no routable network's subnet"
        );
        assert!(!clashes(net), "{net} clashes with a system route");
        assert!(!ours.contains(net));
    }
    for net in &p.remove {
        assert!(ours.contains(net), "removing {net}, which is not ours");
    }
    for s in &p.skipped {
        assert!(desired.iter().any(|d| d.trunc() == s.subnet));
        let route = s.conflicts_with().expect("plan skips only for a conflict");
        assert!(route.destination.prefix_len() > 0);
        assert!(overlaps(&route.destination, &s.subnet));
    }
    let after: BTreeSet<IpNet> = ours
        .difference(&p.remove.iter().copied().collect())
        .copied()
        .chain(p.add.iter().copied())
        .collect();
    let wanted: BTreeSet<IpNet> = desired
        .iter()
        .map(IpNet::trunc)
        .filter(|n| !clashes(n))
        .collect();
    assert_eq!(after, wanted, "our routes after the plan");
}

/// The user's Docker config and current context's `meta.json` (after the
/// `--` line), read as root under launchd: the candidate list always ends
/// with the default socket, names each engine once, and a context's engine
/// comes first.
pub fn docker_context(data: &[u8]) {
    use crate::docker::discovery::{candidates, Files, Inputs, Source};
    use std::path::{Path, PathBuf};
    struct Two(String, String);
    impl Files for Two {
        fn read(&self, path: &Path) -> Option<String> {
            match path.file_name()?.to_str()? {
                "config.json" => Some(self.0.clone()),
                "meta.json" => Some(self.1.clone()),
                _ => None,
            }
        }
        fn exists(&self, path: &Path) -> bool {
            path.ends_with(".docker/run/docker.sock")
        }
    }
    let (config, meta) = parts(data);
    let files = Two(text(config).into_owned(), text(meta).into_owned());
    let inputs = Inputs {
        home: Some(PathBuf::from("/Users/fuzz")),
        ..Inputs::default()
    };
    let c = candidates(&inputs, &files);
    let last = c.last().expect("at least the default socket");
    assert_eq!(last.source, Source::Default);
    let hosts: BTreeSet<&str> = c.iter().map(|c| c.host.as_str()).collect();
    assert_eq!(hosts.len(), c.len(), "an engine listed twice: {c:?}");
    for (i, cand) in c.iter().enumerate() {
        if cand.source == Source::Context {
            assert_eq!(i, 0, "the context's engine is not first: {c:?}");
        }
    }
}

/// The stable driver: every seed, then mutations of the seeds until the
/// budget is spent. Not coverage-guided, so weaker than libFuzzer per
/// input; its worth is that it runs on every CI run at the cost of the
/// test binary CI builds anyway.
#[cfg(test)]
pub(crate) mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    /// Seconds per target: short by default so that `cargo test` stays
    /// quick; CI's fuzz stage sets more.
    fn budget() -> Duration {
        let secs = std::env::var("NETCONNECT_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(1.0);
        Duration::from_secs_f64(secs.max(0.0))
    }

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// The seeds of `target`, sorted by name so that a run is repeatable.
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = fuzz_dir().join("seeds").join(target);
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}: every target has seeds", dir.display()))
            .map(|e| e.expect("reading the seed folder").path())
            .collect();
        paths.sort();
        let seeds: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| std::fs::read(p).expect("reading a seed"))
            .collect();
        assert!(!seeds.is_empty(), "{}: no seeds", dir.display());
        seeds
    }

    /// Tokens worth inserting: the target's dictionary (`fuzz/<target>.dict`,
    /// libFuzzer's format, one `"token"` a line) if any, plus what every
    /// text parser splits on.
    fn dictionary(target: &str) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = [
            "\n", " ", "=", "/", ":", "\"", "%", ".", "-", "--", "\n--\n",
        ]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect();
        let path = fuzz_dir().join(format!("{target}.dict"));
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                if let Some(t) = line
                    .trim()
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                {
                    out.push(unescape(t));
                }
            }
        }
        out
    }

    /// libFuzzer's dictionary escapes, `\\`, `\"` and `\xNN`, and no
    /// others: libFuzzer refuses the whole file over one (`\n` included),
    /// so a dictionary this accepts is one `cargo fuzz` can read.
    fn unescape(t: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = t.bytes();
        while let Some(c) = b.next() {
            if c != b'\\' {
                out.push(c);
                continue;
            }
            match b.next() {
                Some(b'x') => {
                    let hex: Vec<u8> = b.by_ref().take(2).collect();
                    let v = std::str::from_utf8(&hex)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    out.push(v.unwrap_or_else(|| panic!("bad \\x escape in {t:?}")));
                }
                Some(c @ (b'\\' | b'"')) => out.push(c),
                _ => panic!("{t:?}: libFuzzer reads only \\\\, \\\" and \\xNN escapes"),
            }
        }
        out
    }

    /// xorshift64*: enough randomness for mutation, and a run is replayed
    /// from its printed seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const INTERESTING: &[u8] = b"\0\xff\x7f\x80\n\r\t =/:.-\"%[]{},0189aAfF";
    const MAX_INPUT: usize = 1 << 16;

    fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dict: &[Vec<u8>]) -> Vec<u8> {
        let mut d = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(d.len() + 1);
            // A byte to change, where there is one.
            let byte = at.min(d.len().saturating_sub(1));
            match rng.below(9) {
                0 if !d.is_empty() => d[byte] ^= 1 << rng.below(8),
                1 if !d.is_empty() => d[byte] = rng.next() as u8,
                2 if !d.is_empty() => d[byte] = INTERESTING[rng.below(INTERESTING.len())],
                3 => {
                    let t = &dict[rng.below(dict.len())];
                    d.splice(at..at, t.iter().copied());
                }
                4 => {
                    let end = (at + 1 + rng.below(16)).min(d.len());
                    d.drain(at.min(end)..end);
                }
                5 => {
                    let from = rng.below(d.len() + 1);
                    let end = (from + 1 + rng.below(32)).min(d.len());
                    let piece: Vec<u8> = d[from.min(end)..end].to_vec();
                    d.splice(at..at, piece);
                }
                6 => {
                    let other = &seeds[rng.below(seeds.len())];
                    let from = rng.below(other.len() + 1);
                    d.truncate(at);
                    d.extend_from_slice(&other[from..]);
                }
                7 => {
                    let n = 1 + rng.below(8);
                    let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    d.splice(at..at, bytes);
                }
                _ => d.truncate(at),
            }
        }
        d.truncate(MAX_INPUT);
        d
    }

    /// Runs one input; a failure is saved where `fuzz/README.md` says to
    /// look, and fails the test with its path.
    fn check(name: &str, target: fn(&[u8]), input: &[u8]) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(input))) {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("");
            // FNV-1a names the file, so the same input is saved once.
            let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            });
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/fuzz-found")
                .join(name);
            let path = dir.join(format!("crash-{hash:016x}"));
            let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
            let mut shown = format!("{:?}", String::from_utf8_lossy(input));
            if shown.len() > 400 {
                let cut = (0..=400)
                    .rev()
                    .find(|i| shown.is_char_boundary(*i))
                    .unwrap_or(0);
                shown.truncate(cut);
                shown.push_str("...");
            }
            panic!(
                "fuzz target {name} failed on {shown} ({} bytes), saved as {} ({saved:?}): \
                 fix it, then move the file into fuzz/seeds/{name}/\n{msg}",
                input.len(),
                path.display()
            );
        }
    }

    pub(crate) fn run(name: &str) {
        let target = super::targets()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no target {name}"))
            .1;
        let seeds = seeds(name);
        for s in &seeds {
            check(name, target, s);
        }
        let dict = dictionary(name);
        let start = std::env::var("NETCONNECT_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        let mut rng = Rng(start);
        let deadline = Instant::now() + budget();
        let mut n = 0u64;
        while Instant::now() < deadline {
            let input = mutate(&mut rng, &seeds, &dict);
            check(name, target, &input);
            n += 1;
        }
        println!(
            "fuzz {name}: {} seeds and {n} mutations passed (NETCONNECT_FUZZ_SEED={start})",
            seeds.len()
        );
    }

    #[test]
    fn every_target_is_a_cargo_fuzz_binary() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for (name, _) in super::targets() {
            assert!(
                manifest.contains(&format!("name = \"{name}\"")),
                "fuzz/Cargo.toml lacks the target {name}"
            );
        }
    }

    /// The seed sends a packet, which waits for the handshake it starts,
    /// then two more from the peer's allowed IPs (v4, v6) and two from
    /// outside them.
    #[test]
    fn the_datagram_seed_reaches_the_tun_and_the_allowed_ips_check() {
        let seed = std::fs::read(fuzz_dir().join("seeds/datagram/handshake-and-data")).unwrap();
        let r = super::datagram_run(&seed);
        assert_eq!((r.tun, r.refused), (3, 2), "{r:?}");
    }

    #[test]
    fn fuzz_uapi_set() {
        run("uapi_set");
    }
    #[test]
    fn fuzz_uapi() {
        run("uapi");
    }
    #[test]
    fn fuzz_datagram() {
        run("datagram");
    }
    #[test]
    fn fuzz_config() {
        run("config");
    }
    #[test]
    fn fuzz_netstat() {
        run("netstat");
    }
    #[test]
    fn fuzz_helper_lines() {
        run("helper_lines");
    }
    #[test]
    fn fuzz_docker_networks() {
        run("docker_networks");
    }
    #[test]
    fn fuzz_docker_context() {
        run("docker_context");
    }
    #[test]
    fn fuzz_way_home() {
        run("way_home");
    }
    #[test]
    fn fuzz_kube() {
        run("kube");
    }
    #[test]
    fn fuzz_dns() {
        run("dns");
    }
    /// The seeds reach every rule: aliases on one and two networks, label
    /// domains in and out of the allowed ones, pointers, both families.
    #[test]
    fn the_dns_seeds_reach_every_rule() {
        use crate::dns::names::{Answer, QType};
        let data = std::fs::read(fuzz_dir().join("seeds/dns/ptr-v4")).unwrap();
        let (t, _) = super::dns_table(super::parts(&data).0);
        for (q, qt) in [
            ("shop_web_1.docker.internal", QType::A),
            ("shop-web-1.docker.internal", QType::A),
            ("web.shop.docker.internal", QType::A),
            ("store.neta.docker.internal", QType::A),
            ("store.front.docker.internal", QType::A),
            ("alias.with.dots.docker.internal", QType::A),
            ("www.shop.test", QType::A),
            ("a.corp.example", QType::A),
            ("v6alias.docker.internal", QType::Aaaa),
        ] {
            assert!(matches!(t.lookup(q, qt), Answer::Addresses(_)), "{q}");
        }
        assert_eq!(
            t.lookup("2.0.18.172.in-addr.arpa", QType::Ptr),
            Answer::Names(vec!["shop_web_1.docker.internal".into()])
        );
        assert_eq!(t.conflicts().count(), 1, "store on two networks");
        assert_eq!(t.refused().count(), 1, "x.example.com");
        assert_eq!(
            t.lookup("kind-control-plane.docker.internal", QType::A),
            Answer::NxDomain
        );
    }
    /// The seeds get past the parsers to the routes and zones.
    #[test]
    fn the_kube_seeds_reach_the_plan() {
        for (seed, nodes) in [("kind", 2), ("k3d-dual-stack", 1)] {
            let data = std::fs::read(fuzz_dir().join("seeds/kube").join(seed)).unwrap();
            let (objects, _) = super::parts(&data);
            let o = crate::kube::parse_objects(&super::text(objects)).unwrap();
            assert_eq!(o.nodes.len(), nodes, "{seed}");
            assert!(!o.dns.is_empty(), "{seed}");
        }
    }
}

//! End-to-end tests of `netconnect device`: real tunnels between two network
//! namespaces, against wireguard-go (the reference) and against itself, plus the
//! UAPI, signal and start-up-error contract.
//!
//! Needs root, /dev/net/tun, `ip`, `wg`, `wireguard-go`, `iperf3`, `ping`
//! (see `common::APT_HINT`). Tests never skip. Each test has its own namespaces
//! and interface names, so they run in parallel.

// The test bed is Linux network namespaces (setns, prctl, veth): on macOS
// this file builds to nothing, so `cargo test --no-run` links there too.
#![cfg(target_os = "linux")]

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Bound for a fresh tunnel to carry its first ping (first handshake).
const UP: Duration = Duration::from_secs(10);
/// Bound for a tunnel to recover after one side restarted. The surviving side
/// only re-handshakes after KEEPALIVE_TIMEOUT + REKEY_TIMEOUT = 15 s without
/// replies, plus jitter and retries.
const RECONNECT: Duration = Duration::from_secs(30);
/// Bound for a bulk TCP transfer.
const BULK: Duration = Duration::from_secs(240);

const MIB: u64 = 1024 * 1024;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Pings `addr` `n` times and requires every reply.
fn assert_all_replies(ns: &Netns, addr: &str, n: u32, t: &Tunnel) {
    let got = ping_count(ns, addr, n);
    assert_eq!(
        got,
        n,
        "{} -> {addr}: {got}/{n} replies\n{}",
        ns.name(),
        t.diagnostics()
    );
}

fn transfer(t: &Tunnel, from_host: bool, dst: &str, port: u16, bytes: u64) -> TransferReport {
    let (s, r) = if from_host {
        (&t.net.host, &t.net.vm)
    } else {
        (&t.net.vm, &t.net.host)
    };
    let rep = tcp_transfer(s, r, ip(dst), port, bytes, BULK)
        .unwrap_or_else(|e| panic!("{e}\n{}", t.diagnostics()));
    rep.assert_ok(bytes);
    eprintln!(
        "transfer {} -> {dst}: {} bytes in {:?} ({:.0} Mbit/s), sha256 {}",
        if from_host { "host" } else { "vm" },
        rep.received,
        rep.elapsed,
        rep.mbit_per_s(),
        rep.sha_received
    );
    rep
}

// ---------------------------------------------------------------------------
// Harness baseline: the reference implementation on both sides.
// If this fails, the machine or the harness is broken, not netconnect.
// ---------------------------------------------------------------------------

#[test]
fn harness_baseline_wireguard_go_pair() {
    let t = Tunnel::new(Impl::WireguardGo, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    t.wait_vm_to_host(HOST_TUN6, UP);
    transfer(&t, true, VM_TUN4, 5000, 4 * MIB);
    let d = t.host_dump();
    assert_ne!(d.peer(&t.vm.key.public).latest_handshake, 0);
}

// ---------------------------------------------------------------------------
// 1. IPv4 ping across, each side initiating
// ---------------------------------------------------------------------------

#[test]
fn ping_v4_netconnect_initiates_to_wireguard_go() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    assert_all_replies(&t.net.host, VM_TUN4, 5, &t);
    assert_all_replies(&t.net.vm, HOST_TUN4, 5, &t);
}

#[test]
fn ping_v4_wireguard_go_initiates_to_netconnect() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_vm_to_host(HOST_TUN4, UP);
    assert_all_replies(&t.net.vm, HOST_TUN4, 5, &t);
    assert_all_replies(&t.net.host, VM_TUN4, 5, &t);
}

#[test]
fn ping_v4_netconnect_to_netconnect() {
    let t = Tunnel::new(Impl::Netconnect, Impl::Netconnect);
    t.wait_host_to_vm(VM_TUN4, UP);
    assert_all_replies(&t.net.host, VM_TUN4, 5, &t);
    assert_all_replies(&t.net.vm, HOST_TUN4, 5, &t);
}

// ---------------------------------------------------------------------------
// 2. Bulk TCP with SHA-256 check
// ---------------------------------------------------------------------------

#[test]
fn tcp_64mib_netconnect_to_wireguard_go() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    transfer(&t, true, VM_TUN4, 5000, 64 * MIB);
}

#[test]
fn tcp_64mib_wireguard_go_to_netconnect() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_vm_to_host(HOST_TUN4, UP);
    transfer(&t, false, HOST_TUN4, 5000, 64 * MIB);
}

#[test]
fn tcp_64mib_netconnect_to_netconnect() {
    let t = Tunnel::new(Impl::Netconnect, Impl::Netconnect);
    t.wait_host_to_vm(VM_TUN4, UP);
    transfer(&t, true, VM_TUN4, 5000, 64 * MIB);
}

// ---------------------------------------------------------------------------
// 3. IPv6 inner traffic (and IPv6 underlay)
// ---------------------------------------------------------------------------

#[test]
fn ipv6_inner_netconnect_wireguard_go() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN6, UP);
    assert_all_replies(&t.net.host, VM_TUN6, 5, &t);
    assert_all_replies(&t.net.vm, HOST_TUN6, 5, &t);
    transfer(&t, true, VM_TUN6, 5006, 8 * MIB);
    transfer(&t, false, HOST_TUN6, 5007, 8 * MIB);
}

#[test]
fn ipv6_inner_netconnect_to_netconnect() {
    let t = Tunnel::new(Impl::Netconnect, Impl::Netconnect);
    t.wait_vm_to_host(HOST_TUN6, UP);
    assert_all_replies(&t.net.host, VM_TUN6, 5, &t);
    transfer(&t, true, VM_TUN6, 5006, 8 * MIB);
}

#[test]
fn ipv6_underlay_netconnect_wireguard_go() {
    let t = Tunnel::with(
        Impl::Netconnect,
        Impl::WireguardGo,
        TunnelOpts {
            underlay_v6: true,
            ..Default::default()
        },
    );
    t.wait_host_to_vm(VM_TUN4, UP);
    assert_all_replies(&t.net.vm, HOST_TUN6, 3, &t);
    transfer(&t, true, VM_TUN4, 5000, 4 * MIB);
    let hd = t.host_dump();
    let p = hd.peer(&t.vm.key.public);
    assert_eq!(
        p.endpoint.as_deref(),
        Some(format!("[{VM_UNDERLAY6}]:{VM_PORT}").as_str()),
        "netconnect endpoint over IPv6 underlay: {p:?}"
    );
    let vd = t.vm_dump();
    assert_eq!(
        vd.peer(&t.host.key.public).endpoint.as_deref(),
        Some(format!("[{HOST_UNDERLAY6}]:{HOST_PORT}").as_str()),
        "wireguard-go saw netconnect's datagrams from an unexpected source: {vd:?}"
    );
}

// ---------------------------------------------------------------------------
// 4. A restarted peer (same keys, port, config) reconnects
// ---------------------------------------------------------------------------

/// wireguard-go crashes (SIGKILL) and comes back; netconnect keeps running
/// and is the one that has to notice and re-handshake.
#[test]
fn restart_wireguard_go_peer_netconnect_recovers() {
    let mut t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    transfer(&t, true, VM_TUN4, 5000, MIB);
    let (st, _) = t.vm.daemon().stop_with(SIGKILL, Duration::from_secs(3));
    assert!(st.is_some(), "wireguard-go did not die on SIGKILL");
    t.vm.daemon = None;
    t.start_vm();
    let t0 = Instant::now();
    t.wait_host_to_vm(VM_TUN4, RECONNECT);
    eprintln!("netconnect recovered after {:?}", t0.elapsed());
    assert_all_replies(&t.net.vm, HOST_TUN4, 3, &t);
    transfer(&t, true, VM_TUN4, 5001, MIB);
}

/// wireguard-go restarts and sends first: netconnect must accept the new
/// handshake although it still holds the old session.
#[test]
fn restart_wireguard_go_peer_restarted_side_initiates() {
    let mut t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    t.stop_vm();
    t.start_vm();
    t.wait_vm_to_host(HOST_TUN4, UP);
    assert_all_replies(&t.net.host, VM_TUN4, 3, &t);
}

/// netconnect is stopped (SIGTERM) and started again with the same key, port
/// and config; wireguard-go keeps running and pings first.
#[test]
fn restart_netconnect_peer_wireguard_go_recovers() {
    let mut t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_vm_to_host(HOST_TUN4, UP);
    t.stop_host();
    t.start_host();
    let t0 = Instant::now();
    t.wait_vm_to_host(HOST_TUN4, RECONNECT);
    eprintln!("wireguard-go recovered after {:?}", t0.elapsed());
    assert_all_replies(&t.net.host, VM_TUN4, 3, &t);
    transfer(&t, false, HOST_TUN4, 5001, MIB);
}

/// netconnect restarts and sends first (new handshake towards a peer that
/// still holds the old session).
#[test]
fn restart_netconnect_peer_restarted_side_initiates() {
    let mut t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_vm_to_host(HOST_TUN4, UP);
    t.stop_host();
    t.start_host();
    t.wait_host_to_vm(VM_TUN4, UP);
    assert_all_replies(&t.net.vm, HOST_TUN4, 3, &t);
}

// ---------------------------------------------------------------------------
// 5. Wrong peer key: nothing gets through, no handshake
// ---------------------------------------------------------------------------

#[test]
fn wrong_peer_key_no_handshake() {
    let bogus = KeyPair::generate();
    let t = Tunnel::with(
        Impl::Netconnect,
        Impl::WireguardGo,
        TunnelOpts {
            host_peer_pub: Some(bogus.public.clone()),
            ..Default::default()
        },
    );
    // 15 pings over ~3 s each way: netconnect initiating, then wireguard-go.
    let got = ping_count(&t.net.host, VM_TUN4, 15);
    assert_eq!(
        got,
        0,
        "netconnect reached a peer whose key it does not have\n{}",
        t.diagnostics()
    );
    let got = ping_count(&t.net.vm, HOST_TUN4, 15);
    assert_eq!(
        got,
        0,
        "wireguard-go reached netconnect with an unknown key\n{}",
        t.diagnostics()
    );

    let hd = t.host_dump();
    let p = hd.peer(&bogus.public);
    assert_eq!(
        p.latest_handshake, 0,
        "netconnect reports a handshake with a wrong key: {p:?}"
    );
    assert_eq!(
        p.rx, 0,
        "netconnect reports received bytes from a wrong-key peer: {p:?}"
    );
    assert!(
        hd.peers.iter().all(|q| q.public_key != t.vm.key.public),
        "netconnect shows the vm's real key as a peer: {hd:?}"
    );
    let vd = t.vm_dump();
    let q = vd.peer(&t.host.key.public);
    assert_eq!(
        q.latest_handshake, 0,
        "wireguard-go completed a handshake: {q:?}"
    );
    assert_eq!(q.rx, 0, "wireguard-go received transport data: {q:?}");
}

// ---------------------------------------------------------------------------
// 6. `wg show`: handshake time and byte counters
// ---------------------------------------------------------------------------

#[test]
fn wg_show_handshake_and_counters_match_wireguard_go() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    let before = unix_now();
    t.wait_host_to_vm(VM_TUN4, UP);
    let n = 16 * MIB;
    transfer(&t, true, VM_TUN4, 5000, n);
    thread::sleep(Duration::from_secs(1)); // let the last ACKs settle
    let now = unix_now();
    let hd = t.host_dump();
    let vd = t.vm_dump();
    let h = hd.peer(&t.vm.key.public).clone();
    let v = vd.peer(&t.host.key.public).clone();
    eprintln!("netconnect peer: {h:?}\nwireguard-go peer: {v:?}");

    for (who, p) in [("netconnect", &h), ("wireguard-go", &v)] {
        assert_ne!(p.latest_handshake, 0, "{who}: no handshake reported: {p:?}");
        assert!(
            p.latest_handshake + 60 >= now && p.latest_handshake <= now + 2,
            "{who}: latest handshake {} is not a recent unix time (now {now}): {p:?}",
            p.latest_handshake
        );
    }
    assert!(
        h.latest_handshake + 2 >= before,
        "netconnect: handshake time {} predates the first packet ({before})",
        h.latest_handshake
    );

    assert!(
        h.tx >= n,
        "netconnect tx {} < {n} bytes of TCP payload sent",
        h.tx
    );
    assert!(
        v.rx >= n,
        "wireguard-go rx {} < {n} bytes of TCP payload received",
        v.rx
    );
    // Under a saturating transfer wireguard-go drops part of what arrives
    // (its receive queue fills; dropped packets are not counted and TCP
    // resends them), so the bulk phase can only check that the peer saw no
    // more than we sent. The paced pings below check the counters exactly.
    assert!(
        v.rx <= h.tx,
        "wireguard-go rx {} exceeds netconnect tx {}",
        v.rx,
        h.tx
    );
    let count = 20u32;
    let size = 1000u32;
    assert_eq!(ping_sized(&t.net.host, VM_TUN4, count, size, false), count);
    let h2 = t.host_dump().peer(&t.vm.key.public).clone();
    let v2 = t.vm_dump().peer(&t.host.key.public).clone();
    let (htx, hrx) = (h2.tx - h.tx, h2.rx - h.rx);
    let (vtx, vrx) = (v2.tx - v.tx, v2.rx - v.rx);
    eprintln!("paced pings: netconnect tx {htx} rx {hrx}, wireguard-go tx {vtx} rx {vrx}");
    let min = u64::from(count) * u64::from(size + 28 + 32);
    assert!(
        htx >= min,
        "netconnect tx {htx} < {min} for {count} pings of {size} bytes"
    );
    assert_eq!(
        htx, vrx,
        "netconnect tx vs wireguard-go rx over paced pings"
    );
    assert_eq!(
        hrx, vtx,
        "netconnect rx vs wireguard-go tx over paced pings"
    );
    assert!(h.rx > 0, "netconnect rx is 0 although TCP ACKs came back");
}

#[test]
fn wg_show_reports_configuration() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    let d = t.host_dump();
    assert!(d.has_private_key, "private key not reported: {d:?}");
    assert_eq!(
        d.public_key.as_deref(),
        Some(t.host.key.public.as_str()),
        "{d:?}"
    );
    assert_eq!(d.listen_port, HOST_PORT, "{d:?}");
    assert_eq!(d.peers.len(), 1, "{d:?}");
    let p = &d.peers[0];
    assert_eq!(p.public_key, t.vm.key.public);
    assert_eq!(
        p.endpoint.as_deref(),
        Some(format!("{VM_UNDERLAY4}:{VM_PORT}").as_str())
    );
    let mut ips = p.allowed_ips.clone();
    ips.sort();
    assert_eq!(ips, vec![format!("{VM_TUN4}/32"), format!("{VM_TUN6}/128")]);
    assert_eq!(p.latest_handshake, 0, "handshake before any traffic: {p:?}");
    assert_eq!(p.keepalive, None);
    assert!(!p.has_preshared_key);

    let conf = t.net.host.ok(&["wg", "showconf", &t.host.iface]);
    assert!(
        conf.contains("[Interface]") && conf.contains("[Peer]"),
        "wg showconf: {conf}"
    );
    assert!(
        conf.contains(&format!("PublicKey = {}", t.vm.key.public)),
        "wg showconf: {conf}"
    );
    assert!(
        conf.contains(&format!("ListenPort = {HOST_PORT}")),
        "wg showconf: {conf}"
    );
}

// ---------------------------------------------------------------------------
// 7. Signals and device lifecycle
// ---------------------------------------------------------------------------

fn assert_clean_exit(sig: i32) {
    let ns = Netns::new("sig");
    let iface = format!("{}a", unique_ifname_stem());
    let mut d = Daemon::start(&ns, Impl::Netconnect, &iface);
    assert!(ns.link_exists(&iface), "TUN device {iface} not created");
    let (st, took) = d.stop_with(sig, DAEMON_STOP_TIMEOUT);
    let st = st.unwrap_or_else(|| {
        panic!(
            "netconnect did not exit within 3 s of signal {sig}\n{}",
            d.log_tail(4096)
        )
    });
    assert!(
        st.success(),
        "exit status after signal {sig}: {st}\n{}",
        d.log_tail(4096)
    );
    assert!(took <= DAEMON_STOP_TIMEOUT, "took {took:?}");
    assert!(
        !ns.link_exists(&iface),
        "TUN device {iface} still present after exit"
    );
    assert!(
        !uapi_socket_path(&iface).exists(),
        "UAPI socket left behind after exit"
    );
}

#[test]
fn sigterm_exits_zero_and_cleans_up() {
    assert_clean_exit(SIGTERM);
}

#[test]
fn sigint_exits_zero_and_cleans_up() {
    assert_clean_exit(SIGINT);
}

#[test]
fn sigterm_with_active_tunnel_exits_zero_and_cleans_up() {
    let mut t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    let iface = t.host.iface.clone();
    let d = t.host.daemon();
    let (st, took) = d.stop_with(SIGTERM, DAEMON_STOP_TIMEOUT);
    let st = st.unwrap_or_else(|| panic!("no exit within 3 s of SIGTERM\n{}", d.log_tail(4096)));
    assert!(st.success(), "exit status {st}\n{}", d.log_tail(4096));
    assert!(took <= DAEMON_STOP_TIMEOUT);
    assert!(
        !t.net.host.link_exists(&iface),
        "TUN device {iface} still present"
    );
    assert!(
        !uapi_socket_path(&iface).exists(),
        "UAPI socket left behind"
    );
}

#[test]
fn device_starts_down_without_address_or_config() {
    let ns = Netns::new("dev");
    let iface = format!("{}a", unique_ifname_stem());
    let _d = Daemon::start(&ns, Impl::Netconnect, &iface);
    let link = ns.link_show(&iface);
    assert!(link.contains(" tun "), "not a TUN device: {link}");
    let flags = link
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or("");
    assert!(!flags.split(',').any(|f| f == "UP"), "device is up: {link}");
    let addrs = ns.ok(&["ip", "-o", "addr", "show", "dev", &iface]);
    assert!(addrs.trim().is_empty(), "device has addresses: {addrs}");
    let dump = wg_dump(&ns, &iface);
    assert!(!dump.has_private_key, "{dump:?}");
    assert!(dump.peers.is_empty(), "{dump:?}");
}

#[test]
fn listen_port_flag_is_used() {
    let ns = Netns::new("port");
    let iface = format!("{}a", unique_ifname_stem());
    let _d = Daemon::start_with_args(&ns, Impl::Netconnect, &iface, &["--listen-port", "51999"]);
    let dump = wg_dump(&ns, &iface);
    assert_eq!(dump.listen_port, 51999, "{dump:?}");
    let ss = ns.ok(&["ss", "-Hlun", "sport", "=", ":51999"]);
    assert!(
        !ss.trim().is_empty(),
        "nothing listens on UDP 51999 in the namespace"
    );
}

// ---------------------------------------------------------------------------
// 8. UAPI: bad input is rejected and the device keeps serving
// ---------------------------------------------------------------------------

/// A single netconnect device in its own namespace.
struct Single {
    d: Daemon,
    iface: String,
    _ns: Netns,
}

fn single() -> Single {
    let ns = Netns::new("uapi");
    let iface = format!("{}a", unique_ifname_stem());
    let d = Daemon::start(&ns, Impl::Netconnect, &iface);
    Single { d, iface, _ns: ns }
}

fn assert_rejected(iface: &str, req: &str, what: &str) -> UapiReply {
    let r = uapi(iface, req);
    match r.errno() {
        Some(e) if e != 0 => {}
        _ => panic!(
            "{what}: want errno=<nonzero>, got {r:?} (request {:?})",
            short(req)
        ),
    }
    r
}

fn short(s: &str) -> String {
    if s.len() > 120 {
        format!("{}...({} bytes)", &s[..120], s.len())
    } else {
        s.to_string()
    }
}

fn assert_still_serving(s: &mut Single) -> UapiReply {
    assert!(
        s.d.try_status().is_none(),
        "daemon exited: {:?}\n{}",
        s.d.try_status(),
        s.d.log_tail(4096)
    );
    uapi_get(&s.iface)
}

#[test]
fn uapi_get_on_fresh_device() {
    let mut s = single();
    let r = assert_still_serving(&mut s);
    assert!(
        r.text.ends_with("\n\n"),
        "reply not terminated by a blank line: {r:?}"
    );
    assert!(
        r.get("listen_port").is_some(),
        "no listen_port in get reply: {r:?}"
    );
    assert!(
        r.get("private_key").is_none(),
        "fresh device reports a private key: {r:?}"
    );
}

#[test]
fn uapi_bad_private_key_keeps_serving() {
    let mut s = single();
    assert_rejected(&s.iface, "set=1\nprivate_key=zzz\n\n", "private_key=zzz");
    let r = assert_still_serving(&mut s);
    assert!(
        r.get("private_key").is_none(),
        "bad private key got applied: {r:?}"
    );
    // Right length, not hex.
    assert_rejected(
        &s.iface,
        &format!("set=1\nprivate_key={}\n\n", "g".repeat(64)),
        "non-hex key",
    );
    assert_still_serving(&mut s);
}

#[test]
fn uapi_bad_cidr_keeps_serving() {
    let mut s = single();
    let peer = KeyPair::generate();
    let req = format!(
        "set=1\npublic_key={}\nallowed_ip=10.0.0.0/33\n\n",
        peer.public_hex()
    );
    assert_rejected(&s.iface, &req, "allowed_ip=10.0.0.0/33");
    let r = assert_still_serving(&mut s);
    assert!(!r.text.contains("/33"), "invalid CIDR reported back: {r:?}");
    let req = format!(
        "set=1\npublic_key={}\nallowed_ip=fd00::/129\n\n",
        peer.public_hex()
    );
    assert_rejected(&s.iface, &req, "allowed_ip=fd00::/129");
    assert_still_serving(&mut s);
}

#[test]
fn uapi_unknown_key_keeps_serving() {
    let mut s = single();
    assert_rejected(&s.iface, "set=1\nbogus=1\n\n", "bogus=1");
    assert_still_serving(&mut s);
    // Unknown operation.
    let r = uapi(&s.iface, "frobnicate=1\n\n");
    assert_ne!(r.errno(), Some(0), "unknown operation accepted: {r:?}");
    assert_still_serving(&mut s);
}

#[test]
fn uapi_overlong_line_keeps_serving() {
    let mut s = single();
    let line = format!("private_key={}", "a".repeat(10_000 - "private_key=".len()));
    assert_eq!(line.len(), 10_000);
    let req = format!("set=1\n{line}\n\n");
    let r = uapi_raw(&s.iface, req.as_bytes(), false, Duration::from_secs(5));
    // Either an error reply or the connection closed without success.
    assert_ne!(r.errno(), Some(0), "10000-char line accepted: {r:?}");
    assert!(
        r.read_error.is_none() || r.errno().is_some(),
        "no reply and no close within 5 s: {r:?}"
    );
    let g = assert_still_serving(&mut s);
    assert!(
        g.get("private_key").is_none(),
        "overlong key applied: {g:?}"
    );
}

#[test]
fn uapi_half_transaction_is_not_applied() {
    let mut s = single();
    let before: u16 = assert_still_serving(&mut s)
        .get("listen_port")
        .expect("listen_port in get")
        .parse()
        .unwrap();
    let new_port = if before == 5555 { 5556 } else { 5555 };

    // No terminating blank line, then EOF.
    let r = uapi_raw(
        &s.iface,
        format!("set=1\nlisten_port={new_port}\n").as_bytes(),
        true,
        Duration::from_secs(5),
    );
    assert!(
        r.read_error.is_none(),
        "server did not close/answer after EOF within 5 s: {r:?}"
    );
    let after: u16 = assert_still_serving(&mut s)
        .get("listen_port")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        after, before,
        "half transaction (no blank line) changed listen_port; reply was {r:?}"
    );

    // Half a peer addition, connection dropped.
    let peer = KeyPair::generate();
    let r = uapi_raw(
        &s.iface,
        format!(
            "set=1\npublic_key={}\nallowed_ip=10.9.9.0/24\n",
            peer.public_hex()
        )
        .as_bytes(),
        true,
        Duration::from_secs(5),
    );
    let g = assert_still_serving(&mut s);
    assert!(
        g.get("public_key").is_none(),
        "half transaction added a peer: {g:?} (reply to the half request: {r:?})"
    );

    // A complete transaction still works afterwards.
    let r = uapi(&s.iface, &format!("set=1\nlisten_port={new_port}\n\n"));
    assert_eq!(r.errno(), Some(0), "{r:?}");
    let g = assert_still_serving(&mut s);
    assert_eq!(
        g.get("listen_port").as_deref(),
        Some(new_port.to_string().as_str())
    );
}

#[test]
fn uapi_set_then_get_roundtrip() {
    let mut s = single();
    let own = KeyPair::generate();
    let peer = KeyPair::generate();
    let psk = KeyPair::generate(); // any 32 bytes serve as a preshared key
    let req = format!(
        "set=1\nprivate_key={}\nlisten_port=40123\nreplace_peers=true\npublic_key={}\npreshared_key={}\n\
         endpoint=10.200.1.2:51821\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
         allowed_ip=10.33.33.2/32\nallowed_ip=fd33::2/128\n\n",
        own.private_hex(),
        peer.public_hex(),
        psk.private_hex()
    );
    let r = uapi(&s.iface, &req);
    assert_eq!(r.errno(), Some(0), "{r:?}");
    let g = assert_still_serving(&mut s);
    assert_eq!(g.get("private_key"), Some(own.private_hex()), "{g:?}");
    assert_eq!(g.get("listen_port").as_deref(), Some("40123"), "{g:?}");
    assert_eq!(g.get("public_key"), Some(peer.public_hex()), "{g:?}");
    assert_eq!(g.get("preshared_key"), Some(psk.private_hex()), "{g:?}");
    assert_eq!(
        g.get("endpoint").as_deref(),
        Some("10.200.1.2:51821"),
        "{g:?}"
    );
    assert_eq!(
        g.get("persistent_keepalive_interval").as_deref(),
        Some("25"),
        "{g:?}"
    );
    let mut ips: Vec<String> = g
        .pairs()
        .into_iter()
        .filter(|(k, _)| k == "allowed_ip")
        .map(|(_, v)| v)
        .collect();
    ips.sort();
    assert_eq!(
        ips,
        vec!["10.33.33.2/32".to_string(), "fd33::2/128".to_string()],
        "{g:?}"
    );
    for k in ["last_handshake_time_sec", "rx_bytes", "tx_bytes"] {
        assert!(g.get(k).is_some(), "{k} missing from get: {g:?}");
    }

    // remove=true drops the peer.
    let r = uapi(
        &s.iface,
        &format!("set=1\npublic_key={}\nremove=true\n\n", peer.public_hex()),
    );
    assert_eq!(r.errno(), Some(0), "{r:?}");
    let g = assert_still_serving(&mut s);
    assert!(g.get("public_key").is_none(), "peer not removed: {g:?}");
}

type NormPeer = (String, bool, Option<String>, Vec<String>, Option<u16>);

/// A dump without listen port, counters and handshake times, peers and
/// allowed IPs sorted: what two implementations with the same config share.
fn norm(d: WgDump) -> (bool, Option<String>, Option<u32>, Vec<NormPeer>) {
    let mut peers: Vec<_> = d
        .peers
        .into_iter()
        .map(|mut p| {
            p.allowed_ips.sort();
            (
                p.public_key,
                p.has_preshared_key,
                p.endpoint,
                p.allowed_ips,
                p.keepalive,
            )
        })
        .collect();
    peers.sort();
    (d.has_private_key, d.public_key, d.fwmark, peers)
}

/// The same `wg set` commands applied to netconnect and to wireguard-go must
/// give the same `wg show dump` (apart from listen port).
#[test]
fn wg_config_matches_wireguard_go() {
    let ns = Netns::new("diff");
    let (a, b) = unique_ifnames();
    let _nc = Daemon::start(&ns, Impl::Netconnect, &a);
    let _wg = Daemon::start(&ns, Impl::WireguardGo, &b);
    let own = KeyPair::generate();
    let p1 = KeyPair::generate();
    let p2 = KeyPair::generate();
    let psk_dir = TempDir::new("psk");
    let psk_file = psk_dir.join("psk");
    write_private_file(&psk_file, &wg_genkey());

    let steps: Vec<Vec<String>> = vec![
        vec![
            "private-key".into(),
            own.key_file_str().into(),
            "peer".into(),
            p1.public.clone(),
            "preshared-key".into(),
            psk_file.to_str().unwrap().into(),
            "endpoint".into(),
            "10.200.1.2:51821".into(),
            "persistent-keepalive".into(),
            "25".into(),
            "allowed-ips".into(),
            "10.33.33.2/32,fd33::2/128,192.168.77.0/24".into(),
            "peer".into(),
            p2.public.clone(),
            "endpoint".into(),
            "[fd00:200::2]:51822".into(),
            "allowed-ips".into(),
            "10.44.0.0/16,fd44::/64".into(),
        ],
        // Moving a prefix from one peer to another, changing allowed-ips.
        vec![
            "peer".into(),
            p2.public.clone(),
            "allowed-ips".into(),
            "10.44.0.0/16,192.168.77.0/24".into(),
        ],
        vec![
            "peer".into(),
            p1.public.clone(),
            "persistent-keepalive".into(),
            "off".into(),
        ],
        vec!["fwmark".into(), "0x1234".into()],
        vec!["fwmark".into(), "0".into()],
        vec!["peer".into(), p1.public.clone(), "remove".into()],
    ];
    for (i, step) in steps.iter().enumerate() {
        for iface in [&a, &b] {
            let mut args: Vec<String> = vec!["wg".into(), "set".into(), iface.clone()];
            args.extend(step.iter().cloned());
            ns.ok(&args);
        }
        let na = norm(wg_dump(&ns, &a));
        let nb = norm(wg_dump(&ns, &b));
        assert_eq!(
            na, nb,
            "after step {i} ({step:?}): netconnect (left) differs from wireguard-go (right)"
        );
    }
}

// ---------------------------------------------------------------------------
// 9. Start-up errors
// ---------------------------------------------------------------------------

/// Removes the UAPI socket of `iface` on drop (in case a test failed midway).
struct SocketCleanup(String);

impl Drop for SocketCleanup {
    fn drop(&mut self) {
        let _ = fs::remove_file(uapi_socket_path(&self.0));
    }
}

/// Runs `argv` in `ns`, requiring it to exit (non-zero) within 5 s with exactly
/// one line on stderr. Returns stderr.
fn expect_startup_failure(ns: &Netns, argv: &[&str]) -> String {
    let t0 = Instant::now();
    let out = ns
        .exec_timeout(argv, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("expected a quick failure: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{argv:?} succeeded; stderr {stderr:?}"
    );
    assert!(
        out.status.code().is_some(),
        "{argv:?} died by a signal ({}) instead of exiting with an error; stderr {stderr:?}",
        out.status
    );
    assert!(t0.elapsed() <= Duration::from_secs(5));
    let lines = nonempty_lines(&stderr);
    assert_eq!(
        lines.len(),
        1,
        "want exactly one line on stderr, got {stderr:?}"
    );
    stderr
}

#[test]
fn startup_error_interface_exists() {
    let ns = Netns::new("exist");
    let stem = unique_ifname_stem();
    let iface = format!("{stem}a");
    let _c = SocketCleanup(iface.clone());
    // A veth stands in for "some existing interface" (the dummy module may be
    // missing from the kernel).
    ns.ok(&[
        "ip",
        "link",
        "add",
        &iface,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{stem}p"),
    ]);
    let err = expect_startup_failure(&ns, &[netconnect_bin(), "device", &iface]);
    eprintln!("stderr: {err}");
    assert!(
        !uapi_socket_path(&iface).exists(),
        "UAPI socket left behind"
    );
    let link = ns.link_show(&iface); // the pre-existing interface must be untouched
    assert!(
        link.contains(" veth "),
        "pre-existing veth interface changed: {link}"
    );
}

#[test]
fn startup_error_listen_port_in_use() {
    let ns = Netns::new("inuse");
    let iface = format!("{}a", unique_ifname_stem());
    let _c = SocketCleanup(iface.clone());
    let port = 51830u16;
    let _holder = bind_udp_in(&ns, SocketAddr::from(([0, 0, 0, 0], port)));
    let err = expect_startup_failure(
        &ns,
        &[
            netconnect_bin(),
            "device",
            &iface,
            "--listen-port",
            &port.to_string(),
        ],
    );
    eprintln!("stderr: {err}");
    assert!(
        !uapi_socket_path(&iface).exists(),
        "UAPI socket left behind"
    );
    assert!(!ns.link_exists(&iface), "TUN device {iface} left behind");
}

#[test]
fn startup_error_not_root() {
    let ns = Netns::new("nonroot");
    let iface = format!("{}a", unique_ifname_stem());
    let _c = SocketCleanup(iface.clone());
    // A copy that uid 65534 can surely execute, wherever the build tree is.
    let dir = TempDir::new("bin");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("netconnect");
    fs::copy(netconnect_bin(), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let bin_s = bin.to_str().unwrap();
    let err = expect_startup_failure(
        &ns,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin_s,
            "device",
            &iface,
        ],
    );
    eprintln!("stderr: {err}");
    assert!(
        err.to_lowercase().contains("root"),
        "message does not mention root: {err:?}"
    );
    assert!(
        !uapi_socket_path(&iface).exists(),
        "UAPI socket left behind"
    );
    assert!(!ns.link_exists(&iface), "TUN device {iface} left behind");
}

// ---------------------------------------------------------------------------
// 10. Roaming, keepalive, PSK, MTU, cryptokey routing, runtime reconfiguration
// ---------------------------------------------------------------------------

/// netconnect has no endpoint for its peer: it cannot send first, and learns
/// the endpoint from wireguard-go's handshake.
#[test]
fn netconnect_learns_peer_endpoint() {
    let t = Tunnel::with(
        Impl::Netconnect,
        Impl::WireguardGo,
        TunnelOpts {
            host_no_endpoint: true,
            ..Default::default()
        },
    );
    assert_eq!(t.host_dump().peers[0].endpoint, None);
    assert_eq!(
        ping_count(&t.net.host, VM_TUN4, 2),
        0,
        "sent without an endpoint?"
    );
    t.wait_vm_to_host(HOST_TUN4, UP);
    let p = t.host_dump().peers[0].clone();
    assert_eq!(
        p.endpoint.as_deref(),
        Some(format!("{VM_UNDERLAY4}:{VM_PORT}").as_str()),
        "endpoint not learnt from the peer: {p:?}"
    );
    assert_all_replies(&t.net.host, VM_TUN4, 3, &t);
}

/// `persistent-keepalive 1` on netconnect brings the tunnel up with no traffic.
#[test]
fn persistent_keepalive_from_netconnect() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.net.host.ok(&[
        "wg",
        "set",
        &t.host.iface,
        "peer",
        &t.vm.key.public,
        "persistent-keepalive",
        "1",
    ]);
    assert_eq!(t.host_dump().peers[0].keepalive, Some(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let v = t.vm_dump().peer(&t.host.key.public).clone();
        if v.latest_handshake != 0 && v.rx > 0 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no handshake/keepalive from netconnect in 10 s: {v:?}"
        );
        thread::sleep(Duration::from_millis(250));
    };
    // Keepalives keep coming (one a second) with no inner traffic.
    thread::sleep(Duration::from_secs(4));
    let later = t.vm_dump().peer(&t.host.key.public).clone();
    assert!(
        later.rx > first.rx,
        "no keepalives after the handshake: before {first:?} after {later:?}"
    );
}

fn set_psk(ns: &Netns, iface: &str, peer: &str, psk_b64: &str) {
    let dir = TempDir::new("psk");
    let f = dir.join("psk");
    write_private_file(&f, psk_b64);
    ns.ok(&[
        "wg",
        "set",
        iface,
        "peer",
        peer,
        "preshared-key",
        f.to_str().unwrap(),
    ]);
}

#[test]
fn preshared_key_interop() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    let psk = wg_genkey();
    set_psk(&t.net.host, &t.host.iface, &t.vm.key.public, &psk);
    set_psk(&t.net.vm, &t.vm.iface, &t.host.key.public, &psk);
    assert!(t.host_dump().peers[0].has_preshared_key);
    t.wait_host_to_vm(VM_TUN4, UP);
    assert_all_replies(&t.net.vm, HOST_TUN4, 3, &t);
}

#[test]
fn preshared_key_mismatch_blocks_traffic() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    set_psk(&t.net.host, &t.host.iface, &t.vm.key.public, &wg_genkey());
    set_psk(&t.net.vm, &t.vm.iface, &t.host.key.public, &wg_genkey());
    assert_eq!(
        ping_count(&t.net.host, VM_TUN4, 10),
        0,
        "traffic with mismatched PSKs\n{}",
        t.diagnostics()
    );
    assert_eq!(
        ping_count(&t.net.vm, HOST_TUN4, 10),
        0,
        "traffic with mismatched PSKs\n{}",
        t.diagnostics()
    );
    assert_eq!(t.host_dump().peers[0].latest_handshake, 0);
    assert_eq!(t.host_dump().peers[0].rx, 0);
}

/// Full-MTU packets with DF, and inner packets bigger than the MTU (fragmented
/// by the inner IP stack), both directions, IPv4 and IPv6.
#[test]
fn full_mtu_and_fragmented_packets() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    // 1420 MTU - 20 IPv4 - 8 ICMP = 1392; 1420 - 40 IPv6 - 8 ICMPv6 = 1372.
    for (ns, dst, df_size) in [
        (&t.net.host, VM_TUN4, 1392),
        (&t.net.vm, HOST_TUN4, 1392),
        (&t.net.host, VM_TUN6, 1372),
        (&t.net.vm, HOST_TUN6, 1372),
    ] {
        let got = ping_sized(ns, dst, 3, df_size, true);
        assert_eq!(
            got,
            3,
            "{dst} with {df_size}-byte DF pings: {got}/3\n{}",
            t.diagnostics()
        );
        let got = ping_sized(ns, dst, 3, 4000, false);
        assert_eq!(
            got,
            3,
            "{dst} with 4000-byte pings: {got}/3\n{}",
            t.diagnostics()
        );
    }
}

/// A packet whose inner source is not in the sending peer's allowed IPs must
/// be dropped by netconnect; the same datagram from an allowed source arrives.
#[test]
fn allowed_ips_source_filter_drops_spoofed_packets() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    let spoof = "10.33.33.99";
    t.net.vm.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{spoof}/32"),
        "dev",
        &t.vm.iface,
    ]);
    // Route the spoofed address back into the tunnel so reverse-path
    // filtering cannot be what drops it.
    t.net.host.ok(&[
        "ip",
        "route",
        "add",
        &format!("{spoof}/32"),
        "dev",
        &t.host.iface,
    ]);
    let dst = SocketAddr::new(ip(HOST_TUN4), 7000);
    let sock = bind_udp_in(&t.net.host, dst);

    udp_send_from(&t.net.vm, SocketAddr::new(ip(spoof), 0), dst, b"spoofed", 5);
    udp_send_from(&t.net.vm, SocketAddr::new(ip(VM_TUN4), 0), dst, b"legit", 5);
    let got = udp_collect(&sock, Duration::from_secs(2));
    let legit = got.iter().filter(|(p, _)| p.as_slice() == b"legit").count();
    let spoofed: Vec<_> = got
        .iter()
        .filter(|(p, _)| p.as_slice() == b"spoofed")
        .collect();
    assert!(
        legit > 0,
        "control datagrams from {VM_TUN4} did not arrive: {got:?}"
    );
    assert!(
        spoofed.is_empty(),
        "netconnect delivered datagrams whose source {spoof} is outside the peer's allowed IPs: {spoofed:?}"
    );
}

/// netconnect with two peers behind different underlay links: each inner
/// address goes to the peer whose allowed IPs contain it.
#[test]
fn two_peers_routed_by_allowed_ips() {
    let net = TwoHosts::new();
    let vm2 = Netns::new("vm2");
    net.host.ok(&[
        "ip",
        "link",
        "add",
        "vh1",
        "type",
        "veth",
        "peer",
        "name",
        "vw0",
        "netns",
        vm2.name(),
    ]);
    net.host
        .ok(&["ip", "addr", "add", "10.200.2.1/24", "dev", "vh1"]);
    net.host.ok(&["ip", "link", "set", "vh1", "up"]);
    vm2.ok(&["ip", "addr", "add", "10.200.2.2/24", "dev", "vw0"]);
    vm2.ok(&["ip", "link", "set", "vw0", "up"]);
    wait_ping(&net.host, "10.200.2.2", Duration::from_secs(10));

    let stem = unique_ifname_stem();
    let (hi, v1i, v2i) = (format!("{stem}a"), format!("{stem}b"), format!("{stem}c"));
    let (hk, k1, k2) = (
        KeyPair::generate(),
        KeyPair::generate(),
        KeyPair::generate(),
    );
    let _h = Daemon::start(&net.host, Impl::Netconnect, &hi);
    let _d1 = Daemon::start(&net.vm, Impl::WireguardGo, &v1i);
    let _d2 = Daemon::start(&vm2, Impl::WireguardGo, &v2i);

    net.host.ok(&[
        "wg",
        "set",
        &hi,
        "listen-port",
        "51820",
        "private-key",
        hk.key_file_str(),
        "peer",
        &k1.public,
        "endpoint",
        "10.200.1.2:51821",
        "allowed-ips",
        "10.33.33.2/32",
        "peer",
        &k2.public,
        "endpoint",
        "10.200.2.2:51822",
        "allowed-ips",
        "10.33.33.3/32",
    ]);
    net.host
        .ok(&["ip", "link", "set", &hi, "mtu", "1420", "up"]);
    net.host
        .ok(&["ip", "addr", "add", "10.33.33.1/24", "dev", &hi]);
    wg_set(
        &net.vm,
        &v1i,
        &k1.key_file,
        51821,
        &hk.public,
        Some("10.200.1.1:51820"),
        "10.33.33.0/24",
        None,
    );
    net.vm.ok(&["ip", "link", "set", &v1i, "mtu", "1420", "up"]);
    net.vm
        .ok(&["ip", "addr", "add", "10.33.33.2/24", "dev", &v1i]);
    wg_set(
        &vm2,
        &v2i,
        &k2.key_file,
        51822,
        &hk.public,
        Some("10.200.2.1:51820"),
        "10.33.33.0/24",
        None,
    );
    vm2.ok(&["ip", "link", "set", &v2i, "mtu", "1420", "up"]);
    vm2.ok(&["ip", "addr", "add", "10.33.33.3/24", "dev", &v2i]);

    wait_ping(&net.host, "10.33.33.2", UP);
    wait_ping(&net.host, "10.33.33.3", UP);
    wait_ping(&vm2, "10.33.33.1", UP);
    wait_ping(&net.vm, "10.33.33.1", UP);
    let d = wg_dump(&net.host, &hi);
    for k in [&k1, &k2] {
        let p = d.peer(&k.public);
        assert!(
            p.latest_handshake != 0 && p.rx > 0 && p.tx > 0,
            "peer {k:?}: {p:?}"
        );
    }
    // Nothing for vm2 ever reached vm1 (and vice versa).
    for (ns, iface, k) in [(&net.vm, &v1i, &k1), (&vm2, &v2i, &k2)] {
        let p = wg_dump(ns, iface).peer(&hk.public).clone();
        assert!(p.rx > 0, "{k:?} got nothing: {p:?}");
    }
    // An address no peer owns is not delivered anywhere (and does not break the device).
    net.host
        .ok(&["ip", "route", "add", "10.34.0.0/24", "dev", &hi]);
    assert_eq!(ping_count(&net.host, "10.34.0.1", 2), 0);
    wait_ping(&net.host, "10.33.33.3", UP);
}

/// Changing the listen port at runtime: netconnect moves its socket, and the
/// peer follows to the new source port (roaming).
#[test]
fn listen_port_change_at_runtime() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    t.net
        .host
        .ok(&["wg", "set", &t.host.iface, "listen-port", "51900"]);
    assert_eq!(t.host_dump().listen_port, 51900);
    let ss = t.net.host.ok(&["ss", "-Hlun", "sport", "=", ":51900"]);
    assert!(
        !ss.trim().is_empty(),
        "nothing listens on the new port 51900"
    );
    let ss = t
        .net
        .host
        .ok(&["ss", "-Hlun", "sport", "=", &format!(":{HOST_PORT}")]);
    assert!(
        ss.trim().is_empty(),
        "old port {HOST_PORT} still bound: {ss}"
    );
    t.wait_host_to_vm(VM_TUN4, UP);
    let v = t.vm_dump().peer(&t.host.key.public).clone();
    assert_eq!(
        v.endpoint.as_deref(),
        Some(format!("{HOST_UNDERLAY4}:51900").as_str()),
        "wireguard-go did not see netconnect's new source port: {v:?}"
    );
    assert_all_replies(&t.net.vm, HOST_TUN4, 3, &t);
}

/// Removing the peer at runtime stops traffic; adding it back restores it.
#[test]
fn peer_removed_and_readded_at_runtime() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    t.net.host.ok(&[
        "wg",
        "set",
        &t.host.iface,
        "peer",
        &t.vm.key.public,
        "remove",
    ]);
    assert!(t.host_dump().peers.is_empty());
    assert_eq!(
        ping_count(&t.net.host, VM_TUN4, 3),
        0,
        "traffic to a removed peer"
    );
    assert_eq!(
        ping_count(&t.net.vm, HOST_TUN4, 3),
        0,
        "traffic from a removed peer"
    );
    t.net.host.ok(&[
        "wg",
        "set",
        &t.host.iface,
        "peer",
        &t.vm.key.public,
        "endpoint",
        &format!("{VM_UNDERLAY4}:{VM_PORT}"),
        "allowed-ips",
        &format!("{VM_TUN4}/32,{VM_TUN6}/128"),
    ]);
    t.wait_host_to_vm(VM_TUN4, UP);
    t.wait_vm_to_host(HOST_TUN6, RECONNECT);
}

/// A client that connects and stalls (or sends half a request) must not stop
/// other clients from being served.
#[test]
fn uapi_stalled_client_does_not_block_others() {
    let mut s = single();
    let path = uapi_socket_path(&s.iface);
    let idle = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let mut half = std::os::unix::net::UnixStream::connect(&path).unwrap();
    use std::io::Write as _;
    half.write_all(b"set=1\nlisten_port=").unwrap();
    let t0 = Instant::now();
    let r = uapi_raw(&s.iface, b"get=1\n\n", false, Duration::from_secs(5));
    assert_eq!(
        r.errno(),
        Some(0),
        "get blocked by a stalled client for {:?}: {r:?}",
        t0.elapsed()
    );
    let r = uapi(&s.iface, "set=1\nlisten_port=40001\n\n");
    assert_eq!(r.errno(), Some(0), "set blocked by a stalled client: {r:?}");
    drop(idle);
    drop(half);
    let g = assert_still_serving(&mut s);
    assert_eq!(g.get("listen_port").as_deref(), Some("40001"));
}

/// Many short UAPI connections: all answered, no file descriptor leak.
#[test]
fn uapi_many_requests_no_fd_leak() {
    let mut s = single();
    let pid = s.d.pid().unwrap();
    assert_still_serving(&mut s);
    let before = open_fds(pid);
    for i in 0..300 {
        let r = if i % 3 == 0 {
            uapi(&s.iface, "set=1\nbogus=1\n\n")
        } else if i % 3 == 1 {
            uapi_raw(
                &s.iface,
                b"set=1\nlisten_port=1",
                true,
                Duration::from_secs(5),
            )
        } else {
            uapi(&s.iface, "get=1\n\n")
        };
        if i % 3 == 2 {
            assert_eq!(r.errno(), Some(0), "request {i}: {r:?}");
        }
    }
    thread::sleep(Duration::from_millis(500));
    let after = open_fds(pid);
    assert!(
        after <= before + 5,
        "open fds grew from {before} to {after} over 300 UAPI connections"
    );
    assert_still_serving(&mut s);
}

/// The Docker use case: a whole subnet lives behind the peer (here an address
/// on the vm's loopback), reached through netconnect by allowed IPs + a route.
#[test]
fn routed_subnet_behind_peer() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    let subnet_host = "10.55.0.1";
    t.net.vm.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{subnet_host}/32"),
        "dev",
        "lo",
    ]);
    t.net.host.ok(&[
        "wg",
        "set",
        &t.host.iface,
        "peer",
        &t.vm.key.public,
        "allowed-ips",
        &format!("{VM_TUN4}/32,{VM_TUN6}/128,10.55.0.0/16"),
    ]);
    t.net
        .host
        .ok(&["ip", "route", "add", "10.55.0.0/16", "dev", &t.host.iface]);
    t.wait_host_to_vm(subnet_host, UP);
    transfer(&t, true, subnet_host, 5000, 4 * MIB);
    transfer(&t, false, HOST_TUN4, 5001, 4 * MIB);
}

/// `wg set` errors from the device reach the user the way wireguard-go's do:
/// wg(8) negates the `errno=` of a set reply, so the daemon must answer with
/// a negative errno (as wireguard-go does) for `wg` to print the right reason.
#[test]
fn wg_set_listen_port_in_use_reports_address_in_use() {
    let ns = Netns::new("eaddr");
    let (a, b) = unique_ifnames();
    let _nc = Daemon::start(&ns, Impl::Netconnect, &a);
    let _wg = Daemon::start(&ns, Impl::WireguardGo, &b);
    let port = 40404u16;
    let _holder = bind_udp_in(&ns, SocketAddr::from(([0, 0, 0, 0], port)));
    let before = wg_dump(&ns, &a).listen_port;

    let reference = ns.exec(&["wg", "set", &b, "listen-port", &port.to_string()]);
    let ref_err = String::from_utf8_lossy(&reference.stderr).into_owned();
    assert!(
        !reference.status.success() && ref_err.contains("Address already in use"),
        "wireguard-go: {ref_err:?}"
    );

    let out = ns.exec(&["wg", "set", &a, "listen-port", &port.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "wg set listen-port {port} (in use) succeeded on netconnect"
    );
    assert_eq!(
        wg_dump(&ns, &a).listen_port,
        before,
        "listen port changed although the bind failed"
    );
    let raw = uapi(&a, &format!("set=1\nlisten_port={port}\n\n"));
    assert!(
        err.contains("Address already in use"),
        "`wg set {a} listen-port {port}` printed {err:?}; wireguard-go gives {ref_err:?}. \
         netconnect's raw reply: {:?} (wireguard-go answers errno=-98)",
        raw.text
    );
}

/// Starting a second device with a name whose socket is live fails, in the
/// same and in another namespace, and leaves the first one serving.
#[test]
fn second_instance_with_same_name_fails_and_first_keeps_serving() {
    let ns = Netns::new("dup1");
    let other = Netns::new("dup2");
    let iface = format!("{}a", unique_ifname_stem());
    let mut first = Daemon::start(&ns, Impl::Netconnect, &iface);
    for (label, n) in [("same namespace", &ns), ("another namespace", &other)] {
        let err = expect_startup_failure(n, &[netconnect_bin(), "device", &iface]);
        eprintln!("{label}: {err}");
        assert!(first.try_status().is_none(), "first device died ({label})");
        assert!(
            uapi_socket_path(&iface).exists(),
            "second instance removed the first's socket ({label})"
        );
        uapi_get(&iface);
    }
    assert!(
        !other.link_exists(&iface),
        "second instance left a TUN device in the other namespace"
    );
    assert!(ns.link_exists(&iface));
}

/// A socket file left by a SIGKILLed daemon does not stop a new one.
#[test]
fn stale_socket_of_killed_daemon_is_replaced() {
    let ns = Netns::new("stale");
    let iface = format!("{}a", unique_ifname_stem());
    let mut d = Daemon::start(&ns, Impl::Netconnect, &iface);
    let (st, _) = d.stop_with(SIGKILL, Duration::from_secs(3));
    assert!(st.is_some());
    assert!(
        uapi_socket_path(&iface).exists(),
        "expected a stale socket after SIGKILL"
    );
    assert!(!ns.link_exists(&iface), "TUN device survived its process");
    let mut d2 = Daemon::start_keeping_stale_socket(&ns, Impl::Netconnect, &iface);
    uapi_get(&iface);
    let st = d2.terminate();
    assert!(st.success(), "{st}");
    assert!(!uapi_socket_path(&iface).exists());
}

/// SIGTERM while a UAPI client holds a half-sent request: still a clean exit.
#[test]
fn sigterm_with_stalled_uapi_client() {
    let ns = Netns::new("sigc");
    let iface = format!("{}a", unique_ifname_stem());
    let mut d = Daemon::start(&ns, Impl::Netconnect, &iface);
    let mut half = std::os::unix::net::UnixStream::connect(uapi_socket_path(&iface)).unwrap();
    use std::io::Write as _;
    half.write_all(b"set=1\nlisten_port=").unwrap();
    let (st, took) = d.stop_with(SIGTERM, DAEMON_STOP_TIMEOUT);
    let st =
        st.unwrap_or_else(|| panic!("no exit within 3 s of SIGTERM with a stalled UAPI client"));
    assert!(st.success(), "{st}\n{}", d.log_tail(4096));
    assert!(took <= DAEMON_STOP_TIMEOUT);
    assert!(!ns.link_exists(&iface));
    assert!(!uapi_socket_path(&iface).exists());
    drop(half);
}

/// SIGTERM in the middle of a bulk transfer: exits 0 within 3 s, cleans up.
#[test]
fn sigterm_during_bulk_transfer() {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    let mut t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    let dst = SocketAddr::new(ip(VM_TUN4), 5011);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // Receiver in the vm: counts bytes until EOF or 5 s of silence.
    let receiver = t.net.vm.spawn_in(move || -> u64 {
        let l = TcpListener::bind(dst).unwrap();
        l.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Err(_) => return 0,
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut n = 0u64;
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // Sender in the host: writes for up to 20 s or until the tunnel dies.
    let sender = t.net.host.spawn_in(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&dst, Duration::from_secs(5)) else {
            return;
        };
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let buf = vec![0x5au8; 65536];
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) && s.write_all(&buf).is_ok() {}
    });
    thread::sleep(Duration::from_secs(2)); // the transfer is running

    let iface = t.host.iface.clone();
    let d = t.host.daemon();
    let (st, took) = d.stop_with(SIGTERM, DAEMON_STOP_TIMEOUT);
    let st = st.unwrap_or_else(|| {
        panic!(
            "no exit within 3 s of SIGTERM under load\n{}",
            d.log_tail(4096)
        )
    });
    assert!(
        st.success(),
        "exit status {st} under load\n{}",
        d.log_tail(4096)
    );
    assert!(took <= DAEMON_STOP_TIMEOUT);
    assert!(!t.net.host.link_exists(&iface), "TUN device left behind");
    assert!(
        !uapi_socket_path(&iface).exists(),
        "UAPI socket left behind"
    );
    let _ = sender.join();
    let received = receiver.join().unwrap_or(0);
    assert!(
        received > 0,
        "the load never flowed, so the test proved nothing"
    );
}

/// The peer changes its source port (roaming): netconnect follows it to the
/// new endpoint after the first authenticated packet from there.
#[test]
fn netconnect_follows_peer_roaming() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    t.net
        .vm
        .ok(&["wg", "set", &t.vm.iface, "listen-port", "51899"]);
    t.wait_vm_to_host(HOST_TUN4, UP);
    let p = t.host_dump().peers[0].clone();
    assert_eq!(
        p.endpoint.as_deref(),
        Some(format!("{VM_UNDERLAY4}:51899").as_str()),
        "netconnect did not follow the peer to its new port: {p:?}"
    );
    assert_all_replies(&t.net.host, VM_TUN4, 3, &t);
}

/// The TUN MTU raised with `ip link` after start (as wg-quick or a user may):
/// full-size packets of the new MTU pass, both directions.
#[test]
fn tun_mtu_raised_at_runtime() {
    let t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    for mtu in [1500u32, 4000] {
        for (ns, i) in [(&t.net.host, &t.host.iface), (&t.net.vm, &t.vm.iface)] {
            ns.ok(&["ip", "link", "set", i, "mtu", &mtu.to_string()]);
        }
        let size = mtu - 28;
        for (ns, dst) in [(&t.net.host, VM_TUN4), (&t.net.vm, HOST_TUN4)] {
            let got = ping_sized(ns, dst, 3, size, true);
            assert_eq!(
                got,
                3,
                "TUN MTU {mtu}: {size}-byte DF pings to {dst}: {got}/3\n{}",
                t.diagnostics()
            );
        }
    }
    transfer(&t, true, VM_TUN4, 5000, 4 * MIB);
}

/// A large configuration (50 peers × 40 allowed IPs, one ~100 KB UAPI
/// request) is stored and reported exactly like wireguard-go does.
#[test]
fn uapi_large_config_matches_wireguard_go() {
    let ns = Netns::new("large");
    let (a, b) = unique_ifnames();
    let _nc = Daemon::start(&ns, Impl::Netconnect, &a);
    let _wg = Daemon::start(&ns, Impl::WireguardGo, &b);
    let mut req = String::from("set=1\nreplace_peers=true\n");
    for p in 0..50u32 {
        let k = KeyPair::generate();
        req.push_str(&format!(
            "public_key={}\nendpoint=10.200.{p}.2:{}\n",
            k.public_hex(),
            40000 + p
        ));
        for j in 0..40u32 {
            req.push_str(&format!(
                "allowed_ip=10.{}.{j}.0/24\nallowed_ip=fd{:02x}:{j:x}::/64\n",
                p + 1,
                p
            ));
        }
    }
    req.push('\n');
    for i in [&a, &b] {
        let r = uapi_raw(i, req.as_bytes(), false, Duration::from_secs(10));
        assert_eq!(r.errno(), Some(0), "{i}: {r:?}");
    }
    let na = norm(wg_dump(&ns, &a));
    assert_eq!(na.3.len(), 50);
    assert_eq!(na.3.iter().map(|p| p.3.len()).sum::<usize>(), 4000);
    assert_eq!(
        na,
        norm(wg_dump(&ns, &b)),
        "netconnect (left) differs from wireguard-go (right)"
    );
}

/// Keeps traffic flowing past REKEY_AFTER_TIME (120 s); returns the first
/// handshake time and the dump of `side` afterwards, and the ping failures.
fn run_past_rekey(t: &Tunnel, from_host: bool) -> (u64, u64, u32) {
    let (ns, dst) = if from_host {
        (&t.net.host, VM_TUN4)
    } else {
        (&t.net.vm, HOST_TUN4)
    };
    if from_host {
        t.wait_host_to_vm(dst, UP);
    } else {
        t.wait_vm_to_host(dst, UP);
    }
    let h0 = t.host_dump().peers[0].latest_handshake;
    assert_ne!(h0, 0);
    let start = Instant::now();
    let mut failures = 0;
    while start.elapsed() < Duration::from_secs(140) {
        let t1 = Instant::now();
        if !ping_once(ns, dst) {
            failures += 1;
            eprintln!(
                "ping {dst} failed at {:?} since the first handshake",
                start.elapsed()
            );
        }
        thread::sleep(Duration::from_secs(1).saturating_sub(t1.elapsed()));
    }
    let h1 = t.host_dump().peers[0].latest_handshake;
    (h0, h1, failures)
}

/// Sessions are renewed after REKEY_AFTER_TIME (120 s), long before
/// REJECT_AFTER_TIME (180 s) would kill them, without loss: once with
/// netconnect as initiator (it must rekey) and once with wireguard-go as
/// initiator (netconnect must take the new session). Both tunnels run at the
/// same time, so the test takes ~2.5 minutes of one test thread.
#[test]
fn long_lived_tunnel_rekeys() {
    let nc_init = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    let wg_init = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| run_past_rekey(&nc_init, true));
        let b = s.spawn(|| run_past_rekey(&wg_init, false));
        (a.join(), b.join())
    });
    let a = a.unwrap_or_else(|p| std::panic::resume_unwind(p));
    let b = b.unwrap_or_else(|p| std::panic::resume_unwind(p));
    for (label, t, (h0, h1, failures)) in [
        ("netconnect initiator", &nc_init, a),
        ("wireguard-go initiator", &wg_init, b),
    ] {
        assert!(
            h1 >= h0 + 115 && h1 <= h0 + 140,
            "{label}: no renewed session around REKEY_AFTER_TIME: first handshake {h0}, \
             latest {h1} (+{}s)\n{}",
            h1.saturating_sub(h0),
            t.diagnostics()
        );
        assert!(
            failures <= 1,
            "{label}: {failures} pings lost while the session was renewed"
        );
    }
}

/// A packet the TUN refuses is dropped, never the end of the device: with
/// the host's interface taken down, the kernel refuses every decrypted
/// packet (EIO); once it is up again, traffic flows through the same
/// device, which said so once in its log.
#[test]
fn a_refused_tun_write_drops_the_packet_not_the_device() {
    let mut t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    t.net.host.ok(&["ip", "link", "set", &t.host.iface, "down"]);
    // Sent by the VM side through its live session, refused at our TUN.
    let got = ping_count(&t.net.vm, HOST_TUN4, 3);
    assert_eq!(got, 0, "pings answered through a downed interface?");
    t.net.host.ok(&["ip", "link", "set", &t.host.iface, "up"]);
    let d = t.host.daemon.as_mut().unwrap();
    assert!(
        d.try_status().is_none(),
        "the device exited on a refused TUN write:\n{}",
        d.log_tail(20)
    );
    t.wait_host_to_vm(VM_TUN4, UP);
    assert_all_replies(&t.net.vm, HOST_TUN4, 3, &t);
    let log = t.host.daemon.as_ref().unwrap().log();
    assert_eq!(
        log.matches("the TUN refused a packet").count(),
        1,
        "one warning, then counting:\n{log}"
    );
}

/// A cookie reply is authenticated (its cookie is sealed with a key from
/// the peer's public key and our handshake's mac1) but it is not transport
/// data or a completed handshake, so WireGuard does not roam on it: a host
/// that saw one handshake initiation on the path could otherwise send a
/// cookie reply from its own address and take the peer's traffic.
///
/// The test plays the peer's part on a UDP socket: it takes netconnect's
/// handshake initiation, seals a cookie reply for it exactly as a peer
/// under load would, and sends that from another port. netconnect's next
/// initiation must carry a mac2 made with that cookie (so the reply was
/// accepted, not dropped as garbage) and still go to the first port.
#[test]
fn a_cookie_reply_from_elsewhere_does_not_move_the_peer() {
    use blake2::digest::consts::U16;
    use blake2::digest::{KeyInit as _, Mac as _};
    use blake2::{Blake2s256, Blake2sMac, Digest as _};
    use chacha20poly1305::aead::{Aead as _, Payload};
    use chacha20poly1305::XChaCha20Poly1305;

    let s = single();
    let own = KeyPair::generate();
    let vm = KeyPair::generate();
    let peer_at: SocketAddr = "127.0.0.1:41001".parse().unwrap();
    let spoof_at: SocketAddr = "127.0.0.1:41002".parse().unwrap();
    let peer_sock = bind_udp_in(&s._ns, peer_at);
    let spoof_sock = bind_udp_in(&s._ns, spoof_at);
    peer_sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = uapi(
        &s.iface,
        &format!(
            "set=1\nprivate_key={}\nlisten_port=41000\npublic_key={}\nendpoint={peer_at}\n\
             persistent_keepalive_interval=1\nallowed_ip=10.77.0.2/32\n\n",
            own.private_hex(),
            vm.public_hex()
        ),
    );
    assert_eq!(r.errno(), Some(0), "{r:?}");

    let initiation = |what: &str| -> Vec<u8> {
        let mut buf = [0u8; 2048];
        loop {
            let (n, _) = peer_sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("no {what} handshake initiation at {peer_at}: {e}"));
            if n == 148 && buf[0] == 1 {
                return buf[..n].to_vec();
            }
        }
    };
    let first = initiation("first");

    // Cookie reply (WireGuard paper §5.4.7): type 3, the initiator's index,
    // a nonce, and the cookie sealed with XChaCha20-Poly1305 under
    // HASH("cookie--" || the responder's public key), mac1 as associated data.
    let vm_public = hex::decode(vm.public_hex()).unwrap();
    let key = Blake2s256::new()
        .chain_update(b"cookie--")
        .chain_update(&vm_public)
        .finalize();
    let cookie = [0x5au8; 16];
    let nonce = [7u8; 24];
    let sealed = XChaCha20Poly1305::new_from_slice(&key)
        .unwrap()
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: &cookie,
                aad: &first[116..132],
            },
        )
        .unwrap();
    let mut reply = vec![3u8, 0, 0, 0];
    reply.extend_from_slice(&first[4..8]);
    reply.extend_from_slice(&nonce);
    reply.extend_from_slice(&sealed);
    assert_eq!(reply.len(), 64);
    spoof_sock
        .send_to(&reply, "127.0.0.1:41000")
        .expect("send the cookie reply");

    // Retransmission after Rekey-Timeout (5 s) comes with mac2 = MAC(cookie, ...).
    let next = initiation("retransmitted");
    let mut mac = <Blake2sMac<U16> as blake2::digest::KeyInit>::new_from_slice(&cookie).unwrap();
    mac.update(&next[..132]);
    assert_eq!(
        &next[132..148],
        mac.finalize().into_bytes().as_slice(),
        "the retransmitted initiation does not carry a mac2 from our cookie: the cookie \
         reply was not accepted, so this test proves nothing about roaming"
    );
    let g = uapi_get(&s.iface);
    assert_eq!(
        g.get("endpoint").as_deref(),
        Some(peer_at.to_string().as_str()),
        "a cookie reply moved the peer's endpoint: {g:?}"
    );
}

// ---------------------------------------------------------------------------
// 13. An idle device sleeps (issue 13), and its timers still fire
// ---------------------------------------------------------------------------

/// Context switches (voluntary + involuntary) of the threads of `pid` named
/// `name` (all threads: `None`), from /proc/PID/task/TID/{comm,status}: how
/// often they woke. Panics when no such thread exists, so a renamed thread
/// fails the test.
fn wakeups(pid: u32, name: Option<&str>) -> u64 {
    let mut found = false;
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task") {
        let dir = task.expect("a task entry").path();
        let (Ok(comm), Ok(status)) = (
            fs::read_to_string(dir.join("comm")),
            fs::read_to_string(dir.join("status")),
        ) else {
            continue; // the thread ended meanwhile
        };
        if name.is_some_and(|n| comm.trim_end() != n) {
            continue;
        }
        found = true;
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    assert!(found, "no thread named {name:?} in process {pid}");
    total
}

/// The timer thread sleeps while boringtun has nothing due: after a
/// handshake and some pings, once the passive keepalive (10 s) and the
/// handshake-after-send check (15 s) are behind us, it wakes at most twice
/// in 8 s, where a 1 Hz tick wakes 8 times. Then its timers still fire:
/// data that gets no reply is answered by a passive keepalive, and a peer
/// that stops answering gets a handshake initiation, retried every
/// REKEY_TIMEOUT (5 s).
#[test]
fn idle_timer_thread_sleeps_and_timers_still_fire() {
    let mut t = Tunnel::new(Impl::Netconnect, Impl::WireguardGo);
    t.wait_host_to_vm(VM_TUN4, UP);
    assert_all_replies(&t.net.host, VM_TUN4, 3, &t);
    let pid = t.host.daemon().pid().expect("netconnect pid");

    // 10 s keepalive, 15 s handshake check (wireguard-go's may start one),
    // then 17 s of one-second ticks after the last packet either sent.
    thread::sleep(Duration::from_secs(40));
    let window = Duration::from_secs(8);
    let (timer0, all0) = (wakeups(pid, Some("wg-timers")), wakeups(pid, None));
    thread::sleep(window);
    let (timer1, all1) = (wakeups(pid, Some("wg-timers")), wakeups(pid, None));
    eprintln!(
        "idle {window:?}: wg-timers woke {} times, the whole process {}",
        timer1 - timer0,
        all1 - all0
    );
    assert!(
        timer1 - timer0 <= 2,
        "the idle timer thread woke {} times in {window:?}\n{}",
        timer1 - timer0,
        t.diagnostics()
    );

    // Data in, nothing out: boringtun owes the peer a keepalive (its
    // KEEPALIVE_TIMEOUT runs from our last send, long ago).
    let sink = bind_udp_in(&t.net.host, SocketAddr::new(ip(HOST_TUN4), 7777));
    let rx0 = t.vm_dump().peer(&t.host.key.public).rx;
    udp_send_from(
        &t.net.vm,
        SocketAddr::new(ip(VM_TUN4), 0),
        SocketAddr::new(ip(HOST_TUN4), 7777),
        b"no reply",
        1,
    );
    assert_eq!(
        udp_collect(&sink, Duration::from_secs(3)).len(),
        1,
        "the datagram did not cross the tunnel\n{}",
        t.diagnostics()
    );
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let rx = t.vm_dump().peer(&t.host.key.public).rx;
        if rx > rx0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no keepalive from netconnect after data it did not answer\n{}",
            t.diagnostics()
        );
        thread::sleep(Duration::from_millis(250));
    }

    // The peer goes away; a socket takes its address and counts what
    // arrives. One ping goes out on the old session, unanswered: after
    // KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s) netconnect initiates a
    // handshake, and retries it every 5 s.
    t.stop_vm();
    let catcher = bind_udp_in(&t.net.vm, SocketAddr::new(ip(VM_UNDERLAY4), VM_PORT));
    assert_eq!(ping_count(&t.net.host, VM_TUN4, 1), 0);
    let got = udp_collect(&catcher, Duration::from_secs(30));
    let initiations = got
        .iter()
        .filter(|(d, _)| d.len() == 148 && d[0] == 1)
        .count();
    assert!(
        initiations >= 3,
        "{initiations} handshake initiations in 30 s without answers (want the first \
         and two retries); datagram sizes: {:?}",
        got.iter().map(|(d, _)| d.len()).collect::<Vec<_>>()
    );
}

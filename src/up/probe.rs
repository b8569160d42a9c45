//! Is the VM side still there? Asked only when it matters: when traffic
//! goes into the tunnel and nothing comes back. An idle tunnel carries
//! nothing at all (no keepalive from either side), so silence proves
//! nothing and costs nothing; unanswered traffic is the one sign users feel.
//!
//! WireGuard's own rule suspects a peer after data sent and nothing received
//! for Keepalive-Timeout + Rekey-Timeout (15 s). `up` asks sooner: when
//! [`ANSWER_WITHIN`] passes after traffic was offered with no packet from
//! the VM, it sends an ICMP echo to the VM's tunnel address through the
//! tunnel, once a second. Any packet back proves the whole path (our
//! WireGuard, the VM's peer, its kernel). [`PROBES`] unanswered probes mean
//! the peer is gone and the helper is re-run, about four seconds after the
//! first unanswered packet.
//!
//! The replies reach our TUN and the host kernel drops them: no socket
//! waits for them, and nothing but the byte counter needs them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// How long traffic may go unanswered before the first probe.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// Probes without an answer before the VM side counts as gone.
pub const PROBES: u32 = 3;
/// A new helper gets this long for its first handshake before probes can
/// condemn it.
pub const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A packet came back: stop watching.
    Answered,
    /// Still unanswered: send a probe now, look again at [`Liveness::next_check`].
    Probe,
    /// Unanswered through [`PROBES`] probes: re-run the helper.
    Gone,
}

/// Follows the VM peer's receive counter while traffic waits for an answer;
/// idle otherwise.
#[derive(Debug, Clone)]
pub struct Liveness {
    started: Instant,
    watch: Option<Watch>,
}

#[derive(Debug, Clone)]
struct Watch {
    /// The VM peer's rx counter when the traffic was seen.
    rx: u64,
    /// When it was seen.
    since: Instant,
    next: Instant,
    probes: u32,
}

impl Liveness {
    /// A new VM peer, started `now`.
    pub fn new(now: Instant) -> Liveness {
        Liveness {
            started: now,
            watch: None,
        }
    }

    /// Traffic went into the tunnel at `now`, when the VM peer's counter
    /// stood at `rx`. Already watching: the earlier traffic still counts.
    pub fn offered(&mut self, rx: u64, now: Instant) {
        if self.watch.is_none() {
            self.watch = Some(Watch {
                rx,
                since: now,
                next: now + ANSWER_WITHIN,
                probes: 0,
            });
        }
    }

    pub fn watching(&self) -> bool {
        self.watch.is_some()
    }

    /// When to call [`Liveness::check`]; `None` while idle.
    pub fn next_check(&self) -> Option<Instant> {
        self.watch.as_ref().map(|w| w.next)
    }

    /// How long the traffic being watched has gone unanswered.
    pub fn unanswered(&self, now: Instant) -> Duration {
        self.watch
            .as_ref()
            .map_or(Duration::ZERO, |w| now.saturating_duration_since(w.since))
    }

    pub fn check(&mut self, rx: u64, now: Instant) -> Verdict {
        let Some(w) = &mut self.watch else {
            return Verdict::Answered;
        };
        if rx != w.rx {
            self.watch = None;
            return Verdict::Answered;
        }
        if w.probes >= PROBES && now.saturating_duration_since(self.started) >= GRACE {
            self.watch = None;
            return Verdict::Gone;
        }
        w.probes = (w.probes + 1).min(PROBES);
        w.next = now + ANSWER_WITHIN;
        Verdict::Probe
    }
}

/// An ICMP echo request from `src` to `dst`, as an IPv4 packet.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> [u8; 36] {
    const PAYLOAD: &[u8; 8] = b"netconn\0";
    let mut p = [0u8; 36];
    // IPv4 header: version 4, IHL 5, total length 36, DF, TTL 64, ICMP.
    p[0] = 0x45;
    p[2..4].copy_from_slice(&36u16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    // ICMP echo request: type 8, code 0.
    p[20] = 8;
    p[24..26].copy_from_slice(&id.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p[28..36].copy_from_slice(PAYLOAD);
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// An ICMPv6 echo request from `src` to `dst`, as an IPv6 packet.
pub fn icmp6_echo(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16) -> [u8; 56] {
    let mut p = [0u8; 56];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&16u16.to_be_bytes());
    p[6] = 58; // ICMPv6
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40] = 128; // echo request
    p[44..46].copy_from_slice(&id.to_be_bytes());
    p[46..48].copy_from_slice(&seq.to_be_bytes());
    p[48..56].copy_from_slice(b"netconn\0");
    // The checksum covers a pseudo-header: addresses, length, next header.
    let mut pseudo = [0u8; 40 + 16];
    pseudo[..32].copy_from_slice(&p[8..40]);
    pseudo[32..36].copy_from_slice(&16u32.to_be_bytes());
    pseudo[39] = 58;
    pseudo[40..].copy_from_slice(&p[40..]);
    let c = checksum(&pseudo);
    p[42..44].copy_from_slice(&c.to_be_bytes());
    p
}

/// An echo request between two tunnel addresses of the same family.
pub fn echo(src: IpAddr, dst: IpAddr, id: u16, seq: u16) -> Option<Vec<u8>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(icmp_echo(s, d, id, seq).to_vec()),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(icmp6_echo(s, d, id, seq).to_vec()),
        _ => None,
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_is_a_valid_ipv4_icmp_packet() {
        let p = icmp_echo(
            Ipv4Addr::new(10, 33, 33, 1),
            Ipv4Addr::new(10, 33, 33, 2),
            0x1234,
            7,
        );
        // Written out by hand: header checksum 0xe494 and ICMP checksum
        // 0x258d computed independently (`python3 -c` with the RFC 1071 sum).
        let want: [u8; 36] = [
            0x45, 0x00, 0x00, 0x24, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0xe4, 0x94, 10, 33, 33, 1,
            10, 33, 33, 2, 0x08, 0x00, 0x25, 0x8d, 0x12, 0x34, 0x00, 0x07, b'n', b'e', b't', b'c',
            b'o', b'n', b'n', 0,
        ];
        assert_eq!(p, want);
        // A packet with a correct checksum sums to zero.
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(checksum(&p[20..]), 0);
    }

    #[test]
    fn echo6_request_checksums_over_the_pseudo_header() {
        let src: Ipv6Addr = "fd33:33:33::1".parse().unwrap();
        let dst: Ipv6Addr = "fd33:33:33::2".parse().unwrap();
        let p = icmp6_echo(src, dst, 0x1234, 7);
        assert_eq!(&p[..8], &[0x60, 0, 0, 0, 0, 16, 58, 64]);
        assert_eq!(&p[8..24], &src.octets());
        assert_eq!(&p[24..40], &dst.octets());
        // Computed independently with python3 (RFC 4443 pseudo-header sum).
        assert_eq!(&p[40..48], &[128, 0, 0xb2, 0x0b, 0x12, 0x34, 0, 7]);
        assert_eq!(&p[48..], b"netconn\0");
        assert_eq!(echo(src.into(), Ipv4Addr::LOCALHOST.into(), 1, 1), None);
    }

    #[test]
    fn an_idle_tunnel_is_never_probed() {
        let t0 = Instant::now();
        let l = Liveness::new(t0);
        assert!(!l.watching());
        assert_eq!(l.next_check(), None);
    }

    #[test]
    fn unanswered_traffic_is_probed_then_given_up() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut l = Liveness::new(t0);
        // Traffic at 20 s; the VM answers within the second: back to idle.
        l.offered(100, s(20));
        assert_eq!(l.next_check(), Some(s(21)));
        assert_eq!(l.check(164, s(21)), Verdict::Answered);
        assert!(!l.watching());
        // Traffic at 30 s, and more at 30.5 s: the first counts.
        l.offered(164, s(30));
        l.offered(164, s(30) + Duration::from_millis(500));
        assert_eq!(l.next_check(), Some(s(31)));
        assert_eq!(l.check(164, s(31)), Verdict::Probe);
        assert_eq!(l.next_check(), Some(s(32)));
        assert_eq!(l.check(164, s(32)), Verdict::Probe);
        assert_eq!(l.check(164, s(33)), Verdict::Probe);
        // Three unanswered probes: gone, 4 s after the first unanswered packet.
        assert_eq!(l.unanswered(s(34)), Duration::from_secs(4));
        assert_eq!(l.check(164, s(34)), Verdict::Gone);
        assert!(!l.watching());
    }

    #[test]
    fn an_answer_to_a_probe_ends_the_watch() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut l = Liveness::new(t0);
        l.offered(0, s(12));
        assert_eq!(l.check(0, s(13)), Verdict::Probe);
        assert_eq!(l.check(92, s(14)), Verdict::Answered);
        assert_eq!(l.next_check(), None);
    }

    #[test]
    fn a_new_helper_gets_its_grace_period() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut l = Liveness::new(t0);
        l.offered(0, t0);
        for n in 1..10 {
            assert_eq!(l.check(0, s(n)), Verdict::Probe, "at {n} s");
        }
        assert_eq!(l.check(0, s(10)), Verdict::Gone);
    }
}

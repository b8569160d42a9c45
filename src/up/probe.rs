//! Is the VM side still there? An idle tunnel carries nothing but the VM's
//! keepalive every 25 s, so waiting for silence takes close to a minute. We
//! ask instead: once the VM has been quiet for [`PROBE_AFTER`], `up` sends
//! an ICMP echo to the VM's tunnel address through the tunnel, once a
//! second. Any packet back proves the whole path (our WireGuard, the VM's
//! peer, its kernel). [`PROBES`] unanswered probes mean the peer is gone
//! and the helper is re-run, a few seconds after the VM went away.
//!
//! The replies reach our TUN and the host kernel drops them: no socket
//! waits for them, and nothing but the byte counter needs them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Quiet time before the first probe.
pub const PROBE_AFTER: Duration = Duration::from_secs(2);
/// Probes without an answer before the VM side counts as gone.
pub const PROBES: u32 = 3;
/// A new helper gets this long for its first handshake before probes can
/// condemn it.
pub const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Heard from recently, or still in its grace period without a probe due.
    Alive,
    /// Quiet: send a probe now.
    Probe,
    /// Quiet through [`PROBES`] probes: re-run the helper.
    Gone,
}

/// Follows the VM peer's receive counter; one [`Liveness::observe`] a second.
#[derive(Debug, Clone)]
pub struct Liveness {
    rx: u64,
    heard: Instant,
    started: Instant,
    unanswered: u32,
}

impl Liveness {
    /// A new VM peer, started `now`.
    pub fn new(now: Instant) -> Liveness {
        Liveness {
            rx: 0,
            heard: now,
            started: now,
            unanswered: 0,
        }
    }

    /// How long the VM has been silent.
    pub fn quiet(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.heard)
    }

    pub fn observe(&mut self, rx: u64, now: Instant) -> Verdict {
        if rx != self.rx {
            self.rx = rx;
            self.heard = now;
            self.unanswered = 0;
            return Verdict::Alive;
        }
        if self.quiet(now) < PROBE_AFTER {
            return Verdict::Alive;
        }
        if self.unanswered >= PROBES && now.saturating_duration_since(self.started) >= GRACE {
            return Verdict::Gone;
        }
        self.unanswered += 1;
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
    fn quiet_peer_is_probed_then_given_up() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut l = Liveness::new(t0);
        assert_eq!(l.observe(100, s(1)), Verdict::Alive);
        assert_eq!(l.observe(100, s(2)), Verdict::Alive);
        // 2 s quiet: probe, once a second.
        assert_eq!(l.observe(100, s(3)), Verdict::Probe);
        assert_eq!(l.observe(100, s(4)), Verdict::Probe);
        // An answer resets it.
        assert_eq!(l.observe(164, s(5)), Verdict::Alive);
        assert_eq!(l.observe(164, s(6)), Verdict::Alive);
        assert_eq!(l.observe(164, s(7)), Verdict::Probe);
        assert_eq!(l.observe(164, s(8)), Verdict::Probe);
        assert_eq!(l.observe(164, s(9)), Verdict::Probe);
        // Three unanswered probes, past the grace period: gone, 5 s after
        // the last packet.
        assert_eq!(l.observe(164, s(10)), Verdict::Gone);
        assert_eq!(l.quiet(s(10)), Duration::from_secs(5));
    }

    #[test]
    fn a_new_helper_gets_its_grace_period() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut l = Liveness::new(t0);
        for n in 1..10 {
            assert_ne!(l.observe(0, s(n)), Verdict::Gone, "at {n} s");
        }
        assert_eq!(l.observe(0, s(10)), Verdict::Gone);
    }
}

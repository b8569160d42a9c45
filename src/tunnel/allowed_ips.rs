//! Cryptokey routing table: which peer owns which inner address.
//!
//! WireGuard uses one table both ways: a packet from the TUN goes to the peer
//! whose allowed IPs cover its destination (longest prefix wins), and a packet
//! decrypted from a peer is accepted only if its source maps back to that same
//! peer. One prefix belongs to one peer at a time: inserting it for another
//! peer moves it, as `wg set` does.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: PrefixMap<Ipv4Net, T>,
    v6: PrefixMap<Ipv6Net, T>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            v4: PrefixMap::new(),
            v6: PrefixMap::new(),
        }
    }
}

impl<T> AllowedIps<T> {
    /// Insert `net` (host bits are cleared first); returns the previous owner.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.insert(n, value),
            IpNet::V6(n) => self.v6.insert(n, value),
        }
    }

    /// The longest-prefix match for `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(a) => self.v4.get_lpm(&Ipv4Net::from(a)).map(|(_, v)| v),
            IpAddr::V6(a) => self.v6.get_lpm(&Ipv6Net::from(a)).map(|(_, v)| v),
        }
    }

    /// Keep only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&IpNet, &T) -> bool) {
        self.v4.retain(|n, v| keep(&IpNet::V4(*n), v));
        self.v6.retain(|n, v| keep(&IpNet::V6(*n), v));
    }

    /// Every prefix whose value satisfies `pred`, IPv4 first, each in order.
    pub fn prefixes_where(&self, mut pred: impl FnMut(&T) -> bool) -> Vec<IpNet> {
        let v4 = self
            .v4
            .iter()
            .filter(|(_, v)| pred(v))
            .map(|(n, _)| IpNet::V4(*n));
        let v4: Vec<_> = v4.collect();
        let v6 = self
            .v6
            .iter()
            .filter(|(_, v)| pred(v))
            .map(|(n, _)| IpNet::V6(*n));
        v4.into_iter().chain(v6).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::default();
        t.insert(net("0.0.0.0/0"), "default");
        t.insert(net("172.16.0.0/12"), "docker");
        t.insert(net("172.18.0.0/16"), "kind");
        assert_eq!(t.lookup(ip("172.18.250.1")), Some(&"kind"));
        assert_eq!(t.lookup(ip("172.17.0.2")), Some(&"docker"));
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(&"default"));
        assert_eq!(t.lookup(ip("::1")), None);
    }

    #[test]
    fn host_bits_are_cleared_and_v6_works() {
        let mut t = AllowedIps::default();
        t.insert(net("10.33.33.2/24"), 1);
        t.insert(net("fd33::2/64"), 2);
        assert_eq!(t.lookup(ip("10.33.33.77")), Some(&1));
        assert_eq!(t.lookup(ip("10.33.34.1")), None);
        assert_eq!(t.lookup(ip("fd33::9")), Some(&2));
        assert_eq!(
            t.prefixes_where(|_| true),
            vec![net("10.33.33.0/24"), net("fd33::/64")]
        );
    }

    #[test]
    fn inserting_moves_a_prefix_and_retain_removes() {
        let mut t = AllowedIps::default();
        assert_eq!(t.insert(net("10.0.0.0/8"), 'a'), None);
        assert_eq!(t.insert(net("10.0.0.0/8"), 'b'), Some('a'));
        t.insert(net("192.168.0.0/16"), 'a');
        t.retain(|_, v| *v != 'a');
        assert_eq!(t.lookup(ip("192.168.1.1")), None);
        assert_eq!(t.prefixes_where(|v| *v == 'b'), vec![net("10.0.0.0/8")]);
    }
}

//! Which Docker subnets `up` may route: by default only private ones.
//!
//! Anyone who can reach the Docker engine can create a network with any
//! subnet (`docker network create --subnet 8.8.8.0/24`). On a shared Mac
//! that would be a way to take the machine's traffic for a public range
//! into the VM. Docker itself allocates from private pools, so a public
//! subnet is either deliberate (and the config file can allow it) or
//! hostile. Extra routes the config file names are the user's own choice
//! and never pass through here.

use std::collections::BTreeSet;

use ipnet::IpNet;

/// RFC 1918, RFC 6598 shared address space (100.64.0.0/10, which CGNAT and
/// some VM tools use), and IPv6 unique local addresses (RFC 4193).
pub const PRIVATE: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// The config file's key that lets a public Docker subnet be routed, as a
/// user would write it (named in the log line and in `status`).
pub const ALLOW_KEY: &str = "networks.allow_public";

/// Whether every address of `net` is private.
pub fn is_private(net: &IpNet) -> bool {
    PRIVATE
        .iter()
        .map(|p| p.parse::<IpNet>().expect("constant prefixes parse"))
        .any(|p| p.contains(net))
}

/// Whether `up` may route Docker subnet `net`: private, or wholly inside a
/// prefix the config file allows.
pub fn allowed(net: &IpNet, allow: &[IpNet]) -> bool {
    is_private(net) || allow.iter().any(|a| a.contains(net))
}

/// Docker's desired subnets split into those `up` may route and the public
/// ones it skips; `extra` (the config file's own routes) always pass.
pub fn partition(
    docker: BTreeSet<IpNet>,
    allow: &[IpNet],
    extra: &BTreeSet<IpNet>,
) -> (BTreeSet<IpNet>, BTreeSet<IpNet>) {
    docker
        .into_iter()
        .partition(|net| allowed(net, allow) || extra.contains(net))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn private_ranges_and_only_those() {
        for private in [
            "10.0.0.0/8",
            "10.200.1.0/24",
            "172.16.0.0/12",
            "172.31.255.0/24",
            "192.168.65.0/24",
            "100.64.0.0/10",
            "100.127.0.0/16",
            "fd00:db8::/64",
            "fc00:f853:ccd:e793::/64",
        ] {
            assert!(is_private(&n(private)), "{private}");
        }
        for public in [
            "8.8.8.0/24",
            "172.32.0.0/16",
            "172.15.255.0/24",
            "192.169.0.0/16",
            "100.128.0.0/16",
            "11.0.0.0/8",
            // Wider than a private range: it holds public addresses too.
            "172.0.0.0/8",
            "10.0.0.0/7",
            "2001:db8::/64",
            "fe80::/64",
        ] {
            assert!(!is_private(&n(public)), "{public}");
        }
    }

    #[test]
    fn the_config_file_can_allow_a_public_range() {
        let allow = [n("198.51.100.0/24"), n("2001:db8::/32")];
        assert!(allowed(&n("198.51.100.0/25"), &allow));
        assert!(allowed(&n("2001:db8:1::/64"), &allow));
        assert!(!allowed(&n("198.51.0.0/16"), &allow), "wider than allowed");
        assert!(!allowed(&n("203.0.113.0/24"), &allow));
        assert!(allowed(&n("172.18.0.0/16"), &[]));
    }
}

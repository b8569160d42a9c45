//! Deciding which routes to add and remove: a pure function of what Docker
//! wants and what the OS has, so that every case is a table test and the
//! executors (netlink on Linux, `route` commands on macOS) stay dumb.

use std::collections::BTreeSet;
use std::fmt;

use ipnet::IpNet;

/// A route the OS has that is not ours: a LAN, a VPN, a default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemRoute {
    pub destination: IpNet,
    /// The interface it leaves through, for the warning a user reads.
    pub interface: String,
}

impl fmt::Display for SystemRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.destination, self.interface)
    }
}

/// A desired subnet we will not route, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub subnet: IpNet,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// It overlaps a route of the machine's own: the user's network wins.
    Conflict(SystemRoute),
    /// A Docker subnet outside the private ranges ([`super::scope`]) that
    /// the config file does not allow.
    Public,
}

impl Skipped {
    /// The route it overlaps, for a conflict.
    pub fn conflicts_with(&self) -> Option<&SystemRoute> {
        match &self.reason {
            SkipReason::Conflict(r) => Some(r),
            SkipReason::Public => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    pub add: Vec<IpNet>,
    pub remove: Vec<IpNet>,
    pub skipped: Vec<Skipped>,
}

impl RoutePlan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Plan the changes that make the routes through our tunnel (`ours`) equal
/// to `desired`, minus any subnet that overlaps a route of the machine's
/// own (`system`). Default routes (`/0`) overlap everything and are what a
/// more specific route is for, so they never count as a conflict.
///
/// A route we installed earlier that has since become a conflict (say a VPN
/// came up for the same range) is removed: the user's network wins.
pub fn plan(
    desired: &BTreeSet<IpNet>,
    ours: &BTreeSet<IpNet>,
    system: &[SystemRoute],
) -> RoutePlan {
    let mut out = RoutePlan::default();
    let mut wanted = BTreeSet::new();
    for subnet in desired {
        let subnet = subnet.trunc();
        match system
            .iter()
            .find(|r| r.destination.prefix_len() > 0 && overlaps(&r.destination, &subnet))
        {
            Some(r) => out.skipped.push(Skipped {
                subnet,
                reason: SkipReason::Conflict(r.clone()),
            }),
            None => {
                wanted.insert(subnet);
            }
        }
    }
    out.add = wanted.difference(ours).copied().collect();
    out.remove = ours.difference(&wanted).copied().collect();
    out
}

/// Whether two prefixes share any address (one contains the other).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> BTreeSet<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }
    fn sys(dest: &str, iface: &str) -> SystemRoute {
        SystemRoute {
            destination: dest.parse().unwrap(),
            interface: iface.into(),
        }
    }

    #[test]
    fn adds_missing_and_removes_stale() {
        let p = plan(
            &nets(&["172.17.0.0/16", "172.18.0.0/16", "fd00:db8::/64"]),
            &nets(&["172.17.0.0/16", "172.30.0.0/16"]),
            &[sys("0.0.0.0/0", "en0"), sys("::/0", "en0")],
        );
        assert_eq!(
            p.add,
            nets(&["172.18.0.0/16", "fd00:db8::/64"])
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert_eq!(p.remove, vec!["172.30.0.0/16".parse().unwrap()]);
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn nothing_to_do_when_equal() {
        let want = nets(&["172.17.0.0/16"]);
        assert!(plan(&want, &want, &[]).is_empty());
    }

    #[test]
    fn overlapping_lan_or_vpn_is_skipped_not_overwritten() {
        let p = plan(
            &nets(&["192.168.0.0/16", "10.8.0.0/24", "172.18.0.0/16"]),
            &nets(&[]),
            &[sys("192.168.1.0/24", "en0"), sys("10.0.0.0/8", "utun3")],
        );
        assert_eq!(p.add, vec!["172.18.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(
            p.skipped,
            vec![
                Skipped {
                    subnet: "10.8.0.0/24".parse().unwrap(),
                    reason: SkipReason::Conflict(sys("10.0.0.0/8", "utun3"))
                },
                Skipped {
                    subnet: "192.168.0.0/16".parse().unwrap(),
                    reason: SkipReason::Conflict(sys("192.168.1.0/24", "en0"))
                },
            ]
        );
    }

    #[test]
    fn a_route_that_became_a_conflict_is_removed() {
        let p = plan(
            &nets(&["10.8.0.0/24"]),
            &nets(&["10.8.0.0/24"]),
            &[sys("10.8.0.0/16", "utun5")],
        );
        assert_eq!(p.remove, vec!["10.8.0.0/24".parse::<IpNet>().unwrap()]);
        assert!(p.add.is_empty());
        assert_eq!(p.skipped.len(), 1);
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let a: IpNet = "10.0.0.0/8".parse().unwrap();
        let b: IpNet = "10.1.0.0/16".parse().unwrap();
        let c: IpNet = "11.0.0.0/8".parse().unwrap();
        let v6: IpNet = "::/0".parse().unwrap();
        assert!(overlaps(&a, &b) && overlaps(&b, &a));
        assert!(!overlaps(&a, &c));
        assert!(!overlaps(&a, &v6));
    }
}

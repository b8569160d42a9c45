//! Which name answers which addresses: the rules of issue 14 as plain data,
//! so that every one of them is a table test and the server only looks up.
//!
//! - `<container name>.<domain>`: every routed address of the container;
//! - `<service>.<project>.<domain>` for a Compose container (its
//!   `com.docker.compose.service` and `.project` labels): every routed
//!   address of every replica;
//! - only addresses inside a subnet netconnect routes: an answer the Mac
//!   cannot reach would be a timeout instead of a clear "no such name";
//! - names are compared case-insensitively, with or without the final dot;
//! - a name that is not a DNS label (Docker allows `_` and `.`; DNS does
//!   not) is left out with a debug line: it is the user's choice, not an
//!   error.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tracing::debug;

use crate::docker::ContainerInfo;

/// The label Compose puts on a service's containers.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";

/// The longest name DNS carries, in its text form without the final dot.
const MAX_NAME: usize = 253;

/// The domain names live under: lower case, no final dot, each label valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain(String);

impl Domain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Domain {
    type Err = String;

    /// A configured domain: at least two labels (a bare `internal` would
    /// claim a whole top-level domain), each a valid label.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if d.len() > MAX_NAME - 2 {
            return Err(format!("{s:?} is longer than a DNS name can be"));
        }
        if let Some(bad) = d.split('.').find(|l| !is_label(l)) {
            return Err(format!(
                "{s:?} is not a DNS domain: {bad:?} is not a label (1-63 letters, digits or '-', not starting or ending with '-')"
            ));
        }
        if !d.contains('.') {
            return Err(format!(
                "{s:?} is a top-level domain; use a name under one, such as docker.internal"
            ));
        }
        Ok(Domain(d))
    }
}

/// An RFC 1123 host label: 1-63 letters, digits and hyphens, not starting
/// or ending with a hyphen. Case does not matter.
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// What a question is about; every other type gets "no data".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Any,
    Soa,
    Other,
}

/// What the server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Outside the domain: netconnect is not a recursive resolver.
    Refused,
    /// Nothing by that name, nor below it.
    NxDomain,
    /// The name exists (or has names below it) but has no record of the
    /// type asked.
    NoData,
    /// The domain's own SOA.
    Soa,
    Addresses(Vec<IpAddr>),
}

/// Every name served, built whole from the running containers and the
/// routed subnets each time either changes (a few hundred containers at
/// most: rebuilding is cheaper than getting an incremental update wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    domain: Domain,
    names: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Names that hold others but no address themselves, such as a
    /// Compose project's `shop.docker.internal`: "no data", not "no such
    /// name", or resolvers would believe nothing exists below them.
    parents: BTreeSet<String>,
}

impl Table {
    pub fn empty(domain: Domain) -> Table {
        Table {
            domain,
            names: BTreeMap::new(),
            parents: BTreeSet::new(),
        }
    }

    pub fn build(domain: &Domain, containers: &[ContainerInfo], routed: &BTreeSet<IpNet>) -> Table {
        let mut t = Table::empty(domain.clone());
        for c in containers {
            let addresses: BTreeSet<IpAddr> = c
                .addresses
                .iter()
                .copied()
                .filter(|a| routed.iter().any(|n| n.contains(a)))
                .collect();
            if addresses.is_empty() {
                continue;
            }
            let mut labels = vec![vec![c.name.as_str()]];
            if let (Some(service), Some(project)) =
                (c.label(COMPOSE_SERVICE), c.label(COMPOSE_PROJECT))
            {
                labels.push(vec![service, project]);
            }
            for l in labels {
                if let Some(bad) = l.iter().find(|l| !is_label(l)) {
                    debug!(container = %c.name, label = %bad, "no DNS name: not a valid DNS label");
                    continue;
                }
                let name = format!("{}.{}", l.join("."), domain).to_ascii_lowercase();
                if name.len() > MAX_NAME {
                    debug!(container = %c.name, "no DNS name: longer than DNS allows");
                    continue;
                }
                t.names.entry(name).or_default().extend(&addresses);
            }
        }
        // Every proper suffix of a name, below the domain itself.
        let parents: BTreeSet<String> = t
            .names
            .keys()
            .flat_map(|n| {
                let inner = &n[..n.len() - domain.0.len() - 1];
                inner
                    .match_indices('.')
                    .map(|(i, _)| n[i + 1..].to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|p| !t.names.contains_key(p))
            .collect();
        t.parents = parents;
        t
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// How many names answer with addresses.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every name and its addresses, in name order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &BTreeSet<IpAddr>)> {
        self.names.iter().map(|(n, a)| (n.as_str(), a))
    }

    /// The answer to `qname` (any case, final dot or not) for `qtype`.
    pub fn lookup(&self, qname: &str, qtype: QType) -> Answer {
        let q = qname
            .strip_suffix('.')
            .unwrap_or(qname)
            .to_ascii_lowercase();
        let d = self.domain.as_str();
        if q == d {
            return match qtype {
                QType::Soa | QType::Any => Answer::Soa,
                _ => Answer::NoData,
            };
        }
        let in_zone = q
            .strip_suffix(d)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1);
        if !in_zone {
            return Answer::Refused;
        }
        let Some(addresses) = self.names.get(&q) else {
            return if self.parents.contains(&q) {
                Answer::NoData
            } else {
                Answer::NxDomain
            };
        };
        let found: Vec<IpAddr> = addresses
            .iter()
            .copied()
            .filter(|a| match qtype {
                QType::A => a.is_ipv4(),
                QType::Aaaa => a.is_ipv6(),
                QType::Any => true,
                QType::Soa | QType::Other => false,
            })
            .collect();
        if found.is_empty() {
            Answer::NoData
        } else {
            Answer::Addresses(found)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> Domain {
        "docker.internal".parse().unwrap()
    }

    fn c(name: &str, labels: &[(&str, &str)], addresses: &[&str]) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}"),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn compose(name: &str, service: &str, project: &str, addresses: &[&str]) -> ContainerInfo {
        c(
            name,
            &[(COMPOSE_SERVICE, service), (COMPOSE_PROJECT, project)],
            addresses,
        )
    }

    fn routed(nets: &[&str]) -> BTreeSet<IpNet> {
        nets.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn addrs(a: &[&str]) -> Answer {
        Answer::Addresses(a.iter().map(|a| a.parse().unwrap()).collect())
    }

    fn table() -> Table {
        Table::build(
            &domain(),
            &[
                c("web", &[], &["172.18.0.2", "fd00:18::2"]),
                compose("shop-api-1", "api", "shop", &["172.19.0.3"]),
                compose("shop-api-2", "api", "shop", &["172.19.0.4"]),
                // On two networks, one of them not routed.
                c("kind-control-plane", &[], &["172.20.0.2", "192.0.2.9"]),
                // Not a label: skipped, not an error.
                c("my_app", &[], &["172.18.0.7"]),
                // Host networking: no address of its own.
                c("netconnect-helper-nc0", &[], &[]),
            ],
            &routed(&[
                "172.18.0.0/16",
                "172.19.0.0/16",
                "172.20.0.0/16",
                "fd00:18::/64",
            ]),
        )
    }

    #[test]
    fn names_of_plain_and_compose_containers() {
        let t = table();
        let names: Vec<_> = t.entries().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "api.shop.docker.internal",
                "kind-control-plane.docker.internal",
                "shop-api-1.docker.internal",
                "shop-api-2.docker.internal",
                "web.docker.internal",
            ]
        );
        assert_eq!(t.len(), 5);
        assert_eq!(
            t.lookup("web.docker.internal", QType::A),
            addrs(&["172.18.0.2"])
        );
        assert_eq!(
            t.lookup("web.docker.internal", QType::Aaaa),
            addrs(&["fd00:18::2"])
        );
        // Every replica of a service.
        assert_eq!(
            t.lookup("api.shop.docker.internal", QType::A),
            addrs(&["172.19.0.3", "172.19.0.4"])
        );
        assert_eq!(
            t.lookup("shop-api-2.docker.internal", QType::A),
            addrs(&["172.19.0.4"])
        );
        // Only what is routed.
        assert_eq!(
            t.lookup("kind-control-plane.docker.internal", QType::A),
            addrs(&["172.20.0.2"])
        );
    }

    #[test]
    fn case_and_the_final_dot_do_not_matter() {
        let t = table();
        for q in [
            "WEB.Docker.Internal",
            "web.docker.internal.",
            "Web.DOCKER.internal.",
        ] {
            assert_eq!(t.lookup(q, QType::A), addrs(&["172.18.0.2"]), "{q}");
        }
    }

    #[test]
    fn unknown_outside_and_empty_answers() {
        let t = table();
        assert_eq!(t.lookup("nope.docker.internal", QType::A), Answer::NxDomain);
        assert_eq!(
            t.lookup("x.web.docker.internal", QType::A),
            Answer::NxDomain
        );
        // Skipped for its underscore.
        assert_eq!(
            t.lookup("my_app.docker.internal", QType::A),
            Answer::NxDomain
        );
        assert_eq!(t.lookup("example.com", QType::A), Answer::Refused);
        assert_eq!(t.lookup("internal", QType::A), Answer::Refused);
        // A look-alike suffix is not the domain.
        assert_eq!(t.lookup("webdocker.internal", QType::A), Answer::Refused);
        assert_eq!(t.lookup(".docker.internal", QType::A), Answer::Refused);
        // IPv4 only: an AAAA question finds the name but no record.
        assert_eq!(
            t.lookup("shop-api-1.docker.internal", QType::Aaaa),
            Answer::NoData
        );
        assert_eq!(
            t.lookup("web.docker.internal", QType::Other),
            Answer::NoData
        );
        // The project holds names: it exists, with no address.
        assert_eq!(t.lookup("shop.docker.internal", QType::A), Answer::NoData);
        assert_eq!(t.lookup("docker.internal", QType::A), Answer::NoData);
        assert_eq!(t.lookup("docker.internal.", QType::Soa), Answer::Soa);
    }

    #[test]
    fn a_compose_project_or_service_that_is_not_a_label_keeps_the_container_name() {
        let t = Table::build(
            &domain(),
            &[compose("shop-my_api-1", "my_api", "shop", &["172.19.0.3"])],
            &routed(&["172.19.0.0/16"]),
        );
        assert_eq!(t.len(), 0, "{t:?}");
        let t = Table::build(
            &domain(),
            &[compose("api1", "api", "my.shop", &["172.19.0.3"])],
            &routed(&["172.19.0.0/16"]),
        );
        let names: Vec<_> = t.entries().map(|(n, _)| n).collect();
        assert_eq!(names, ["api1.docker.internal"]);
    }

    #[test]
    fn no_routed_subnet_no_name() {
        let t = Table::build(&domain(), &[c("web", &[], &["172.18.0.2"])], &routed(&[]));
        assert!(t.is_empty());
        assert_eq!(t.lookup("web.docker.internal", QType::A), Answer::NxDomain);
    }

    #[test]
    fn domains() {
        for (given, want) in [
            ("docker.internal", "docker.internal"),
            ("Docker.Internal.", "docker.internal"),
            ("c.example.test", "c.example.test"),
        ] {
            assert_eq!(given.parse::<Domain>().unwrap().as_str(), want);
        }
        for bad in [
            "internal",
            "",
            "docker..internal",
            "-x.internal",
            "a_b.internal",
            "x.internal/",
        ] {
            assert!(bad.parse::<Domain>().is_err(), "{bad:?}");
        }
        assert!("internal"
            .parse::<Domain>()
            .unwrap_err()
            .contains("top-level domain"));
    }

    #[test]
    fn labels() {
        for good in ["web", "a", "shop-web-1", "K8S", &"x".repeat(63)] {
            assert!(is_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "a_b", "a.b", "é", &"x".repeat(64)] {
            assert!(!is_label(bad), "{bad}");
        }
    }
}

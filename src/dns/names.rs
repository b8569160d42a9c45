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
//! - a container name with `_` (Compose v1's `project_web_1`, `docker run
//!   --name my_db`) answers as it is, since DNS carries underscores and
//!   macOS's resolver and curl pass them through, and with `-` in its
//!   place, the form a strict client (or a hostname parser) accepts;
//! - a name with `.` answers as its own labels under the domain;
//! - `*.<name>.<domain>`: any name below one that has addresses answers
//!   those addresses, for apps that serve subdomains; a name that exists
//!   itself always wins over the wildcard above it;
//! - two owners of one name (`my_db` and `my-db`, or a container named as
//!   a Compose service) both answer: every address, and the name is listed
//!   as a conflict so `status --json` can say why an answer has two;
//! - a name that still is not DNS (an empty label, a label over 63 bytes)
//!   is left out with a debug line: it is the user's choice, not an error.

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

/// A label of a name we serve: like [`is_label`], and `_` allowed too
/// (DNS carries any byte; `_` is what Docker names hold besides RFC 1123's
/// characters).
pub fn is_name_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The label sequences a name given by a user answers as: itself split at
/// its dots, and, when it holds `_`, the same with `-` in its place, if
/// that form is RFC 1123. Nothing when a label is not one we serve.
pub fn forms(name: &str) -> Vec<Vec<String>> {
    let labels: Vec<String> = name.split('.').map(str::to_ascii_lowercase).collect();
    if !labels.iter().all(|l| is_name_label(l)) {
        return Vec::new();
    }
    let mut out = vec![labels.clone()];
    if name.contains('_') {
        let dashed: Vec<String> = labels.iter().map(|l| l.replace('_', "-")).collect();
        if dashed.iter().all(|l| is_label(l)) {
            out.push(dashed);
        }
    }
    out
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
    /// Who gave each name: a container's name, or `service S of project
    /// P` for every replica of a Compose service (one owner, by design).
    owners: BTreeMap<String, BTreeSet<String>>,
}

impl Table {
    pub fn empty(domain: Domain) -> Table {
        Table {
            domain,
            names: BTreeMap::new(),
            parents: BTreeSet::new(),
            owners: BTreeMap::new(),
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
            let mut given: Vec<(Vec<String>, String)> = forms(&c.name)
                .into_iter()
                .map(|l| (l, c.name.clone()))
                .collect();
            if let (Some(service), Some(project)) =
                (c.label(COMPOSE_SERVICE), c.label(COMPOSE_PROJECT))
            {
                // One label each: a dot in either would make the project
                // a deeper name than Compose meant.
                let owner = format!("service {service} of project {project}");
                let one = |v: Vec<Vec<String>>| -> Vec<String> {
                    v.into_iter().filter(|l| l.len() == 1).flatten().collect()
                };
                for s in one(forms(service)) {
                    for p in one(forms(project)) {
                        given.push((vec![s.clone(), p], owner.clone()));
                    }
                }
            }
            if given.is_empty() {
                debug!(container = %c.name, "no DNS name: not valid DNS labels");
            }
            for (labels, owner) in given {
                let name = format!("{}.{}", labels.join("."), domain);
                if name.len() > MAX_NAME {
                    debug!(container = %c.name, "no DNS name: longer than DNS allows");
                    continue;
                }
                t.names.entry(name.clone()).or_default().extend(&addresses);
                t.owners.entry(name).or_default().insert(owner);
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

    /// Names given by more than one owner, with the owners: each answers
    /// every owner's addresses.
    pub fn conflicts(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.owners
            .iter()
            .filter(|(_, o)| o.len() > 1)
            .map(|(n, o)| (n.as_str(), o))
    }

    /// The name whose addresses answer `q`, a name in the zone: `q` itself,
    /// or the closest name above it that has addresses (the wildcard
    /// `*.NAME`). A name that only holds others (a Compose project) or the
    /// domain itself stops the search: nothing is served below those but
    /// what exists.
    fn owner_of<'a>(&'a self, q: &'a str) -> Option<&'a BTreeSet<IpAddr>> {
        if let Some(a) = self.names.get(q) {
            return Some(a);
        }
        let d = self.domain.as_str();
        let mut rest = q;
        while let Some((_, up)) = rest.split_once('.') {
            if up == d || self.parents.contains(up) {
                return None;
            }
            if let Some(a) = self.names.get(up) {
                return Some(a);
            }
            rest = up;
        }
        None
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
        let Some(addresses) = self.owner_of(&q) else {
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
                // Docker's `_`: as it is, and with `-`.
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
                "my-app.docker.internal",
                "my_app.docker.internal",
                "shop-api-1.docker.internal",
                "shop-api-2.docker.internal",
                "web.docker.internal",
            ]
        );
        assert_eq!(t.len(), 7);
        assert_eq!(t.conflicts().count(), 0, "replicas are one owner");
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
        // Below a project that holds names: only what exists.
        assert_eq!(
            t.lookup("x.shop.docker.internal", QType::A),
            Answer::NxDomain
        );
        assert_eq!(
            t.lookup("x.nope.docker.internal", QType::A),
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
    fn a_compose_project_or_service_that_is_not_one_label_keeps_the_container_name() {
        let t = Table::build(
            &domain(),
            &[compose("api1", "api", "my.shop", &["172.19.0.3"])],
            &routed(&["172.19.0.0/16"]),
        );
        let names: Vec<_> = t.entries().map(|(n, _)| n).collect();
        assert_eq!(names, ["api1.docker.internal"]);
        let t = Table::build(
            &domain(),
            &[compose("api2", "-api", "shop", &["172.19.0.3"])],
            &routed(&["172.19.0.0/16"]),
        );
        let names: Vec<_> = t.entries().map(|(n, _)| n).collect();
        assert_eq!(names, ["api2.docker.internal"]);
    }

    /// Each rule of the module's header, as a row: the containers, then
    /// every name the table serves.
    #[test]
    fn the_names_a_container_name_gives() {
        let net = routed(&["172.19.0.0/16"]);
        let rows: &[(&[ContainerInfo], &[&str])] = &[
            // Compose v1: project_service_N, and the service name.
            (
                &[compose("shop_web_1", "web", "shop", &["172.19.0.3"])],
                &[
                    "shop-web-1.docker.internal",
                    "shop_web_1.docker.internal",
                    "web.shop.docker.internal",
                ],
            ),
            // Underscores in the service and the project: every form.
            (
                &[compose("x", "my_api", "my_shop", &["172.19.0.3"])],
                &[
                    "my-api.my-shop.docker.internal",
                    "my-api.my_shop.docker.internal",
                    "my_api.my-shop.docker.internal",
                    "my_api.my_shop.docker.internal",
                    "x.docker.internal",
                ],
            ),
            // A dot: its own labels. Case folds.
            (
                &[c("API.v2", &[], &["172.19.0.3"])],
                &["api.v2.docker.internal"],
            ),
            // `_` at an end: as it is only (the dashed form is not RFC 1123).
            (&[c("db_", &[], &["172.19.0.3"])], &["db_.docker.internal"]),
            // Not DNS: an empty label, a label over 63 bytes, a space.
            (&[c("a..b", &[], &["172.19.0.3"])], &[]),
            (&[c(&"x".repeat(64), &[], &["172.19.0.3"])], &[]),
            (&[c("a b", &[], &["172.19.0.3"])], &[]),
        ];
        for (containers, want) in rows {
            let t = Table::build(&domain(), containers, &net);
            let names: Vec<_> = t.entries().map(|(n, _)| n).collect();
            assert_eq!(&names, want, "{containers:?}");
        }
    }

    #[test]
    fn two_owners_of_a_name_both_answer_and_are_a_conflict() {
        let t = Table::build(
            &domain(),
            &[
                c("my_db", &[], &["172.19.0.3"]),
                c("my-db", &[], &["172.19.0.4"]),
                compose("shop-web-1", "web", "shop", &["172.19.0.5"]),
                c("web.shop", &[], &["172.19.0.6"]),
            ],
            &routed(&["172.19.0.0/16"]),
        );
        assert_eq!(
            t.lookup("my-db.docker.internal", QType::A),
            addrs(&["172.19.0.3", "172.19.0.4"])
        );
        assert_eq!(
            t.lookup("my_db.docker.internal", QType::A),
            addrs(&["172.19.0.3"])
        );
        assert_eq!(
            t.lookup("web.shop.docker.internal", QType::A),
            addrs(&["172.19.0.5", "172.19.0.6"])
        );
        let conflicts: Vec<(&str, Vec<&str>)> = t
            .conflicts()
            .map(|(n, o)| (n, o.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            conflicts,
            [
                ("my-db.docker.internal", vec!["my-db", "my_db"]),
                (
                    "web.shop.docker.internal",
                    vec!["service web of project shop", "web.shop"]
                ),
            ]
        );
    }

    #[test]
    fn below_a_name_is_its_wildcard() {
        let t = table();
        for q in [
            "x.web.docker.internal",
            "a.b.web.docker.internal",
            "WWW.Web.Docker.Internal.",
        ] {
            assert_eq!(t.lookup(q, QType::A), addrs(&["172.18.0.2"]), "{q}");
        }
        assert_eq!(
            t.lookup("x.web.docker.internal", QType::Aaaa),
            addrs(&["fd00:18::2"])
        );
        // The closest name wins: below a Compose service, the service.
        assert_eq!(
            t.lookup("static.api.shop.docker.internal", QType::A),
            addrs(&["172.19.0.3", "172.19.0.4"])
        );
        assert_eq!(
            t.lookup("x.shop-api-1.docker.internal", QType::Aaaa),
            Answer::NoData
        );
        // A name that exists wins over the wildcard above it.
        let t = Table::build(
            &domain(),
            &[
                c("web", &[], &["172.19.0.2"]),
                c("api.web", &[], &["172.19.0.3"]),
            ],
            &routed(&["172.19.0.0/16"]),
        );
        assert_eq!(
            t.lookup("api.web.docker.internal", QType::A),
            addrs(&["172.19.0.3"])
        );
        assert_eq!(
            t.lookup("x.api.web.docker.internal", QType::A),
            addrs(&["172.19.0.3"])
        );
        assert_eq!(
            t.lookup("x.web.docker.internal", QType::A),
            addrs(&["172.19.0.2"])
        );
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
    fn name_labels() {
        for good in ["web", "my_db", "_x", "db_", "a-b_c", &"x".repeat(63)] {
            assert!(is_name_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "a.b", "a b", "é", &"x".repeat(64)] {
            assert!(!is_name_label(bad), "{bad}");
        }
        assert_eq!(
            forms("My_DB"),
            [vec!["my_db".to_string()], vec!["my-db".to_string()]]
        );
        assert_eq!(forms("a.b"), [vec!["a".to_string(), "b".to_string()]]);
        assert!(forms("a..b").is_empty());
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

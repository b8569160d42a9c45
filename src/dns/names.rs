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

/// The label by which a container asks for names of its own choosing:
/// `dev.netconnect.domains=shop.test,api.localhost`, each answering the
/// container's addresses, with a wildcard below it as every name has.
pub const DOMAINS_LABEL: &str = "dev.netconnect.domains";

/// Where a label's names may live without the configuration file's
/// `[dns] extra_domains`: names kept for private and local use (RFC 2606's
/// `.test`, RFC 6761's `.localhost` and `.local`, ICANN's `.internal`), so
/// a label cannot take a public name from the Mac by accident.
pub const LABEL_SUFFIXES: &[&str] = &["test", "localhost", "internal", "local"];

/// A reverse zone is cut at the octet (IPv4) or nibble (IPv6) below the
/// prefix; a prefix between octets needs several. Beyond this many the
/// zone above is taken whole: a /17 would otherwise be 128 resolver files.
const MAX_REVERSE_CUTS: usize = 16;

/// What a question is about; every other type gets "no data".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Ptr,
    Any,
    Soa,
    Other,
}

/// What the server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Outside every zone served: netconnect is not a recursive resolver.
    Refused,
    /// Nothing by that name, nor below it.
    NxDomain,
    /// The name exists (or has names below it) but has no record of the
    /// type asked.
    NoData,
    /// The zone's own SOA ([`Table::apex`] names the zone).
    Soa,
    Addresses(Vec<IpAddr>),
    /// PTR: the name of an address, without the final dot.
    Names(Vec<String>),
}

/// What the configuration file adds to the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Domains a [`DOMAINS_LABEL`] may name besides [`LABEL_SUFFIXES`]'.
    pub extra_domains: Vec<Domain>,
    /// The subnets whose reverse zones are answered (the routed Docker
    /// networks); `None`: every routed subnet.
    pub reverse: Option<BTreeSet<IpNet>>,
}

/// Every name served, built whole from the running containers and the
/// routed subnets each time either changes (a few hundred containers at
/// most: rebuilding is cheaper than getting an incremental update wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    domain: Domain,
    /// Every zone's apex, longest first (a question belongs to the longest
    /// that holds it): the domain, the label domains outside it and the
    /// reverse zones.
    zones: Vec<String>,
    /// The label domains outside the domain, each its own zone.
    label_zones: BTreeSet<String>,
    reverse_zones: BTreeSet<String>,
    names: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Names that hold others but no address themselves, such as a
    /// Compose project's `shop.docker.internal`: "no data", not "no such
    /// name", or resolvers would believe nothing exists below them.
    parents: BTreeSet<String>,
    /// Who gave each name: a container's name, `service S of project P`
    /// for every replica of a Compose service, `alias A on network N` for
    /// every container with that alias there (one owner each, by design).
    owners: BTreeMap<String, BTreeSet<String>>,
    /// `d.c.b.a.in-addr.arpa` (or ip6.arpa) to the address's name.
    ptr: BTreeMap<String, String>,
    /// The reverse names that only hold others.
    ptr_parents: BTreeSet<String>,
    /// Label domains left out, with why, for a warning.
    refused: BTreeMap<String, String>,
}

/// `addr`'s name under `in-addr.arpa` or `ip6.arpa`, without the final dot.
pub fn reverse_name(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(72);
            for b in a.octets().iter().rev() {
                s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The reverse zones that hold `net`'s addresses: one when the prefix
/// ends at an octet (IPv4) or nibble (IPv6), else one per cut below it,
/// else ([`MAX_REVERSE_CUTS`]) the zone above. None for a default route.
pub fn reverse_zones(net: &IpNet) -> Vec<String> {
    let (unit, top) = match net {
        IpNet::V4(_) => (8u8, "in-addr.arpa"),
        IpNet::V6(_) => (4u8, "ip6.arpa"),
    };
    let p = net.prefix_len();
    let up = p.div_ceil(unit) * unit;
    let cut = if 1usize << (up - p) > MAX_REVERSE_CUTS {
        p / unit * unit
    } else {
        up
    };
    if cut == 0 {
        return Vec::new();
    }
    let labels = |a: IpAddr| -> String {
        let full = reverse_name(a);
        // The address's labels, least significant first: keep the `cut /
        // unit` most significant, and the suffix.
        let all: Vec<&str> = full.split('.').collect();
        let n = all.len() - 2;
        let keep = usize::from(cut / unit);
        let mut out: Vec<&str> = all[n - keep..n].to_vec();
        out.push(top);
        out.join(".")
    };
    if cut <= p {
        return vec![labels(net.trunc().addr())];
    }
    match net.trunc().subnets(cut) {
        Ok(s) => s.map(|s| labels(s.addr())).collect(),
        Err(_) => Vec::new(),
    }
}

/// A name a container's [`DOMAINS_LABEL`] asks for, checked; `Ok` holds
/// it lower case without the final dot.
pub fn label_domain(raw: &str, ours: &Domain, extra: &[Domain]) -> Result<String, String> {
    let d = raw.trim();
    let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
    if d.len() > MAX_NAME {
        return Err(format!("{raw:?} is longer than a DNS name can be"));
    }
    if let Some(bad) = d.split('.').find(|l| !is_label(l)) {
        return Err(format!(
            "{raw:?} is not a DNS name: {bad:?} is not a label (1-63 letters, digits or '-', not starting or ending with '-')"
        ));
    }
    let under =
        |z: &str| d.len() > z.len() && d.ends_with(z) && d[..d.len() - z.len()].ends_with('.');
    if d == ours.as_str() {
        return Err(format!("{raw:?} is netconnect's own domain"));
    }
    if under("arpa") || d == "arpa" {
        return Err(format!(
            "{raw:?} is a reverse name; netconnect answers those itself"
        ));
    }
    if under(ours.as_str())
        || LABEL_SUFFIXES.iter().any(|s| under(s))
        || extra.iter().any(|e| d == e.as_str() || under(e.as_str()))
    {
        return Ok(d);
    }
    Err(format!(
        "{raw:?} is outside .test, .localhost, .internal and .local: add it (or a domain above it) to [dns] extra_domains in the configuration file to allow it"
    ))
}

impl Table {
    pub fn empty(domain: Domain) -> Table {
        Table {
            zones: vec![domain.0.clone()],
            domain,
            label_zones: BTreeSet::new(),
            reverse_zones: BTreeSet::new(),
            names: BTreeMap::new(),
            parents: BTreeSet::new(),
            owners: BTreeMap::new(),
            ptr: BTreeMap::new(),
            ptr_parents: BTreeSet::new(),
            refused: BTreeMap::new(),
        }
    }

    pub fn build(domain: &Domain, containers: &[ContainerInfo], routed: &BTreeSet<IpNet>) -> Table {
        Table::build_with(domain, containers, routed, &Options::default())
    }

    pub fn build_with(
        domain: &Domain,
        containers: &[ContainerInfo],
        routed: &BTreeSet<IpNet>,
        opts: &Options,
    ) -> Table {
        let mut t = Table::empty(domain.clone());
        let is_routed = |a: &IpAddr| routed.iter().any(|n| n.contains(a));
        let in_zone = |labels: &[String]| format!("{}.{}", labels.join("."), domain);
        // Names in the order they claim an address's PTR: a container's
        // own name first, then its Compose and label names, aliases last.
        let mut given: Vec<(String, BTreeSet<IpAddr>, String)> = Vec::new();
        // An alias's labels -> where it is given: (network, owner, addresses).
        type Given = (String, String, BTreeSet<IpAddr>);
        let mut aliases: BTreeMap<Vec<String>, Vec<Given>> = BTreeMap::new();
        for c in containers {
            let addresses: BTreeSet<IpAddr> =
                c.addresses.iter().copied().filter(is_routed).collect();
            if addresses.is_empty() {
                continue;
            }
            let before = given.len();
            for l in forms(&c.name) {
                given.push((in_zone(&l), addresses.clone(), c.name.clone()));
            }
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
                        given.push((in_zone(&[s.clone(), p]), addresses.clone(), owner.clone()));
                    }
                }
            }
            for raw in c.label(DOMAINS_LABEL).unwrap_or("").split(',') {
                if raw.trim().is_empty() {
                    continue;
                }
                match label_domain(raw, domain, &opts.extra_domains) {
                    Ok(d) => given.push((d, addresses.clone(), format!("label of {}", c.name))),
                    Err(why) => {
                        t.refused.insert(
                            raw.trim().to_ascii_lowercase(),
                            format!("{}: {why}", c.name),
                        );
                    }
                }
            }
            if given.len() == before {
                debug!(container = %c.name, "no DNS name: not valid DNS labels");
            }
            for a in &c.networks {
                let addresses: BTreeSet<IpAddr> =
                    a.addresses.iter().copied().filter(is_routed).collect();
                if addresses.is_empty() {
                    continue;
                }
                for alias in &a.aliases {
                    let owner = format!("alias {alias} on network {}", a.network);
                    for l in forms(alias) {
                        aliases.entry(l).or_default().push((
                            a.network.clone(),
                            owner.clone(),
                            addresses.clone(),
                        ));
                    }
                }
            }
        }
        // An alias answers under the domain; one on several networks also
        // under each network's name, which tells them apart.
        for (alias, on) in aliases {
            let all: BTreeSet<IpAddr> = on.iter().flat_map(|(_, _, a)| a).copied().collect();
            let networks: BTreeSet<&str> = on.iter().map(|(n, _, _)| n.as_str()).collect();
            for (_, owner, _) in &on {
                given.push((in_zone(&alias), all.clone(), owner.clone()));
            }
            if networks.len() > 1 {
                for (net, owner, addresses) in &on {
                    for nl in forms(net) {
                        let mut l = alias.clone();
                        l.extend(nl);
                        given.push((in_zone(&l), addresses.clone(), owner.clone()));
                    }
                }
            }
        }
        let reverse = opts.reverse.as_ref().unwrap_or(routed);
        for (name, addresses, owner) in given {
            if name.len() > MAX_NAME {
                debug!(name = %name, "no DNS name: longer than DNS allows");
                continue;
            }
            for a in &addresses {
                if reverse.iter().any(|n| n.contains(a)) {
                    t.ptr
                        .entry(reverse_name(*a))
                        .or_insert_with(|| name.clone());
                }
            }
            t.names.entry(name.clone()).or_default().extend(&addresses);
            t.owners.entry(name).or_default().insert(owner);
        }
        t.label_zones = t
            .names
            .keys()
            .filter(|n| !within(n, domain.as_str()))
            .cloned()
            .collect();
        t.reverse_zones = reverse.iter().flat_map(reverse_zones).collect();
        t.zones = std::iter::once(domain.0.clone())
            .chain(t.label_zones.iter().cloned())
            .chain(t.reverse_zones.iter().cloned())
            .collect();
        t.zones.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        t.zones.dedup();
        // Every name between a name and its zone's apex.
        let between = |t: &Table, n: &str| -> Vec<String> {
            let apex = t.apex(n).unwrap_or(n).to_owned();
            let mut out = Vec::new();
            let mut rest = n;
            while let Some((_, up)) = rest.split_once('.') {
                if up.len() <= apex.len() {
                    break;
                }
                out.push(up.to_owned());
                rest = up;
            }
            out
        };
        let parents: BTreeSet<String> = t
            .names
            .keys()
            .flat_map(|n| between(&t, n))
            .filter(|p| !t.names.contains_key(p))
            .collect();
        let ptr_parents: BTreeSet<String> = t.ptr.keys().flat_map(|n| between(&t, n)).collect();
        t.parents = parents;
        t.ptr_parents = ptr_parents;
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

    /// Every reverse name and the name it answers, in reverse-name order.
    pub fn pointers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.ptr.iter().map(|(r, n)| (r.as_str(), n.as_str()))
    }

    /// Names given by more than one owner, with the owners: each answers
    /// every owner's addresses.
    pub fn conflicts(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.owners
            .iter()
            .filter(|(_, o)| o.len() > 1)
            .map(|(n, o)| (n.as_str(), o))
    }

    /// The zones besides the domain, each needing its own resolver file:
    /// the label domains, then the reverse zones.
    pub fn other_zones(&self) -> Vec<String> {
        self.label_zones
            .iter()
            .chain(&self.reverse_zones)
            .cloned()
            .collect()
    }

    /// Label domains left out, each with the container and why.
    pub fn refused(&self) -> impl Iterator<Item = (&str, &str)> {
        self.refused.iter().map(|(n, w)| (n.as_str(), w.as_str()))
    }

    /// The zone a name (lower case, no final dot) belongs to: the longest
    /// apex that is it or above it.
    pub fn apex<'a>(&'a self, q: &str) -> Option<&'a str> {
        self.zones
            .iter()
            .find(|z| q == z.as_str() || within(q, z))
            .map(String::as_str)
    }

    /// The name whose addresses answer `q`, a name in the zone of `apex`:
    /// `q` itself, or the closest name above it that has addresses (the
    /// wildcard `*.NAME`). A name that only holds others (a Compose
    /// project) or the zone's apex stops the search: nothing is served
    /// below those but what exists.
    fn owner_of<'a>(&'a self, q: &'a str, apex: &str) -> Option<&'a BTreeSet<IpAddr>> {
        if let Some(a) = self.names.get(q) {
            return Some(a);
        }
        let mut rest = q;
        while let Some((_, up)) = rest.split_once('.') {
            if self.parents.contains(up) {
                return None;
            }
            if let Some(a) = self.names.get(up) {
                return Some(a);
            }
            if up == apex {
                return None;
            }
            rest = up;
        }
        None
    }

    /// The answer to `qname` (any case, final dot or not) for `qtype`.
    pub fn lookup(&self, qname: &str, qtype: QType) -> Answer {
        self.answer(qname, qtype).0
    }

    /// [`Table::lookup`], with the zone the answer is from (its SOA goes
    /// with a negative answer); `None` with REFUSED.
    pub fn answer(&self, qname: &str, qtype: QType) -> (Answer, Option<&str>) {
        let q = qname
            .strip_suffix('.')
            .unwrap_or(qname)
            .to_ascii_lowercase();
        let Some(apex) = self.apex(&q) else {
            return (Answer::Refused, None);
        };
        (self.answer_in(&q, apex, qtype), Some(apex))
    }

    fn answer_in(&self, q: &str, apex: &str, qtype: QType) -> Answer {
        let soa = || match qtype {
            QType::Soa | QType::Any => Answer::Soa,
            _ => Answer::NoData,
        };
        if self.reverse_zones.contains(apex) {
            if q == apex {
                return soa();
            }
            return match (self.ptr.get(q), qtype) {
                (Some(n), QType::Ptr | QType::Any) => Answer::Names(vec![n.clone()]),
                (Some(_), _) => Answer::NoData,
                (None, _) if self.ptr_parents.contains(q) => Answer::NoData,
                (None, _) => Answer::NxDomain,
            };
        }
        if q == apex && (qtype == QType::Soa || !self.names.contains_key(q)) {
            return soa();
        }
        let Some(addresses) = self.owner_of(q, apex) else {
            return if self.parents.contains(q) {
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
                QType::Ptr | QType::Soa | QType::Other => false,
            })
            .collect();
        if found.is_empty() {
            Answer::NoData
        } else {
            Answer::Addresses(found)
        }
    }
}

/// `n` is a name strictly below `zone`.
fn within(n: &str, zone: &str) -> bool {
    n.len() > zone.len() + 1 && n.ends_with(zone) && n.as_bytes()[n.len() - zone.len() - 1] == b'.'
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
            ..Default::default()
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

    fn on(c: &mut ContainerInfo, network: &str, aliases: &[&str], addresses: &[&str]) {
        c.networks.push(crate::docker::client::Attachment {
            network: network.into(),
            aliases: aliases.iter().map(|a| (*a).into()).collect(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        });
        c.addresses
            .extend(addresses.iter().map(|a| a.parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn network_aliases_and_the_network_that_tells_two_apart() {
        let mut db = c("shop_db_1", &[], &[]);
        on(&mut db, "shop_backend", &["store", "db"], &["172.21.0.5"]);
        on(&mut db, "shop_front", &[], &["172.22.0.5"]);
        let mut cache = c("cache", &[], &[]);
        on(&mut cache, "shop_front", &["store"], &["172.22.0.9"]);
        // Two on one network with one alias: Docker's round robin, one owner.
        let mut r1 = c("r1", &[], &[]);
        on(&mut r1, "shop_backend", &["replica"], &["172.21.0.11"]);
        let mut r2 = c("r2", &[], &[]);
        on(&mut r2, "shop_backend", &["replica"], &["172.21.0.12"]);
        // Not routed: no alias.
        let mut far = c("far", &[], &[]);
        on(&mut far, "elsewhere", &["far-alias"], &["192.0.2.7"]);
        let t = Table::build(
            &domain(),
            &[db, cache, r1, r2, far],
            &routed(&["172.21.0.0/16", "172.22.0.0/16"]),
        );
        let look = |q: &str| t.lookup(q, QType::A);
        // On one network only: the alias, its address on that network.
        assert_eq!(look("db.docker.internal"), addrs(&["172.21.0.5"]));
        assert_eq!(look("db.shop_backend.docker.internal"), Answer::NxDomain);
        assert_eq!(
            look("replica.docker.internal"),
            addrs(&["172.21.0.11", "172.21.0.12"])
        );
        // On two networks: every address under the domain (a conflict),
        // each network's under its name, as given and with `-`.
        assert_eq!(
            look("store.docker.internal"),
            addrs(&["172.21.0.5", "172.22.0.9"])
        );
        for (q, a) in [
            ("store.shop_backend.docker.internal", "172.21.0.5"),
            ("store.shop-backend.docker.internal", "172.21.0.5"),
            ("store.shop_front.docker.internal", "172.22.0.9"),
            ("store.shop-front.docker.internal", "172.22.0.9"),
        ] {
            assert_eq!(look(q), addrs(&[a]), "{q}");
        }
        assert_eq!(look("shop_front.docker.internal"), Answer::NoData);
        assert_eq!(look("far-alias.docker.internal"), Answer::NxDomain);
        let conflicts: Vec<(&str, Vec<&str>)> = t
            .conflicts()
            .map(|(n, o)| (n, o.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            conflicts,
            [(
                "store.docker.internal",
                vec![
                    "alias store on network shop_backend",
                    "alias store on network shop_front"
                ]
            )]
        );
        // The container's own name names its address; an alias only an
        // address no name had.
        assert_eq!(
            t.lookup("5.0.21.172.in-addr.arpa", QType::Ptr),
            Answer::Names(vec!["shop_db_1.docker.internal".into()])
        );
    }

    #[test]
    fn label_domains_within_the_allowed_ones() {
        let mut web = c(
            "web",
            &[(
                DOMAINS_LABEL,
                "Shop.test, api.shop.localhost.,x.example.com,api.docker.internal,,bad_name.test",
            )],
            &["172.18.0.2"],
        );
        web.id = "w".into();
        let other = c(
            "other",
            &[(DOMAINS_LABEL, "mine.dev.example.org")],
            &["172.18.0.3"],
        );
        let opts = Options {
            extra_domains: vec!["dev.example.org".parse().unwrap()],
            ..Default::default()
        };
        let t = Table::build_with(&domain(), &[web, other], &routed(&["172.18.0.0/16"]), &opts);
        let web_at = addrs(&["172.18.0.2"]);
        for q in [
            "shop.test",
            "api.shop.localhost",
            "api.docker.internal",
            // A wildcard below a label's name, too.
            "www.shop.test",
        ] {
            assert_eq!(t.lookup(q, QType::A), web_at, "{q}");
        }
        assert_eq!(
            t.lookup("mine.dev.example.org", QType::A),
            addrs(&["172.18.0.3"])
        );
        assert_eq!(t.lookup("shop.test", QType::Soa), Answer::Soa);
        assert_eq!(t.apex("www.shop.test"), Some("shop.test"));
        assert_eq!(t.lookup("x.example.com", QType::A), Answer::Refused);
        assert_eq!(t.lookup("test", QType::A), Answer::Refused);
        assert_eq!(t.lookup("other.test", QType::A), Answer::Refused);
        // Each label domain outside ours is a zone of its own (a resolver
        // file); the reverse zone follows.
        assert_eq!(
            t.other_zones(),
            [
                "api.shop.localhost",
                "mine.dev.example.org",
                "shop.test",
                "18.172.in-addr.arpa"
            ]
        );
        let refused: Vec<&str> = t.refused().map(|(n, _)| n).collect();
        assert_eq!(refused, ["bad_name.test", "x.example.com"]);
        assert!(t.refused().any(|(n, w)| n == "x.example.com"
            && w.starts_with("web: ")
            && w.contains("extra_domains")));
        // Without the configuration's word, the same label is refused.
        let t = Table::build(
            &domain(),
            &[c(
                "o",
                &[(DOMAINS_LABEL, "mine.dev.example.org")],
                &["172.18.0.3"],
            )],
            &routed(&["172.18.0.0/16"]),
        );
        assert_eq!(t.lookup("mine.dev.example.org", QType::A), Answer::Refused);
        assert_eq!(t.refused().count(), 1);
    }

    #[test]
    fn which_label_domains_are_allowed() {
        let ours = domain();
        let extra: Vec<Domain> = vec!["corp.example".parse().unwrap()];
        for (raw, want) in [
            ("shop.test", Ok("shop.test")),
            ("A.Shop.Test.", Ok("a.shop.test")),
            ("x.localhost", Ok("x.localhost")),
            ("x.internal", Ok("x.internal")),
            ("printer.local", Ok("printer.local")),
            ("web.docker.internal", Ok("web.docker.internal")),
            ("corp.example", Ok("corp.example")),
            ("a.corp.example", Ok("a.corp.example")),
            ("test", Err("outside")),
            ("notcorp.example", Err("outside")),
            ("example.com", Err("outside")),
            ("docker.internal", Err("own domain")),
            ("2.0.18.172.in-addr.arpa", Err("reverse")),
            ("a..test", Err("not a label")),
            ("a_b.test", Err("not a label")),
        ] {
            let got = label_domain(raw, &ours, &extra);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(w), "{raw}"),
                Err(w) => assert!(got.as_ref().is_err_and(|e| e.contains(w)), "{raw}: {got:?}"),
            }
        }
        let long = format!("{}.test", vec!["x".repeat(63); 4].join("."));
        assert!(label_domain(&long, &ours, &extra)
            .unwrap_err()
            .contains("longer"));
    }

    #[test]
    fn reverse_zones_of_subnets() {
        let z = |n: &str| reverse_zones(&n.parse().unwrap());
        assert_eq!(z("172.17.0.0/16"), ["17.172.in-addr.arpa"]);
        assert_eq!(z("10.89.0.0/24"), ["0.89.10.in-addr.arpa"]);
        assert_eq!(z("10.0.0.0/8"), ["10.in-addr.arpa"]);
        assert_eq!(z("192.168.1.7/32"), ["7.1.168.192.in-addr.arpa"]);
        // Between octets: one zone per cut below, up to 16.
        assert_eq!(
            z("172.18.16.0/22"),
            [
                "16.18.172.in-addr.arpa",
                "17.18.172.in-addr.arpa",
                "18.18.172.in-addr.arpa",
                "19.18.172.in-addr.arpa"
            ]
        );
        assert_eq!(z("172.18.16.0/20").len(), 16);
        // More than that: the zone above, whole.
        assert_eq!(z("172.18.128.0/17"), ["18.172.in-addr.arpa"]);
        assert_eq!(z("172.16.0.0/12").len(), 16);
        assert_eq!(z("172.0.0.0/11"), ["172.in-addr.arpa"]);
        assert!(z("0.0.0.0/0").is_empty());
        assert!(z("0.0.0.0/3").is_empty());
        assert_eq!(
            z("fd00:18::/64"),
            ["0.0.0.0.0.0.0.0.8.1.0.0.0.0.d.f.ip6.arpa"]
        );
        assert_eq!(
            z("fd00:18::/63"),
            [
                "0.0.0.0.0.0.0.0.8.1.0.0.0.0.d.f.ip6.arpa",
                "1.0.0.0.0.0.0.0.8.1.0.0.0.0.d.f.ip6.arpa"
            ]
        );
        assert_eq!(
            reverse_name("fd00:18::2".parse().unwrap()),
            "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.1.0.0.0.0.d.f.ip6.arpa"
        );
        assert_eq!(
            reverse_name("172.18.0.2".parse().unwrap()),
            "2.0.18.172.in-addr.arpa"
        );
    }

    #[test]
    fn pointers_name_the_addresses_answered_in_the_routed_subnets() {
        let t = table();
        let ptr = |q: &str| t.lookup(q, QType::Ptr);
        let names = |n: &str| Answer::Names(vec![n.into()]);
        assert_eq!(ptr("2.0.18.172.in-addr.arpa"), names("web.docker.internal"));
        assert_eq!(
            ptr("2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.1.0.0.0.0.d.f.ip6.arpa."),
            names("web.docker.internal")
        );
        // A Compose replica answers by its container's name.
        assert_eq!(
            ptr("3.0.19.172.in-addr.arpa"),
            names("shop-api-1.docker.internal")
        );
        // Underscores: the name as it was given.
        assert_eq!(
            ptr("7.0.18.172.in-addr.arpa"),
            names("my_app.docker.internal")
        );
        // In a routed subnet but no container: no such name; the names
        // between an address and its zone exist, with nothing of their own.
        assert_eq!(ptr("9.0.18.172.in-addr.arpa"), Answer::NxDomain);
        assert_eq!(ptr("0.18.172.in-addr.arpa"), Answer::NoData);
        assert_eq!(ptr("18.172.in-addr.arpa"), Answer::NoData);
        assert_eq!(t.lookup("18.172.in-addr.arpa", QType::Soa), Answer::Soa);
        assert_eq!(
            t.lookup("2.0.18.172.in-addr.arpa", QType::A),
            Answer::NoData
        );
        // Outside the routed subnets: not ours to answer.
        assert_eq!(ptr("9.2.0.192.in-addr.arpa"), Answer::Refused);
        assert_eq!(ptr("in-addr.arpa"), Answer::Refused);
        // The forward names have no PTR of their own.
        assert_eq!(t.lookup("web.docker.internal", QType::Ptr), Answer::NoData);
        // Every pointer's name answers the address it came from.
        let mut n = 0;
        for (r, name) in t.pointers() {
            let Answer::Addresses(a) = t.lookup(name, QType::Any) else {
                panic!("{name}: no addresses");
            };
            assert!(
                a.iter().any(|a| reverse_name(*a) == r),
                "{r} -> {name}: {a:?}"
            );
            n += 1;
        }
        assert_eq!(n, 6);
        // Only the subnets given for reverse zones get them.
        let t = Table::build_with(
            &domain(),
            &[c("web", &[], &["172.18.0.2", "172.19.0.2"])],
            &routed(&["172.18.0.0/16", "172.19.0.0/16"]),
            &Options {
                reverse: Some(routed(&["172.18.0.0/16"])),
                ..Default::default()
            },
        );
        assert_eq!(t.other_zones(), ["18.172.in-addr.arpa"]);
        assert_eq!(
            t.lookup("2.0.19.172.in-addr.arpa", QType::Ptr),
            Answer::Refused
        );
    }
}

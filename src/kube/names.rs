//! Which cluster answers a name: the table the name server consults before
//! its own (`dns::server`). A cluster's domain (`cluster.local` unless the
//! kubelet says otherwise) goes to that cluster's DNS Service through the
//! tunnel; with two clusters of one domain, one owns it (the configuration's
//! `[kubernetes] cluster_local`, else the first by name) and every cluster
//! also answers under `<cluster>.kube.<our domain>`:
//! `sampleservice.default.svc.dev.kube.docker.internal` is asked of `dev`
//! as `sampleservice.default.svc.cluster.local`, and its answer carries the
//! name it was asked by.

use std::net::SocketAddr;

use super::{Cluster, ClusterId};

/// The DNS port of a cluster's DNS Service.
pub const DNS_PORT: u16 = 53;
/// The label under our domain that holds every cluster's alias zone.
pub const ALIAS_LABEL: &str = "kube";

/// Whether `s` is a domain of DNS labels (the cluster domain, as read).
pub fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// One zone forwarded to one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub cluster: ClusterId,
    /// The zone as asked (lower case, no trailing dot).
    pub zone: String,
    /// The cluster's domain, what the zone stands for there.
    pub domain: String,
    pub servers: Vec<SocketAddr>,
}

/// A question for a cluster: whom to ask, under what name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub servers: Vec<SocketAddr>,
    /// The name asked of the cluster.
    pub name: String,
    /// Replace this suffix of every name in the answer with `asked_zone`.
    pub cluster_zone: String,
    pub asked_zone: String,
}

/// The forwarded zones, longest first so that an alias zone under our own
/// domain is matched before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwards {
    zones: Vec<Forward>,
}

/// What [`Forwards::build`] made, and the clusters that do not own the
/// domain they share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    pub forwards: Forwards,
    /// `(domain, owner, others)` for every domain more than one cluster has.
    pub shared: Vec<(String, ClusterId, Vec<ClusterId>)>,
}

impl Forwards {
    /// From the clusters that have a DNS Service; `owner` is the
    /// configuration's choice for a shared domain (a cluster's name), `ours`
    /// netconnect's own domain (`docker.internal`).
    pub fn build(clusters: &[&Cluster], owner: Option<&str>, ours: &str) -> Built {
        let mut zones = Vec::new();
        let mut shared = Vec::new();
        let with_dns: Vec<&&Cluster> = clusters.iter().filter(|c| !c.dns.is_empty()).collect();
        let servers = |c: &Cluster| -> Vec<SocketAddr> {
            c.dns
                .iter()
                .map(|ip| SocketAddr::new(*ip, DNS_PORT))
                .collect()
        };
        let mut domains: Vec<&str> = with_dns.iter().map(|c| c.domain.as_str()).collect();
        domains.sort();
        domains.dedup();
        for d in domains {
            let mut of: Vec<&Cluster> = with_dns
                .iter()
                .filter(|c| c.domain == d)
                .map(|c| **c)
                .collect();
            of.sort_by(|a, b| a.id.cmp(&b.id));
            let chosen = owner
                .and_then(|o| of.iter().position(|c| c.id.name == o))
                .unwrap_or(0);
            let first = of.remove(chosen);
            if !of.is_empty() {
                shared.push((
                    d.to_owned(),
                    first.id.clone(),
                    of.iter().map(|c| c.id.clone()).collect(),
                ));
            }
            zones.push(Forward {
                cluster: first.id.clone(),
                zone: d.to_owned(),
                domain: d.to_owned(),
                servers: servers(first),
            });
        }
        for c in &with_dns {
            zones.push(Forward {
                cluster: c.id.clone(),
                zone: alias_zone(&c.id, ours),
                domain: c.domain.clone(),
                servers: servers(c),
            });
        }
        // Two clusters of one name (KinD's and k3d's `dev`): the first keeps
        // the alias.
        let mut seen = std::collections::BTreeSet::new();
        zones.retain(|z| seen.insert(z.zone.clone()));
        zones.sort_by(|a, b| b.zone.len().cmp(&a.zone.len()).then(a.zone.cmp(&b.zone)));
        Built {
            forwards: Forwards { zones },
            shared,
        }
    }

    /// Zones as given (tests: a server on a port of their own).
    pub fn from_zones(mut zones: Vec<Forward>) -> Forwards {
        zones.sort_by(|a, b| b.zone.len().cmp(&a.zone.len()).then(a.zone.cmp(&b.zone)));
        Forwards { zones }
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    pub fn zones(&self) -> &[Forward] {
        &self.zones
    }

    /// The cluster domains, for the resolver (the alias zones are under our
    /// own domain, which it already sends here).
    pub fn domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .zones
            .iter()
            .filter(|z| z.zone == z.domain)
            .map(|z| z.zone.clone())
            .collect();
        d.sort();
        d.dedup();
        d
    }

    /// Where `qname` goes, if a cluster answers it.
    pub fn route(&self, qname: &str) -> Option<Ask> {
        let q = qname.trim_end_matches('.').to_ascii_lowercase();
        let z = self.zones.iter().find(|z| in_zone(&q, &z.zone))?;
        let head = &q[..q.len() - z.zone.len()];
        Some(Ask {
            servers: z.servers.clone(),
            name: format!("{head}{}", z.domain),
            cluster_zone: z.domain.clone(),
            asked_zone: z.zone.clone(),
        })
    }
}

/// `<cluster>.kube.<ours>`.
pub fn alias_zone(id: &ClusterId, ours: &str) -> String {
    format!(
        "{}.{ALIAS_LABEL}.{}",
        id.name.to_ascii_lowercase(),
        ours.trim_end_matches('.')
    )
}

fn in_zone(q: &str, zone: &str) -> bool {
    q == zone || q.strip_suffix(zone).is_some_and(|h| h.ends_with('.'))
}

impl Ask {
    /// A name in the cluster's answer, as the asker knows it.
    pub fn rename(&self, name: &str) -> Option<String> {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        if self.cluster_zone == self.asked_zone || !in_zone(&n, &self.cluster_zone) {
            return None;
        }
        let head = &n[..n.len() - self.cluster_zone.len()];
        Some(format!("{head}{}", self.asked_zone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::{Cluster, Flavor};

    fn cluster(flavor: Flavor, name: &str, domain: &str, dns: &str) -> Cluster {
        Cluster {
            id: ClusterId {
                flavor,
                name: name.into(),
            },
            nodes: vec![],
            services: vec!["10.96.0.0/16".parse().unwrap()],
            pods: vec![],
            dns: vec![dns.parse().unwrap()],
            domain: domain.into(),
        }
    }

    #[test]
    fn the_first_cluster_owns_a_shared_domain_unless_the_file_names_another() {
        let a = cluster(Flavor::Kind, "alpha", "cluster.local", "10.96.0.10");
        let b = cluster(Flavor::Kind, "beta", "cluster.local", "10.97.0.10");
        let built = Forwards::build(&[&b, &a], None, "docker.internal");
        let ask = built
            .forwards
            .route("sampleservice.default.svc.cluster.local.")
            .unwrap();
        assert_eq!(ask.servers, vec!["10.96.0.10:53".parse().unwrap()]);
        assert_eq!(ask.name, "sampleservice.default.svc.cluster.local");
        assert_eq!(ask.rename("sampleservice.default.svc.cluster.local."), None);
        assert_eq!(built.shared.len(), 1);
        assert_eq!(built.shared[0].1.name, "alpha");
        assert_eq!(built.shared[0].2[0].name, "beta");

        let built = Forwards::build(&[&a, &b], Some("beta"), "docker.internal");
        let ask = built.forwards.route("x.svc.cluster.local").unwrap();
        assert_eq!(ask.servers, vec!["10.97.0.10:53".parse().unwrap()]);
        assert_eq!(built.forwards.domains(), vec!["cluster.local".to_owned()]);
    }

    #[test]
    fn each_cluster_answers_under_its_alias_zone_with_the_name_it_was_asked_by() {
        let a = cluster(Flavor::Kind, "alpha", "cluster.local", "10.96.0.10");
        let b = cluster(Flavor::K3d, "beta", "corp.internal", "10.43.0.10");
        let f = Forwards::build(&[&a, &b], None, "docker.internal").forwards;
        let ask = f
            .route("Web.Default.svc.beta.kube.docker.internal.")
            .unwrap();
        assert_eq!(ask.servers, vec!["10.43.0.10:53".parse().unwrap()]);
        assert_eq!(ask.name, "web.default.svc.corp.internal");
        assert_eq!(
            ask.rename("web.default.svc.corp.internal.").as_deref(),
            Some("web.default.svc.beta.kube.docker.internal")
        );
        // A CNAME target elsewhere stays as it is.
        assert_eq!(ask.rename("example.com."), None);
        // Each domain goes to its own cluster; ours and others to no one.
        assert_eq!(
            f.route("kubernetes.default.svc.corp.internal")
                .unwrap()
                .servers,
            ask.servers
        );
        assert!(f.route("web.docker.internal").is_none());
        assert!(f.route("kube.docker.internal").is_none());
        assert!(f.route("evilcluster.local").is_none());
        assert!(f.route("example.com").is_none());
        assert_eq!(f.domains(), vec!["cluster.local", "corp.internal"]);
    }

    #[test]
    fn a_cluster_without_a_dns_service_gets_no_zone() {
        let mut a = cluster(Flavor::Kind, "alpha", "cluster.local", "10.96.0.10");
        a.dns.clear();
        let f = Forwards::build(&[&a], None, "docker.internal").forwards;
        assert!(f.is_empty());
        assert!(f.route("x.svc.cluster.local").is_none());
    }

    #[test]
    fn domains_are_dns_labels() {
        assert!(is_domain("cluster.local"));
        assert!(is_domain("k8s-1.corp"));
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a_b.local",
            "a b",
            "x.",
            &"a".repeat(64),
        ] {
            assert!(!is_domain(bad), "{bad:?}");
        }
    }
}

//! The clusters `up` follows: which to read, what was read, and the routes
//! and names that follow from them. Pure state; the session does the
//! reading (two execs in a control-plane node, [`read`]) when this says
//! so, and applies [`Clusters::plan`].
//!
//! When a cluster is read: when it first appears, when its node
//! containers change (one added, removed, readdressed), and while it is
//! incomplete (made, or a worker joining: a node without its pod range
//! yet) at each command that ends in one of its nodes, since KinD and k3d
//! make a cluster by running kubeadm and kubectl there. Our own commands'
//! ends are not counted, or a cluster still being made would be read in a
//! loop. No timer: an incomplete cluster nobody works on stays as read.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use ipnet::IpNet;

use super::ports::EngineApi;
use crate::control::snapshot::ClusterState;
use crate::docker::ContainerInfo;
use crate::kube::{self, Cluster, ClusterId, NodeContainer};

/// How many of our exec ids are remembered until their event comes.
const OWN_EXECS: usize = 64;

#[derive(Debug, Default)]
pub struct Clusters {
    pub config: kube::Config,
    known: BTreeMap<ClusterId, Known>,
    own_execs: VecDeque<String>,
}

#[derive(Debug, Clone)]
struct Known {
    nodes: Vec<NodeContainer>,
    read: Option<Cluster>,
    error: Option<String>,
}

impl Known {
    fn complete(&self) -> bool {
        self.read.as_ref().is_some_and(|c| c.complete(&self.nodes))
    }
}

impl Clusters {
    pub fn new(config: kube::Config) -> Clusters {
        Clusters {
            config,
            ..Default::default()
        }
    }

    /// Whether the containers must be followed for clusters' sake.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The clusters the containers show now; returns those to read. A
    /// cluster whose containers are gone is forgotten.
    pub fn observe(&mut self, containers: &[ContainerInfo]) -> Vec<ClusterId> {
        let now = if self.config.enabled {
            kube::nodes(containers, &self.config.exclude)
        } else {
            BTreeMap::new()
        };
        self.known.retain(|id, _| now.contains_key(id));
        let mut read = Vec::new();
        for (id, nodes) in now {
            match self.known.get_mut(&id) {
                Some(k) if k.nodes == nodes => {}
                Some(k) => {
                    k.nodes = nodes;
                    read.push(id);
                }
                None => {
                    self.known.insert(
                        id.clone(),
                        Known {
                            nodes,
                            read: None,
                            error: None,
                        },
                    );
                    read.push(id);
                }
            }
        }
        read
    }

    /// A command ended in container `container`: the cluster to read
    /// again, if it is one of an incomplete cluster's nodes and the
    /// command was not ours.
    pub fn exec_died(&mut self, container: &str, exec_id: &str) -> Option<ClusterId> {
        if let Some(i) = self.own_execs.iter().position(|e| e == exec_id) {
            self.own_execs.remove(i);
            return None;
        }
        self.known
            .iter()
            .find(|(_, k)| !k.complete() && k.nodes.iter().any(|n| n.id == container))
            .map(|(id, _)| id.clone())
    }

    /// An exec of ours, whose end is not a reason to read.
    pub fn own_exec(&mut self, exec_id: String) {
        if self.own_execs.len() == OWN_EXECS {
            self.own_execs.pop_front();
        }
        self.own_execs.push_back(exec_id);
    }

    /// The node to ask, for cluster `id`.
    pub fn control_plane(&self, id: &ClusterId) -> Option<NodeContainer> {
        self.known
            .get(id)
            .and_then(|k| kube::control_plane(&k.nodes))
            .cloned()
    }

    /// What reading cluster `id` gave.
    pub fn record(&mut self, id: &ClusterId, read: Result<Cluster, String>) {
        let Some(k) = self.known.get_mut(id) else {
            return;
        };
        match read {
            Ok(c) => {
                k.read = Some(c);
                k.error = None;
            }
            // What was read before still holds for the nodes it knew.
            Err(e) => k.error = Some(e),
        }
    }

    /// The routes of every cluster read, together; a range two clusters
    /// both claim goes to the first.
    pub fn plan(&self) -> kube::Plan {
        let mut out = kube::Plan::default();
        for k in self.known.values() {
            let Some(c) = &k.read else { continue };
            let p = kube::plan(c, &k.nodes);
            for (net, gw) in p.vm {
                if out.mac.insert(net) {
                    out.vm.push((net, gw));
                }
            }
        }
        out.vm.sort();
        out
    }

    /// The clusters read, for names.
    pub fn read(&self) -> Vec<&Cluster> {
        self.known
            .values()
            .filter_map(|k| k.read.as_ref())
            .collect()
    }

    /// The cluster that a Mac-side route belongs to, for the log.
    pub fn owner_of(&self, net: &IpNet) -> Option<&ClusterId> {
        self.known.iter().find_map(|(id, k)| {
            let c = k.read.as_ref()?;
            kube::plan(c, &k.nodes).mac.contains(net).then_some(id)
        })
    }

    /// The status's lines, one per cluster; `routed`: the Mac's routes in
    /// place.
    pub fn states(&self, routed: &BTreeSet<IpNet>) -> Vec<ClusterState> {
        let strings = |v: &[IpNet]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        self.known
            .iter()
            .map(|(id, k)| {
                let plan = k.read.as_ref().map(|c| kube::plan(c, &k.nodes));
                let mac: Vec<IpNet> = plan
                    .map(|p| p.mac.into_iter().collect())
                    .unwrap_or_default();
                let (in_place, missing): (Vec<IpNet>, Vec<IpNet>) =
                    mac.into_iter().partition(|n| routed.contains(n));
                let state = match (&k.read, &k.error) {
                    (None, None) => "reading",
                    (None, Some(_)) => "unreadable",
                    (Some(_), _) if !k.complete() => "incomplete",
                    _ => "ready",
                };
                ClusterState {
                    name: id.name.clone(),
                    flavor: id.flavor.as_str().into(),
                    state: state.into(),
                    nodes: k.nodes.iter().map(|n| n.name.clone()).collect(),
                    pods: k
                        .read
                        .as_ref()
                        .map(|c| {
                            if c.pods.is_empty() {
                                let mut per_node: Vec<IpNet> =
                                    c.nodes.iter().flat_map(|n| n.pod_cidrs.clone()).collect();
                                per_node.sort();
                                strings(&per_node)
                            } else {
                                strings(&c.pods)
                            }
                        })
                        .unwrap_or_default(),
                    services: k
                        .read
                        .as_ref()
                        .map(|c| strings(&c.services))
                        .unwrap_or_default(),
                    dns: k
                        .read
                        .as_ref()
                        .map(|c| c.dns.iter().map(IpAddr::to_string).collect())
                        .unwrap_or_default(),
                    domain: k.read.as_ref().map(|c| c.domain.clone()),
                    zones: Vec::new(),
                    routed: strings(&in_place),
                    not_routed: strings(&missing),
                    error: k.error.clone(),
                }
            })
            .collect()
    }
}

/// Read cluster `id` in its control-plane node `cp`: the objects, then the
/// flags. Our exec ids are handed to `own` as they come.
pub async fn read(
    engine: &impl EngineApi,
    id: &ClusterId,
    cp: &NodeContainer,
    mut own: impl FnMut(String),
) -> Result<Cluster, String> {
    let commands = id.flavor.commands();
    let objects = engine
        .exec(&cp.id, &commands.objects)
        .await
        .map_err(|e| format!("running kubectl in {}: {e}", cp.name))?;
    own(objects.exec_id.clone());
    if objects.exit_code != Some(0) {
        let why = objects
            .stderr
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_owned();
        return Err(format!(
            "kubectl in {} exited with {}: {why}",
            cp.name,
            objects
                .exit_code
                .map_or_else(|| "no status".into(), |c| c.to_string())
        ));
    }
    let parsed =
        kube::parse_objects(&objects.stdout).map_err(|e| format!("kubectl in {}: {e}", cp.name))?;
    // A file missing makes `cat` fail after the others: its status is not
    // looked at.
    let flags = engine
        .exec(&cp.id, &commands.flags)
        .await
        .map_err(|e| format!("reading {}'s settings: {e}", cp.name))?;
    own(flags.exec_id.clone());
    Ok(Cluster::new(
        id.clone(),
        parsed,
        kube::parse_flags(&flags.stdout),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cluster: &str, role: &str, ip: &str) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}"),
            name: name.into(),
            labels: [
                ("io.x-k8s.kind.cluster", cluster),
                ("io.x-k8s.kind.role", role),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            addresses: vec![ip.parse().unwrap()],
            ..Default::default()
        }
    }

    fn article() -> Vec<ContainerInfo> {
        vec![
            node("kind-control-plane", "kind", "control-plane", "172.18.0.3"),
            node("kind-worker", "kind", "worker", "172.18.0.2"),
        ]
    }

    fn read_article(c: &mut Clusters, id: &ClusterId) {
        let objects = kube::parse_objects(kube::tests::KIND_OBJECTS).unwrap();
        let flags = kube::parse_flags(kube::tests::KIND_FLAGS);
        c.record(id, Ok(Cluster::new(id.clone(), objects, flags)));
    }

    #[test]
    fn read_when_found_or_changed_not_when_the_same() {
        let mut c = Clusters::new(kube::Config::default());
        let ids = c.observe(&article());
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].name, "kind");
        assert_eq!(
            c.control_plane(&ids[0]).map(|n| n.name),
            Some("kind-control-plane".into())
        );
        assert_eq!(c.states(&BTreeSet::new())[0].state, "reading");
        read_article(&mut c, &ids[0]);
        assert!(c.observe(&article()).is_empty(), "nothing changed");
        let mut moved = article();
        moved[1].addresses = vec!["172.18.0.9".parse().unwrap()];
        assert_eq!(c.observe(&moved), ids, "a node readdressed");
        assert!(c.observe(&[]).is_empty());
        assert!(c.plan().mac.is_empty(), "a deleted cluster keeps routes");
        assert!(c.states(&BTreeSet::new()).is_empty());
    }

    #[test]
    fn off_or_excluded_means_no_cluster() {
        let off = kube::Config {
            enabled: false,
            ..Default::default()
        };
        assert!(Clusters::new(off).observe(&article()).is_empty());
        let excluded = kube::Config {
            exclude: vec!["kind".into()],
            ..Default::default()
        };
        assert!(Clusters::new(excluded).observe(&article()).is_empty());
    }

    #[test]
    fn only_someone_else_s_command_in_an_incomplete_cluster_reads_it_again() {
        let mut c = Clusters::new(kube::Config::default());
        let mut nodes = article();
        nodes.push(node("kind-worker2", "kind", "worker", "172.18.0.4"));
        let ids = c.observe(&nodes);
        read_article(&mut c, &ids[0]);
        assert_eq!(c.states(&BTreeSet::new())[0].state, "incomplete");
        c.own_exec("ours".into());
        assert_eq!(c.exec_died("id-kind-worker2", "ours"), None);
        assert_eq!(
            c.exec_died("id-kind-worker2", "kubeadm"),
            Some(ids[0].clone())
        );
        assert_eq!(c.exec_died("id-elsewhere", "kubeadm"), None);
        // Complete: nobody's command is a reason.
        let ids = c.observe(&article());
        read_article(&mut c, &ids[0]);
        assert_eq!(c.states(&BTreeSet::new())[0].state, "ready");
        assert_eq!(c.exec_died("id-kind-worker", "kubeadm"), None);
        // Our ids are remembered up to a bound, the oldest forgotten.
        for i in 0..=OWN_EXECS {
            c.own_exec(format!("e{i}"));
        }
        assert_eq!(c.own_execs.len(), OWN_EXECS);
        assert_eq!(c.own_execs.front().map(String::as_str), Some("e1"));
    }

    #[test]
    fn a_failed_read_keeps_what_was_read_and_says_why() {
        let mut c = Clusters::new(kube::Config::default());
        let ids = c.observe(&article());
        read_article(&mut c, &ids[0]);
        let routes = c.plan();
        assert_eq!(routes.mac.len(), 3);
        c.record(
            &ids[0],
            Err("kubectl in kind-control-plane exited with 1: x".into()),
        );
        assert_eq!(c.plan(), routes);
        let s = &c.states(&routes.mac)[0];
        assert_eq!(s.state, "ready");
        assert_eq!(s.routed.len(), 3);
        assert!(s.not_routed.is_empty());
        assert_eq!(
            s.error.as_deref(),
            Some("kubectl in kind-control-plane exited with 1: x")
        );
        // Never read: unreadable.
        let mut fresh = Clusters::new(kube::Config::default());
        let ids = fresh.observe(&article());
        fresh.record(&ids[0], Err("no kubectl".into()));
        assert_eq!(fresh.states(&BTreeSet::new())[0].state, "unreadable");
    }
}

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

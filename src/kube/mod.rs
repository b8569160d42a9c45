//! Kubernetes clusters that run in containers (KinD, k3d), reached from the
//! Mac as from one of their nodes: pod addresses, ClusterIPs and the
//! cluster's DNS names.
//!
//! A cluster is found from its node containers' labels ([`nodes`]); what
//! it knows (nodes and their pod CIDRs, the service range, the DNS
//! Service, the cluster domain) is read through the Docker API only, by
//! two commands exec'd in a control-plane node as a user could with
//! `docker exec` ([`Flavor::commands`]), and parsed here by pure
//! functions ([`parse_objects`], [`parse_flags`]). [`plan`] turns that
//! and the node containers present into routes: on the Mac through the
//! tunnel, in the VM via the node that holds each pod range. The session
//! (`up::session`) owns when to read and what to apply.

pub mod names;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::docker::ContainerInfo;

/// The cluster domain when nothing says otherwise (kubeadm's, k3s's).
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// The `[kubernetes]` table of the configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Find clusters and route and name them.
    pub enabled: bool,
    /// Clusters (by name, as `kind get clusters` and `k3d cluster list`
    /// print them) left alone.
    pub exclude: Vec<String>,
    /// Which cluster answers under `cluster.local` (or another domain two
    /// clusters share); default: the first by name.
    pub cluster_local: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            exclude: Vec::new(),
            cluster_local: None,
        }
    }
}

/// Which tool made the cluster: it decides the labels, the node roles and
/// where the cluster keeps what we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flavor {
    Kind,
    K3d,
}

impl Flavor {
    pub const ALL: [Flavor; 2] = [Flavor::Kind, Flavor::K3d];

    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Kind => "kind",
            Flavor::K3d => "k3d",
        }
    }

    /// The label whose value names the cluster a node container is of.
    pub fn cluster_label(self) -> &'static str {
        match self {
            Flavor::Kind => "io.x-k8s.kind.cluster",
            Flavor::K3d => "k3d.cluster",
        }
    }

    /// The label that says what the container is in its cluster.
    pub fn role_label(self) -> &'static str {
        match self {
            Flavor::Kind => "io.x-k8s.kind.role",
            Flavor::K3d => "k3d.role",
        }
    }

    /// What a role label value means. KinD's `external-load-balancer` and
    /// k3d's `loadbalancer`/`registry` are containers of the cluster but
    /// not Kubernetes nodes.
    pub fn role(self, value: &str) -> Option<Role> {
        match (self, value) {
            (Flavor::Kind, "control-plane") | (Flavor::K3d, "server") => Some(Role::ControlPlane),
            (Flavor::Kind, "worker") | (Flavor::K3d, "agent") => Some(Role::Worker),
            _ => None,
        }
    }

    /// The two commands run in a control-plane node: the cluster's objects
    /// as the API server has them, and the files whose flags say the
    /// service range, the pod range and the cluster domain. A file that is
    /// not there makes `cat` fail after printing the others, which is why
    /// its exit status is not looked at.
    pub fn commands(self) -> Commands {
        let kubectl = |config: &'static str| {
            vec![
                "kubectl",
                "--kubeconfig",
                config,
                "get",
                "nodes,services",
                "--all-namespaces",
                "--output",
                "json",
            ]
        };
        match self {
            // kubeadm's admin credentials, kept in every KinD node image.
            Flavor::Kind => Commands {
                objects: kubectl("/etc/kubernetes/admin.conf"),
                flags: vec![
                    "cat",
                    "/etc/kubernetes/manifests/kube-apiserver.yaml",
                    "/etc/kubernetes/manifests/kube-controller-manager.yaml",
                    "/var/lib/kubelet/config.yaml",
                ],
            },
            // k3s is one binary (kubectl is a name of it) and takes its
            // settings as arguments (PID 1 is `k3s server ...` in a k3d
            // node) or from its config file.
            Flavor::K3d => Commands {
                objects: kubectl("/etc/rancher/k3s/k3s.yaml"),
                flags: vec!["cat", "/proc/1/cmdline", "/etc/rancher/k3s/config.yaml"],
            },
        }
    }

    /// The service range when no flag names it: each tool's default
    /// (kind's `serviceSubnet`, k3s's `--service-cidr`), if it holds the
    /// `kubernetes` Service's address; else the /16 around that address
    /// (the API server allocates it first in the range, so it is the
    /// range's start or near it).
    pub fn default_services(self, kubernetes: IpAddr) -> IpNet {
        let default: IpNet = match self {
            Flavor::Kind => "10.96.0.0/16",
            Flavor::K3d => "10.43.0.0/16",
        }
        .parse()
        .expect("a valid default");
        if default.contains(&kubernetes) {
            return default;
        }
        let prefix = if kubernetes.is_ipv4() { 16 } else { 112 };
        IpNet::new(kubernetes, prefix).expect("prefix fits").trunc()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    pub objects: Vec<&'static str>,
    pub flags: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    ControlPlane,
    Worker,
}

/// A cluster, as `flavor/name`: KinD and k3d may both have a `dev`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId {
    pub flavor: Flavor,
    pub name: String,
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// A running node container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContainer {
    pub id: String,
    /// The container's name, which both tools also give the node.
    pub name: String,
    pub role: Role,
    pub addresses: Vec<IpAddr>,
}

/// The running node containers of every cluster, each cluster's nodes
/// sorted by name (so the control plane asked is always the same one).
/// `excluded` names clusters the configuration leaves alone.
pub fn nodes(
    containers: &[ContainerInfo],
    excluded: &[String],
) -> BTreeMap<ClusterId, Vec<NodeContainer>> {
    let mut out: BTreeMap<ClusterId, Vec<NodeContainer>> = BTreeMap::new();
    for c in containers {
        for flavor in Flavor::ALL {
            let (Some(cluster), Some(role)) = (
                c.label(flavor.cluster_label()),
                c.label(flavor.role_label()).and_then(|r| flavor.role(r)),
            ) else {
                continue;
            };
            if cluster.is_empty() || excluded.iter().any(|e| e == cluster) {
                continue;
            }
            out.entry(ClusterId {
                flavor,
                name: cluster.to_owned(),
            })
            .or_default()
            .push(NodeContainer {
                id: c.id.clone(),
                name: c.name.clone(),
                role,
                addresses: c.addresses.clone(),
            });
        }
    }
    for nodes in out.values_mut() {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// The node to exec in: the first control plane.
pub fn control_plane(nodes: &[NodeContainer]) -> Option<&NodeContainer> {
    nodes.iter().find(|n| n.role == Role::ControlPlane)
}

/// What the API server said (`kubectl get nodes,services -o json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Objects {
    pub nodes: Vec<Node>,
    /// The `kubernetes` Service's ClusterIPs (default namespace).
    pub kubernetes: Vec<IpAddr>,
    /// The cluster DNS Service's ClusterIPs (`kube-dns` in kube-system,
    /// the name CoreDNS keeps for compatibility).
    pub dns: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub internal_ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not kubectl's JSON: {0}")]
    Json(String),
    #[error("kubectl answered a {0}, not a List")]
    NotAList(String),
}

#[derive(Deserialize)]
struct List {
    kind: String,
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default, rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(default, rename = "podCIDRs")]
    pod_cidrs: Vec<String>,
    #[serde(default, rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    cluster_ips: Vec<String>,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    addresses: Vec<Address>,
}

#[derive(Deserialize)]
struct Address {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    address: String,
}

/// Parse what `kubectl get nodes,services --all-namespaces -o json`
/// printed. Fields that do not parse (a Service with `clusterIP: None`, a
/// node not yet given a pod range) are left out, not errors: the rest of
/// the cluster is still worth reaching.
pub fn parse_objects(json: &str) -> Result<Objects, ParseError> {
    let list: List = serde_json::from_str(json).map_err(|e| ParseError::Json(e.to_string()))?;
    if list.kind != "List" {
        return Err(ParseError::NotAList(list.kind));
    }
    let mut out = Objects::default();
    for item in list.items {
        match item.kind.as_str() {
            "Node" => {
                let mut cidrs = item.spec.pod_cidrs;
                if cidrs.is_empty() {
                    cidrs.extend(item.spec.pod_cidr);
                }
                out.nodes.push(Node {
                    name: item.metadata.name,
                    internal_ips: item
                        .status
                        .addresses
                        .iter()
                        .filter(|a| a.kind == "InternalIP")
                        .filter_map(|a| a.address.parse().ok())
                        .collect(),
                    pod_cidrs: cidrs
                        .iter()
                        .filter_map(|c| c.parse::<IpNet>().ok())
                        .map(|n| n.trunc())
                        .collect(),
                });
            }
            "Service" => {
                let mut ips = item.spec.cluster_ips;
                if ips.is_empty() {
                    ips.extend(item.spec.cluster_ip);
                }
                let ips: Vec<IpAddr> = ips.iter().filter_map(|i| i.parse().ok()).collect();
                match (
                    item.metadata.namespace.as_str(),
                    item.metadata.name.as_str(),
                ) {
                    ("default", "kubernetes") => out.kubernetes = ips,
                    ("kube-system", "kube-dns") => out.dns = ips,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What the cluster's own settings say, where they say it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub services: Vec<IpNet>,
    pub pods: Vec<IpNet>,
    pub domain: Option<String>,
}

/// Read the settings out of the files [`Flavor::commands`] prints: a
/// static pod manifest's `- --service-cluster-ip-range=...` and
/// `- --cluster-cidr=...`, the kubelet's `clusterDomain: ...`, k3s's
/// `--service-cidr=...`/`--cluster-domain ...` as PID 1's NUL-separated
/// arguments, or its config file's `service-cidr: ...`. A value may list
/// two ranges (dual stack) separated by a comma.
pub fn parse_flags(text: &str) -> Flags {
    let mut out = Flags::default();
    let tokens: Vec<&str> = text
        .split(|c: char| c == '\0' || c.is_whitespace())
        .map(|t| t.trim_matches(|c| c == '"' || c == '\''))
        .filter(|t| !t.is_empty() && *t != "-")
        .collect();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        // `--key=value`, `--key value`, `key: value`, `key=value`
        let (key, value) = if let Some((k, v)) = t.split_once('=') {
            (k, Some(v))
        } else if let Some(k) = t.strip_suffix(':') {
            (k, tokens.get(i + 1).copied())
        } else if t.starts_with("--") {
            (t, tokens.get(i + 1).copied())
        } else {
            (t, None)
        };
        let key = key.trim_start_matches('-');
        if let Some(v) = value.map(|v| v.trim_matches(|c| c == '"' || c == '\'')) {
            let nets = || {
                v.split(',')
                    .filter_map(|n| n.trim().parse::<IpNet>().ok())
                    .map(|n| n.trunc())
            };
            match key {
                "service-cluster-ip-range" | "service-cidr" if out.services.is_empty() => {
                    out.services.extend(nets())
                }
                "cluster-cidr" if out.pods.is_empty() => out.pods.extend(nets()),
                "clusterDomain" | "cluster-domain" => {
                    let d = v.trim_end_matches('.').to_ascii_lowercase();
                    if out.domain.is_none() && crate::kube::names::is_domain(&d) {
                        out.domain = Some(d);
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out
}

/// A cluster as read: the objects and flags, made into what the routes and
/// names need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub id: ClusterId,
    pub nodes: Vec<Node>,
    pub services: Vec<IpNet>,
    /// The cluster's pod range as its controller manager has it, for the
    /// status; the routes are per node.
    pub pods: Vec<IpNet>,
    pub dns: Vec<IpAddr>,
    pub domain: String,
}

impl Cluster {
    pub fn new(id: ClusterId, objects: Objects, flags: Flags) -> Cluster {
        let services = if flags.services.is_empty() {
            objects
                .kubernetes
                .iter()
                .map(|ip| id.flavor.default_services(*ip))
                .collect()
        } else {
            flags.services
        };
        Cluster {
            services,
            pods: flags.pods,
            dns: objects.dns,
            domain: flags.domain.unwrap_or_else(|| DEFAULT_DOMAIN.to_owned()),
            nodes: objects.nodes,
            id,
        }
    }

    /// Whether every node container present has a node with a pod range:
    /// a cluster still being made (a worker not yet joined) is read again
    /// at its next exec event.
    pub fn complete(&self, containers: &[NodeContainer]) -> bool {
        !self.services.is_empty()
            && containers
                .iter()
                .all(|c| self.node_of(c).is_some_and(|n| !n.pod_cidrs.is_empty()))
    }

    /// The node a container is: by name, which both tools give the node,
    /// else by address.
    pub fn node_of(&self, c: &NodeContainer) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == c.name).or_else(|| {
            self.nodes
                .iter()
                .find(|n| n.internal_ips.iter().any(|ip| c.addresses.contains(ip)))
        })
    }
}

/// The routes a cluster needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Through the tunnel, on the Mac.
    pub mac: BTreeSet<IpNet>,
    /// In the VM: a range via the node container that holds it.
    pub vm: Vec<(IpNet, IpAddr)>,
}

/// Each present node's pod ranges via that node; the service range via
/// the first control plane (kube-proxy there turns a ClusterIP into a pod,
/// as on every node). A node whose container is gone has no route, even
/// while the API server still lists it (KinD leaves a deleted worker's
/// Node object behind). The gateway is the container's address of the
/// range's family, the node's InternalIP where it is one of them.
pub fn plan(cluster: &Cluster, containers: &[NodeContainer]) -> Plan {
    let mut out = Plan::default();
    let via = |c: &NodeContainer, net: &IpNet| -> Option<IpAddr> {
        let same = |ip: &&IpAddr| ip.is_ipv4() == net.addr().is_ipv4();
        let internal = cluster.node_of(c).and_then(|n| {
            n.internal_ips
                .iter()
                .filter(same)
                .find(|ip| c.addresses.contains(ip))
        });
        internal.or_else(|| c.addresses.iter().find(same)).copied()
    };
    for c in containers {
        let Some(node) = cluster.node_of(c) else {
            continue;
        };
        for net in &node.pod_cidrs {
            if let Some(gw) = via(c, net) {
                out.mac.insert(*net);
                out.vm.push((*net, gw));
            }
        }
    }
    if let Some(cp) = control_plane(containers) {
        for net in &cluster.services {
            if let Some(gw) = via(cp, net) {
                out.mac.insert(*net);
                out.vm.push((*net, gw));
            }
        }
    }
    out.vm.sort();
    out.vm.dedup_by(|a, b| a.0 == b.0);
    out
}

#[cfg(test)]
pub(crate) mod tests;

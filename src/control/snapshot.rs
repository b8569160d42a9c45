//! The shape of `netconnect status --json` (and of the control socket's
//! `status` answer). Scripts read it, so it is versioned: [`SCHEMA`] grows
//! only when a field changes meaning or goes away; new fields may appear
//! within a version. Every field is documented in the README.

use serde::{Deserialize, Serialize};

/// Version of the JSON shape below.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Snapshot {
    pub schema: u32,
    /// Whether a daemon answered on the control socket.
    pub running: bool,
    pub pid: u32,
    /// Unix time the daemon started.
    pub started_unix: u64,
    pub control_socket: String,
    /// The configuration file in effect, if one was read.
    pub config_file: Option<String>,
    pub engine: Option<EngineState>,
    pub tunnel: Option<TunnelState>,
    pub helper: HelperState,
    /// One entry per Docker network subnet.
    pub networks: Vec<NetworkRoute>,
    /// Routes from the configuration file.
    pub extra_routes: Vec<ExtraRoute>,
    /// Container names (absent from a daemon older than this field).
    pub dns: Option<DnsState>,
    /// How the VM side reaches this machine, once a helper runs.
    pub vm: Option<VmState>,
    /// Kubernetes clusters in containers (KinD, k3d), one entry each.
    pub clusters: Vec<ClusterState>,
    /// Where the OS's own view disagrees with what `up` asked of it (the
    /// interface, a route, the resolver), one line each; empty when every
    /// effect read back as asked (`crate::readback`).
    pub os_view: Vec<String>,
}

/// A KinD or k3d cluster as `up` read it from its control-plane node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClusterState {
    pub name: String,
    /// `kind` or `k3d`.
    pub flavor: String,
    /// `ready`; `reading` (not read yet); `incomplete` (a node without its
    /// pod range yet: read again when the tool next runs a command in
    /// it); `unreadable` (see `error`).
    pub state: String,
    /// The node containers running.
    pub nodes: Vec<String>,
    /// The pod range(s): the controller manager's, else the nodes'.
    pub pods: Vec<String>,
    pub services: Vec<String>,
    /// The DNS Service's ClusterIP(s).
    pub dns: Vec<String>,
    /// The cluster domain.
    pub domain: Option<String>,
    /// The DNS zones it answers from the Mac: its domain (unless another
    /// cluster of that domain owns it) and `<name>.kube.<dns.domain>`.
    pub zones: Vec<String>,
    /// Its ranges routed through the tunnel, and those not (a conflict).
    pub routed: Vec<String>,
    pub not_routed: Vec<String>,
    /// Why the last read failed.
    pub error: Option<String>,
}

/// The way home the helper found (`crate::helper::endpoint`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct VmState {
    /// `searching` (the helper is trying its candidates), `found`, or
    /// `none` (nothing it tried answered; see `error`).
    pub state: String,
    /// The address the VM sends its handshakes to: `192.168.5.2:51820`.
    pub endpoint: Option<String>,
    /// Where that address came from: `--host-endpoint`, `host-gateway`,
    /// `host.docker.internal`, `host.lima.internal`,
    /// `host.containers.internal`, `host.rancher-desktop.internal` or
    /// `default-gateway`.
    pub endpoint_source: Option<String>,
    /// Every address tried, when none answered, and the fix.
    pub error: Option<String>,
    /// Addresses left out as the VM's own: `172.17.0.1 (host-gateway)`.
    pub rejected: Vec<String>,
}

/// The name server inside `up`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DnsState {
    /// `serving`, `disabled` (`dns.enabled = false`) or `failed` (see
    /// `error`; the tunnel works, names do not).
    pub state: String,
    pub domain: String,
    /// Where it listens, UDP and TCP: `10.33.33.1:53`.
    pub address: String,
    pub error: Option<String>,
    /// How this machine's resolver is pointed at it: the resolver file's
    /// path, or `systemd-resolved (IFACE)`; none if nothing was wired.
    pub resolver: Option<String>,
    /// Why the resolver could not be wired (the server still answers).
    pub resolver_error: Option<String>,
    /// Questions answered since the start.
    pub answered: u64,
    /// Every name served, in name order.
    pub names: Vec<DnsName>,
    /// Names more than one container (or a container and a Compose
    /// service) gave: each answers all their addresses.
    pub conflicts: Vec<DnsConflict>,
    /// The zones answered besides the domain: containers' label domains
    /// (`shop.test`) and the routed networks' reverse zones, each with a
    /// resolver file where there is a folder.
    pub zones: Vec<String>,
    /// Label domains not served, with the container and why.
    pub refused: Vec<DnsRefused>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DnsRefused {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DnsConflict {
    pub name: String,
    pub owners: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DnsName {
    pub name: String,
    pub addresses: Vec<String>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            schema: SCHEMA,
            running: false,
            pid: 0,
            started_unix: 0,
            control_socket: String::new(),
            config_file: None,
            engine: None,
            tunnel: None,
            helper: HelperState::default(),
            networks: Vec::new(),
            extra_routes: Vec::new(),
            dns: None,
            vm: None,
            clusters: Vec::new(),
            os_view: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EngineState {
    /// `unix:///path` or `tcp://host:port`.
    pub host: String,
    pub version: String,
    pub api_version: String,
    /// `docker-desktop`, `colima`, `rancher-desktop`, `podman`, `lima`,
    /// `orbstack` or `dockerd` (`crate::docker::runtime`).
    pub runtime: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TunnelState {
    pub interface: String,
    pub listen_port: u16,
    pub host_address: String,
    pub vm_address: String,
    pub host_address6: String,
    pub vm_address6: String,
    pub host_public_key: String,
    /// The VM peer's key once the helper reported it.
    pub vm_public_key: Option<String>,
    /// The endpoint the VM side was last seen at.
    pub vm_endpoint: Option<String>,
    pub last_handshake_unix: Option<u64>,
    pub last_handshake_age_s: Option<u64>,
    /// WireGuard datagram bytes from and to the VM peer.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets from the VM that this machine's TUN refused (interface down,
    /// a packet the kernel will not take): dropped and counted.
    pub tun_refused: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HelperState {
    /// `running`, `starting` (none yet, or being replaced), `idle` (left
    /// after a quiet spell; traffic starts it again) or `absent`.
    pub state: String,
    pub container: String,
    pub id: Option<String>,
    pub image: String,
    pub vm_interface: String,
}

/// Route state of one subnet.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RouteState {
    /// A route through the tunnel exists.
    Installed,
    /// Overlaps a route the machine already has (see `conflicts_with`).
    Skipped,
    /// Left out by the configuration file's include/exclude patterns.
    Excluded,
    /// Not a network containers can be reached on (host, none, swarm scope).
    NotRoutable,
    /// No daemon runs, or it has not synced yet.
    #[default]
    NotRouted,
}

impl RouteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteState::Installed => "installed",
            RouteState::Skipped => "skipped",
            RouteState::Excluded => "excluded",
            RouteState::NotRoutable => "not-routable",
            RouteState::NotRouted => "not-routed",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NetworkRoute {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub subnet: String,
    pub route: RouteState,
    /// For `skipped`: the route it overlaps, e.g. `172.18.0.0/16 via en0`.
    pub conflicts_with: Option<String>,
    /// For `skipped`: why.
    pub skip_reason: Option<SkipReason>,
}

/// Why a Docker subnet is not routed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// It overlaps a route the machine already has (`conflicts_with`).
    Conflict,
    /// It holds public addresses and the config file does not allow it.
    Public,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ExtraRoute {
    pub subnet: String,
    /// Gateway inside the VM, if the route has one.
    pub via: Option<String>,
    pub route: RouteState,
    pub conflicts_with: Option<String>,
}

// ---------------------------------------------------------------------------
// Filling it: the route state of each subnet, for `up` and `status` alike.
// ---------------------------------------------------------------------------

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::config::NetworkFilter;
use crate::docker::NetworkInfo;
use crate::routes::Skipped;

/// The route state of every subnet of every network, from what the last
/// sync decided.
pub fn route_states(
    networks: &[NetworkInfo],
    filter: &NetworkFilter,
    skipped: &[Skipped],
    routed: &BTreeSet<IpNet>,
) -> Vec<NetworkRoute> {
    let mut out = Vec::new();
    for n in networks {
        for subnet in &n.subnets {
            let conflict = skipped.iter().find(|s| s.subnet == *subnet);
            let route = if !n.is_routable() {
                RouteState::NotRoutable
            } else if !filter.allows(&n.name) {
                RouteState::Excluded
            } else if routed.contains(subnet) {
                RouteState::Installed
            } else if conflict.is_some() {
                RouteState::Skipped
            } else {
                RouteState::NotRouted
            };
            out.push(NetworkRoute {
                name: n.name.clone(),
                id: n.id.clone(),
                driver: n.driver.clone(),
                subnet: subnet.to_string(),
                route,
                conflicts_with: conflict
                    .filter(|_| route == RouteState::Skipped)
                    .and_then(|s| s.conflicts_with())
                    .map(|r| r.to_string()),
                skip_reason: conflict.filter(|_| route == RouteState::Skipped).map(|s| {
                    match s.reason {
                        crate::routes::SkipReason::Conflict(_) => SkipReason::Conflict,
                        crate::routes::SkipReason::Public => SkipReason::Public,
                    }
                }),
            });
        }
    }
    out
}

pub fn extra_states(
    extra: &[crate::config::ExtraRoute],
    skipped: &[Skipped],
    routed: &BTreeSet<IpNet>,
) -> Vec<ExtraRoute> {
    extra
        .iter()
        .map(|r| {
            let subnet = r.subnet();
            let conflict = skipped.iter().find(|s| s.subnet == subnet);
            ExtraRoute {
                subnet: subnet.to_string(),
                via: r.via().map(|v| v.to_string()),
                route: if routed.contains(&subnet) {
                    RouteState::Installed
                } else if conflict.is_some() {
                    RouteState::Skipped
                } else {
                    RouteState::NotRouted
                },
                conflicts_with: conflict
                    .and_then(|s| s.conflicts_with())
                    .map(|r| r.to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
mod route_state_tests {
    use super::*;
    use crate::routes::{SkipReason as Why, SystemRoute};

    fn net(name: &str, driver: &str, subnets: &[&str]) -> NetworkInfo {
        NetworkInfo {
            id: format!("id-{name}"),
            name: name.into(),
            driver: driver.into(),
            scope: "local".into(),
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
            gateways: vec![],
        }
    }

    #[test]
    fn each_subnet_gets_its_state_and_reason() {
        let filter: NetworkFilter =
            toml::from_str::<crate::config::Config>("[networks]\nexclude = [\"tmp*\"]\n")
                .unwrap()
                .networks;
        let nets = [
            net("bridge", "bridge", &["172.17.0.0/16"]),
            net("kind", "bridge", &["172.18.0.0/16"]),
            net("tmp1", "bridge", &["172.19.0.0/16"]),
            net("host", "host", &[]),
            net("later", "bridge", &["172.20.0.0/16"]),
        ];
        let skipped = vec![Skipped {
            subnet: "172.18.0.0/16".parse().unwrap(),
            reason: Why::Conflict(SystemRoute {
                destination: "172.18.0.0/20".parse().unwrap(),
                interface: "en0".into(),
            }),
        }];
        let routed: BTreeSet<IpNet> = ["172.17.0.0/16".parse().unwrap()].into();
        let s = route_states(&nets, &filter, &skipped, &routed);
        let got: Vec<(&str, RouteState, Option<&str>)> = s
            .iter()
            .map(|r| (r.name.as_str(), r.route, r.conflicts_with.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("bridge", RouteState::Installed, None),
                ("kind", RouteState::Skipped, Some("172.18.0.0/20 via en0")),
                ("tmp1", RouteState::Excluded, None),
                ("later", RouteState::NotRouted, None),
            ]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field_names_are_the_documented_ones() {
        let s = Snapshot {
            running: true,
            networks: vec![NetworkRoute {
                name: "kind".into(),
                subnet: "172.18.0.0/16".into(),
                route: RouteState::NotRoutable,
                ..Default::default()
            }],
            ..Default::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["running"], true);
        assert_eq!(v["networks"][0]["route"], "not-routable");
        assert_eq!(v["networks"][0]["conflicts_with"], serde_json::Value::Null);
        assert_eq!(v["tunnel"], serde_json::Value::Null);
        // Older or newer daemons: unknown fields are ignored, missing ones default.
        let back: Snapshot =
            serde_json::from_str(r#"{"schema":1,"running":true,"future":3}"#).unwrap();
        assert!(back.running && back.networks.is_empty());
    }
}

//! What the daemon shows through the control socket: a [`View`] the
//! session updates at each change (engine, helper, routes), read together
//! with the device's live counters when a client asks.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use parking_lot::Mutex;

use crate::config::{ExtraRoute, NetworkFilter};
use crate::control::snapshot::{self, NetworkRoute, RouteState, Snapshot};
use crate::control::StatusSource;
use crate::docker::{Engine, NetworkInfo};
use crate::keys::PublicKey;
use crate::routes::{SkipReason, Skipped};
use crate::tunnel::Device;

#[derive(Default)]
pub struct View {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    snap: Snapshot,
    /// Weak: the control socket must never keep the TUN open at shutdown.
    device: Option<Weak<Device>>,
    vm_key: Option<PublicKey>,
}

impl View {
    pub fn new(control_socket: &std::path::Path, config_file: Option<String>) -> Arc<View> {
        let v = View::default();
        {
            let mut i = v.inner.lock();
            i.snap.running = true;
            i.snap.pid = std::process::id();
            i.snap.started_unix = unix(SystemTime::now()).unwrap_or(0);
            i.snap.control_socket = control_socket.display().to_string();
            i.snap.config_file = config_file;
            i.snap.helper.state = "starting".into();
        }
        Arc::new(v)
    }

    pub fn set_config_file(&self, file: Option<String>) {
        self.inner.lock().snap.config_file = file;
    }

    pub fn set_engine(&self, e: &Engine) {
        self.inner.lock().snap.engine = Some(snapshot::EngineState {
            host: e.host.clone(),
            version: e.server_version.clone(),
            api_version: e.api_version.clone(),
        });
    }

    pub fn set_tunnel(&self, t: snapshot::TunnelState, device: &Arc<Device>) {
        let mut i = self.inner.lock();
        i.snap.tunnel = Some(t);
        i.device = Some(Arc::downgrade(device));
    }

    pub fn set_helper(&self, container: &str, image: &str, vm_interface: &str) {
        let mut i = self.inner.lock();
        i.snap.helper.container = container.into();
        i.snap.helper.image = image.into();
        i.snap.helper.vm_interface = vm_interface.into();
    }

    /// A helper is running with this id and key; `None`: being (re)started.
    pub fn helper_running(&self, running: Option<(&str, PublicKey)>) {
        let mut i = self.inner.lock();
        match running {
            Some((id, key)) => {
                i.snap.helper.state = "running".into();
                i.snap.helper.id = Some(id.into());
                i.vm_key = Some(key);
            }
            None => {
                i.snap.helper.state = "starting".into();
                i.snap.helper.id = None;
            }
        }
    }

    pub fn set_routes(&self, networks: Vec<NetworkRoute>, extra: Vec<snapshot::ExtraRoute>) {
        let mut i = self.inner.lock();
        i.snap.networks = networks;
        i.snap.extra_routes = extra;
    }
}

impl StatusSource for View {
    fn snapshot(&self) -> Snapshot {
        let (mut snap, device, vm_key) = {
            let i = self.inner.lock();
            (i.snap.clone(), i.device.clone(), i.vm_key)
        };
        let (Some(t), Some(dev)) = (snap.tunnel.as_mut(), device.and_then(|d| d.upgrade())) else {
            return snap;
        };
        let st = dev.status();
        t.listen_port = st.listen_port;
        t.tun_refused = st.tun_refused;
        if let Some(pk) = st.public_key {
            t.host_public_key = pk.to_base64();
        }
        t.vm_public_key = vm_key.map(|k| k.to_base64());
        if let Some(p) = st.peers.iter().find(|p| Some(p.public_key) == vm_key) {
            t.vm_endpoint = p.endpoint.map(|e| e.to_string());
            t.last_handshake_unix = p.last_handshake.and_then(unix);
            t.last_handshake_age_s = p
                .last_handshake
                .and_then(|h| SystemTime::now().duration_since(h).ok())
                .map(|d| d.as_secs());
            t.rx_bytes = p.rx_bytes;
            t.tx_bytes = p.tx_bytes;
        }
        snap
    }
}

fn unix(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

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
                        SkipReason::Conflict(_) => snapshot::SkipReason::Conflict,
                        SkipReason::Public => snapshot::SkipReason::Public,
                    }
                }),
            });
        }
    }
    out
}

pub fn extra_states(
    extra: &[ExtraRoute],
    skipped: &[Skipped],
    routed: &BTreeSet<IpNet>,
) -> Vec<snapshot::ExtraRoute> {
    extra
        .iter()
        .map(|r| {
            let subnet = r.subnet();
            let conflict = skipped.iter().find(|s| s.subnet == subnet);
            snapshot::ExtraRoute {
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
mod tests {
    use super::*;
    use crate::routes::SystemRoute;

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
            reason: SkipReason::Conflict(SystemRoute {
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

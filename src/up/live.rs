//! What the daemon shows through the control socket: a [`View`] of the
//! facts the session states at each change (engine, helper, routes), and
//! [`snapshot`], the pure function that joins them with the device's live
//! counters when a client asks.

use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::control::snapshot::{self, NetworkRoute, Snapshot};
use crate::control::StatusSource;
use crate::dns::server::Zone;
use crate::docker::Engine;
use crate::helper::endpoint::Report;
use crate::keys::PublicKey;
use crate::tunnel::{Device, DeviceStatus};

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
    /// The names served, read when a client asks.
    zone: Option<Arc<Zone>>,
    /// The OS's view's disagreements, by what was read (`interface`,
    /// `routes`, `resolver`): each reading replaces its own.
    os_view: std::collections::BTreeMap<&'static str, Vec<String>>,
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
            runtime: e.runtime.as_str().into(),
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

    /// The helper left after a quiet spell; the next traffic starts it.
    pub fn helper_parked(&self) {
        let mut i = self.inner.lock();
        i.snap.helper.state = "idle".into();
        i.snap.helper.id = None;
    }

    /// The helper's word on the way home; `None`: a helper is looking.
    pub fn way_home(&self, report: Option<&Report>) {
        self.inner.lock().snap.vm = Some(vm_state(report));
    }

    /// The name server's state; `zone`: the names it serves.
    pub fn set_dns(&self, state: snapshot::DnsState, zone: Option<Arc<Zone>>) {
        let mut i = self.inner.lock();
        i.snap.dns = Some(state);
        i.zone = zone;
    }

    pub fn set_resolver(&self, resolver: Option<String>, error: Option<String>) {
        if let Some(d) = self.inner.lock().snap.dns.as_mut() {
            d.resolver = resolver;
            d.resolver_error = error;
        }
    }

    pub fn set_routes(&self, networks: Vec<NetworkRoute>, extra: Vec<snapshot::ExtraRoute>) {
        let mut i = self.inner.lock();
        i.snap.networks = networks;
        i.snap.extra_routes = extra;
    }

    /// What one reading of the OS's view found wrong (nothing: all as
    /// asked), replacing that reading's last.
    pub fn set_os_view(&self, reading: &'static str, found: &[crate::readback::Disagreement]) {
        let mut i = self.inner.lock();
        i.os_view
            .insert(reading, found.iter().map(ToString::to_string).collect());
        let all: Vec<String> = i.os_view.values().flatten().cloned().collect();
        i.snap.os_view = all;
    }

    pub fn set_clusters(&self, clusters: Vec<snapshot::ClusterState>) {
        self.inner.lock().snap.clusters = clusters;
    }
}

impl StatusSource for View {
    fn snapshot(&self) -> Snapshot {
        let (mut snap, device, vm_key, zone) = {
            let i = self.inner.lock();
            (i.snap.clone(), i.device.clone(), i.vm_key, i.zone.clone())
        };
        if let (Some(d), Some(z)) = (snap.dns.as_mut(), zone) {
            dns_names(d, &z.current(), z.answered());
        }
        let status = device.and_then(|d| d.upgrade()).map(|d| d.status());
        snapshot(snap, vm_key, status.as_ref(), SystemTime::now())
    }
}

/// What `status` shows: what the session said (`facts`), with the tunnel's
/// live figures from the device's status read at `now`. Pure, so every
/// field is tested without a device.
pub fn snapshot(
    mut facts: Snapshot,
    vm_key: Option<PublicKey>,
    device: Option<&DeviceStatus>,
    now: SystemTime,
) -> Snapshot {
    let (Some(t), Some(st)) = (facts.tunnel.as_mut(), device) else {
        return facts;
    };
    {
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
                .and_then(|h| now.duration_since(h).ok())
                .map(|d| d.as_secs());
            t.rx_bytes = p.rx_bytes;
            t.tx_bytes = p.tx_bytes;
        }
    }
    facts
}

/// The names of `table` into the status.
pub fn dns_names(state: &mut snapshot::DnsState, table: &crate::dns::names::Table, answered: u64) {
    state.answered = answered;
    state.names = table
        .entries()
        .map(|(name, addrs)| snapshot::DnsName {
            name: name.to_owned(),
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
        })
        .collect();
    state.conflicts = table
        .conflicts()
        .map(|(name, owners)| snapshot::DnsConflict {
            name: name.to_owned(),
            owners: owners.iter().cloned().collect(),
        })
        .collect();
    state.zones = table.other_zones();
    state.refused = table
        .refused()
        .map(|(name, why)| snapshot::DnsRefused {
            name: name.to_owned(),
            reason: why.to_owned(),
        })
        .collect();
}

/// The status's `vm` section from the helper's report.
pub fn vm_state(report: Option<&Report>) -> snapshot::VmState {
    match report {
        None => snapshot::VmState {
            state: "searching".into(),
            ..Default::default()
        },
        Some(Report::Found { chosen, rejected }) => snapshot::VmState {
            state: "found".into(),
            endpoint: Some(chosen.addr.to_string()),
            endpoint_source: Some(chosen.source.as_str().into()),
            rejected: rejected_text(rejected),
            ..Default::default()
        },
        Some(Report::None { tried, rejected }) => snapshot::VmState {
            state: "none".into(),
            error: Some(Report::describe_none(tried, rejected)),
            rejected: rejected_text(rejected),
            ..Default::default()
        },
    }
}

fn rejected_text(r: &[crate::helper::endpoint::Rejected]) -> Vec<String> {
    r.iter()
        .map(|r| format!("{} ({})", r.addr, r.source.as_str()))
        .collect()
}

fn unix(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::TunnelState;
    use crate::tunnel::PeerStatus;

    #[test]
    fn the_status_lists_the_names_and_their_conflicts() {
        use crate::docker::ContainerInfo;
        let c = |name: &str, a: &str| ContainerInfo {
            id: name.into(),
            name: name.into(),
            labels: Default::default(),
            addresses: vec![a.parse().unwrap()],
            ..Default::default()
        };
        let table = crate::dns::names::Table::build(
            &"docker.internal".parse().unwrap(),
            &[c("my_db", "172.18.0.3"), c("my-db", "172.18.0.4")],
            &["172.18.0.0/16".parse().unwrap()].into(),
        );
        let mut d = snapshot::DnsState::default();
        dns_names(&mut d, &table, 7);
        assert_eq!(d.answered, 7);
        let names: Vec<(&str, usize)> = d
            .names
            .iter()
            .map(|n| (n.name.as_str(), n.addresses.len()))
            .collect();
        assert_eq!(
            names,
            [("my-db.docker.internal", 2), ("my_db.docker.internal", 1)]
        );
        assert_eq!(
            d.conflicts,
            [snapshot::DnsConflict {
                name: "my-db.docker.internal".into(),
                owners: vec!["my-db".into(), "my_db".into()],
            }]
        );
    }

    #[test]
    fn the_snapshot_takes_live_figures_from_the_device() {
        let vm = PublicKey([2; 32]);
        let facts = Snapshot {
            running: true,
            tunnel: Some(TunnelState {
                interface: "utun7".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let peer = |key| PeerStatus {
            public_key: key,
            preshared_key: None,
            endpoint: Some("127.0.0.1:40000".parse().unwrap()),
            last_handshake: Some(now - std::time::Duration::from_secs(42)),
            rx_bytes: 1234,
            tx_bytes: 5678,
            persistent_keepalive: None,
            allowed_ips: vec![],
        };
        let device = DeviceStatus {
            private_key: None,
            public_key: Some(PublicKey([1; 32])),
            listen_port: 51820,
            fwmark: 0,
            peers: vec![peer(PublicKey([9; 32])), peer(vm)],
            tun_refused: 3,
        };
        let s = snapshot(facts.clone(), Some(vm), Some(&device), now);
        let t = s.tunnel.unwrap();
        assert_eq!(t.interface, "utun7");
        assert_eq!(t.listen_port, 51820);
        assert_eq!(t.tun_refused, 3);
        assert_eq!(t.host_public_key, PublicKey([1; 32]).to_base64());
        assert_eq!(t.vm_public_key, Some(vm.to_base64()));
        assert_eq!(t.vm_endpoint.as_deref(), Some("127.0.0.1:40000"));
        assert_eq!(t.last_handshake_unix, Some(1_000_000 - 42));
        assert_eq!(t.last_handshake_age_s, Some(42));
        assert_eq!((t.rx_bytes, t.tx_bytes), (1234, 5678));
        // No VM key yet: no peer figures; no device: the facts alone.
        let s = snapshot(facts.clone(), None, Some(&device), now);
        assert_eq!(s.tunnel.unwrap().last_handshake_unix, None);
        assert_eq!(snapshot(facts.clone(), Some(vm), None, now), facts);
    }
}

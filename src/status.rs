//! `netconnect status [--json]`: the running daemon's view through the
//! control socket; without a daemon, what can be seen from outside (the
//! engine, leftover helpers, the networks that would be routed).
//!
//! Exit code: 0 when `up` runs, 3 when it does not (as `systemctl status`),
//! 1 on an error.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::control::snapshot::{EngineState, HelperState, RouteState, SkipReason, Snapshot};
use crate::control::{self, ControlError};
use crate::docker::{self, Engine};
use crate::settings::Target;

/// Exit code of `status` when no daemon runs.
pub const NOT_RUNNING: u8 = 3;

pub async fn run(
    json: bool,
    target: Target,
    socket: &Path,
    config: &Config,
) -> anyhow::Result<ExitCode> {
    let snap = match control::status(socket).await {
        Ok(s) => s,
        Err(ControlError::NotRunning(_)) => offline(&target, socket, config).await,
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", render(&snap, SystemTime::now()));
    }
    Ok(if snap.running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_RUNNING)
    })
}

/// Connect to the engine the way `up` would (flag, config, discovery).
pub async fn connect(target: &Target) -> Result<Engine, docker::DockerError> {
    let candidates = docker::candidates(
        &docker::Inputs::from_env(target.docker_host.clone()),
        &docker::RealFiles,
    );
    docker::connect(&candidates).await
}

/// What can be known without a daemon.
pub async fn offline(target: &Target, socket: &Path, config: &Config) -> Snapshot {
    let mut snap = Snapshot {
        control_socket: socket.display().to_string(),
        helper: HelperState {
            state: "absent".into(),
            container: format!("netconnect-helper-{}", target.vm_interface),
            image: target.helper_image.clone(),
            vm_interface: target.vm_interface.clone(),
            id: None,
        },
        ..Default::default()
    };
    let Ok(engine) = connect(target).await else {
        return snap;
    };
    snap.engine = Some(EngineState {
        host: engine.host.clone(),
        version: engine.server_version.clone(),
        api_version: engine.api_version.clone(),
        runtime: engine.runtime.as_str().into(),
    });
    if let Ok(h) = crate::docker::vmside::helpers(&engine.docker, &target.vm_interface).await {
        if let Some(h) = h.first() {
            snap.helper.state = h.state.clone();
            snap.helper.container = h.name.clone();
            snap.helper.id = Some(h.id.clone());
        }
    }
    if let Ok(nets) = docker::networks(&engine.docker).await {
        snap.networks =
            crate::control::snapshot::route_states(&nets, &config.networks, &[], &BTreeSet::new());
    }
    snap.extra_routes =
        crate::control::snapshot::extra_states(&config.routes, &[], &BTreeSet::new());
    snap
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ago(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

/// The text form. `now` is a parameter so that tests are exact.
pub fn render(s: &Snapshot, now: SystemTime) -> String {
    let mut o = String::new();
    let now_unix = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if s.running {
        let _ = writeln!(
            o,
            "netconnect up: running (pid {}, for {}; control socket {})",
            s.pid,
            ago(now_unix.saturating_sub(s.started_unix)).trim_end_matches(" ago"),
            s.control_socket
        );
    } else {
        let _ = writeln!(
            o,
            "netconnect up: not running (nothing answers on {})",
            s.control_socket
        );
    }
    if let Some(f) = &s.config_file {
        let _ = writeln!(o, "config:     {f}");
    }
    match &s.engine {
        Some(e) => {
            let _ = writeln!(
                o,
                "engine:     {} ({}{}, API {})",
                e.host,
                if e.runtime.is_empty() {
                    String::new()
                } else {
                    format!("{}, ", e.runtime)
                },
                e.version,
                e.api_version
            );
        }
        None => {
            let _ = writeln!(o, "engine:     not reachable");
        }
    }
    if let Some(t) = &s.tunnel {
        let _ = writeln!(
            o,
            "tunnel:     {} {} -> {}, UDP port {}",
            t.interface, t.host_address, t.vm_address, t.listen_port
        );
        let _ = writeln!(o, "host key:   {}", t.host_public_key);
        let _ = writeln!(
            o,
            "vm key:     {}{}",
            t.vm_public_key.as_deref().unwrap_or("(no helper yet)"),
            t.vm_endpoint
                .as_deref()
                .map(|e| format!(" (endpoint {e})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            o,
            "handshake:  {}",
            t.last_handshake_age_s
                .map(ago)
                .unwrap_or_else(|| "none yet".into())
        );
        let _ = writeln!(
            o,
            "transfer:   {} received, {} sent{}",
            bytes(t.rx_bytes),
            bytes(t.tx_bytes),
            match t.tun_refused {
                0 => String::new(),
                n => format!("; {n} packet(s) refused by {} and dropped", t.interface),
            }
        );
    }
    if let Some(v) = &s.vm {
        let _ = writeln!(o, "way home:   {}", vm_text(v));
    }
    let h = &s.helper;
    let _ = writeln!(
        o,
        "helper:     {} {}{} ({})",
        h.state,
        h.container,
        h.id.as_deref()
            .map(|i| format!(" {}", &i[..12.min(i.len())]))
            .unwrap_or_default(),
        h.image
    );
    if let Some(d) = &s.dns {
        let _ = writeln!(o, "names:      {}", dns_text(d));
    }
    for c in &s.clusters {
        let _ = writeln!(o, "{}", cluster_text(c));
    }
    for d in &s.os_view {
        let _ = writeln!(o, "os view:    {d}");
    }
    if !s.networks.is_empty() {
        let w = s
            .networks
            .iter()
            .map(|n| n.name.len())
            .max()
            .unwrap_or(0)
            .max(7);
        let ws = s
            .networks
            .iter()
            .map(|n| n.subnet.len())
            .max()
            .unwrap_or(0)
            .max(6);
        let _ = writeln!(o, "\n{:w$}  {:ws$}  ROUTE", "NETWORK", "SUBNET");
        for n in &s.networks {
            let _ = writeln!(
                o,
                "{:w$}  {:ws$}  {}",
                n.name,
                n.subnet,
                route_text(n.route, n.conflicts_with.as_deref(), n.skip_reason)
            );
        }
    }
    if !s.extra_routes.is_empty() {
        let ws = s
            .extra_routes
            .iter()
            .map(|r| r.subnet.len())
            .max()
            .unwrap_or(0)
            .max(11);
        let _ = writeln!(o, "\n{:ws$}  {:15}  ROUTE", "EXTRA ROUTE", "VM GATEWAY");
        for r in &s.extra_routes {
            let _ = writeln!(
                o,
                "{:ws$}  {:15}  {}",
                r.subnet,
                r.via.as_deref().unwrap_or("-"),
                route_text(r.route, r.conflicts_with.as_deref(), None)
            );
        }
    }
    o
}

/// `cluster kind: 2 nodes, pods 10.244.0.0/16, services 10.96.0.0/16,
/// dns 10.96.0.10`, and what is not right yet.
fn cluster_text(c: &crate::control::snapshot::ClusterState) -> String {
    let n = c.nodes.len();
    let mut t = format!(
        "cluster {} ({}): {n} node{}",
        c.name,
        c.flavor,
        if n == 1 { "" } else { "s" }
    );
    let list = |v: &[String]| {
        if v.is_empty() {
            "?".to_owned()
        } else {
            v.join(" ")
        }
    };
    match c.state.as_str() {
        "reading" => t.push_str(", being read"),
        "unreadable" => {
            t.push_str(", not readable: ");
            t.push_str(c.error.as_deref().unwrap_or("?"));
        }
        state => {
            t.push_str(&format!(
                ", pods {}, services {}, dns {}",
                list(&c.pods),
                list(&c.services),
                list(&c.dns)
            ));
            if !c.zones.is_empty() {
                let zones: Vec<String> = c.zones.iter().map(|z| format!("*.{z}")).collect();
                t.push_str(&format!("; names {}", zones.join(" ")));
            }
            if state == "incomplete" {
                t.push_str("; a node has no pod range yet");
            }
            if !c.not_routed.is_empty() {
                t.push_str(&format!("; not routed: {}", c.not_routed.join(" ")));
            }
        }
    }
    t
}

/// How the VM reaches us, as the helper found it.
fn vm_text(v: &crate::control::snapshot::VmState) -> String {
    match (v.state.as_str(), &v.endpoint, &v.endpoint_source) {
        ("found", Some(e), Some(src)) => format!("the VM sends to {e} ({src})"),
        ("none", ..) => v.error.clone().unwrap_or_else(|| "none found".into()),
        _ => "the helper is trying the VM's ways to this machine".into(),
    }
}

fn dns_text(d: &crate::control::snapshot::DnsState) -> String {
    match d.state.as_str() {
        "serving" => {
            let n = d.names.len();
            let resolver = match (&d.resolver, &d.resolver_error) {
                (Some(r), _) => format!("resolver: {r}"),
                (None, Some(e)) => format!("resolver not wired: {e}"),
                (None, None) => "no resolver wired; ask the server directly".into(),
            };
            let mut t = format!(
                "*.{} on {}, {n} name{} ({resolver})",
                d.domain,
                d.address,
                if n == 1 { "" } else { "s" }
            );
            if !d.zones.is_empty() {
                t.push_str(&format!("; also {}", d.zones.join(" ")));
            }
            if !d.conflicts.is_empty() {
                let c: Vec<&str> = d.conflicts.iter().map(|c| c.name.as_str()).collect();
                t.push_str(&format!("; answered for two owners: {}", c.join(" ")));
            }
            for r in &d.refused {
                t.push_str(&format!("; not served: {} ({})", r.name, r.reason));
            }
            t
        }
        "disabled" => "off (dns.enabled = false in the configuration file)".into(),
        _ => d.error.clone().unwrap_or_else(|| d.state.clone()),
    }
}

fn route_text(r: RouteState, conflict: Option<&str>, why: Option<SkipReason>) -> String {
    match (r, conflict) {
        (RouteState::Skipped, _) if why == Some(SkipReason::Public) => format!(
            "skipped: public addresses (allow with {} in the config file)",
            crate::routes::scope::ALLOW_KEY
        ),
        (RouteState::Skipped, Some(c)) => format!("skipped: conflicts with {c}"),
        (RouteState::Excluded, _) => "excluded by config".into(),
        (r, _) => r.as_str().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::{NetworkRoute, TunnelState};
    use std::time::Duration;

    #[test]
    fn the_names_line_says_the_other_zones_conflicts_and_refusals() {
        use crate::control::snapshot::{DnsConflict, DnsRefused, DnsState};
        let mut d = DnsState {
            state: "serving".into(),
            domain: "docker.internal".into(),
            address: "10.33.33.1:53".into(),
            resolver: Some("/etc/resolver/docker.internal".into()),
            ..Default::default()
        };
        assert_eq!(
            dns_text(&d),
            "*.docker.internal on 10.33.33.1:53, 0 names (resolver: /etc/resolver/docker.internal)"
        );
        d.zones = vec!["shop.test".into(), "18.172.in-addr.arpa".into()];
        d.conflicts = vec![DnsConflict {
            name: "store.docker.internal".into(),
            owners: vec!["a".into(), "b".into()],
        }];
        d.refused = vec![DnsRefused {
            name: "x.com".into(),
            reason: "web: outside".into(),
        }];
        assert_eq!(
            dns_text(&d),
            "*.docker.internal on 10.33.33.1:53, 0 names (resolver: /etc/resolver/docker.internal); also shop.test 18.172.in-addr.arpa; answered for two owners: store.docker.internal; not served: x.com (web: outside)"
        );
    }

    #[test]
    fn a_cluster_is_one_line_that_says_what_is_missing() {
        use crate::control::snapshot::ClusterState;
        let c = ClusterState {
            name: "kind".into(),
            flavor: "kind".into(),
            state: "ready".into(),
            nodes: vec!["kind-control-plane".into(), "kind-worker".into()],
            pods: vec!["10.244.0.0/16".into()],
            services: vec!["10.96.0.0/16".into()],
            dns: vec!["10.96.0.10".into()],
            domain: Some("cluster.local".into()),
            zones: vec![],
            routed: vec!["10.244.0.0/24".into()],
            not_routed: vec![],
            error: None,
        };
        assert_eq!(
            cluster_text(&c),
            "cluster kind (kind): 2 nodes, pods 10.244.0.0/16, services 10.96.0.0/16, dns 10.96.0.10"
        );
        let named = ClusterState {
            zones: vec!["cluster.local".into(), "kind.kube.docker.internal".into()],
            ..c.clone()
        };
        assert_eq!(
            cluster_text(&named),
            "cluster kind (kind): 2 nodes, pods 10.244.0.0/16, services 10.96.0.0/16, dns 10.96.0.10; \
             names *.cluster.local *.kind.kube.docker.internal"
        );
        let c2 = ClusterState {
            state: "incomplete".into(),
            not_routed: vec!["10.96.0.0/16".into()],
            ..c.clone()
        };
        assert_eq!(
            cluster_text(&c2),
            "cluster kind (kind): 2 nodes, pods 10.244.0.0/16, services 10.96.0.0/16, dns 10.96.0.10; \
             a node has no pod range yet; not routed: 10.96.0.0/16"
        );
        let c3 = ClusterState {
            state: "unreadable".into(),
            nodes: vec!["k3d-dev-server-0".into()],
            flavor: "k3d".into(),
            name: "dev".into(),
            error: Some("kubectl in k3d-dev-server-0 exited with 1: connection refused".into()),
            ..c
        };
        assert_eq!(
            cluster_text(&c3),
            "cluster dev (k3d): 1 node, not readable: kubectl in k3d-dev-server-0 exited with 1: connection refused"
        );
    }

    #[test]
    fn text_shows_every_link() {
        let s = Snapshot {
            running: true,
            pid: 42,
            started_unix: 1000,
            control_socket: "/run/nc.sock".into(),
            engine: Some(EngineState {
                host: "unix:///var/run/docker.sock".into(),
                version: "20.10.24".into(),
                api_version: "1.41".into(),
                runtime: "colima".into(),
            }),
            tunnel: Some(TunnelState {
                interface: "nc0".into(),
                listen_port: 4000,
                host_address: "10.33.33.1".into(),
                vm_address: "10.33.33.2".into(),
                host_public_key: "H=".into(),
                vm_public_key: Some("V=".into()),
                last_handshake_age_s: Some(7),
                rx_bytes: 2048,
                tx_bytes: 100,
                tun_refused: 3,
                ..Default::default()
            }),
            dns: Some(crate::control::snapshot::DnsState {
                state: "serving".into(),
                domain: "docker.internal".into(),
                address: "10.33.33.1:53".into(),
                resolver: Some("/etc/resolver/docker.internal".into()),
                names: vec![Default::default(), Default::default()],
                ..Default::default()
            }),
            networks: vec![
                NetworkRoute {
                    name: "bridge".into(),
                    subnet: "172.17.0.0/16".into(),
                    route: RouteState::Installed,
                    ..Default::default()
                },
                NetworkRoute {
                    name: "kind".into(),
                    subnet: "172.18.0.0/16".into(),
                    route: RouteState::Skipped,
                    conflicts_with: Some("172.18.0.0/20 via en0".into()),
                    skip_reason: Some(SkipReason::Conflict),
                    ..Default::default()
                },
                NetworkRoute {
                    name: "odd".into(),
                    subnet: "8.8.8.0/24".into(),
                    route: RouteState::Skipped,
                    skip_reason: Some(SkipReason::Public),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut s = s;
        s.vm = Some(crate::control::snapshot::VmState {
            state: "found".into(),
            endpoint: Some("192.168.5.2:4000".into()),
            endpoint_source: Some("host.lima.internal".into()),
            ..Default::default()
        });
        let t = render(&s, UNIX_EPOCH + Duration::from_secs(1090));
        assert!(
            t.contains("engine:     unix:///var/run/docker.sock (colima, 20.10.24, API 1.41)\n"),
            "{t}"
        );
        assert!(
            t.contains("way home:   the VM sends to 192.168.5.2:4000 (host.lima.internal)\n"),
            "{t}"
        );
        assert!(
            t.starts_with("netconnect up: running (pid 42, for 90 s;"),
            "{t}"
        );
        assert!(t.contains("handshake:  7 s ago"), "{t}");
        assert!(
            t.contains("names:      *.docker.internal on 10.33.33.1:53, 2 names (resolver: /etc/resolver/docker.internal)\n"),
            "{t}"
        );
        assert!(
            t.contains("transfer:   2.0 KiB received, 100 B sent; 3 packet(s) refused by nc0 and dropped\n"),
            "{t}"
        );
        assert!(t.contains("bridge   172.17.0.0/16  installed"), "{t}");
        assert!(
            t.contains("kind     172.18.0.0/16  skipped: conflicts with 172.18.0.0/20 via en0"),
            "{t}"
        );
        assert!(
            t.contains(
                "odd      8.8.8.0/24     skipped: public addresses \
                 (allow with networks.allow_public in the config file)"
            ),
            "{t}"
        );
    }
}

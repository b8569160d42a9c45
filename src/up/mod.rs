//! `netconnect up`: the daemon's setup. It checks its inputs, binds the
//! control socket, finds the engine, makes the tunnel and hands all of it
//! to the [`session::Session`], the event loop; when that ends it tears
//! down in reverse.

pub mod clusters;
pub mod live;
pub mod names;
pub mod ports;
pub mod probe;
pub mod session;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use ipnet::IpNet;
use tracing::{info, warn, Instrument as _};

use crate::config::{self, ExtraRoute};
use crate::control::{snapshot::TunnelState, ControlListener};
use crate::docker::vmside::{image, HelperSpec};
use crate::docker::{self, Engine};
use crate::keys::{Key, PublicKey};
use crate::platform;
use crate::progress;
use crate::tunnel::{Device, DeviceUpdate};
use session::{Session, BACKOFF_MAX};

/// How long shutdown waits for Docker to remove the helper.
const HELPER_REMOVE_TIMEOUT: Duration = Duration::from_secs(3);

/// What `up` needs besides its flags: the control socket and the
/// configuration file it re-reads on SIGHUP.
#[derive(Debug, Clone)]
pub struct UpContext {
    pub control_socket: PathBuf,
    pub config_path: PathBuf,
    /// The user named the file (`--config`): a missing file is an error.
    pub config_explicit: bool,
    pub loaded: config::Loaded,
}

pub async fn run(args: crate::settings::Up, ctx: UpContext) -> anyhow::Result<()> {
    platform::require_root("up")?;
    platform::validate_interface_name(&args.target.interface)?;
    platform::validate_interface_name(&args.target.vm_interface)?;
    if let Some(e) = &args.host_endpoint {
        crate::helper::endpoint::check_shape(e)?;
    }
    if args.host_address.is_ipv4() != args.vm_address.is_ipv4() {
        anyhow::bail!(
            "--host-address {} and --vm-address {} must both be IPv4 or both IPv6",
            args.host_address,
            args.vm_address
        );
    }
    let candidates = docker::candidates(
        &docker::Inputs::from_env(args.target.docker_host.clone()),
        &docker::RealFiles,
    );

    // Before anything else: SIGHUP's default action would end the process
    // without cleaning up.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    // The socket first: a second `up` must fail before it touches anything.
    let listener = ControlListener::bind(&ctx.control_socket)?;
    let view = live::View::new(&ctx.control_socket, config_name(&ctx.loaded));
    let stop = listener.stop.clone();
    let served = view.clone();
    let mut control = AbortOnDrop(tokio::spawn(
        async move { listener.serve(served).await }
            .instrument(tracing::info_span!("control", socket = %ctx.control_socket.display())),
    ));
    let mut shutdown = std::pin::pin!(async move {
        tokio::select! {
            sig = crate::signals::shutdown() => sig,
            _ = stop.notified() => "netconnect down",
        }
    });
    let connecting = progress::step("Connecting to the Docker engine");
    let engine = tokio::select! {
        e = connect_until_up(&candidates) => e,
        _ = &mut shutdown => return Ok(()),
    };
    connecting.done(format!(
        "{} engine {} (API {}) at {}",
        engine.runtime.as_str(),
        engine.server_version,
        engine.api_version,
        engine.host
    ));
    info!(runtime = engine.runtime.as_str(), "container runtime");
    if engine.rootless {
        anyhow::bail!("{}", engine.runtime.rootless_problem());
    }
    let local = if platform::ENGINE_MAY_BE_LOCAL && !args.force {
        let networks = docker::networks(&engine.docker).await?;
        docker::local_bridge(&networks, &docker::local_addresses())
    } else {
        None
    };
    if let Some(why) = nothing_to_do(engine.runtime, local.as_ref(), args.force) {
        info!(runtime = engine.runtime.as_str(), "{why}");
        return Ok(());
    }
    view.set_engine(&engine);

    let pairs = [
        (args.host_address, args.vm_address),
        (IpAddr::V6(args.host_address6), IpAddr::V6(args.vm_address6)),
    ];
    let platform::Tunnel { tun, name, router } =
        platform::create_tunnel(&args.target.interface, platform::DEFAULT_MTU, &pairs).await?;
    let found = match crate::routes::Router::view(&router).await {
        Ok(seen) => {
            crate::readback::check_interface(&name, &pairs, u32::from(platform::DEFAULT_MTU), &seen)
        }
        Err(e) => vec![crate::readback::Disagreement {
            effect: format!("interface {name}"),
            asked: "its addresses and MTU".into(),
            seen: format!("nothing readable ({e})"),
        }],
    };
    for d in &found {
        warn!("{d}");
    }
    view.set_os_view("interface", &found);
    let device = Device::start(&name, tun, args.listen_port).map_err(|e| match e {
        crate::tunnel::ConfigError::AddrInUse(p) => anyhow::anyhow!(
            "UDP port {p} is already in use; pick another with --listen-port, or 0 for any free port"
        ),
        e => anyhow::Error::new(e),
    })?;
    let host_key = Key::generate_private();
    device.apply(&DeviceUpdate {
        private_key: Some(host_key.clone()),
        ..Default::default()
    })?;
    let port = device.status().listen_port;
    info!(target: progress::TARGET, iface = %name, port, address = %args.host_address, peer = %args.vm_address, "tunnel interface up");
    progress::line(format!(
        "Tunnel {name} up: {} to {}, UDP port {port}",
        args.host_address, args.vm_address
    ));
    let device = Arc::new(device);
    view.set_tunnel(
        TunnelState {
            interface: name.clone(),
            listen_port: port,
            host_address: args.host_address.to_string(),
            vm_address: args.vm_address.to_string(),
            host_address6: args.host_address6.to_string(),
            vm_address6: args.vm_address6.to_string(),
            host_public_key: host_key.public_key().to_base64(),
            ..Default::default()
        },
        &device,
    );
    let file = ctx.loaded.config.clone();

    let spec = HelperSpec {
        image: args.target.helper_image.clone(),
        name: format!("netconnect-helper-{}", args.target.vm_interface),
        host_public_key: PublicKey::from(&host_key.public_key()),
        host_endpoint: args.host_endpoint.clone(),
        host_port: port,
        vm_interface: args.target.vm_interface.clone(),
        vm_address: args.vm_address,
        host_address: args.host_address,
        vm_address6: args.vm_address6,
        host_address6: args.host_address6,
        archives: image::archives(args.helper_archive.as_deref()),
        routes: vm_routes(&file.routes),
        vm_hosts: engine.runtime != docker::Runtime::DockerDesktop,
    };
    view.set_helper(&spec.name, &spec.image, &spec.vm_interface);
    let reload = futures::stream::unfold(hup, |mut hup| async move {
        hup.recv().await.map(|()| ((), hup))
    })
    .boxed();
    let watch = Watch::open(&name).await?;
    // Last before the loop: nothing after it can fail, so a resolver file
    // is never left behind by a start that went wrong.
    let names = names::start(&file.dns, args.host_address, &name, &view).await;
    let mut s = Session {
        engine: ports::DockerApi { engine, candidates },
        tunnel: device.clone(),
        router,
        watch,
        spec,
        vm_addresses: [args.vm_address, IpAddr::V6(args.vm_address6)],
        helper: None,
        parked: false,
        vm_mode: None,
        networks: Vec::new(),
        routed: BTreeSet::new(),
        skipped: Vec::new(),
        zone: names.as_ref().map(|n| n.zone.clone()),
        containers: Vec::new(),
        clusters: clusters::Clusters::new(file.kubernetes.clone()),
        kube_mac: BTreeSet::new(),
        kube_vm: Vec::new(),
        zone_resolvers: names
            .as_ref()
            .and_then(|_| names::ZoneResolvers::new(&file.dns, args.host_address)),
        cluster_zones: Vec::new(),
        name_zones: Vec::new(),
        refused_warned: BTreeSet::new(),
        os_view: BTreeSet::new(),
        liveness: probe::Liveness::new(Instant::now()),
        probe_seq: 0,
        filter: file.networks.clone(),
        extra: file.routes.clone(),
        file,
        ctx,
        view,
        announced: false,
        handshake: None,
        reload,
        helper_tried: tokio::time::Instant::now(),
    };

    let result = s.run(shutdown.as_mut()).await;
    s.teardown(HELPER_REMOVE_TIMEOUT).await;
    if let Some(n) = names {
        n.stop().await;
    }
    device.shutdown().await;
    info!("tunnel removed");
    drop(device);
    // Last: `down` waits for the socket to go as the sign that all is removed.
    control.0.abort();
    let _ = (&mut control.0).await;
    result
}

/// The routing table's change notices for the session. A watcher that
/// dies is opened again, with backoff, and its first word is a change:
/// whatever happened meanwhile is compared at once.
struct Watch {
    interface: String,
    inner: Option<platform::RouteWatch>,
    backoff: Duration,
    /// When to open it again: a deadline, not a fresh sleep per call, or
    /// the session's other wakeups would put it off for ever.
    retry_at: Option<tokio::time::Instant>,
}

impl Watch {
    async fn open(interface: &str) -> anyhow::Result<Watch> {
        let inner = platform::watch(interface)
            .await
            .context("watching the routing table")?;
        Ok(Watch {
            interface: interface.to_owned(),
            inner: Some(inner),
            backoff: Duration::from_secs(1),
            retry_at: None,
        })
    }
}

impl ports::RouteEvents for Watch {
    async fn next(&mut self) -> Option<crate::routes::WatchEvent> {
        loop {
            if let Some(w) = &mut self.inner {
                match w.next().await {
                    Some(ev) => {
                        self.backoff = Duration::from_secs(1);
                        return Some(ev);
                    }
                    None => {
                        warn!(
                            retry_in_s = self.backoff.as_secs(),
                            "the routing table watcher stopped; opening it again"
                        );
                        self.inner = None;
                        self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
                    }
                }
            }
            let at = *self
                .retry_at
                .get_or_insert_with(|| tokio::time::Instant::now() + self.backoff);
            tokio::time::sleep_until(at).await;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
            match platform::watch(&self.interface).await {
                Ok(w) => {
                    self.inner = Some(w);
                    self.retry_at = None;
                    return Some(crate::routes::WatchEvent::Routes);
                }
                Err(e) => warn!(error = %e, "the routing table watcher could not be opened"),
            }
        }
    }
}

/// Ends the control socket's task on every way out of `run`.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn config_name(l: &config::Loaded) -> Option<String> {
    l.path.as_ref().map(|p| p.display().to_string())
}

/// Why `up` has nothing to do, if so: the runtime routes container
/// addresses to this machine itself (OrbStack: a tunnel of ours would
/// only shadow its routes), or the engine runs in this network namespace
/// (Linux), its bridges local. `--force` runs anyway.
pub fn nothing_to_do(
    runtime: docker::Runtime,
    local: Option<&docker::LocalBridge>,
    force: bool,
) -> Option<String> {
    if force {
        return None;
    }
    if runtime.routes_containers_itself() {
        return Some(format!(
            "containers are already reachable: {} routes their addresses to this machine itself; nothing to do (--force runs anyway)",
            runtime.as_str()
        ));
    }
    local.map(|b| {
        format!(
            "Docker's networks are already reachable: the engine runs in this network namespace \
             (network {} has the local gateway {}); nothing to do (--force runs anyway)",
            b.network, b.gateway
        )
    })
}

/// The extra routes that need a route inside the VM.
fn vm_routes(routes: &[ExtraRoute]) -> Vec<(IpNet, IpAddr)> {
    routes
        .iter()
        .filter_map(|r| Some((r.subnet(), r.via()?)))
        .collect()
}

/// Try the candidates until one answers, saying so in the log each time.
async fn connect_until_up(candidates: &[docker::Candidate]) -> Engine {
    let mut delay = Duration::from_secs(1);
    loop {
        match docker::connect(candidates).await {
            Ok(e) => return e,
            Err(e) => {
                warn!(error = %e, retry_in_s = delay.as_secs(), "Docker engine not reachable");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{LocalBridge, Runtime};

    #[test]
    fn up_does_nothing_where_containers_are_already_reachable() {
        let local = LocalBridge {
            network: "bridge".into(),
            gateway: "172.17.0.1".parse().unwrap(),
        };
        let orb = nothing_to_do(Runtime::OrbStack, None, false).unwrap();
        assert!(
            orb.starts_with("containers are already reachable: orbstack routes"),
            "{orb}"
        );
        let linux = nothing_to_do(Runtime::Dockerd, Some(&local), false).unwrap();
        assert!(
            linux.contains("already reachable") && linux.contains("172.17.0.1"),
            "{linux}"
        );
        assert_eq!(nothing_to_do(Runtime::OrbStack, Some(&local), true), None);
        for r in [
            Runtime::DockerDesktop,
            Runtime::Colima,
            Runtime::Podman,
            Runtime::Dockerd,
        ] {
            assert_eq!(nothing_to_do(r, None, false), None, "{r:?}");
        }
    }
}

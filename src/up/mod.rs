//! `netconnect up`: the daemon. It keeps three things equal to what Docker
//! says: the tunnel's VM peer (the helper container and its key), the routes
//! through the tunnel (one per Docker network subnet), and the peer's
//! allowed IPs (the VM's tunnel address plus exactly those subnets).
//!
//! Docker events drive changes within a second; a periodic resync catches
//! anything missed; when the event stream ends (dockerd or the VM
//! restarted) it reconnects with backoff and re-runs the helper.

pub mod live;
pub mod probe;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use ipnet::IpNet;
use tracing::{info, warn, Instrument as _};

use crate::cli::UpArgs;
use crate::config::{self, ExtraRoute, NetworkFilter};
use crate::control::{snapshot::TunnelState, ControlListener};
use crate::docker::vmside::{container, image, HelperError, HelperSpec, RunningHelper};
use crate::docker::{self, Change, Engine};
use crate::keys::{Key, PublicKey};
use crate::platform;
use crate::progress;
use crate::routes::{self, SkipReason, Skipped};
use crate::tunnel::{Device, DeviceUpdate, PeerUpdate};

/// How often the full state is compared with Docker even without events.
const RESYNC: Duration = Duration::from_secs(15);
const BACKOFF_MAX: Duration = Duration::from_secs(16);
const HELPER_RETRY: Duration = Duration::from_secs(2);
/// How often the VM peer's liveness is checked (and probed when quiet).
const LIVENESS_TICK: Duration = Duration::from_secs(1);
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

pub async fn run(args: UpArgs, ctx: UpContext) -> anyhow::Result<()> {
    platform::require_root("up")?;
    platform::validate_interface_name(&args.target.interface)?;
    platform::validate_interface_name(&args.target.vm_interface)?;
    if args.host_address.is_ipv4() != args.vm_address.is_ipv4() {
        anyhow::bail!(
            "--host-address {} and --vm-address {} must both be IPv4 or both IPv6",
            args.host_address,
            args.vm_address
        );
    }
    let candidates = docker::candidates(
        &discovery_inputs(args.target.docker_host.clone()),
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
        "Docker {} (API {}) at {}",
        engine.server_version, engine.api_version, engine.host
    ));
    // Linux with the engine in this namespace: its bridges are ours already.
    if platform::ENGINE_MAY_BE_LOCAL && !args.force {
        let networks = docker::networks(&engine.docker).await?;
        if let Some(b) = docker::local_bridge(&networks, &docker::local_addresses()) {
            info!(
                network = %b.network,
                gateway = %b.gateway,
                "Docker's networks are already reachable: the engine runs in this network \
                 namespace (its bridge gateway is a local address); nothing to do (--force runs anyway)"
            );
            return Ok(());
        }
    }
    view.set_engine(&engine);

    let pairs = [
        (args.host_address, args.vm_address),
        (IpAddr::V6(args.host_address6), IpAddr::V6(args.vm_address6)),
    ];
    let platform::Tunnel { tun, name, router } =
        platform::create_tunnel(&args.target.interface, platform::DEFAULT_MTU, &pairs).await?;
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
        host_endpoint: endpoint_with_port(&args.host_endpoint, port),
        vm_interface: args.target.vm_interface.clone(),
        vm_address: args.vm_address,
        host_address: args.host_address,
        vm_address6: args.vm_address6,
        host_address6: args.host_address6,
        archives: image::archives(args.helper_archive.as_deref()),
        routes: vm_routes(&file.routes),
    };
    view.set_helper(&spec.name, &spec.image, &spec.vm_interface);
    let mut s = Session {
        engine,
        device,
        router,
        spec,
        vm_addresses: [args.vm_address, IpAddr::V6(args.vm_address6)],
        helper: None,
        vm_mode: None,
        routed: BTreeSet::new(),
        skipped: Vec::new(),
        liveness: probe::Liveness::new(Instant::now()),
        probe_seq: 0,
        filter: file.networks.clone(),
        extra: file.routes.clone(),
        file,
        ctx,
        view,
        announced: false,
        handshake: None,
        hup,
    };

    let result = s.serve(&candidates, shutdown.as_mut()).await;
    s.teardown().await;
    // Last: `down` waits for the socket to go as the sign that all is removed.
    control.0.abort();
    let _ = (&mut control.0).await;
    result
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

/// The extra routes that need a route inside the VM.
fn vm_routes(routes: &[ExtraRoute]) -> Vec<(IpNet, IpAddr)> {
    routes
        .iter()
        .filter_map(|r| Some((r.subnet(), r.via()?)))
        .collect()
}

struct Session {
    engine: Engine,
    device: Arc<Device>,
    router: platform::OsRouter,
    spec: HelperSpec,
    vm_addresses: [IpAddr; 2],
    helper: Option<RunningHelper>,
    /// How the VM side ran last: once a kernel-mode helper found no
    /// WireGuard in the VM kernel, later helpers start in userspace mode
    /// straight away (the kernel does not gain the module meanwhile, and
    /// recovery stays one container start).
    vm_mode: Option<crate::helper::Mode>,
    routed: BTreeSet<IpNet>,
    skipped: Vec<Skipped>,
    /// The VM peer's rx counter, followed once a second.
    liveness: probe::Liveness,
    probe_seq: u16,
    /// Which networks to route, and extra routes (configuration file).
    filter: NetworkFilter,
    extra: Vec<ExtraRoute>,
    /// The file as last read, to tell which reloaded keys need a restart.
    file: config::Config,
    ctx: UpContext,
    view: Arc<live::View>,
    /// Whether "traffic can flow" was said.
    announced: bool,
    /// Until then, on a terminal: the wait for the first handshake.
    handshake: Option<progress::Step>,
    /// SIGHUP: reload the configuration file.
    hup: tokio::signal::unix::Signal,
}

/// Why `up` ends when its tunnel is gone.
fn tunnel_stopped(reason: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the tunnel device stopped ({reason}); routes and the helper were removed, start netconnect up again"
    )
}

impl Session {
    /// A TUN deleted under us (`ip link del`) does not wake its reader: the
    /// kernel reports only an error condition, which a read-readiness wait
    /// does not see. So the timers that run anyway look for the interface.
    fn tunnel_present(&self) -> anyhow::Result<()> {
        let name = self.router.interface();
        if platform::interface_exists(name) {
            Ok(())
        } else {
            Err(tunnel_stopped(&format!("interface {name} is gone")))
        }
    }

    async fn serve(
        &mut self,
        candidates: &[docker::Candidate],
        mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = &'static str>>,
    ) -> anyhow::Result<()> {
        loop {
            // (Re)establish the VM side and the routes; a missing image is
            // the one failure a retry cannot fix.
            match self.ensure_helper().await {
                Err(e @ (HelperError::NoImage { .. } | HelperError::Load { .. })) => {
                    return Err(e.into())
                }
                Err(e) => warn!(error = %e, "helper not running; will retry"),
                Ok(()) => {}
            }
            self.sync_routes().await;
            let docker = self.engine.docker.clone();
            let mut events = std::pin::pin!(docker::events(&docker));
            let mut resync = tokio::time::interval(RESYNC);
            resync.reset();
            let mut liveness = tokio::time::interval(LIVENESS_TICK);
            liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    sig = &mut shutdown => {
                        info!(signal = sig, "shutting down");
                        return Ok(());
                    }
                    // The TUN stopped working: nothing flows any more, so say
                    // why and exit non-zero, which launchd answers by
                    // starting us afresh.
                    reason = self.device.failed() => {
                        return Err(tunnel_stopped(&reason));
                    }
                    _ = self.hup.recv() => {
                        self.reload();
                        if let Err(e) = self.ensure_helper().await {
                            warn!(error = %e, "helper not running; will retry");
                        }
                        self.sync_routes().await;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(200)), if !self.announced && self.helper.is_some() => {
                        self.announce_when_ready();
                    }
                    ev = events.next() => match ev {
                        Some(Ok(ev)) => match docker::classify(&ev) {
                            Change::Networks => self.sync_routes().await,
                            // A kernel-mode helper exits by design.
                            Change::ContainerDied(id) if self.is_helper(&id) && !self.kernel_mode() => {
                                if self.docker_restarts_helper(&id).await {
                                    info!("the VM-side helper stopped and Docker restarted it");
                                } else {
                                    warn!("the VM-side helper stopped; starting it again");
                                    self.helper = None;
                                    self.view.helper_running(None);
                                    if let Err(e) = self.ensure_helper().await {
                                        warn!(error = %e, "helper restart failed; will retry");
                                    }
                                }
                            }
                            _ => {}
                        },
                        Some(Err(e)) => {
                            warn!(error = %e, "Docker event stream failed; reconnecting");
                            break;
                        }
                        None => {
                            warn!("Docker event stream ended; reconnecting");
                            break;
                        }
                    },
                    // A helper that failed to start is retried soon, not at the
                    // next resync.
                    _ = tokio::time::sleep(HELPER_RETRY), if self.helper.is_none() => {
                        if let Err(e) = self.ensure_helper().await {
                            warn!(error = %e, "helper not running; will retry");
                        }
                    }
                    _ = liveness.tick(), if self.helper.is_some() => {
                        self.tunnel_present()?;
                        if !self.check_vm_alive().await {
                            if let Err(e) = self.ensure_helper().await {
                                warn!(error = %e, "helper not running; will retry");
                            }
                        }
                    }
                    _ = resync.tick() => {
                        self.tunnel_present()?;
                        if let Err(e) = self.ensure_helper().await {
                            warn!(error = %e, "helper not running; will retry");
                        }
                        self.sync_routes().await;
                    }
                }
            }
            // The engine went away: the VM (and our helper) may be gone too.
            self.helper = None;
            self.view.helper_running(None);
            tokio::select! {
                e = connect_until_up(candidates) => {
                    self.view.set_engine(&e);
                    self.engine = e;
                }
                sig = &mut shutdown => {
                    info!(signal = sig, "shutting down");
                    return Ok(());
                }
            }
        }
    }

    /// Follows the VM peer's rx counter; probes when it is quiet (see
    /// [`probe`]), and when the probes go unanswered forgets the helper and
    /// returns false, so the caller starts a new one. This catches what no
    /// container event reports: a kernel interface deleted, a VM paused or
    /// restarted under a still-answering engine, a frozen helper.
    async fn check_vm_alive(&mut self) -> bool {
        let Some(h) = &self.helper else { return true };
        let rx = self
            .device
            .status()
            .peers
            .iter()
            .find(|p| p.public_key == h.vm_public_key)
            .map(|p| p.rx_bytes)
            .unwrap_or(0);
        let now = Instant::now();
        match self.liveness.observe(rx, now) {
            probe::Verdict::Alive => true,
            probe::Verdict::Probe => {
                self.probe_seq = self.probe_seq.wrapping_add(1);
                let id = std::process::id() as u16;
                if let Some(packet) = probe::echo(
                    self.spec.host_address,
                    self.spec.vm_address,
                    id,
                    self.probe_seq,
                ) {
                    self.device.inject(&packet).await;
                }
                true
            }
            probe::Verdict::Gone => {
                warn!(
                    silent_ms = self.liveness.quiet(now).as_millis() as u64,
                    probes = probe::PROBES,
                    "no packet from the VM side, not even an answer to a probe; starting the helper again"
                );
                self.helper = None;
                self.view.helper_running(None);
                false
            }
        }
    }

    /// The helper's restart policy brings a failed helper back within
    /// moments, with its key; only when Docker will not do that does `up`
    /// run a new one.
    async fn docker_restarts_helper(&self, id: &str) -> bool {
        container::is_running_or_restarting(&self.engine.docker, id).await
    }

    fn kernel_mode(&self) -> bool {
        self.helper
            .as_ref()
            .is_some_and(|h| h.mode == crate::helper::Mode::Kernel)
    }

    fn is_helper(&self, id: &str) -> bool {
        self.helper.as_ref().is_some_and(|h| h.id == id)
    }

    async fn ensure_helper(&mut self) -> Result<(), HelperError> {
        if let Some(h) = &self.helper {
            // A kernel interface needs no process; the probes judge it.
            if h.mode == crate::helper::Mode::Kernel
                || container::is_running(&self.engine.docker, &h.id).await
            {
                return Ok(());
            }
        }
        // A spinner for a helper that is gone would wait for nothing.
        self.handshake = None;
        image::ensure(&self.engine.docker, &self.spec.image, &self.spec.archives).await?;
        let starting = progress::step("Starting the VM-side helper");
        let started = container::start(&self.engine.docker, &self.spec, self.vm_mode).await?;
        self.vm_mode = Some(started.mode);
        info!(target: progress::TARGET, container = %&started.id[..12.min(started.id.len())], vm_key = %started.vm_public_key, mode = started.mode.as_str(), "VM-side helper running");
        starting.done(format!(
            "VM-side helper running ({} WireGuard)",
            started.mode.as_str()
        ));
        let new_key = self.helper.as_ref().map(|h| h.vm_public_key) != Some(started.vm_public_key);
        self.view
            .helper_running(Some((&started.id, started.vm_public_key)));
        if !self.announced {
            info!(target: progress::TARGET, "waiting for the first handshake with the VM side");
            self.handshake = Some(progress::step(
                "Waiting for the first handshake with the VM side",
            ));
        }
        self.helper = Some(started);
        self.liveness = probe::Liveness::new(Instant::now());
        self.configure_peer(new_key);
        Ok(())
    }

    /// The VM peer: its key, and allowed IPs = its tunnel addresses plus the
    /// routed subnets, nothing wider. A new key replaces the old peer.
    fn configure_peer(&self, replace: bool) {
        let Some(h) = &self.helper else { return };
        let mut peer = PeerUpdate::new(h.vm_public_key);
        peer.replace_allowed_ips = true;
        peer.allowed_ips = self
            .vm_addresses
            .iter()
            .map(|a| IpNet::from(*a))
            .chain(self.routed.iter().copied())
            .collect();
        let update = DeviceUpdate {
            replace_peers: replace,
            peers: vec![peer],
            ..Default::default()
        };
        if let Err(e) = self.device.apply(&update) {
            warn!(error = %e, "configuring the VM peer failed");
        }
    }

    async fn sync_routes(&mut self) {
        if let Err(e) = self.try_sync_routes().await {
            warn!(error = %e, "route sync failed; will retry");
        }
    }

    async fn try_sync_routes(&mut self) -> anyhow::Result<()> {
        let networks = docker::networks(&self.engine.docker).await?;
        let wanted: Vec<docker::NetworkInfo> = networks
            .iter()
            .filter(|n| self.filter.allows(&n.name))
            .cloned()
            .collect();
        // Only private Docker subnets, unless the config file allows a
        // public one; its own extra routes are the user's choice.
        let allow = self.filter.allow_public();
        let extra: BTreeSet<IpNet> = self.extra.iter().map(|r| r.subnet()).collect();
        let (mut desired, public) =
            routes::scope::partition(docker::desired_subnets(&wanted), &allow, &extra);
        desired.extend(extra);
        let (ours, system) = self.router.current().await?;
        let mut plan = routes::plan(&desired, &ours, &system);
        plan.skipped
            .extend(public.into_iter().map(|subnet| Skipped {
                subnet,
                reason: SkipReason::Public,
            }));
        for s in &plan.skipped {
            if !self.skipped.contains(s) {
                let net = networks
                    .iter()
                    .find(|n| n.subnets.contains(&s.subnet))
                    .map(|n| n.name.as_str())
                    .unwrap_or("?");
                match &s.reason {
                    SkipReason::Conflict(route) => warn!(
                        network = net,
                        subnet = %s.subnet,
                        conflicts_with = %route,
                        "not routing a Docker subnet that overlaps a route this machine already has"
                    ),
                    SkipReason::Public => warn!(
                        network = net,
                        subnet = %s.subnet,
                        allow_with = routes::scope::ALLOW_KEY,
                        "not routing a Docker subnet that holds public addresses"
                    ),
                }
            }
        }
        for net in &plan.remove {
            self.router.remove(*net).await?;
            info!(subnet = %net, "route removed");
        }
        for net in &plan.add {
            self.router.add(*net).await?;
            let name = networks
                .iter()
                .find(|n| n.subnets.contains(net))
                .map(|n| n.name.as_str());
            let name = name.or_else(|| {
                self.extra
                    .iter()
                    .any(|r| r.subnet() == *net)
                    .then_some("(config route)")
            });
            info!(network = name.unwrap_or("?"), subnet = %net, "route added");
        }
        let skipped: BTreeSet<IpNet> = plan.skipped.iter().map(|s| s.subnet).collect();
        let routed: BTreeSet<IpNet> = desired.difference(&skipped).copied().collect();
        self.skipped = plan.skipped;
        if routed != self.routed {
            self.routed = routed;
            self.configure_peer(false);
        }
        self.view.set_routes(
            live::route_states(&networks, &self.filter, &self.skipped, &self.routed),
            live::extra_states(&self.extra, &self.skipped, &self.routed),
        );
        Ok(())
    }

    /// SIGHUP: re-read the configuration file. Network filters and extra
    /// routes apply now (a changed VM-side route re-runs the helper); other
    /// keys at the next start. A bad file changes nothing.
    fn reload(&mut self) {
        let loaded = match config::load(&self.ctx.config_path, self.ctx.config_explicit) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "configuration not reloaded; keeping the last good one");
                return;
            }
        };
        let c = loaded.config.clone();
        let restart_only = |c: &config::Config| config::Config {
            networks: Default::default(),
            routes: Vec::new(),
            log: Default::default(),
            ..c.clone()
        };
        if restart_only(&c) != restart_only(&self.file) {
            warn!(
                "tunnel, engine or interface settings changed; they take effect at the next start"
            );
        }
        self.filter = c.networks.clone();
        self.extra = c.routes.clone();
        let vm = vm_routes(&self.extra);
        if vm != self.spec.routes {
            info!("VM-side routes changed; starting the helper again");
            self.spec.routes = vm;
            self.helper = None;
            self.view.helper_running(None);
        }
        self.file = c;
        self.view.set_config_file(config_name(&loaded));
        info!(
            file = %self.ctx.config_path.display(),
            exists = loaded.path.is_some(),
            "configuration reloaded"
        );
    }

    /// One line when the first handshake completes: traffic can flow.
    fn announce_when_ready(&mut self) {
        let Some(h) = &self.helper else { return };
        let ready = self
            .device
            .status()
            .peers
            .iter()
            .any(|p| p.public_key == h.vm_public_key && p.last_handshake.is_some());
        if ready {
            self.announced = true;
            info!(
                target: progress::TARGET,
                routes = self.routed.len(),
                "ready: traffic can flow; containers are reachable by IP"
            );
            if let Some(step) = self.handshake.take() {
                let took = progress::took(step.elapsed());
                step.done(format!("Handshake with the VM side ({took})"));
            }
            progress::line(format!(
                "Ready: traffic can flow; {} subnet(s) routed through {} (Ctrl-C stops and removes them)",
                self.routed.len(),
                self.device.name()
            ));
            progress::finish();
        }
    }

    /// Remove every route we added, then the interface (closing the TUN),
    /// and the helper container, whose VM-side tunnel is useless without us.
    async fn teardown(mut self) {
        // A wait for a handshake that will not come ends here, not under
        // the shutdown's log lines.
        self.handshake = None;
        match tokio::time::timeout(
            HELPER_REMOVE_TIMEOUT,
            container::remove(&self.engine.docker, &self.spec.name),
        )
        .await
        {
            Ok(Ok(())) => info!("VM-side helper removed"),
            Ok(Err(e)) => warn!(error = %e, "removing the helper container failed"),
            Err(_) => warn!("Docker did not remove the helper container in time"),
        }
        match self.router.current().await {
            Ok((ours, _)) => {
                for net in ours {
                    if let Err(e) = self.router.remove(net).await {
                        warn!(error = %e, "removing a route at shutdown failed");
                    }
                }
            }
            Err(e) => warn!(error = %e, "listing routes at shutdown failed"),
        }
        self.device.shutdown().await;
        info!("tunnel removed");
    }
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

/// Engine discovery looks at the invoking user's Docker, also under sudo
/// and, as a launchd daemon, the console user's.
pub fn discovery_inputs(flag: Option<String>) -> docker::Inputs {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let invoker = docker::Invoker::from_env(std::path::Path::new("/dev/console"));
    let home = docker::user_home(&invoker, &docker::RealUsers);
    // The user whose files those are is the home's owner.
    let owner = (invoker.euid == 0)
        .then(|| home.as_deref().and_then(|h| std::fs::metadata(h).ok()))
        .flatten()
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    docker::Inputs {
        flag,
        env_docker_host: env("DOCKER_HOST"),
        env_docker_context: env("DOCKER_CONTEXT"),
        home,
        docker_config: env("DOCKER_CONFIG").map(PathBuf::from),
        owner,
    }
}

/// `HOST` gets the listen port; `HOST:PORT` and `[V6]:PORT` are kept.
pub fn endpoint_with_port(endpoint: &str, port: u16) -> String {
    if endpoint.parse::<std::net::SocketAddr>().is_ok() {
        return endpoint.to_owned();
    }
    if let Ok(ip) = endpoint.trim_matches(['[', ']']).parse::<IpAddr>() {
        return std::net::SocketAddr::new(ip, port).to_string();
    }
    match endpoint.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => endpoint.to_owned(),
        _ => format!("{endpoint}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_listen_port_when_they_have_none() {
        assert_eq!(
            endpoint_with_port("host.docker.internal", 51820),
            "host.docker.internal:51820"
        );
        assert_eq!(
            endpoint_with_port("host.docker.internal:4000", 51820),
            "host.docker.internal:4000"
        );
        assert_eq!(endpoint_with_port("10.1.2.3", 7), "10.1.2.3:7");
        assert_eq!(endpoint_with_port("10.1.2.3:9", 7), "10.1.2.3:9");
        assert_eq!(endpoint_with_port("fd00::1", 7), "[fd00::1]:7");
        assert_eq!(endpoint_with_port("[fd00::1]:9", 7), "[fd00::1]:9");
    }
}

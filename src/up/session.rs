//! The daemon's event loop, once `up`'s setup has made the tunnel. It keeps
//! three things equal to what Docker says: the tunnel's VM peer (the helper
//! container and its key), the routes through the tunnel (one per Docker
//! network subnet) and the peer's allowed IPs (the VM's tunnel addresses
//! plus exactly those subnets).
//!
//! Nothing here runs on a clock while nothing happens. What wakes it:
//! - Docker events: a network created or removed (one list request, then
//!   the routes), the helper container dying, a container started,
//!   stopped, renamed or attached (one inspect of it, then the names); a
//!   broken stream means the engine restarted: reconnect with backoff,
//!   re-run the helper, resync.
//! - The routing table's change notices: a route someone else deleted is
//!   put back, with no request to Docker (the networks are remembered).
//! - Traffic into the tunnel: when it goes unanswered the VM side is
//!   probed and, if gone, re-run ([`super::probe`]).
//! - SIGHUP (reload the file), shutdown, the device failing.
//!
//! Timers run only while something is pending: a helper start to retry, an
//! answer to wait for, the first handshake to announce.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt as _;
use ipnet::IpNet;
use tokio::time::Instant;
use tracing::{info, warn};

use super::clusters::{self, Clusters};
use super::live;
use super::ports::{EngineApi, RouteEvents, TunnelApi};
use super::probe;
use super::UpContext;
use crate::config::{self, ExtraRoute, NetworkFilter};
use crate::control::snapshot;
use crate::dns::names::Table;
use crate::dns::server::Zone;
use crate::docker::vmside::{HelperError, HelperSpec, RunningHelper};
use crate::docker::{self, Change, ContainerInfo, NetworkInfo};
use crate::helper::endpoint::Report;
use crate::kube;
use crate::progress;
use crate::routes::{self, Router, SkipReason, Skipped, WatchEvent};
use crate::tunnel::{DeviceUpdate, PeerUpdate};

/// The longest wait between attempts to reach the engine again.
pub const BACKOFF_MAX: Duration = Duration::from_secs(16);
/// A helper that failed to start is tried again after this long.
const HELPER_RETRY: Duration = Duration::from_secs(2);
/// An event stream that ends sooner than this after connecting counts as
/// failing, and the next reconnect waits longer.
const STABLE: Duration = Duration::from_secs(10);
/// How often the first handshake is looked for, until it happens; after
/// [`ANNOUNCE_FAST`] without one (the VM cannot reach us), less often.
const ANNOUNCE_POLL: Duration = Duration::from_millis(200);
const ANNOUNCE_SLOW: Duration = Duration::from_secs(5);
const ANNOUNCE_FAST: Duration = Duration::from_secs(30);

pub struct Session<E, T, R, W> {
    pub engine: E,
    pub tunnel: T,
    pub router: R,
    pub watch: W,
    pub spec: HelperSpec,
    pub vm_addresses: [IpAddr; 2],
    pub helper: Option<RunningHelper>,
    /// The helper exited by itself after a quiet spell (the userspace peer
    /// does when no handshake came for a long time): started again when
    /// traffic needs it, not at once, so an idle VM may sleep.
    pub parked: bool,
    /// How the VM side ran last: once a kernel-mode helper found no
    /// WireGuard in the VM kernel, later helpers start in userspace mode
    /// straight away (the kernel does not gain the module meanwhile, and
    /// recovery stays one container start).
    pub vm_mode: Option<crate::helper::Mode>,
    /// The engine's networks as last listed.
    pub networks: Vec<NetworkInfo>,
    pub routed: BTreeSet<IpNet>,
    pub skipped: Vec<Skipped>,
    /// The names served, when the name server runs: rebuilt from the
    /// running containers (listed at start, each then updated by an
    /// inspect at its events) and the routed subnets.
    pub zone: Option<Arc<Zone>>,
    /// The running containers, followed while names or clusters need them.
    pub containers: Vec<ContainerInfo>,
    /// KinD and k3d clusters found in the containers ([`super::clusters`]).
    pub clusters: Clusters,
    /// The clusters' ranges wanted through the tunnel, and their VM routes
    /// last set.
    pub kube_mac: BTreeSet<IpNet>,
    pub kube_vm: Vec<(IpNet, IpAddr)>,
    /// The clusters' domains' resolver files, where there is a folder.
    pub zone_resolvers: Option<super::names::ZoneResolvers>,
    /// The zones besides the domain, as last built: the clusters' domains
    /// and the names' (label domains, reverse zones). Their union is the
    /// set of resolver files.
    pub cluster_zones: Vec<String>,
    pub name_zones: Vec<String>,
    /// Label domains already warned about, so a rebuild does not repeat it.
    pub refused_warned: BTreeSet<String>,
    /// The routes' last read-back disagreements, said once each.
    pub os_view: BTreeSet<String>,
    pub liveness: probe::Liveness,
    pub probe_seq: u16,
    /// Which networks to route, and extra routes (configuration file).
    pub filter: NetworkFilter,
    pub extra: Vec<ExtraRoute>,
    /// The file as last read, to tell which reloaded keys need a restart.
    pub file: config::Config,
    pub ctx: UpContext,
    pub view: Arc<live::View>,
    /// Whether "traffic can flow" was said.
    pub announced: bool,
    /// Until then, on a terminal: the wait for the first handshake.
    pub handshake: Option<progress::Step>,
    /// SIGHUP: reload the configuration file.
    pub reload: BoxStream<'static, ()>,
    /// When the last helper start was tried: the next waits [`HELPER_RETRY`]
    /// from it (a deadline, so that other wakeups do not put it off).
    pub helper_tried: Instant,
}

/// The next word of the running helper on the way home; pending while
/// there is none to wait for. Once the helper's output has ended, it is
/// forgotten (`None` for this turn of the loop, pending after).
async fn way_home_changed(helper: &mut Option<RunningHelper>) -> Option<Report> {
    let Some(rx) = helper.as_mut().and_then(|h| h.way_home.as_mut()) else {
        return std::future::pending().await;
    };
    match rx.changed().await {
        Ok(()) => rx.borrow_and_update().clone(),
        Err(_) => {
            if let Some(h) = helper.as_mut() {
                h.way_home = None;
            }
            None
        }
    }
}

/// Why `up` ends when its tunnel is gone.
pub fn tunnel_stopped(reason: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the tunnel device stopped ({reason}); routes and the helper were removed, start netconnect up again"
    )
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl<E: EngineApi, T: TunnelApi, R: Router, W: RouteEvents> Session<E, T, R, W> {
    pub async fn run(
        &mut self,
        mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = &'static str>>,
    ) -> anyhow::Result<()> {
        let mut backoff = Duration::ZERO;
        let mut watching_routes = true;
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
            self.sync_names().await;
            let connected = Instant::now();
            let mut events = self.engine.events();
            loop {
                let check_at = self.liveness.next_check();
                let want_offered = self.parked || (self.helper.is_some() && check_at.is_none());
                // The VM's counter before the traffic: a reply that comes
                // before this task runs must count as an answer.
                let rx_armed = if want_offered { self.vm_rx() } else { 0 };
                let announce_every = if self.helper_tried.elapsed() < ANNOUNCE_FAST {
                    ANNOUNCE_POLL
                } else {
                    ANNOUNCE_SLOW
                };
                tokio::select! {
                    sig = &mut shutdown => {
                        info!(signal = sig, "shutting down");
                        return Ok(());
                    }
                    // The TUN stopped working: nothing flows any more, so say
                    // why and exit non-zero, which launchd answers by
                    // starting us afresh.
                    reason = self.tunnel.failed() => {
                        return Err(tunnel_stopped(&reason));
                    }
                    ev = self.watch.next(), if watching_routes => match ev {
                        Some(WatchEvent::Routes) => self.apply_routes().await,
                        Some(WatchEvent::InterfaceGone) => {
                            let name = self.router.interface().to_owned();
                            return Err(tunnel_stopped(&format!("interface {name} is gone")));
                        }
                        None => {
                            warn!("the routing table's change notices stopped; routes are compared only at Docker events from now on");
                            watching_routes = false;
                        }
                    },
                    Some(()) = self.reload.next() => {
                        self.reload();
                        if let Err(e) = self.ensure_helper().await {
                            warn!(error = %e, "helper not running; will retry");
                        }
                        self.sync_routes().await;
                        self.sync_names().await;
                    }
                    _ = tokio::time::sleep(announce_every), if !self.announced && self.helper.is_some() => {
                        self.announce_when_ready();
                    }
                    Some(report) = way_home_changed(&mut self.helper) => self.on_way_home(&report),
                    ev = events.next() => match ev {
                        Some(Ok(ch)) => self.on_change(ch).await,
                        Some(Err(e)) => {
                            warn!(error = %e, "Docker event stream failed; reconnecting");
                            break;
                        }
                        None => {
                            warn!("Docker event stream ended; reconnecting");
                            break;
                        }
                    },
                    // A helper that failed to start is retried soon.
                    _ = tokio::time::sleep_until(self.helper_tried + HELPER_RETRY), if self.helper.is_none() && !self.parked => {
                        if let Err(e) = self.ensure_helper().await {
                            warn!(error = %e, "helper not running; will retry");
                        }
                    }
                    () = self.tunnel.offered(), if want_offered => self.on_traffic(rx_armed).await,
                    _ = tokio::time::sleep_until(Instant::from_std(check_at.unwrap_or_else(now))), if check_at.is_some() => {
                        self.check_vm_alive().await;
                    }
                }
            }
            // The engine went away: the VM (and our helper) may be gone too.
            drop(events);
            self.forget_helper(false);
            backoff = if connected.elapsed() < STABLE {
                (backoff * 2).clamp(Duration::from_secs(1), BACKOFF_MAX)
            } else {
                Duration::ZERO
            };
            tokio::select! {
                e = async {
                    tokio::time::sleep(backoff).await;
                    self.engine.reconnect().await.clone()
                } => self.view.set_engine(&e),
                sig = &mut shutdown => {
                    info!(signal = sig, "shutting down");
                    return Ok(());
                }
            }
        }
    }

    async fn on_change(&mut self, ch: Change) {
        // The helper has host networking, hence no name; its own events
        // are answered below (and inspected there when it dies).
        if let Some(id) = ch.container().filter(|id| !self.is_helper(id)) {
            self.update_container(id).await;
        }
        match ch {
            Change::Networks => self.sync_routes().await,
            Change::ExecDied { id, exec_id } => {
                if let Some(cluster) = self.clusters.exec_died(&id, &exec_id) {
                    self.sync_clusters(Some(cluster)).await;
                }
            }
            // A kernel-mode helper exits by design.
            Change::ContainerDied { id, exit_code }
                if self.is_helper(&id) && !self.kernel_mode() =>
            {
                if self.engine.is_running_or_restarting(&id).await {
                    info!("the VM-side helper stopped and Docker restarted it");
                } else if exit_code == Some(0) {
                    info!("the VM-side helper stopped after a long quiet spell; it starts again when traffic needs it");
                    self.forget_helper(true);
                } else {
                    warn!(exit_code, "the VM-side helper stopped; starting it again");
                    self.forget_helper(false);
                    if let Err(e) = self.ensure_helper().await {
                        warn!(error = %e, "helper restart failed; will retry");
                    }
                }
            }
            _ => {}
        }
    }

    /// The helper said how the VM reaches us (or that nothing it tried
    /// answered): into the status, and the log.
    fn on_way_home(&mut self, report: &Report) {
        match report {
            Report::Found { chosen, .. } => info!(
                target: progress::TARGET,
                endpoint = %chosen.addr,
                source = chosen.source.as_str(),
                "the VM side reaches this machine"
            ),
            Report::None { tried, rejected } => {
                warn!(
                    "{}; `netconnect up` goes on trying",
                    Report::describe_none(tried, rejected)
                )
            }
        }
        self.view.way_home(Some(report));
    }

    /// Traffic went into the tunnel: start the VM side if it was parked,
    /// else wait for an answer.
    async fn on_traffic(&mut self, rx_before: u64) {
        if self.parked {
            self.parked = false;
            info!("traffic for the VM side; starting the helper again");
            if let Err(e) = self.ensure_helper().await {
                warn!(error = %e, "helper not running; will retry");
            }
            return;
        }
        self.liveness.offered(rx_before, now());
    }

    fn vm_rx(&self) -> u64 {
        self.helper
            .as_ref()
            .and_then(|h| self.tunnel.peer(&h.vm_public_key))
            .map_or(0, |p| p.rx_bytes)
    }

    /// Traffic has waited for an answer: probe the VM (see [`probe`]), and
    /// when the probes go unanswered forget the helper and run a new one.
    /// This catches what no container event reports: a kernel interface
    /// deleted, a VM paused or restarted under a still-answering engine, a
    /// frozen helper.
    async fn check_vm_alive(&mut self) {
        if self.helper.is_none() {
            self.liveness = probe::Liveness::new(now());
            return;
        }
        let rx = self.vm_rx();
        let at = now();
        let unanswered = self.liveness.unanswered(at);
        match self.liveness.check(rx, at) {
            probe::Verdict::Answered => {}
            probe::Verdict::Probe => {
                self.probe_seq = self.probe_seq.wrapping_add(1);
                let id = std::process::id() as u16;
                if let Some(packet) = probe::echo(
                    self.spec.host_address,
                    self.spec.vm_address,
                    id,
                    self.probe_seq,
                ) {
                    self.tunnel.inject(&packet).await;
                }
            }
            probe::Verdict::Gone => {
                warn!(
                    unanswered_ms = unanswered.as_millis() as u64,
                    probes = probe::PROBES,
                    "traffic to the VM side went unanswered, and so did probes; starting the helper again"
                );
                self.forget_helper(false);
                if let Err(e) = self.ensure_helper().await {
                    warn!(error = %e, "helper not running; will retry");
                }
            }
        }
    }

    /// The helper is gone or to be replaced; `parked`: start it again only
    /// when traffic needs it.
    fn forget_helper(&mut self, parked: bool) {
        self.helper = None;
        self.parked = parked;
        if parked {
            self.view.helper_parked();
        } else {
            self.view.helper_running(None);
        }
    }

    fn kernel_mode(&self) -> bool {
        self.helper
            .as_ref()
            .is_some_and(|h| h.mode == crate::helper::Mode::Kernel)
    }

    fn is_helper(&self, id: &str) -> bool {
        self.helper.as_ref().is_some_and(|h| h.id == id)
    }

    pub async fn ensure_helper(&mut self) -> Result<(), HelperError> {
        if self.parked {
            return Ok(());
        }
        if let Some(h) = &self.helper {
            // A kernel interface needs no process; traffic judges it.
            if h.mode == crate::helper::Mode::Kernel || self.engine.is_running(&h.id).await {
                return Ok(());
            }
        }
        self.helper_tried = Instant::now();
        // A spinner for a helper that is gone would wait for nothing.
        self.handshake = None;
        self.engine.ensure_image(&self.spec).await?;
        let starting = progress::step("Starting the VM-side helper");
        let started = self.engine.start_helper(&self.spec, self.vm_mode).await?;
        self.vm_mode = Some(started.mode);
        info!(target: progress::TARGET, container = %&started.id[..12.min(started.id.len())], vm_key = %started.vm_public_key, mode = started.mode.as_str(), "VM-side helper running");
        starting.done(format!(
            "VM-side helper running ({} WireGuard)",
            started.mode.as_str()
        ));
        let new_key = self.helper.as_ref().map(|h| h.vm_public_key) != Some(started.vm_public_key);
        self.view
            .helper_running(Some((&started.id, started.vm_public_key)));
        // A new helper looks for the way home afresh.
        self.view.way_home(None);
        if !self.announced {
            info!(target: progress::TARGET, "waiting for the first handshake with the VM side");
            self.handshake = Some(progress::step(
                "Waiting for the first handshake with the VM side",
            ));
        }
        self.helper = Some(started);
        self.liveness = probe::Liveness::new(now());
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
        if let Err(e) = self.tunnel.apply(&update) {
            warn!(error = %e, "configuring the VM peer failed");
        }
    }

    /// List the networks (one request to Docker), then the routes.
    async fn sync_routes(&mut self) {
        match self.engine.networks().await {
            Ok(n) => self.networks = n,
            Err(e) => {
                warn!(error = %e, "listing Docker networks failed; will retry at the next event");
                return;
            }
        }
        self.apply_routes().await;
    }

    /// Make the routes match the networks as last listed.
    async fn apply_routes(&mut self) {
        if let Err(e) = self.try_apply_routes().await {
            warn!(error = %e, "route sync failed; will retry at the next change");
        }
    }

    async fn try_apply_routes(&mut self) -> anyhow::Result<()> {
        let networks = &self.networks;
        let wanted: Vec<docker::NetworkInfo> = networks
            .iter()
            .filter(|n| self.filter.allows(&n.name))
            .cloned()
            .collect();
        // Only private Docker subnets, unless the config file allows a
        // public one; its own extra routes are the user's choice.
        let allow = self.filter.allow_public();
        let extra: BTreeSet<IpNet> = self.extra.iter().map(|r| r.subnet()).collect();
        let mut subnets = docker::desired_subnets(&wanted);
        subnets.extend(self.kube_mac.iter().copied());
        let (mut desired, public) = routes::scope::partition(subnets, &allow, &extra);
        desired.extend(extra);
        let mut plan = self.router.set(&desired).await?;
        if !plan.is_empty() {
            // What the table shows now, against what was meant: a route the
            // OS accepted and does not show is said here, not as a timeout.
            match self.router.confirm(&plan, &desired).await {
                Ok(found) => {
                    for d in &found {
                        if !self.os_view.contains(&d.to_string()) {
                            warn!("{d}");
                        }
                    }
                    self.os_view = found.iter().map(ToString::to_string).collect();
                    self.view.set_os_view("routes", &found);
                }
                Err(e) => tracing::debug!(error = %e, "reading the routes back failed"),
            }
        }
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
            info!(subnet = %net, "route removed");
        }
        for net in &plan.add {
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
            match (name, self.clusters.owner_of(net)) {
                (None, Some(c)) => info!(cluster = %c, subnet = %net, "route added"),
                (name, _) => info!(network = name.unwrap_or("?"), subnet = %net, "route added"),
            }
        }
        let skipped: BTreeSet<IpNet> = plan.skipped.iter().map(|s| s.subnet).collect();
        let routed: BTreeSet<IpNet> = desired.difference(&skipped).copied().collect();
        self.skipped = plan.skipped;
        if routed != self.routed {
            self.routed = routed;
            self.configure_peer(false);
            self.apply_names();
            self.apply_forwards();
        }
        self.view.set_routes(
            snapshot::route_states(&self.networks, &self.filter, &self.skipped, &self.routed),
            snapshot::extra_states(&self.extra, &self.skipped, &self.routed),
        );
        self.publish_clusters();
        Ok(())
    }

    /// List the running containers (one request to Docker), then the names.
    async fn sync_names(&mut self) {
        if !self.follows_containers() {
            return;
        }
        match self.engine.containers().await {
            Ok(c) => self.containers = c,
            Err(e) => {
                warn!(error = %e, "listing Docker containers failed; names will be updated at the next event");
                return;
            }
        }
        self.apply_names();
        self.sync_clusters(None).await;
    }

    fn follows_containers(&self) -> bool {
        self.zone.is_some() || self.clusters.enabled()
    }

    /// One container changed (its event named it): inspect it (one
    /// request), then the names.
    async fn update_container(&mut self, id: &str) {
        if !self.follows_containers() {
            return;
        }
        match self.engine.container(id).await {
            Ok(now) => {
                self.containers.retain(|c| c.id != id);
                self.containers.extend(now);
            }
            Err(e) => {
                warn!(error = %e, container = id, "inspecting a Docker container failed; listing them all");
                return self.sync_names().await;
            }
        }
        self.apply_names();
        self.sync_clusters(None).await;
    }

    /// The clusters as the containers show them: read those that are new,
    /// changed or (`again`) still being made, then their routes.
    async fn sync_clusters(&mut self, again: Option<kube::ClusterId>) {
        let mut to_read = self.clusters.observe(&self.containers);
        if let Some(id) = again {
            if !to_read.contains(&id) {
                to_read.push(id);
            }
        }
        for id in to_read {
            let Some(cp) = self.clusters.control_plane(&id) else {
                continue;
            };
            let mut own = Vec::new();
            let read = clusters::read(&self.engine, &id, &cp, |e| own.push(e)).await;
            for e in own {
                self.clusters.own_exec(e);
            }
            match &read {
                Ok(c) => info!(
                    cluster = %id,
                    flavor = id.flavor.as_str(),
                    nodes = c.nodes.len(),
                    services = ?c.services,
                    dns = ?c.dns,
                    domain = %c.domain,
                    "Kubernetes cluster read"
                ),
                Err(e) => {
                    warn!(cluster = %id, error = %e, "cannot read the Kubernetes cluster; will try again when its nodes change")
                }
            }
            self.clusters.record(&id, read);
        }
        self.apply_clusters().await;
    }

    /// The clusters' routes: on the Mac through the tunnel (with the
    /// networks', under the same rules), in the VM via their nodes.
    async fn apply_clusters(&mut self) {
        let plan = self.clusters.plan();
        if plan.mac != self.kube_mac {
            self.kube_mac = plan.mac;
            self.apply_routes().await;
        }
        if plan.vm != self.kube_vm {
            let wanted = self.vm_routes_wanted(&plan.vm);
            // A helper not running gets them when it starts.
            let set = match &self.helper {
                Some(_) => self.engine.set_vm_routes(&self.spec, &wanted).await,
                None => Ok(()),
            };
            match set {
                Ok(()) => {
                    for (net, gw) in plan.vm.iter().filter(|r| !self.kube_vm.contains(r)) {
                        info!(subnet = %net, via = %gw, "VM route to a cluster set");
                    }
                    self.kube_vm = plan.vm;
                }
                Err(e) => {
                    warn!(error = %e, "setting the VM's routes to the clusters failed; will retry at the next change")
                }
            }
            self.spec.routes = wanted;
        }
        self.apply_forwards();
        self.publish_clusters();
    }

    /// The clusters' DNS zones, asked of their DNS Service through the
    /// tunnel, and their domains in the resolver. Only a cluster whose DNS
    /// Service is routed: a question must not leave by another way.
    fn apply_forwards(&mut self) {
        let Some(zone) = &self.zone else { return };
        let routed: Vec<kube::Cluster> = self
            .clusters
            .read()
            .into_iter()
            .map(|c| {
                let mut c = c.clone();
                c.dns
                    .retain(|ip| self.routed.iter().any(|n| n.contains(ip)));
                c
            })
            .collect();
        let ours = zone.current().domain().to_string();
        let built = kube::names::Forwards::build(
            &routed.iter().collect::<Vec<_>>(),
            self.clusters.config.cluster_local.as_deref(),
            &ours,
        );
        let domains = built.forwards.domains();
        if zone.set_forwards(built.forwards) {
            for (domain, owner, others) in &built.shared {
                let others: Vec<String> = others.iter().map(|c| c.name.clone()).collect();
                warn!(
                    domain = %domain,
                    owner = %owner,
                    others = ?others,
                    "clusters share a domain: it answers for the first (set [kubernetes] cluster_local to choose); each answers under <cluster>.kube.{ours}"
                );
            }
            info!(domains = ?domains, "cluster names forwarded");
        }
        self.cluster_zones = domains;
        self.sync_resolvers();
    }

    /// The resolver files: one per zone besides the domain.
    fn sync_resolvers(&mut self) {
        if let Some(r) = self.zone_resolvers.as_mut() {
            let mut all = self.cluster_zones.clone();
            all.extend(self.name_zones.iter().cloned());
            all.sort();
            all.dedup();
            r.sync(&all);
        }
    }

    /// The clusters into the status, with the zones each answers.
    fn publish_clusters(&self) {
        let mut states = self.clusters.states(&self.routed);
        if let Some(zone) = &self.zone {
            let forwards = zone.forwards();
            for s in &mut states {
                s.zones = forwards
                    .zones()
                    .iter()
                    .filter(|f| f.cluster.name == s.name && f.cluster.flavor.as_str() == s.flavor)
                    .map(|f| f.zone.clone())
                    .collect();
                s.zones.sort();
            }
        }
        self.view.set_clusters(states);
    }

    /// The VM's routes: the configuration file's, then the clusters'.
    fn vm_routes_wanted(&self, kube: &[(IpNet, IpAddr)]) -> Vec<(IpNet, IpAddr)> {
        let mut out = super::vm_routes(&self.extra);
        for r in kube {
            if !out.iter().any(|o| o.0 == r.0) {
                out.push(*r);
            }
        }
        out
    }

    /// Make the names match the containers as last listed and the routes.
    fn apply_names(&mut self) {
        let Some(zone) = &self.zone else { return };
        let domain = zone.current().domain().clone();
        // Reverse zones for the Docker networks only: a cluster's ranges
        // are its DNS Service's to name, a configured route's nobody's.
        let reverse: BTreeSet<IpNet> = self
            .networks
            .iter()
            .flat_map(|n| n.subnets.iter())
            .filter(|s| self.routed.contains(s))
            .copied()
            .collect();
        let opts = crate::dns::names::Options {
            extra_domains: self.file.dns.extra_domains(),
            reverse: Some(reverse),
        };
        let table = Table::build_with(&domain, &self.containers, &self.routed, &opts);
        for (name, why) in table.refused() {
            if self.refused_warned.insert(name.to_owned()) {
                warn!("label domain {name} not served: {why}");
            }
        }
        let names = table.len();
        let zones = table.other_zones();
        if zone.set(table) {
            tracing::debug!(names, domain = %domain, "DNS names updated");
        }
        if zones != self.name_zones {
            self.name_zones = zones;
            self.sync_resolvers();
        }
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
            kubernetes: Default::default(),
            ..c.clone()
        };
        if restart_only(&c) != restart_only(&self.file) {
            warn!(
                "tunnel, engine or interface settings changed; they take effect at the next start"
            );
        }
        self.filter = c.networks.clone();
        self.extra = c.routes.clone();
        self.clusters.config = c.kubernetes.clone();
        let vm = self.vm_routes_wanted(&self.kube_vm);
        if vm != self.spec.routes {
            info!("VM-side routes changed; starting the helper again");
            self.spec.routes = vm;
            self.forget_helper(false);
        }
        self.file = c;
        self.view.set_config_file(super::config_name(&loaded));
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
            .tunnel
            .peer(&h.vm_public_key)
            .is_some_and(|p| p.handshaken);
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
                self.tunnel.name()
            ));
            progress::finish();
        }
    }

    /// Remove the helper container, whose VM-side tunnel is useless without
    /// us, and every route we added. The caller then closes the device.
    pub async fn teardown(mut self, helper_remove_timeout: Duration) {
        // A wait for a handshake that will not come ends here, not under
        // the shutdown's log lines.
        self.handshake = None;
        match tokio::time::timeout(
            helper_remove_timeout,
            self.engine.remove_helper(&self.spec.name),
        )
        .await
        {
            Ok(Ok(())) => info!("VM-side helper removed"),
            Ok(Err(e)) => warn!(error = %e, "removing the helper container failed"),
            Err(_) => warn!("Docker did not remove the helper container in time"),
        }
        if let Some(r) = self.zone_resolvers.as_mut() {
            r.sync(&[]);
        }
        self.name_zones.clear();
        self.cluster_zones.clear();
        // The clusters' VM routes lead to nodes, not to the tunnel: they
        // would outlive us. The configuration file's stay, as before.
        if !self.kube_vm.is_empty() {
            let keep = super::vm_routes(&self.extra);
            match tokio::time::timeout(
                helper_remove_timeout,
                self.engine.set_vm_routes(&self.spec, &keep),
            )
            .await
            {
                Ok(Ok(())) => info!(routes = self.kube_vm.len(), "VM routes to the clusters removed"),
                Ok(Err(e)) => warn!(error = %e, "removing the VM routes to the clusters failed; `netconnect down` removes them"),
                Err(_) => warn!("Docker did not remove the VM routes to the clusters in time; `netconnect down` removes them"),
            }
        }
        if let Err(e) = self.router.set(&BTreeSet::new()).await {
            warn!(error = %e, "removing the routes at shutdown failed");
        }
    }
}

/// The loop with fake engine, tunnel, router and route notices, under
/// tokio's paused clock: an hour passes in milliseconds, and every request
/// the session makes is counted.
#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};

    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

    use super::*;
    use crate::docker::{DockerError, Engine};
    use crate::helper::Mode;
    use crate::keys::PublicKey;
    use crate::routes::SystemRoute;
    use crate::tunnel::ConfigError;
    use crate::up::ports::PeerSeen;

    #[derive(Default)]
    struct EngineLog {
        networks: AtomicUsize,
        containers: AtomicUsize,
        inspected: AtomicUsize,
        events: AtomicUsize,
        starts: AtomicUsize,
        inspects: AtomicUsize,
        reconnects: AtomicUsize,
        removes: AtomicUsize,
        /// What `is_running` and `is_running_or_restarting` answer.
        running: AtomicBool,
        /// Helper starts that fail before one succeeds.
        failing_starts: AtomicUsize,
        /// Commands run in containers: (container, argv[0]).
        execs: Mutex<Vec<(String, String)>>,
        /// Each list the VM's routes were set to.
        vm_routes: Mutex<Vec<Vec<(IpNet, IpAddr)>>>,
    }

    impl EngineLog {
        fn requests(&self) -> usize {
            self.networks.load(SeqCst)
                + self.containers.load(SeqCst)
                + self.inspected.load(SeqCst)
                + self.starts.load(SeqCst)
                + self.inspects.load(SeqCst)
                + self.reconnects.load(SeqCst)
        }
    }

    struct FakeEngine {
        log: Arc<EngineLog>,
        nets: Arc<Mutex<Vec<NetworkInfo>>>,
        ctrs: Arc<Mutex<Vec<ContainerInfo>>>,
        /// One receiver per `events()` call; none left: a stream that ends.
        streams: Arc<Mutex<Vec<UnboundedReceiver<Change>>>>,
        engine: Engine,
        /// What the next started helper will say on the way home.
        way_home: Arc<Mutex<Option<tokio::sync::watch::Receiver<Option<Report>>>>>,
    }

    impl EngineApi for FakeEngine {
        async fn networks(&self) -> Result<Vec<NetworkInfo>, DockerError> {
            self.log.networks.fetch_add(1, SeqCst);
            Ok(self.nets.lock().unwrap().clone())
        }
        async fn containers(&self) -> Result<Vec<ContainerInfo>, DockerError> {
            self.log.containers.fetch_add(1, SeqCst);
            Ok(self.ctrs.lock().unwrap().clone())
        }
        async fn container(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
            self.log.inspected.fetch_add(1, SeqCst);
            Ok(self
                .ctrs
                .lock()
                .unwrap()
                .iter()
                .find(|c| c.id == id)
                .cloned())
        }
        fn events(&self) -> BoxStream<'static, Result<Change, String>> {
            self.log.events.fetch_add(1, SeqCst);
            match self.streams.lock().unwrap().pop() {
                Some(rx) => tokio_stream(rx).map(Ok).boxed(),
                None => futures::stream::empty().boxed(),
            }
        }
        async fn ensure_image(&self, _: &HelperSpec) -> Result<(), HelperError> {
            Ok(())
        }
        async fn start_helper(
            &self,
            _: &HelperSpec,
            _: Option<Mode>,
        ) -> Result<RunningHelper, HelperError> {
            let n = self.log.starts.fetch_add(1, SeqCst) + 1;
            if self
                .log
                .failing_starts
                .fetch_update(SeqCst, SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                return Err(HelperError::Exited("test: no helper".into()));
            }
            Ok(RunningHelper {
                id: format!("helper{n}"),
                vm_public_key: PublicKey([n as u8; 32]),
                mode: Mode::Userspace,
                way_home: self.way_home.lock().unwrap().take(),
            })
        }
        async fn is_running(&self, _: &str) -> bool {
            self.log.inspects.fetch_add(1, SeqCst);
            self.log.running.load(SeqCst)
        }
        async fn is_running_or_restarting(&self, _: &str) -> bool {
            self.log.inspects.fetch_add(1, SeqCst);
            self.log.running.load(SeqCst)
        }
        async fn remove_helper(&self, _: &str) -> Result<(), HelperError> {
            self.log.removes.fetch_add(1, SeqCst);
            Ok(())
        }
        async fn exec(&self, id: &str, argv: &[&str]) -> Result<docker::ExecOutput, DockerError> {
            let mut execs = self.log.execs.lock().unwrap();
            execs.push((id.to_owned(), argv[0].to_owned()));
            // The article's cluster, as its control plane prints it.
            let stdout = match argv[0] {
                "kubectl" => crate::kube::tests::KIND_OBJECTS,
                _ => crate::kube::tests::KIND_FLAGS,
            };
            Ok(docker::ExecOutput {
                exec_id: format!("exec{}", execs.len()),
                exit_code: Some(0),
                stdout: stdout.into(),
                stderr: String::new(),
            })
        }
        async fn set_vm_routes(
            &self,
            _: &HelperSpec,
            routes: &[(IpNet, IpAddr)],
        ) -> Result<(), HelperError> {
            self.log.vm_routes.lock().unwrap().push(routes.to_vec());
            Ok(())
        }
        async fn reconnect(&mut self) -> &Engine {
            self.log.reconnects.fetch_add(1, SeqCst);
            &self.engine
        }
    }

    fn tokio_stream<T: Send + 'static>(
        rx: UnboundedReceiver<T>,
    ) -> impl futures::Stream<Item = T> + Send {
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
    }

    #[derive(Default)]
    struct FakeTunnel {
        rx: AtomicU64,
        handshaken: AtomicBool,
        peer_reads: AtomicUsize,
        injected: AtomicUsize,
        applied: Mutex<Vec<DeviceUpdate>>,
        offered: tokio::sync::Notify,
    }

    impl TunnelApi for Arc<FakeTunnel> {
        fn name(&self) -> &str {
            "nc-test"
        }
        fn peer(&self, _: &PublicKey) -> Option<PeerSeen> {
            self.peer_reads.fetch_add(1, SeqCst);
            Some(PeerSeen {
                rx_bytes: self.rx.load(SeqCst),
                handshaken: self.handshaken.load(SeqCst),
            })
        }
        fn apply(&self, update: &DeviceUpdate) -> Result<(), ConfigError> {
            self.applied.lock().unwrap().push(update.clone());
            Ok(())
        }
        async fn inject(&self, _: &[u8]) -> bool {
            self.injected.fetch_add(1, SeqCst);
            true
        }
        async fn failed(&self) -> String {
            std::future::pending().await
        }
        async fn offered(&self) {
            self.offered.notified().await
        }
    }

    #[derive(Default, Clone)]
    struct FakeRouter {
        ours: Arc<Mutex<BTreeSet<IpNet>>>,
        reads: Arc<AtomicUsize>,
        /// Routes whose `add` succeeds and that the table never shows, as
        /// an OS may answer.
        hidden: Arc<Mutex<BTreeSet<IpNet>>>,
    }

    impl Router for FakeRouter {
        type Error = std::io::Error;
        fn interface(&self) -> &str {
            "nc-test"
        }
        async fn configure(&self, _: &[(IpAddr, IpAddr)], _: u32) -> Result<(), Self::Error> {
            Ok(())
        }
        async fn current(&self) -> Result<(BTreeSet<IpNet>, Vec<SystemRoute>), Self::Error> {
            self.reads.fetch_add(1, SeqCst);
            Ok((self.ours.lock().unwrap().clone(), Vec::new()))
        }
        async fn add(&self, net: IpNet) -> Result<(), Self::Error> {
            if !self.hidden.lock().unwrap().contains(&net) {
                self.ours.lock().unwrap().insert(net);
            }
            Ok(())
        }
        async fn remove(&self, net: IpNet) -> Result<(), Self::Error> {
            self.ours.lock().unwrap().remove(&net);
            Ok(())
        }
        async fn view(&self) -> Result<crate::readback::InterfaceView, Self::Error> {
            Ok(Default::default())
        }
    }

    struct FakeWatch(UnboundedReceiver<WatchEvent>);

    impl RouteEvents for FakeWatch {
        async fn next(&mut self) -> Option<WatchEvent> {
            self.0.recv().await
        }
    }

    /// The test's hands on a session's world.
    struct World {
        log: Arc<EngineLog>,
        nets: Arc<Mutex<Vec<NetworkInfo>>>,
        ctrs: Arc<Mutex<Vec<ContainerInfo>>>,
        zone: Arc<Zone>,
        streams: Arc<Mutex<Vec<UnboundedReceiver<Change>>>>,
        events: Mutex<Option<UnboundedSender<Change>>>,
        tunnel: Arc<FakeTunnel>,
        router: FakeRouter,
        watch: UnboundedSender<WatchEvent>,
        way_home: Arc<Mutex<Option<tokio::sync::watch::Receiver<Option<Report>>>>>,
    }

    impl World {
        fn send(&self, ch: Change) {
            let events = self.events.lock().unwrap();
            events.as_ref().unwrap().send(ch).unwrap();
        }
        /// The engine goes away: the stream ends. Later streams are `next`.
        fn end_stream(&self, next: Vec<UnboundedReceiver<Change>>) {
            self.events.lock().unwrap().take();
            self.streams.lock().unwrap().extend(next);
        }
        fn routes(&self) -> BTreeSet<IpNet> {
            self.router.ours.lock().unwrap().clone()
        }
        fn answer(&self, name: &str) -> crate::dns::names::Answer {
            self.zone
                .current()
                .lookup(name, crate::dns::names::QType::A)
        }
        /// The session has answered every message sent so far.
        async fn settle(&self) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn network(name: &str, subnet: &str) -> NetworkInfo {
        NetworkInfo {
            id: name.into(),
            name: name.into(),
            driver: "bridge".into(),
            scope: "local".into(),
            subnets: vec![subnet.parse().unwrap()],
            gateways: vec![],
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    type TestSession = Session<FakeEngine, Arc<FakeTunnel>, FakeRouter, FakeWatch>;

    fn session() -> (TestSession, World) {
        let log = Arc::new(EngineLog::default());
        log.running.store(true, SeqCst);
        let nets = Arc::new(Mutex::new(vec![network("bridge", "172.17.0.0/16")]));
        let ctrs = Arc::new(Mutex::new(Vec::new()));
        let zone = Zone::new("docker.internal".parse().unwrap());
        let (events, first) = unbounded_channel();
        let streams = Arc::new(Mutex::new(vec![first]));
        let tunnel = Arc::new(FakeTunnel::default());
        tunnel.handshaken.store(true, SeqCst);
        let router = FakeRouter::default();
        let (watch, watch_rx) = unbounded_channel();
        let way_home = Arc::new(Mutex::new(None));
        let docker = bollard::Docker::connect_with_http(
            "http://192.0.2.1:9",
            1,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap();
        let engine = Engine {
            docker,
            host: "unix:///nonexistent.sock".into(),
            source: crate::docker::Source::Flag,
            server_version: "0".into(),
            api_version: "1.41".into(),
            runtime: Default::default(),
            rootless: false,
        };
        let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let spec = HelperSpec {
            image: "netconnect-helper:test".into(),
            name: "netconnect-helper-test".into(),
            host_public_key: PublicKey([1; 32]),
            host_endpoint: Some("192.0.2.1:51820".into()),
            host_port: 51820,
            vm_interface: "nc-vm".into(),
            vm_address: v4("10.33.33.2"),
            host_address: v4("10.33.33.1"),
            vm_address6: "fd33::2".parse().unwrap(),
            host_address6: "fd33::1".parse().unwrap(),
            archives: vec![],
            routes: vec![],
            vm_hosts: true,
        };
        let s = Session {
            engine: FakeEngine {
                log: log.clone(),
                nets: nets.clone(),
                ctrs: ctrs.clone(),
                streams: streams.clone(),
                engine,
                way_home: way_home.clone(),
            },
            tunnel: tunnel.clone(),
            router: router.clone(),
            watch: FakeWatch(watch_rx),
            spec,
            vm_addresses: [v4("10.33.33.2"), v4("fd33::2")],
            helper: None,
            parked: false,
            vm_mode: None,
            networks: Vec::new(),
            routed: BTreeSet::new(),
            skipped: Vec::new(),
            zone: Some(zone.clone()),
            containers: Vec::new(),
            clusters: Clusters::new(Default::default()),
            kube_mac: BTreeSet::new(),
            kube_vm: Vec::new(),
            zone_resolvers: None,
            cluster_zones: Vec::new(),
            name_zones: Vec::new(),
            refused_warned: BTreeSet::new(),
            os_view: BTreeSet::new(),
            liveness: probe::Liveness::new(now()),
            probe_seq: 0,
            filter: NetworkFilter::default(),
            extra: Vec::new(),
            file: config::Config::default(),
            ctx: UpContext {
                control_socket: "/nonexistent/control.sock".into(),
                config_path: "/nonexistent/config.toml".into(),
                config_explicit: false,
                loaded: config::Loaded::default(),
            },
            view: live::View::new(std::path::Path::new("/nonexistent/control.sock"), None),
            announced: false,
            handshake: None,
            reload: futures::stream::pending().boxed(),
            helper_tried: Instant::now(),
        };
        let world = World {
            log,
            nets,
            ctrs,
            zone,
            streams,
            events: Mutex::new(Some(events)),
            tunnel,
            router,
            watch,
            way_home,
        };
        (s, world)
    }

    /// Runs the session beside `script`; the session must outlive it.
    async fn drive(s: &mut TestSession, script: impl std::future::Future<Output = ()>) {
        let never = std::future::pending::<&'static str>();
        let mut never = std::pin::pin!(never);
        tokio::select! {
            r = s.run(never.as_mut()) => panic!("the session ended: {r:?}"),
            () = script => {}
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_hour_asks_nothing_and_polls_nothing() {
        let (mut s, w) = session();
        drive(&mut s, async {
            w.settle().await;
            // Bring-up: one list, one helper, the bridge routed, announced.
            assert_eq!(w.log.networks.load(SeqCst), 1);
            assert_eq!(w.log.starts.load(SeqCst), 1);
            assert_eq!(w.routes(), BTreeSet::from([net("172.17.0.0/16")]));
            // The first handshake is looked for until seen.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let requests = w.log.requests();
            let peer_reads = w.tunnel.peer_reads.load(SeqCst);
            let route_reads = w.router.reads.load(SeqCst);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            assert_eq!(w.log.requests(), requests, "Docker requests while idle");
            assert_eq!(w.log.events.load(SeqCst), 1, "one event stream");
            assert_eq!(
                w.tunnel.peer_reads.load(SeqCst),
                peer_reads,
                "tunnel polled"
            );
            assert_eq!(w.router.reads.load(SeqCst), route_reads, "routes polled");
            assert_eq!(w.tunnel.injected.load(SeqCst), 0, "probes sent");
        })
        .await;
        assert!(s.announced);
    }

    /// The helper's word on the way home reaches `status` as it comes:
    /// searching at the start, then the address and source it found; a
    /// helper started afresh searches again.
    #[tokio::test(start_paused = true)]
    async fn the_way_home_the_helper_reports_is_in_the_status() {
        use crate::control::StatusSource as _;
        use crate::helper::endpoint::{Candidate, Rejected, Source};
        let (mut s, w) = session();
        let (tx, rx) = tokio::sync::watch::channel(None);
        *w.way_home.lock().unwrap() = Some(rx);
        let view = s.view.clone();
        drive(&mut s, async {
            w.settle().await;
            let vm = view.snapshot().vm.expect("a vm section once a helper runs");
            assert_eq!(vm.state, "searching");
            assert_eq!(vm.endpoint_source, None);
            tx.send(Some(Report::None {
                tried: vec![Candidate {
                    addr: "10.0.0.1:51820".parse().unwrap(),
                    source: Source::DefaultGateway,
                }],
                rejected: vec![Rejected {
                    addr: "172.17.0.1".parse().unwrap(),
                    source: Source::HostGateway,
                }],
            }))
            .unwrap();
            w.settle().await;
            let vm = view.snapshot().vm.unwrap();
            assert_eq!(vm.state, "none");
            let e = vm.error.unwrap();
            assert!(
                e.contains("10.0.0.1:51820 (default-gateway)") && e.contains("--host-endpoint"),
                "{e}"
            );
            assert_eq!(vm.rejected, vec!["172.17.0.1 (host-gateway)".to_string()]);
            tx.send(Some(Report::Found {
                chosen: Candidate {
                    addr: "192.168.5.2:51820".parse().unwrap(),
                    source: Source::Name("host.lima.internal"),
                },
                rejected: vec![],
            }))
            .unwrap();
            w.settle().await;
            let vm = view.snapshot().vm.unwrap();
            assert_eq!(vm.state, "found");
            assert_eq!(vm.endpoint.as_deref(), Some("192.168.5.2:51820"));
            assert_eq!(vm.endpoint_source.as_deref(), Some("host.lima.internal"));
            assert_eq!(vm.error, None);
            // The helper's output ends (it exited): the word stays.
            drop(tx);
            w.settle().await;
            assert_eq!(view.snapshot().vm.unwrap().state, "found");
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_network_is_routed_at_its_event_with_one_request() {
        let (mut s, w) = session();
        drive(&mut s, async {
            w.settle().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            w.nets
                .lock()
                .unwrap()
                .push(network("shop", "172.20.0.0/16"));
            w.send(Change::Networks);
            // A container event asks about that container, not networks.
            w.send(Change::ContainerStarted("other".into()));
            w.settle().await;
            assert_eq!(
                w.routes(),
                BTreeSet::from([net("172.17.0.0/16"), net("172.20.0.0/16")])
            );
            assert_eq!(w.log.networks.load(SeqCst), 2);
            // The peer's allowed IPs grew with the routes.
            let last = w.tunnel.applied.lock().unwrap().last().cloned().unwrap();
            assert!(last.peers[0].allowed_ips.contains(&net("172.20.0.0/16")));
            w.nets.lock().unwrap().retain(|n| n.name != "shop");
            w.send(Change::Networks);
            w.settle().await;
            assert_eq!(w.routes(), BTreeSet::from([net("172.17.0.0/16")]));
        })
        .await;
    }

    /// A route the OS accepted and its table does not show is read back
    /// after the change and said: one status line, gone once it shows.
    #[tokio::test(start_paused = true)]
    async fn a_route_the_os_accepted_but_does_not_show_is_said() {
        use crate::control::StatusSource as _;
        let (mut s, w) = session();
        let view = s.view.clone();
        w.router.hidden.lock().unwrap().insert(net("172.20.0.0/16"));
        drive(&mut s, async {
            w.settle().await;
            w.nets
                .lock()
                .unwrap()
                .push(network("shop", "172.20.0.0/16"));
            w.send(Change::Networks);
            w.settle().await;
            assert_eq!(
                view.snapshot().os_view,
                ["route 172.20.0.0/16: asked via nc-test, the OS shows no route for 172.20.0.0/16 via nc-test"]
            );
            w.router.hidden.lock().unwrap().clear();
            w.send(Change::Networks);
            w.settle().await;
            assert_eq!(w.routes().len(), 2);
            assert!(view.snapshot().os_view.is_empty());
        })
        .await;
    }

    fn container(name: &str, address: &str) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}"),
            name: name.into(),
            labels: Default::default(),
            addresses: vec![address.parse().unwrap()],
            ..Default::default()
        }
    }

    /// Names follow container events, one inspect of the named container
    /// each (the list only at start), and the routes without any request:
    /// a name is served only while its subnet is routed.
    #[tokio::test(start_paused = true)]
    async fn names_follow_container_events_and_routes() {
        use crate::dns::names::Answer;
        let (mut s, w) = session();
        let addr = |a: &str| Answer::Addresses(vec![a.parse().unwrap()]);
        drive(&mut s, async {
            w.settle().await;
            assert_eq!(w.log.containers.load(SeqCst), 1, "listed at start");
            assert_eq!(w.answer("web.docker.internal"), Answer::NxDomain);
            w.ctrs.lock().unwrap().push(container("web", "172.17.0.5"));
            w.send(Change::ContainerStarted("id-web".into()));
            w.settle().await;
            assert_eq!(w.answer("web.docker.internal"), addr("172.17.0.5"));
            // Renamed: the old name goes, the new one answers.
            w.ctrs.lock().unwrap()[0].name = "front".into();
            w.send(Change::Container("id-web".into()));
            w.settle().await;
            assert_eq!(w.answer("web.docker.internal"), Answer::NxDomain);
            assert_eq!(w.answer("front.docker.internal"), addr("172.17.0.5"));
            // On a network that appears: named once routed, with no
            // further container request.
            w.ctrs.lock().unwrap().push(container("db", "172.20.0.3"));
            w.send(Change::Container("id-db".into()));
            w.settle().await;
            assert_eq!(w.answer("db.docker.internal"), Answer::NxDomain);
            let asked = (w.log.containers.load(SeqCst), w.log.inspected.load(SeqCst));
            assert_eq!(asked, (1, 3));
            w.nets
                .lock()
                .unwrap()
                .push(network("shop", "172.20.0.0/16"));
            w.send(Change::Networks);
            w.settle().await;
            assert_eq!(w.answer("db.docker.internal"), addr("172.20.0.3"));
            assert_eq!(
                (w.log.containers.load(SeqCst), w.log.inspected.load(SeqCst)),
                asked
            );
            // Disconnected from that network: no address left to serve.
            w.ctrs.lock().unwrap()[1].addresses.clear();
            w.send(Change::Container("id-db".into()));
            w.settle().await;
            assert_eq!(w.answer("db.docker.internal"), Answer::NxDomain);
            // Stopped: an inspect finds it not running.
            w.ctrs.lock().unwrap().retain(|c| c.id != "id-web");
            w.send(Change::ContainerDied {
                id: "id-web".into(),
                exit_code: Some(0),
            });
            w.settle().await;
            assert!(w.zone.current().is_empty());
            // The engine came back: one list again.
            let (tx, rx) = unbounded_channel();
            w.end_stream(vec![rx]);
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(tx);
            assert_eq!(w.log.containers.load(SeqCst), 2);
        })
        .await;
    }

    fn node(name: &str, role: &str, address: &str) -> ContainerInfo {
        let mut c = container(name, address);
        c.labels = [
            ("io.x-k8s.kind.cluster", "kind"),
            ("io.x-k8s.kind.role", role),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        c
    }

    /// A KinD cluster (the article's, as its control plane prints itself)
    /// is read once when found, with two commands in its control plane;
    /// its pod and service ranges are routed through the tunnel and in the
    /// VM via their nodes; a node not yet in the cluster makes it read
    /// again at a command someone else ran in a node, never at ours; a
    /// node gone takes its routes with it.
    #[tokio::test(start_paused = true)]
    async fn a_kind_cluster_is_read_from_its_nodes_and_routed_and_followed() {
        let (mut s, w) = session();
        w.nets
            .lock()
            .unwrap()
            .push(network("kind", "172.18.0.0/16"));
        w.ctrs.lock().unwrap().extend([
            node("kind-control-plane", "control-plane", "172.18.0.3"),
            node("kind-worker", "worker", "172.18.0.2"),
        ]);
        let execs = || w.log.execs.lock().unwrap().clone();
        let vm = || w.log.vm_routes.lock().unwrap().last().cloned();
        let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
        drive(&mut s, async {
            w.settle().await;
            assert_eq!(
                execs(),
                [
                    ("id-kind-control-plane".to_owned(), "kubectl".to_owned()),
                    ("id-kind-control-plane".to_owned(), "cat".to_owned())
                ]
            );
            let cluster = [
                net("10.244.0.0/24"),
                net("10.244.1.0/24"),
                net("10.96.0.0/16"),
            ];
            let docker = [net("172.17.0.0/16"), net("172.18.0.0/16")];
            assert_eq!(
                w.routes(),
                BTreeSet::from_iter(docker.into_iter().chain(cluster))
            );
            assert_eq!(
                vm(),
                Some(vec![
                    (net("10.96.0.0/16"), v4("172.18.0.3")),
                    (net("10.244.0.0/24"), v4("172.18.0.3")),
                    (net("10.244.1.0/24"), v4("172.18.0.2")),
                ])
            );
            // Its names are asked of its DNS Service, under its domain and
            // under its alias zone.
            let ask = w
                .zone
                .forwards()
                .route("sampleservice.default.svc.cluster.local")
                .expect("cluster.local is not forwarded");
            assert_eq!(ask.servers, ["10.96.0.10:53".parse().unwrap()]);
            let ask = w
                .zone
                .forwards()
                .route("sampleservice.default.svc.kind.kube.docker.internal")
                .expect("the alias zone is not forwarded");
            assert_eq!(ask.name, "sampleservice.default.svc.cluster.local");
            // The VM peer may carry them.
            let last = w.tunnel.applied.lock().unwrap().last().cloned().unwrap();
            for n in cluster {
                assert!(last.peers[0].allowed_ips.contains(&n), "{n} not allowed");
            }
            // Ready: our own commands' ends and anyone's in a complete
            // cluster read nothing.
            w.send(Change::ExecDied {
                id: "id-kind-control-plane".into(),
                exec_id: "exec1".into(),
            });
            w.send(Change::ExecDied {
                id: "id-kind-worker".into(),
                exec_id: "theirs1".into(),
            });
            w.settle().await;
            assert_eq!(execs().len(), 2);
            // A worker joining: its container first, its node later.
            w.ctrs
                .lock()
                .unwrap()
                .push(node("kind-worker2", "worker", "172.18.0.4"));
            w.send(Change::ContainerStarted("id-kind-worker2".into()));
            w.settle().await;
            assert_eq!(execs().len(), 4, "read again for the new node");
            // Still incomplete: kubeadm's commands in the new node make
            // it read again; ours do not.
            w.send(Change::ExecDied {
                id: "id-kind-worker2".into(),
                exec_id: "exec3".into(),
            });
            w.settle().await;
            assert_eq!(execs().len(), 4, "our own exec is no reason");
            w.send(Change::ExecDied {
                id: "id-kind-worker2".into(),
                exec_id: "kubeadm-join".into(),
            });
            w.settle().await;
            assert_eq!(execs().len(), 6);
            // A worker deleted: its pod range goes, here and in the VM.
            w.ctrs.lock().unwrap().retain(|c| c.name != "kind-worker");
            w.send(Change::ContainerDied {
                id: "id-kind-worker".into(),
                exit_code: Some(137),
            });
            w.settle().await;
            assert!(!w.routes().contains(&net("10.244.1.0/24")));
            assert!(w.routes().contains(&net("10.244.0.0/24")));
            assert_eq!(
                vm(),
                Some(vec![
                    (net("10.96.0.0/16"), v4("172.18.0.3")),
                    (net("10.244.0.0/24"), v4("172.18.0.3")),
                ])
            );
            // The whole cluster deleted: nothing of it is left.
            w.ctrs
                .lock()
                .unwrap()
                .retain(|c| !c.name.starts_with("kind-"));
            for id in ["id-kind-control-plane", "id-kind-worker2"] {
                w.send(Change::ContainerDied {
                    id: id.into(),
                    exit_code: Some(137),
                });
            }
            w.settle().await;
            assert_eq!(w.routes(), BTreeSet::from(docker));
            assert_eq!(vm(), Some(vec![]));
            assert!(
                w.zone.forwards().is_empty(),
                "a deleted cluster's names are still forwarded"
            );
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_deleted_by_someone_else_comes_back_without_asking_docker() {
        let (mut s, w) = session();
        drive(&mut s, async {
            w.settle().await;
            w.router.ours.lock().unwrap().clear();
            w.watch.send(WatchEvent::Routes).unwrap();
            w.settle().await;
            assert_eq!(w.routes(), BTreeSet::from([net("172.17.0.0/16")]));
            assert_eq!(w.log.networks.load(SeqCst), 1, "no request to Docker");
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_interface_going_away_ends_the_session() {
        let (mut s, w) = session();
        w.watch.send(WatchEvent::InterfaceGone).unwrap();
        let never = std::future::pending::<&'static str>();
        let mut never = std::pin::pin!(never);
        let e = s.run(never.as_mut()).await.unwrap_err();
        assert!(e.to_string().contains("interface nc-test is gone"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_removes_the_helper_and_every_route() {
        let (mut s, w) = session();
        w.router.ours.lock().unwrap().insert(net("10.99.0.0/16"));
        let stop = async {
            w.settle().await;
            "test"
        };
        let mut stop = std::pin::pin!(stop);
        s.run(stop.as_mut()).await.unwrap();
        // The stale route of ours is gone already; the bridge's is there.
        assert_eq!(w.routes(), BTreeSet::from([net("172.17.0.0/16")]));
        s.teardown(Duration::from_secs(3)).await;
        assert_eq!(w.routes(), BTreeSet::new());
        assert_eq!(w.log.removes.load(SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn answered_traffic_sends_no_probe() {
        let (mut s, w) = session();
        drive(&mut s, async {
            w.settle().await;
            for _ in 0..5 {
                w.tunnel.offered.notify_waiters();
                tokio::time::sleep(Duration::from_millis(300)).await;
                w.tunnel.rx.fetch_add(92, SeqCst);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            assert_eq!(w.tunnel.injected.load(SeqCst), 0);
            assert_eq!(w.log.starts.load(SeqCst), 1);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_before_the_session_looks_is_an_answer() {
        let (mut s, w) = session();
        drive(&mut s, async {
            w.settle().await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            // The reply is in before the session task runs at all.
            w.tunnel.offered.notify_waiters();
            w.tunnel.rx.fetch_add(92, SeqCst);
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_eq!(w.tunnel.injected.load(SeqCst), 0);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_helper_start_is_retried_whatever_else_happens() {
        let (mut s, w) = session();
        w.log.failing_starts.store(1, SeqCst);
        drive(&mut s, async {
            w.settle().await;
            assert_eq!(w.log.starts.load(SeqCst), 1);
            // Route notices every half second must not put the retry off.
            for _ in 0..5 {
                w.watch.send(WatchEvent::Routes).unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            assert_eq!(
                w.log.starts.load(SeqCst),
                2,
                "retried 2 s after the failure"
            );
            tokio::time::sleep(Duration::from_secs(600)).await;
            assert_eq!(w.log.starts.load(SeqCst), 2);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_traffic_is_probed_then_the_helper_runs_again() {
        let (mut s, w) = session();
        drive(&mut s, async {
            w.settle().await;
            // Past the new helper's grace period.
            tokio::time::sleep(Duration::from_secs(60)).await;
            w.tunnel.offered.notify_waiters();
            tokio::time::sleep(Duration::from_millis(900)).await;
            assert_eq!(w.tunnel.injected.load(SeqCst), 0, "probed too soon");
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(w.tunnel.injected.load(SeqCst), 1, "one probe after 1 s");
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(w.tunnel.injected.load(SeqCst), 3);
            assert_eq!(w.log.starts.load(SeqCst), 1);
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Gone about 4 s after the first unanswered packet: a new helper,
            // and its key replaces the old peer.
            assert_eq!(w.log.starts.load(SeqCst), 2);
            let last = w.tunnel.applied.lock().unwrap().last().cloned().unwrap();
            assert!(last.replace_peers);
            assert_eq!(last.peers[0].public_key, PublicKey([2; 32]));
            // Then quiet again: no more probes.
            tokio::time::sleep(Duration::from_secs(600)).await;
            assert_eq!(w.tunnel.injected.load(SeqCst), 3);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_helper_that_left_when_idle_starts_again_with_traffic() {
        let (mut s, w) = session();
        drive(&mut s, async {
            w.settle().await;
            w.log.running.store(false, SeqCst);
            w.send(Change::ContainerDied {
                id: "helper1".into(),
                exit_code: Some(0),
            });
            tokio::time::sleep(Duration::from_secs(3600)).await;
            assert_eq!(w.log.starts.load(SeqCst), 1, "started while idle");
            w.tunnel.offered.notify_waiters();
            w.settle().await;
            assert_eq!(w.log.starts.load(SeqCst), 2);
            // A helper that failed is started again at once.
            w.send(Change::ContainerDied {
                id: "helper2".into(),
                exit_code: Some(1),
            });
            w.settle().await;
            assert_eq!(w.log.starts.load(SeqCst), 3);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_engine_restart_reconnects_and_resyncs_once() {
        let (mut s, w) = session();
        drive(&mut s, async {
            w.settle().await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            let (_keep, next) = unbounded_channel();
            w.end_stream(vec![next]);
            w.settle().await;
            // A stream that lived long reconnects at once; then one full
            // resync: the helper again, one list.
            assert_eq!(w.log.reconnects.load(SeqCst), 1);
            assert_eq!(w.log.events.load(SeqCst), 2);
            assert_eq!(w.log.starts.load(SeqCst), 2);
            assert_eq!(w.log.networks.load(SeqCst), 2);
            let requests = w.log.requests();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            assert_eq!(w.log.requests(), requests);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_keeps_failing_backs_off() {
        let (mut s, w) = session();
        drive(&mut s, async {
            w.settle().await;
            // Every stream from now on ends at once.
            w.end_stream(vec![]);
            let t0 = Instant::now();
            let mut at = Vec::new();
            let mut seen = 0;
            while t0.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = w.log.reconnects.load(SeqCst);
                if n != seen {
                    seen = n;
                    at.push(t0.elapsed().as_secs());
                }
            }
            // Waits of 1, 2, 4, 8, 16, 16 s between attempts.
            assert_eq!(at, vec![1, 3, 7, 15, 31, 47]);
        })
        .await;
    }
}

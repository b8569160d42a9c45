//! The VM side: what runs inside the helper container (`netconnect helper`).
//!
//! It owns the VM's key pair (the private key is made here and never leaves
//! the container's filesystem, except into the VM kernel over netlink),
//! brings up the tunnel interface on the VM's network (the container has
//! host networking), opens the firewall with the image's own iptables (the
//! backend that holds Docker's chains, [`firewall`]), and prints two lines
//! for `up` to read: `mode=kernel|userspace` and `public_key=<base64>`.
//!
//! Where the VM kernel has WireGuard (Docker Desktop's does) the interface
//! is a kernel one and the helper exits once it is configured ([`kernel`]).
//! Where it does not, the helper runs the userspace data plane (the same
//! `Device` as the Mac side) and stays up. `up` first runs it with
//! `--mode kernel` and no TUN device; told `mode=no-kernel-wireguard`, it
//! runs it again with `--mode userspace` and `/dev/net/tun`, so the device
//! is in the container only where it is used.
// On macOS only the constants that `up` shares are used.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

#[cfg(target_os = "linux")]
pub mod cleanup;
pub mod endpoint;
#[cfg(target_os = "linux")]
pub mod firewall;
#[cfg(target_os = "linux")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(target_os = "linux")]
pub mod kernel;

/// The helper's fuzz targets (`crate::fuzzing` runs them with its own).
#[cfg(target_os = "linux")]
#[doc(hidden)]
pub const FUZZ_TARGETS: &[(&str, crate::fuzzing::Target)] = &[("iptables", fuzzing::iptables)];
#[cfg(not(target_os = "linux"))]
#[doc(hidden)]
pub const FUZZ_TARGETS: &[(&str, crate::fuzzing::Target)] = &[];

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use anyhow::Context as _;
use ipnet::IpNet;
use tracing::info;

use crate::cli::{HelperArgs, HelperMode};
use crate::keys::{Key, PublicKey};
use crate::platform;
use crate::tunnel::{Device, DeviceUpdate, PeerUpdate};

/// The helper runs inside the Docker VM, which is Linux.
#[cfg(not(target_os = "linux"))]
pub async fn run(_: HelperArgs) -> anyhow::Result<()> {
    Err(vm_only("helper"))
}

/// `helper-cleanup` and `helper-check` run in the VM too.
#[cfg(not(target_os = "linux"))]
pub mod cleanup {
    use crate::cli::VmArgs;

    pub async fn cleanup(_: VmArgs) -> anyhow::Result<()> {
        Err(super::vm_only("helper-cleanup"))
    }

    pub async fn check(_: VmArgs) -> anyhow::Result<()> {
        Err(super::vm_only("helper-check"))
    }

    pub async fn routes(_: VmArgs) -> anyhow::Result<()> {
        Err(super::vm_only("helper-routes"))
    }
}

#[cfg(not(target_os = "linux"))]
fn vm_only(command: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`netconnect {command}` runs inside the Docker VM (Linux) only; on this machine use `netconnect up`, `down` or `doctor`"
    )
}

/// The line `up` looks for in the helper's output.
pub const PUBLIC_KEY_PREFIX: &str = "public_key=";
/// The line before it: `mode=kernel` or `mode=userspace`.
pub const MODE_PREFIX: &str = "mode=";
/// The one line of `--mode kernel` on a kernel without WireGuard.
pub const NO_KERNEL_WIREGUARD: &str = "mode=no-kernel-wireguard";
/// No persistent keepalive, on purpose: an idle tunnel carries nothing, so
/// an idle Mac and an idle VM sleep (Docker Desktop's Resource Saver). The
/// VM side speaks first when it starts (the host learns its address, NAT
/// learns the flow); when a flow has expired, traffic from the Mac goes
/// unanswered and `up` runs the helper again, which speaks first again.
/// Zero, not absent: the kernel keeps a peer's old value otherwise.
pub const KEEPALIVE_SECS: u16 = 0;
/// How long the kernel-mode helper gives `up` to add its key before it
/// starts the handshake (`up` follows the helper's output as it comes).
#[cfg(target_os = "linux")]
const SPEAK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// Without a handshake for this long the host side is gone for good.
const HOST_GONE: std::time::Duration = std::time::Duration::from_secs(600);

#[cfg(target_os = "linux")]
pub async fn run(args: HelperArgs) -> anyhow::Result<()> {
    let host_key = PublicKey::from(
        &Key::from_base64(&args.host_public_key)
            .context("--host-public-key is not a WireGuard public key")?,
    );
    let way = WayHome::look(&args)?;

    let host_ips = vec![
        IpNet::from(args.host_address),
        IpNet::from(IpAddr::V6(args.host_address6)),
    ];
    let pairs = [
        (args.vm_address, args.host_address),
        (IpAddr::V6(args.vm_address6), IpAddr::V6(args.host_address6)),
    ];
    let kernel = match args.mode {
        HelperMode::Userspace => Err(kernel::KernelError::Unsupported),
        HelperMode::Kernel | HelperMode::Auto => kernel::create_link(&args.interface).await,
    };
    match kernel {
        Ok(()) => {
            let peer = kernel::PeerConfig {
                public_key: host_key,
                endpoint: way.first(),
                persistent_keepalive: Some(KEEPALIVE_SECS),
                allowed_ips: host_ips,
            };
            let result = match load_or_create_key(Path::new(&args.key_file)) {
                Ok(key) => run_kernel(&args, &key, peer, &pairs, &way).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                kernel::delete_link(&args.interface).await;
                return Err(e);
            }
            // The interface stays, configured, with no process of ours.
            return Ok(());
        }
        Err(kernel::KernelError::Unsupported) if args.mode == HelperMode::Kernel => {
            info!("the VM kernel has no WireGuard; `up` runs the userspace peer next");
            let mut out = std::io::stdout().lock();
            writeln!(out, "{NO_KERNEL_WIREGUARD}")?;
            out.flush()?;
            return Ok(());
        }
        Err(kernel::KernelError::Unsupported) => {
            if args.mode == HelperMode::Auto {
                info!("the VM kernel has no WireGuard; running the userspace peer");
            }
        }
        Err(e) => return Err(e.into()),
    }

    let key = load_or_create_key(Path::new(&args.key_file))?;
    let (tun, name) = platform::create_tun(&args.interface, platform::DEFAULT_MTU)?;
    let device = Device::start(&name, tun, 0)?;
    let mut peer = PeerUpdate::new(host_key);
    peer.endpoint = way.first();
    peer.persistent_keepalive = None;
    peer.replace_allowed_ips = true;
    peer.allowed_ips = host_ips;
    device.apply(&DeviceUpdate {
        private_key: Some(key.clone()),
        replace_peers: true,
        peers: vec![peer],
        ..Default::default()
    })?;
    let router = platform::open_router(&name).await?;
    router
        .configure(&pairs, platform::DEFAULT_MTU as u32)
        .await?;

    // Extra routes of the host's configuration file (a KinD pod CIDR
    // behind its node): the tunnel brings their packets here, the gateway
    // takes them on. They carry a protocol mark; a mark left by an earlier
    // configuration goes, and `down` removes the rest.
    let set = platform::netlink::set_vm_routes(router.handle(), &args.routes).await?;
    for (net, gw) in &set.removed {
        info!(subnet = %net, via = %gw, "stale VM route removed");
    }
    for (net, gw) in &set.added {
        info!(subnet = %net, via = %gw, "VM route added");
    }
    // One route the kernel refuses (its gateway gone) must not cost the
    // tunnel: `up` sets the routes again at the next change.
    for ((net, gw), e) in &set.failed {
        tracing::warn!(subnet = %net, via = %gw, error = %e, "VM route not set");
    }

    let iptables = firewall::Iptables::detect()?;
    let added = iptables.ensure(&iptables.rules(&name))?;
    info!(iface = %name, rules_added = added, backend = iptables.backend().as_str(), "VM side ready (userspace WireGuard)");
    announce(Mode::Userspace, &key)?;

    let handshaken = || {
        device
            .status()
            .peers
            .iter()
            .filter_map(|p| p.last_handshake)
            .max()
    };
    // Find the way home: each candidate in turn until a handshake completes
    // through one (`up` adds our key when it reads the announcement above,
    // so the first tries wait for it). None answering is said once; the
    // rounds go on, slower, in case the host side comes later.
    let mut trial = DeviceTrial {
        device: &device,
        host_key,
    };
    let search = async {
        let mut said_none = false;
        loop {
            if let Some(c) = endpoint::find(&mut trial, &way.candidates).await {
                way.report(&way.found(c))?;
                return Ok::<(), anyhow::Error>(());
            }
            if !said_none {
                said_none = true;
                way.report(&way.none())?;
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    };
    let watch = until_host_gone(search, handshaken, std::time::SystemTime::now(), HOST_GONE);
    let result = tokio::select! {
        r = watch => {
            r.map(|()| info!(after_s = HOST_GONE.as_secs(), "no handshake from the host side for too long; it is gone, and so is this helper"))
        }
        sig = crate::signals::shutdown() => {
            info!(signal = sig, "helper stopping");
            Ok(())
        }
        reason = device.failed() => Err(anyhow::anyhow!(reason)),
    };
    device.shutdown().await;
    result
}

/// The search for the way home, then the wait for the host side to go
/// quiet, under one deadline: `host_gone` without a handshake (counted from
/// `started` until there is one). A tunnel in use rekeys every two minutes,
/// so that long a silence is a long quiet spell or an `up` gone without
/// removing us (a crash, a Mac that never woke). The deadline runs during
/// the search too, or a helper whose host side never answers would linger
/// and knock for ever. Returns `Ok` at the deadline, so the helper exits
/// cleanly (0): the restart policy only restarts failures, nothing lingers
/// in the VM, and `up` starts a helper again when it needs one. Sleeps
/// until the deadline, not on a tick.
#[cfg(target_os = "linux")]
async fn until_host_gone(
    search: impl std::future::Future<Output = anyhow::Result<()>>,
    handshaken: impl Fn() -> Option<std::time::SystemTime>,
    started: std::time::SystemTime,
    host_gone: std::time::Duration,
) -> anyhow::Result<()> {
    /// Past the deadline, so a handshake at its very edge is not missed.
    const SLACK: std::time::Duration = std::time::Duration::from_millis(100);
    let gone = async {
        loop {
            let last = handshaken().unwrap_or(started).max(started);
            let idle = last.elapsed().unwrap_or_default();
            if idle > host_gone {
                return;
            }
            tokio::time::sleep(host_gone - idle + SLACK).await;
        }
    };
    tokio::pin!(gone);
    tokio::select! {
        r = search => r?,
        () = &mut gone => return Ok(()),
    }
    gone.await;
    Ok(())
}

/// How long the VM's DNS is given for the runtime names, all at once.
#[cfg(target_os = "linux")]
const NAMES_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `name`'s first address by the C library's resolver (the container's
/// /etc/resolv.conf is the VM's), IPv4 first as /etc/hosts is read.
#[cfg(target_os = "linux")]
fn first_address(name: &str) -> Option<IpAddr> {
    let all: Vec<IpAddr> = (name, 0).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
    all.iter().find(|ip| ip.is_ipv4()).or(all.first()).copied()
}

/// The names of `names` that `hosts` lacks, each looked up on its own
/// thread; what answered within `wait`. A VM without a DNS server must
/// not hold the helper: a lookup still waiting is left to end by itself.
#[cfg(target_os = "linux")]
fn resolve_all(
    names: &[&'static str],
    hosts: &str,
    wait: std::time::Duration,
) -> std::collections::HashMap<&'static str, IpAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    for name in names.iter().copied() {
        if endpoint::lookup_hosts(hosts, name).is_some() {
            continue;
        }
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((name, first_address(name)));
        });
    }
    drop(tx);
    let deadline = std::time::Instant::now() + wait;
    let mut out = std::collections::HashMap::new();
    while let Ok((name, ip)) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        if let Some(ip) = ip {
            info!(name, address = %ip, "the VM's DNS names this machine");
            out.insert(name, ip);
        }
    }
    out
}

/// Pause between rounds of the way home once one round found nothing.
#[cfg(target_os = "linux")]
const ROUND_PAUSE: std::time::Duration = std::time::Duration::from_secs(10);

/// The candidates for the way home, as this VM shows them.
#[cfg(target_os = "linux")]
struct WayHome {
    candidates: Vec<endpoint::Candidate>,
    rejected: Vec<endpoint::Rejected>,
}

#[cfg(target_os = "linux")]
impl WayHome {
    /// From the helper's `/etc/hosts`, the VM's addresses and default
    /// routes. A name the user gave that the VM cannot resolve is an error
    /// (the helper exits: `up` shows its output).
    fn look(args: &HelperArgs) -> anyhow::Result<WayHome> {
        // The container's file (the engine's host-gateway entry) and the
        // VM's own (the runtime's names for the Mac), which `up` mounts.
        let hosts = ["/etc/hosts", endpoint::VM_HOSTS]
            .iter()
            .filter_map(|p| match std::fs::read_to_string(p) {
                Ok(text) => Some(text),
                // Not mounted: the engine refused the VM's file, or an
                // older `up`; the other candidates remain.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::warn!(path = p, error = %e, "cannot read a hosts file; its names for this machine are not tried");
                    None
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        let local = platform::local_addresses();
        let gateways = endpoint::default_gateways(&routes);
        // The runtime names the files lack, asked of the VM's DNS at once
        // and under one deadline; a name the user gave, without one (an
        // error follows if it does not resolve).
        let asked = if args.host_endpoint.is_none() {
            resolve_all(&endpoint::RUNTIME_NAMES, &hosts, NAMES_WAIT)
        } else {
            Default::default()
        };
        let resolve = |name: &str| match asked.get(name) {
            Some(ip) => Some(*ip),
            None if args.host_endpoint.is_some() => first_address(name),
            None => None,
        };
        let (candidates, rejected) = endpoint::candidates(
            &endpoint::Inputs {
                explicit: args.host_endpoint.as_deref(),
                port: args.host_port,
                hosts: &hosts,
                local: &local,
                gateways: &gateways,
            },
            &resolve,
        )?;
        for r in &rejected {
            info!(address = %r.addr, source = r.source.as_str(), "not a way home: an address of the VM itself");
        }
        Ok(WayHome {
            candidates,
            rejected,
        })
    }

    fn first(&self) -> Option<SocketAddr> {
        self.candidates.first().map(|c| c.addr)
    }

    fn found(&self, chosen: endpoint::Candidate) -> endpoint::Report {
        endpoint::Report::Found {
            chosen,
            rejected: self.rejected.clone(),
        }
    }

    fn none(&self) -> endpoint::Report {
        endpoint::Report::None {
            tried: self.candidates.clone(),
            rejected: self.rejected.clone(),
        }
    }

    /// One line for `up` on stdout, and the same in the log.
    fn report(&self, r: &endpoint::Report) -> anyhow::Result<()> {
        match r {
            endpoint::Report::Found { chosen, .. } => {
                info!(endpoint = %chosen.addr, source = chosen.source.as_str(), "handshake with the host side: this is the way home")
            }
            endpoint::Report::None { tried, rejected } => {
                tracing::warn!("{}", endpoint::Report::describe_none(tried, rejected))
            }
        }
        let mut out = std::io::stdout().lock();
        out.write_all(r.line().as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

/// A try of one address with the userspace peer: point it there, start
/// handshakes once a second, and look for one newer than the try.
#[cfg(target_os = "linux")]
struct DeviceTrial<'a> {
    device: &'a Device,
    host_key: PublicKey,
}

#[cfg(target_os = "linux")]
impl endpoint::Trial for DeviceTrial<'_> {
    fn current_endpoint(&self) -> Option<SocketAddr> {
        self.device
            .status()
            .peers
            .iter()
            .find(|p| p.public_key == self.host_key)
            .and_then(|p| p.endpoint)
    }

    async fn try_endpoint(&mut self, addr: SocketAddr, within: std::time::Duration) -> bool {
        let since = std::time::SystemTime::now();
        let mut peer = PeerUpdate::new(self.host_key);
        peer.endpoint = Some(addr);
        if let Err(e) = self.device.apply(&DeviceUpdate {
            peers: vec![peer],
            ..Default::default()
        }) {
            tracing::warn!(error = %e, %addr, "could not point the peer at this address");
            return false;
        }
        let handshaken = || {
            self.device
                .status()
                .peers
                .iter()
                .filter_map(|p| p.last_handshake)
                .any(|t| t >= since)
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.device.initiate_handshakes(true).await;
            let next =
                (tokio::time::Instant::now() + std::time::Duration::from_secs(1)).min(deadline);
            // Look often: the answer takes a round trip, not a second.
            while tokio::time::Instant::now() < next {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if handshaken() {
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return handshaken();
            }
        }
    }
}

/// How the VM side runs, as told to `up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A kernel interface; the helper has exited and that is fine.
    Kernel,
    /// Our userspace peer inside the helper, which must keep running.
    Userspace,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::Userspace => "userspace",
        }
    }
}

fn announce(mode: Mode, key: &Key) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(announcement(mode, &PublicKey::from(&key.public_key())).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The lines `up` reads (`crate::docker::vmside::container::parse_announcement`): the
/// mode, then the public key (not a secret).
pub fn announcement(mode: Mode, public_key: &PublicKey) -> String {
    format!(
        "{MODE_PREFIX}{}\n{PUBLIC_KEY_PREFIX}{}\n",
        mode.as_str(),
        public_key.to_base64()
    )
}

/// Kernel WireGuard: configure the link made by [`kernel::create_link`],
/// address it, open the firewall, announce, find the way home, and
/// return (the helper exits).
#[cfg(target_os = "linux")]
async fn run_kernel(
    args: &HelperArgs,
    key: &Key,
    peer: kernel::PeerConfig,
    pairs: &[(IpAddr, IpAddr)],
    way: &WayHome,
) -> anyhow::Result<()> {
    let name = &args.interface;
    let router = platform::open_router(name).await?;
    // Up before the peer is set, so the kernel sends its first keepalive
    // (and so its first handshake) as soon as it has the peer.
    router
        .configure(pairs, platform::DEFAULT_MTU as u32)
        .await?;
    let host_key = peer.public_key;
    kernel::apply(name, kernel::set_device(name, key, None, None, &[peer]))?;
    let iptables = firewall::Iptables::detect()?;
    let added = iptables.ensure(&iptables.rules(name))?;
    info!(iface = %name, rules_added = added, backend = iptables.backend().as_str(), "VM side ready (kernel WireGuard)");
    announce(Mode::Kernel, key)?;
    // Speak first, through each candidate in turn: a datagram to the
    // host's tunnel address makes the kernel start the handshake, so the
    // host learns where we are (it cannot know: Docker Desktop NATs the
    // VM) with no keepalive after. `up` adds our key when it reads the
    // announcement, so the first try waits for it.
    let Some(host) = pairs.first().map(|p| p.1) else {
        return Ok(());
    };
    let mut trial = KernelTrial {
        iface: name,
        host_key,
        host,
    };
    match endpoint::find(&mut trial, &way.candidates).await {
        Some(c) => way.report(&way.found(c))?,
        None => {
            // Left pointing at the first candidate: the kernel retries it
            // every 5 s, and `up` runs the helper again when traffic goes
            // unanswered.
            if let Some(first) = way.first() {
                let _ = kernel::apply(name, kernel::set_endpoint(name, &host_key, first));
            }
            way.report(&way.none())?;
        }
    }
    info!(iface = %name, "the helper exits, the interface stays");
    Ok(())
}

/// A try of one address with kernel WireGuard (`wg set IFACE peer KEY
/// endpoint ADDR`, then a datagram to start the handshake).
#[cfg(target_os = "linux")]
struct KernelTrial<'a> {
    iface: &'a str,
    host_key: PublicKey,
    host: IpAddr,
}

/// The kernel sends a new initiation at most every REKEY_TIMEOUT (5 s),
/// so a try in kernel mode lasts at least that long.
#[cfg(target_os = "linux")]
const KERNEL_TRY_MIN: std::time::Duration = std::time::Duration::from_millis(5500);

#[cfg(target_os = "linux")]
impl endpoint::Trial for KernelTrial<'_> {
    async fn try_endpoint(&mut self, addr: SocketAddr, within: std::time::Duration) -> bool {
        let since = std::time::SystemTime::now();
        if let Err(e) = kernel::apply(
            self.iface,
            kernel::set_endpoint(self.iface, &self.host_key, addr),
        ) {
            tracing::warn!(error = %e, %addr, "could not point the peer at this address");
            return false;
        }
        tokio::time::sleep(SPEAK_AFTER.min(within)).await;
        speak_first(self.host);
        let deadline = tokio::time::Instant::now() + within.max(KERNEL_TRY_MIN);
        while tokio::time::Instant::now() < deadline {
            match kernel::last_handshake(self.iface, &self.host_key) {
                Ok(Some(t)) if t >= since => return true,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the handshake time");
                    return false;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        false
    }
}

/// One empty UDP datagram to the discard port of `host` through the tunnel;
/// what matters is that the kernel needs a session to send it. A failure
/// is only logged: `up` re-runs the helper when traffic goes unanswered.
#[cfg(target_os = "linux")]
fn speak_first(host: IpAddr) {
    let any: IpAddr = if host.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let sent = std::net::UdpSocket::bind(SocketAddr::new(any, 0))
        .and_then(|s| s.send_to(&[], SocketAddr::new(host, 9)));
    if let Err(e) = sent {
        tracing::warn!(%host, error = %e, "could not start the handshake with the host side");
    }
}

/// The VM key lives in the container's own volume (0600; the image's root
/// is read-only, and `up` mounts an anonymous volume at the key's
/// directory, removed with the container), so a helper that Docker
/// restarts keeps its identity; it is never in an argument, the
/// environment, a label or a log.
fn load_or_create_key(path: &Path) -> anyhow::Result<Key> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(k) = Key::from_base64(text.trim()) {
            return Ok(k);
        }
    }
    let key = Key::generate_private();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(key.to_base64().as_bytes())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_survives_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("nc-key-{}", std::process::id()));
        let path = dir.join("vm.key");
        let k1 = load_or_create_key(&path).unwrap();
        let k2 = load_or_create_key(&path).unwrap();
        assert_eq!(k1, k2);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The regression from review: a search that never finds the way home
    /// must not hold the helper past the deadline.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_deadline_runs_while_the_search_finds_nothing() {
        let started = std::time::SystemTime::now();
        let watch = until_host_gone(
            std::future::pending(),
            || None,
            started,
            std::time::Duration::from_millis(300),
        );
        tokio::time::timeout(std::time::Duration::from_secs(5), watch)
            .await
            .expect("the helper outlived its deadline while searching")
            .unwrap();
        assert!(started.elapsed().unwrap() >= std::time::Duration::from_millis(300));
    }

    /// After the search, handshakes keep the helper; their end starts
    /// the count again from the last one.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn handshakes_hold_the_deadline_off() {
        use std::sync::{Arc, Mutex};
        let started = std::time::SystemTime::now();
        let last = Arc::new(Mutex::new(None));
        let feed = last.clone();
        // A handshake every 100 ms for 600 ms, then silence.
        tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                *feed.lock().unwrap() = Some(std::time::SystemTime::now());
            }
        });
        let watch = until_host_gone(
            async { Ok(()) },
            || *last.lock().unwrap(),
            started,
            std::time::Duration::from_millis(300),
        );
        tokio::time::timeout(std::time::Duration::from_secs(5), watch)
            .await
            .unwrap()
            .unwrap();
        // Not before 600 ms of handshakes and 300 ms of silence after them.
        assert!(started.elapsed().unwrap() >= std::time::Duration::from_millis(900));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failed_search_is_the_helpers_failure() {
        let watch = until_host_gone(
            async { Err(anyhow::anyhow!("cannot write the report")) },
            || None,
            std::time::SystemTime::now(),
            std::time::Duration::from_secs(600),
        );
        let err = watch.await.unwrap_err();
        assert_eq!(err.to_string(), "cannot write the report");
    }

    /// Names are asked of the resolver only when the files lack them,
    /// and what does not answer in time is left out.
    #[cfg(target_os = "linux")]
    #[test]
    fn runtime_names_are_asked_of_dns_only_when_the_files_lack_them() {
        let got = resolve_all(
            &["localhost", "no-such-name.invalid"],
            "",
            std::time::Duration::from_secs(5),
        );
        assert_eq!(got.get("localhost").map(|ip| ip.is_loopback()), Some(true));
        assert!(!got.contains_key("no-such-name.invalid"));
        let got = resolve_all(
            &["localhost"],
            "10.1.2.3 localhost\n",
            std::time::Duration::from_secs(5),
        );
        assert!(
            got.is_empty(),
            "a name the file has was asked of DNS: {got:?}"
        );
    }
}

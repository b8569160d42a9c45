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
/// Fast handshake retries at start, one a second, before WireGuard's own
/// 5-second retry timer takes over.
const HANDSHAKE_RETRIES: usize = 30;
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
    let endpoint = resolve(&args.host_endpoint)?;

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
                endpoint: Some(endpoint),
                persistent_keepalive: Some(KEEPALIVE_SECS),
                allowed_ips: host_ips,
            };
            let result = match load_or_create_key(Path::new(&args.key_file)) {
                Ok(key) => run_kernel(&args, &key, peer, &pairs).await,
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
    peer.endpoint = Some(endpoint);
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
    for (net, gw) in platform::netlink::marked_vm_routes(router.handle()).await? {
        if !args.routes.contains(&(net, gw)) {
            platform::netlink::remove_via(router.handle(), net, gw).await?;
            info!(subnet = %net, via = %gw, "stale VM route removed");
        }
    }
    for (net, gw) in &args.routes {
        platform::netlink::add_via(router.handle(), *net, *gw).await?;
        info!(subnet = %net, via = %gw, "VM route added");
    }

    device.initiate_handshakes(false).await;

    let iptables = firewall::Iptables::detect()?;
    let added = iptables.ensure(&firewall::rules(&name))?;
    info!(iface = %name, rules_added = added, backend = iptables.backend().as_str(), %endpoint, "VM side ready (userspace WireGuard)");
    announce(Mode::Userspace, &key)?;

    // `up` adds us as its peer only after reading the line above, so our
    // first initiation usually arrives too early and is dropped; WireGuard
    // would retry only after 5 s. Retry every second until one completes.
    let handshaken = || {
        device
            .status()
            .peers
            .iter()
            .filter_map(|p| p.last_handshake)
            .max()
    };
    let retry = async {
        for _ in 0..HANDSHAKE_RETRIES {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if handshaken().is_some() {
                break;
            }
            device.initiate_handshakes(true).await;
        }
        // A tunnel in use rekeys every two minutes; no handshake for
        // HOST_GONE means a long quiet spell or an `up` gone without
        // removing us (a crash, a Mac that never woke). Exit cleanly (0):
        // the restart policy only restarts failures, so nothing lingers in
        // the VM, and `up` starts a helper again when traffic needs one.
        // Sleeps until the deadline, not on a tick.
        let started = std::time::SystemTime::now();
        loop {
            let last = handshaken().unwrap_or(started);
            let idle = last.elapsed().unwrap_or_default();
            if idle > HOST_GONE {
                return;
            }
            tokio::time::sleep(HOST_GONE - idle + std::time::Duration::from_secs(1)).await;
        }
    };
    let result = tokio::select! {
        _ = retry => {
            info!(after_s = HOST_GONE.as_secs(), "no handshake from the host side for too long; it is gone, and so is this helper");
            Ok(())
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
/// address it, open the firewall, announce, and return (the helper exits).
#[cfg(target_os = "linux")]
async fn run_kernel(
    args: &HelperArgs,
    key: &Key,
    peer: kernel::PeerConfig,
    pairs: &[(IpAddr, IpAddr)],
) -> anyhow::Result<()> {
    let name = &args.interface;
    let router = platform::open_router(name).await?;
    // Up before the peer is set, so the kernel sends its first keepalive
    // (and so its first handshake) as soon as it has the peer.
    router
        .configure(pairs, platform::DEFAULT_MTU as u32)
        .await?;
    let endpoint = peer.endpoint;
    let host = pairs.first().map(|p| p.1);
    kernel::apply(name, kernel::set_device(name, key, None, None, &[peer]))?;
    let iptables = firewall::Iptables::detect()?;
    let added = iptables.ensure(&firewall::rules(name))?;
    info!(iface = %name, rules_added = added, backend = iptables.backend().as_str(), endpoint = ?endpoint, "VM side ready (kernel WireGuard); the helper exits, the interface stays");
    announce(Mode::Kernel, key)?;
    // Speak first: one datagram to the host's tunnel address makes the
    // kernel start the handshake, so the host learns where we are (it
    // cannot know: Docker Desktop NATs the VM) with no keepalive after.
    // After the announcement, and a moment later: `up` adds our key when
    // it reads it, and an initiation it does not know yet is dropped,
    // leaving the kernel's next try 5 s away. The staged datagram keeps
    // the kernel trying every 5 s until a handshake completes.
    if let Some(host) = host {
        tokio::time::sleep(SPEAK_AFTER).await;
        speak_first(host);
    }
    Ok(())
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

/// `HOST:PORT` with HOST an IP or a name. Names are looked up in
/// `/etc/hosts` first: the helper is a static binary in an empty image, with
/// no NSS modules, and `up` passes `--add-host host.docker.internal:host-gateway`.
pub fn resolve(endpoint: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(sa) = endpoint.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let (host, port) = endpoint
        .rsplit_once(':')
        .with_context(|| format!("--host-endpoint {endpoint:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--host-endpoint {endpoint:?} has no valid port"))?;
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        if let Some(ip) = lookup_hosts(&hosts, host) {
            return Ok(SocketAddr::new(ip, port));
        }
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("cannot resolve {host:?} inside the VM"))
}

/// The first address `/etc/hosts` gives `name`, IPv4 preferred.
pub fn lookup_hosts(hosts: &str, name: &str) -> Option<IpAddr> {
    let mut found: Vec<IpAddr> = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let ip: IpAddr = f.next()?.parse().ok()?;
            f.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect();
    found.sort_by_key(|ip| !ip.is_ipv4());
    found.into_iter().next()
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
    fn hosts_file_lookup() {
        let hosts = "127.0.0.1 localhost\n# comment host.docker.internal\n\
                     fdc4::1 host.docker.internal\n192.168.65.254 host.docker.internal gateway.docker.internal\n";
        assert_eq!(
            lookup_hosts(hosts, "host.docker.internal"),
            Some("192.168.65.254".parse().unwrap())
        );
        assert_eq!(
            lookup_hosts(hosts, "GATEWAY.docker.internal"),
            Some("192.168.65.254".parse().unwrap())
        );
        assert_eq!(lookup_hosts(hosts, "nope"), None);
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            resolve("10.0.0.1:51820").unwrap(),
            "10.0.0.1:51820".parse().unwrap()
        );
        assert_eq!(
            resolve("[fd00::1]:5").unwrap(),
            "[fd00::1]:5".parse().unwrap()
        );
        assert!(resolve("nonsense").is_err());
        assert!(resolve("host:notaport").is_err());
    }

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
}

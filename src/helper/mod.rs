//! The VM side: what runs inside the helper container (`netconnect helper`).
//!
//! It owns the VM's key pair (the private key is made here and never leaves
//! the container's filesystem), brings up the tunnel interface on the VM's
//! network (the container has host networking), opens the firewall with
//! dockerd's own iptables, and prints one line for `up` to read:
//! `public_key=<base64>`. On a VM kernel without WireGuard it runs the
//! userspace data plane (the same `Device` as the Mac side) and stays up.

pub mod cleanup;
pub mod firewall;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use anyhow::Context as _;
use ipnet::IpNet;
use tracing::info;

use crate::cli::HelperArgs;
use crate::keys::{Key, PublicKey};
use crate::platform;
use crate::routes::NetlinkRouter;
use crate::tunnel::{Device, DeviceUpdate, PeerUpdate};

/// The line `up` looks for in the helper's output.
pub const PUBLIC_KEY_PREFIX: &str = "public_key=";
/// Keeps NAT and Docker Desktop's port forwarding for the UDP flow open, and
/// lets the VM side (re)start the handshake after either end restarts.
pub const KEEPALIVE_SECS: u16 = 25;
/// Fast handshake retries at start, one a second, before WireGuard's own
/// 5-second retry timer takes over.
const HANDSHAKE_RETRIES: usize = 30;

pub async fn run(args: HelperArgs) -> anyhow::Result<()> {
    let host_key = PublicKey::from(
        &Key::from_base64(&args.host_public_key)
            .context("--host-public-key is not a WireGuard public key")?,
    );
    let endpoint = resolve(&args.host_endpoint)?;
    let key = load_or_create_key(Path::new(&args.key_file))?;

    let (tun, name) = platform::create_tun(&args.interface, platform::DEFAULT_MTU)?;
    let device = Device::start(&name, tun, 0)?;
    let mut peer = PeerUpdate::new(host_key);
    peer.endpoint = Some(endpoint);
    peer.persistent_keepalive = Some(KEEPALIVE_SECS);
    peer.replace_allowed_ips = true;
    peer.allowed_ips = vec![
        IpNet::from(args.host_address),
        IpNet::from(IpAddr::V6(args.host_address6)),
    ];
    device.apply(&DeviceUpdate {
        private_key: Some(key.clone()),
        replace_peers: true,
        peers: vec![peer],
        ..Default::default()
    })?;
    let router = NetlinkRouter::new(&name).await?;
    let pairs = [
        (args.vm_address, args.host_address),
        (IpAddr::V6(args.vm_address6), IpAddr::V6(args.host_address6)),
    ];
    router
        .configure(&pairs, platform::DEFAULT_MTU as u32)
        .await?;

    // Extra routes of the host's configuration file (a KinD pod CIDR
    // behind its node): the tunnel brings their packets here, the gateway
    // takes them on. They carry a protocol mark; a mark left by an earlier
    // configuration goes, and `down` removes the rest.
    for (net, gw) in crate::routes::marked_vm_routes(router.handle()).await? {
        if !args.routes.contains(&(net, gw)) {
            crate::routes::remove_via(router.handle(), net, gw).await?;
            info!(subnet = %net, via = %gw, "stale VM route removed");
        }
    }
    for (net, gw) in &args.routes {
        crate::routes::add_via(router.handle(), *net, *gw).await?;
        info!(subnet = %net, via = %gw, "VM route added");
    }

    device.initiate_handshakes(false).await;

    let iptables = firewall::DockerIptables::find()?;
    let added = iptables.ensure(&firewall::rules(&name))?;
    info!(iface = %name, rules_added = added, %endpoint, "VM side ready (userspace WireGuard)");

    // The one line `up` reads. A public key is not a secret.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{PUBLIC_KEY_PREFIX}{}", key.public_key().to_base64())?;
    out.flush()?;
    drop(out);

    // `up` adds us as its peer only after reading the line above, so our
    // first initiation usually arrives too early and is dropped; WireGuard
    // would retry only after 5 s. Retry every second until one completes.
    let retry = async {
        for _ in 0..HANDSHAKE_RETRIES {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if device
                .status()
                .peers
                .iter()
                .any(|p| p.last_handshake.is_some())
            {
                break;
            }
            device.initiate_handshakes(true).await;
        }
        std::future::pending::<()>().await
    };
    let result = tokio::select! {
        _ = retry => unreachable!("the retry future never completes"),
        sig = crate::signals::shutdown() => {
            info!(signal = sig, "helper stopping");
            Ok(())
        }
        reason = device.failed() => Err(anyhow::anyhow!(reason)),
    };
    device.shutdown().await;
    result
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

/// The VM key lives in the container's own filesystem (0600), so a
/// restarted helper keeps its identity; it is never in an argument, the
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

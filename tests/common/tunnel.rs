//! The tunnel fixture: two namespaces joined by veth, a WireGuard device in
//! each (netconnect or wireguard-go), configured as each other's peer.

use std::fmt::Write as _;
use std::process::ExitStatus;
use std::time::Duration;

use crate::config::configure;
use crate::daemon::{Daemon, Impl, DAEMON_STOP_TIMEOUT};
use crate::keys::KeyPair;
use crate::names::unique_ifnames;
use crate::netns::Netns;
use crate::ping::try_ping_until;
use crate::process::SIGTERM;
use crate::veth::{TwoHosts, HOST_UNDERLAY4, HOST_UNDERLAY6, VM_UNDERLAY4, VM_UNDERLAY6};
use crate::wg::{wg_dump, WgDump};

/// Tunnel (inner) addresses.
pub const HOST_TUN4: &str = "10.33.33.1";
pub const VM_TUN4: &str = "10.33.33.2";
pub const HOST_TUN6: &str = "fd33::1";
pub const VM_TUN6: &str = "fd33::2";

/// WireGuard listen ports of the two sides.
pub const HOST_PORT: u16 = 51820;
pub const VM_PORT: u16 = 51821;

/// One end of a tunnel.
pub struct Side {
    pub daemon: Option<Daemon>,
    pub imp: Impl,
    pub iface: String,
    pub key: KeyPair,
    pub port: u16,
    /// Public key this side is configured with for its peer.
    pub peer_pub: String,
    /// Endpoint this side is configured with for its peer (`None`: it has to
    /// learn it from the peer's first authenticated packet).
    pub endpoint: Option<String>,
}

impl Side {
    pub fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("daemon not running")
    }
}

/// Options for [`Tunnel::with`].
#[derive(Default, Clone)]
pub struct TunnelOpts {
    /// Use the IPv6 veth addresses as endpoints.
    pub underlay_v6: bool,
    /// Configure the host side with this peer public key instead of the vm's.
    pub host_peer_pub: Option<String>,
    /// Give the host side no endpoint for its peer.
    pub host_no_endpoint: bool,
}

/// Two namespaces joined by veth, a WireGuard device in each ("host" side
/// 10.33.33.1/fd33::1 port 51820, "vm" side 10.33.33.2/fd33::2 port 51821),
/// configured as each other's peer and up. No traffic sent yet.
///
/// Field order matters: daemons drop before the namespaces.
pub struct Tunnel {
    pub host: Side,
    pub vm: Side,
    pub net: TwoHosts,
}

impl Tunnel {
    pub fn new(host_imp: Impl, vm_imp: Impl) -> Tunnel {
        Self::with(host_imp, vm_imp, TunnelOpts::default())
    }

    pub fn with(host_imp: Impl, vm_imp: Impl, opts: TunnelOpts) -> Tunnel {
        let net = TwoHosts::new();
        let (ha, vb) = unique_ifnames();
        let host_key = KeyPair::generate();
        let vm_key = KeyPair::generate();
        let (host_ep, vm_ep) = if opts.underlay_v6 {
            (
                format!("[{VM_UNDERLAY6}]:{VM_PORT}"),
                format!("[{HOST_UNDERLAY6}]:{HOST_PORT}"),
            )
        } else {
            (
                format!("{VM_UNDERLAY4}:{VM_PORT}"),
                format!("{HOST_UNDERLAY4}:{HOST_PORT}"),
            )
        };
        let host_peer_pub = opts
            .host_peer_pub
            .clone()
            .unwrap_or_else(|| vm_key.public.clone());
        let vm_peer_pub = host_key.public.clone();
        let mut t = Tunnel {
            host: Side {
                daemon: None,
                imp: host_imp,
                iface: ha,
                key: host_key,
                port: HOST_PORT,
                peer_pub: host_peer_pub,
                endpoint: if opts.host_no_endpoint {
                    None
                } else {
                    Some(host_ep)
                },
            },
            vm: Side {
                daemon: None,
                imp: vm_imp,
                iface: vb,
                key: vm_key,
                port: VM_PORT,
                peer_pub: vm_peer_pub,
                endpoint: Some(vm_ep),
            },
            net,
        };
        t.start_host();
        t.start_vm();
        t
    }

    fn start_side(
        ns: &Netns,
        side: &mut Side,
        local4: &str,
        peer4: &str,
        local6: &str,
        peer6: &str,
    ) {
        assert!(side.daemon.is_none());
        side.daemon = Some(Daemon::start(ns, side.imp, &side.iface));
        configure(
            ns,
            &side.iface,
            &side.key.key_file,
            side.port,
            &side.peer_pub,
            side.endpoint.as_deref(),
            local4,
            peer4,
            local6,
            peer6,
        );
    }

    /// Starts and configures the host side (must not be running).
    pub fn start_host(&mut self) {
        Self::start_side(
            &self.net.host,
            &mut self.host,
            HOST_TUN4,
            VM_TUN4,
            HOST_TUN6,
            VM_TUN6,
        );
    }

    /// Starts and configures the vm side (must not be running).
    pub fn start_vm(&mut self) {
        Self::start_side(
            &self.net.vm,
            &mut self.vm,
            VM_TUN4,
            HOST_TUN4,
            VM_TUN6,
            HOST_TUN6,
        );
    }

    /// Stops the host side with SIGTERM (SIGKILL after 3 s); returns its exit status.
    pub fn stop_host(&mut self) -> Option<ExitStatus> {
        let mut d = self.host.daemon.take().expect("host not running");
        let (st, _) = d.stop_with(SIGTERM, DAEMON_STOP_TIMEOUT);
        drop(d);
        st
    }

    /// Stops the vm side with SIGTERM (SIGKILL after 3 s); returns its exit status.
    pub fn stop_vm(&mut self) -> Option<ExitStatus> {
        let mut d = self.vm.daemon.take().expect("vm not running");
        let (st, _) = d.stop_with(SIGTERM, DAEMON_STOP_TIMEOUT);
        drop(d);
        st
    }

    pub fn host_dump(&self) -> WgDump {
        wg_dump(&self.net.host, &self.host.iface)
    }

    pub fn vm_dump(&self) -> WgDump {
        wg_dump(&self.net.vm, &self.vm.iface)
    }

    /// Pings from host to vm until a reply (bounded), panicking with both dumps otherwise.
    pub fn wait_host_to_vm(&self, addr: &str, timeout: Duration) {
        if !try_ping_until(&self.net.host, addr, timeout) {
            panic!(
                "host -> {addr}: no ping reply within {timeout:?}\n{}",
                self.diagnostics()
            );
        }
    }

    /// Pings from vm to host until a reply (bounded), panicking with both dumps otherwise.
    pub fn wait_vm_to_host(&self, addr: &str, timeout: Duration) {
        if !try_ping_until(&self.net.vm, addr, timeout) {
            panic!(
                "vm -> {addr}: no ping reply within {timeout:?}\n{}",
                self.diagnostics()
            );
        }
    }

    /// `wg show` of both sides (for failure messages); never panics.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for (label, ns, side) in [
            ("host", &self.net.host, &self.host),
            ("vm", &self.net.vm, &self.vm),
        ] {
            let out = ns.exec_timeout(&["wg", "show", &side.iface], Duration::from_secs(5));
            let text = match out {
                Ok(o) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => e,
            };
            let _ = writeln!(
                s,
                "--- {label} ({:?} {}) wg show ---\n{}",
                side.imp,
                side.iface,
                text.trim_end()
            );
        }
        s
    }
}

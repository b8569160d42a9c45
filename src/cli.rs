//! The command line, kept in the library so that completions and the man
//! page can be generated from the same definition.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "netconnect",
    version,
    about = "Reach Docker containers on macOS by IP address through a WireGuard tunnel into the Docker VM"
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format: human (colour on a terminal) or json (one object per line).
    #[arg(long, global = true, env = "NETCONNECT_LOG_FORMAT", value_enum, default_value_t = crate::config::LogFormat::Human)]
    pub log_format: crate::config::LogFormat,
    /// Configuration file; flags and their environment variables override it.
    #[arg(long, global = true, env = "NETCONNECT_CONFIG", default_value = crate::config::DEFAULT_PATH)]
    pub config: std::path::PathBuf,
    /// Control socket of the running `up`, which status, doctor and down talk to.
    #[arg(long, global = true, env = "NETCONNECT_CONTROL_SOCKET", default_value = crate::control::DEFAULT_SOCKET)]
    pub control_socket: std::path::PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a userspace WireGuard device in the foreground, configured with
    /// `wg` through /var/run/wireguard/IFACE.sock (like `wireguard-go -f`).
    Device(DeviceArgs),
    /// Connect this machine to Docker's networks: create the tunnel, start
    /// the VM-side helper and keep a route for every Docker network (root,
    /// foreground; Ctrl-C removes everything it made here).
    Up(UpArgs),
    /// What runs and what is broken: the engine, the tunnel (keys, last
    /// handshake, bytes), the helper and the route of every Docker network.
    Status(StatusArgs),
    /// Check each link from this machine to the containers, in order, and
    /// say how to fix the first broken one (exit 0 healthy, 1 broken).
    Doctor(TargetArgs),
    /// Stop a running `up` and remove everything netconnect made, here and
    /// in the VM (interfaces, routes, firewall rules, helper container).
    Down(TargetArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) generated from this command line, or
    /// write one page per command into a directory.
    #[command(hide = true)]
    Man {
        /// Write netconnect.8 and netconnect-COMMAND.8 here instead.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// The VM side, run by `up` inside the helper container; not for use by hand.
    #[command(hide = true)]
    Helper(HelperArgs),
    /// Run by `down` in a helper-image container: remove netconnect's
    /// firewall rules, routes and interface from the VM.
    #[command(hide = true, name = "helper-cleanup")]
    HelperCleanup(VmArgs),
    /// Run by `doctor` in a helper-image container: check that the VM's
    /// tunnel interface and firewall rules are in place (exit 1 if not).
    #[command(hide = true, name = "helper-check")]
    HelperCheck(VmArgs),
    /// Run by `up` in a helper-image container when a cluster's ranges
    /// change: make netconnect's VM routes exactly the `--route`s given.
    #[command(hide = true, name = "helper-routes")]
    HelperRoutes(VmArgs),
    /// Run `netconnect up` at boot as a macOS LaunchDaemon (without Homebrew).
    Service(ServiceArgs),
    /// Write one archive to attach to a bug report: version, OS, status,
    /// doctor, the log, the OS's view of the tunnel, the engine and the
    /// helper; private keys removed, your home shown as ~ (root reads more).
    Bugreport(BugreportArgs),
}

#[derive(Debug, Args)]
pub struct BugreportArgs {
    /// Where to write the archive (a file, or a folder for the default
    /// name); default: netconnect-bugreport-TIME.tar.gz here.
    #[arg(long, short, conflicts_with = "stdout")]
    pub output: Option<std::path::PathBuf>,
    /// Print the same sections as text instead of writing an archive.
    #[arg(long)]
    pub stdout: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (schema documented in the README) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// The engine, the two interfaces and the helper image: what `up` uses,
/// and where `status`, `doctor` and `down` look when no daemon answers (a
/// running daemon says it itself).
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Docker engine to use (unix:///path or tcp://host:port); default: DOCKER_HOST,
    /// then the current docker context, then the well-known sockets.
    #[arg(long, env = "NETCONNECT_DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Name of the tunnel interface on this machine (Linux; macOS picks utunN).
    #[arg(long, env = "NETCONNECT_INTERFACE", default_value = "netconnect0")]
    pub interface: String,
    /// Name of the tunnel interface inside the VM.
    #[arg(long, env = "NETCONNECT_VM_INTERFACE", default_value = "netconnect0")]
    pub vm_interface: String,
    /// Helper image, run in the VM (and to inspect and clean it).
    #[arg(long, env = "NETCONNECT_HELPER_IMAGE", default_value = concat!("netconnect-helper:", env!("CARGO_PKG_VERSION")))]
    pub helper_image: String,
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct VmArgs {
    /// Tunnel interface in the VM.
    #[arg(long, default_value = "netconnect0")]
    pub interface: String,
    /// Extra routes the helper added: SUBNET=GATEWAY (repeatable).
    #[arg(long = "route", value_parser = parse_vm_route)]
    pub routes: Vec<(ipnet::IpNet, std::net::IpAddr)>,
}

/// `SUBNET=GATEWAY`, how an extra route with a VM-side gateway travels to
/// the helper.
pub fn parse_vm_route(s: &str) -> Result<(ipnet::IpNet, std::net::IpAddr), String> {
    let (net, gw) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not SUBNET=GATEWAY"))?;
    let net: ipnet::IpNet = net.parse().map_err(|e| format!("{net:?}: {e}"))?;
    let gw: std::net::IpAddr = gw.parse().map_err(|e| format!("{gw:?}: {e}"))?;
    Ok((net.trunc(), gw))
}

/// How the host asks the helper image for something: the value of one of
/// its subcommands, rendered to the argv its container runs. The host
/// never writes the helper's flags by hand; a test parses each rendering
/// back with this CLI and must get the same value.
#[derive(Debug, Clone, PartialEq)]
pub enum HelperCommand {
    Helper(HelperArgs),
    Cleanup(VmArgs),
    Check(VmArgs),
    Routes(VmArgs),
}

impl HelperCommand {
    /// The subcommand's name, as clap spells it.
    pub fn name(&self) -> &'static str {
        match self {
            HelperCommand::Helper(_) => "helper",
            HelperCommand::Cleanup(_) => "helper-cleanup",
            HelperCommand::Check(_) => "helper-check",
            HelperCommand::Routes(_) => "helper-routes",
        }
    }

    /// The container's command: subcommand and flags, every field written
    /// out (no reliance on defaults that could differ between a host and
    /// an image of another version).
    pub fn argv(&self) -> Vec<String> {
        let mut a = vec![self.name().to_string()];
        let mut flag = |name: &str, value: String| {
            a.push(format!("--{name}"));
            a.push(value);
        };
        match self {
            HelperCommand::Helper(h) => {
                // Destructured whole, so a new field fails to compile here
                // until it is rendered.
                let HelperArgs {
                    host_public_key,
                    host_endpoint,
                    host_port,
                    interface,
                    vm_address,
                    host_address,
                    vm_address6,
                    host_address6,
                    key_file,
                    mode,
                    routes,
                } = h;
                flag("mode", mode.as_str().into());
                flag("host-public-key", host_public_key.clone());
                if let Some(e) = host_endpoint {
                    flag("host-endpoint", e.clone());
                }
                flag("host-port", host_port.to_string());
                flag("interface", interface.clone());
                flag("vm-address", vm_address.to_string());
                flag("host-address", host_address.to_string());
                flag("vm-address6", vm_address6.to_string());
                flag("host-address6", host_address6.to_string());
                flag("key-file", key_file.clone());
                for (net, gw) in routes {
                    flag("route", format!("{net}={gw}"));
                }
            }
            HelperCommand::Cleanup(v) | HelperCommand::Check(v) | HelperCommand::Routes(v) => {
                let VmArgs { interface, routes } = v;
                flag("interface", interface.clone());
                for (net, gw) in routes {
                    flag("route", format!("{net}={gw}"));
                }
            }
        }
        a
    }
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub action: ServiceAction,
}

#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Write /Library/LaunchDaemons/dev.netconnect.daemon.plist and start it.
    Install {
        /// Print the plist and the launchctl commands instead (any OS).
        #[arg(long)]
        dry_run: bool,
        /// The netconnect binary the service runs (default: this one).
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
    },
    /// Stop the service (removing its routes) and remove the plist.
    Uninstall {
        /// Print the launchctl commands instead (any OS).
        #[arg(long)]
        dry_run: bool,
    },
    /// What launchd says about the service (`launchctl print`).
    Status,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// UDP port of the tunnel on this machine; 0 picks a free one.
    #[arg(long, env = "NETCONNECT_LISTEN_PORT", default_value_t = 0)]
    pub listen_port: u16,
    /// How the VM reaches this machine, HOST or HOST:PORT (default port: the listen
    /// port). Default: found by the VM side, which tries the engine's host-gateway,
    /// the runtime's name for this machine (host.docker.internal, host.lima.internal,
    /// host.containers.internal, host.rancher-desktop.internal) and the VM's default
    /// gateway, and keeps the first through which a handshake completes.
    #[arg(long, env = "NETCONNECT_HOST_ENDPOINT")]
    pub host_endpoint: Option<String>,
    /// Image archive (`docker save`, gzip allowed) loaded when the engine lacks the
    /// helper image; default: PREFIX/share/netconnect/netconnect-helper.tar.gz for
    /// PREFIX/bin/netconnect (Homebrew), then next to the binary.
    #[arg(long, env = "NETCONNECT_HELPER_ARCHIVE")]
    pub helper_archive: Option<std::path::PathBuf>,
    /// Run even when Docker's networks are already local (Linux, with the
    /// engine in this network namespace), where `up` otherwise does nothing.
    #[arg(long, env = "NETCONNECT_FORCE")]
    pub force: bool,
    /// Tunnel address of this machine.
    #[arg(long, default_value = "10.33.33.1")]
    pub host_address: std::net::IpAddr,
    /// Tunnel address of the VM.
    #[arg(long, default_value = "10.33.33.2")]
    pub vm_address: std::net::IpAddr,
    /// IPv6 tunnel address of this machine (for Docker's IPv6 networks).
    #[arg(long, default_value = "fd33:33:33::1")]
    pub host_address6: std::net::Ipv6Addr,
    /// IPv6 tunnel address of the VM.
    #[arg(long, default_value = "fd33:33:33::2")]
    pub vm_address6: std::net::Ipv6Addr,
}

/// Which WireGuard the helper may run (`netconnect helper --mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HelperMode {
    Auto,
    Kernel,
    Userspace,
}

impl HelperMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HelperMode::Auto => "auto",
            HelperMode::Kernel => "kernel",
            HelperMode::Userspace => "userspace",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct HelperArgs {
    /// Public key of the host side (base64).
    #[arg(long)]
    pub host_public_key: String,
    /// HOST, HOST:PORT or [IPv6]:PORT where the VM reaches the host side: the
    /// only address tried. Without it the helper finds the way (`helper::endpoint`).
    #[arg(long)]
    pub host_endpoint: Option<String>,
    /// The host side's UDP port, for every address found without --host-endpoint.
    #[arg(long)]
    pub host_port: u16,
    /// Tunnel interface to create in the VM.
    #[arg(long, default_value = "netconnect0")]
    pub interface: String,
    #[arg(long, default_value = "10.33.33.2")]
    pub vm_address: std::net::IpAddr,
    #[arg(long, default_value = "10.33.33.1")]
    pub host_address: std::net::IpAddr,
    #[arg(long, default_value = "fd33:33:33::2")]
    pub vm_address6: std::net::Ipv6Addr,
    #[arg(long, default_value = "fd33:33:33::1")]
    pub host_address6: std::net::Ipv6Addr,
    /// Where the VM's private key is kept, inside the container: `up`
    /// mounts a volume of the container's own there, as the image's root
    /// is read-only.
    #[arg(long, default_value = "/var/lib/netconnect/vm.key")]
    pub key_file: String,
    /// kernel: WireGuard in the VM kernel only; without it, print
    /// `mode=no-kernel-wireguard` and exit 0 (how `up` learns, with no TUN
    /// device given, that the userspace peer is needed). userspace: the
    /// userspace peer only (needs /dev/net/tun). auto: kernel, else
    /// userspace.
    #[arg(long, value_enum, default_value_t = HelperMode::Auto)]
    pub mode: HelperMode,
    /// Route SUBNET through GATEWAY inside the VM (extra routes of the
    /// configuration file), as SUBNET=GATEWAY; repeatable.
    #[arg(long = "route", value_parser = parse_vm_route)]
    pub routes: Vec<(ipnet::IpNet, std::net::IpAddr)>,
}

#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Name of the TUN interface to create (Linux; macOS picks utunN).
    pub interface: String,
    /// UDP port to listen on; 0 picks a free one. `wg set IFACE listen-port` changes it later.
    #[arg(long, env = "NETCONNECT_LISTEN_PORT", default_value_t = 0)]
    pub listen_port: u16,
    /// MTU of the TUN interface.
    #[arg(long, default_value_t = crate::platform::DEFAULT_MTU, value_parser = clap::value_parser!(u16).range(1280..=65515))]
    pub mtu: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command the host sends the helper image, parsed back by this
    /// CLI, is the value it was rendered from; values unlike the defaults,
    /// so a flag left out shows.
    #[test]
    fn helper_commands_render_and_parse_back() {
        let routes = vec![
            (
                "10.244.0.0/16".parse().unwrap(),
                "172.18.0.2".parse().unwrap(),
            ),
            ("fd10::/64".parse().unwrap(), "fc00::2".parse().unwrap()),
        ];
        let vm = VmArgs {
            interface: "nc-vm1".into(),
            routes: routes.clone(),
        };
        let commands = [
            HelperCommand::Helper(HelperArgs {
                host_public_key: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into(),
                host_endpoint: Some("host.docker.internal:51820".into()),
                host_port: 51820,
                interface: "nc-vm1".into(),
                vm_address: "10.40.0.2".parse().unwrap(),
                host_address: "10.40.0.1".parse().unwrap(),
                vm_address6: "fd40::2".parse().unwrap(),
                host_address6: "fd40::1".parse().unwrap(),
                key_file: "/keys/vm.key".into(),
                mode: HelperMode::Userspace,
                routes,
            }),
            HelperCommand::Helper(HelperArgs {
                host_public_key: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into(),
                host_endpoint: None,
                host_port: 4000,
                interface: "nc-vm2".into(),
                vm_address: "10.40.0.2".parse().unwrap(),
                host_address: "10.40.0.1".parse().unwrap(),
                vm_address6: "fd40::2".parse().unwrap(),
                host_address6: "fd40::1".parse().unwrap(),
                key_file: "/keys/vm.key".into(),
                mode: HelperMode::Kernel,
                routes: vec![],
            }),
            HelperCommand::Cleanup(vm.clone()),
            HelperCommand::Check(vm.clone()),
            HelperCommand::Routes(vm),
        ];
        for c in commands {
            let argv = c.argv();
            let cli =
                Cli::try_parse_from(std::iter::once("netconnect".to_string()).chain(argv.clone()))
                    .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let back = match cli.command {
                Command::Helper(a) => HelperCommand::Helper(a),
                Command::HelperCleanup(a) => HelperCommand::Cleanup(a),
                Command::HelperCheck(a) => HelperCommand::Check(a),
                Command::HelperRoutes(a) => HelperCommand::Routes(a),
                other => panic!("{argv:?} parsed as {other:?}"),
            };
            assert_eq!(back, c, "{argv:?}");
        }
    }
}

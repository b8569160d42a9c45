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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a userspace WireGuard device in the foreground, configured with
    /// `wg` through /var/run/wireguard/IFACE.sock (like `wireguard-go -f`).
    Device(DeviceArgs),
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

//! `netconnect device IFACE`: a WireGuard device configured from outside
//! with `wg`, the way `wireguard-go -f` is. Used by the benchmarks and the
//! interoperability tests, and handy for debugging the data plane alone.

use std::sync::Arc;

use anyhow::Context as _;
use tracing::info;

use crate::cli::DeviceArgs;
use crate::platform;
use crate::tunnel::{ConfigError, Device};
use crate::uapi::{self, UapiListener};

pub async fn run(args: DeviceArgs) -> anyhow::Result<()> {
    platform::require_root(&format!("device {}", args.interface))?;
    platform::validate_interface_name(&args.interface)?;
    // Fail on a live socket before creating anything.
    let path = uapi::socket_path(&args.interface);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        anyhow::bail!(
            "{} is served by another running process; stop it first or pick another interface name",
            path.display()
        );
    }
    let (tun, name) = platform::create_tun(&args.interface, args.mtu)?;
    let device = Device::start(&name, tun, args.listen_port).map_err(|e| match e {
        ConfigError::AddrInUse(p) => anyhow::anyhow!(
            "UDP port {p} is already in use; pick another with --listen-port, or 0 for any free port"
        ),
        e => anyhow::Error::new(e),
    })?;
    let device = Arc::new(device);
    // The socket appears last: once it exists, the device is ready for `wg`.
    let listener = UapiListener::bind(&name).context("serving the WireGuard UAPI")?;
    info!(iface = %name, socket = %listener.path().display(), "device ready");

    let result = tokio::select! {
        _ = listener.serve(device.clone()) => Ok(()),
        sig = crate::signals::shutdown() => {
            info!(signal = sig, "shutting down");
            Ok(())
        }
        reason = device.failed() => Err(anyhow::anyhow!(reason)),
    };
    drop(listener);
    device.shutdown().await;
    drop(device);
    result
}

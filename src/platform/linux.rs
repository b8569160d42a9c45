//! Linux: TUN devices through `/dev/net/tun`.

use std::path::Path;

use super::PlatformError;
use crate::tunnel::Tun;

pub fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Create TUN `name` (left down and unaddressed, as `wireguard-go` leaves it).
/// Closing the returned device removes the interface.
pub fn create_tun(name: &str, mtu: u16) -> Result<(Tun, String), PlatformError> {
    if !Path::new("/dev/net/tun").exists() {
        return Err(PlatformError::NoTun(
            "/dev/net/tun is missing: load the module with `modprobe tun`, or run the container \
             with `--device /dev/net/tun`"
                .into(),
        ));
    }
    // TUNSETIFF would attach to an existing persistent TUN of that name, and
    // refuses other kinds with an unhelpful EINVAL: check first.
    if interface_exists(name) {
        return Err(PlatformError::InterfaceExists(name.to_owned()));
    }
    let mut config = tun::Configuration::default();
    config.tun_name(name).mtu(mtu);
    let tun = tun::create_as_async(&config).map_err(|e| PlatformError::Tun {
        name: name.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok((tun, name.to_owned()))
}

//! macOS: `utun` devices. The kernel picks the number, so the requested name
//! is only a hint and the real one is returned.

use super::PlatformError;
use crate::tunnel::Tun;

pub fn interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

pub fn create_tun(_name: &str, mtu: u16) -> Result<(Tun, String), PlatformError> {
    use tun::AbstractDevice as _;
    let mut config = tun::Configuration::default();
    config.mtu(mtu);
    let tun = tun::create_as_async(&config).map_err(|e| PlatformError::Tun {
        name: "utun".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let name = tun.tun_name().unwrap_or_else(|_| "utun".into());
    Ok((tun, name))
}

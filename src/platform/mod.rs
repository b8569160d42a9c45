//! What differs between macOS and Linux, behind the same function names in
//! `linux.rs` and `macos.rs` (boringtun's `#[path]` pattern). Everything
//! above this module is platform-neutral.

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod os;
#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod os;

pub use os::{create_tun, interface_exists};

/// WireGuard's usual MTU: 1500 minus the largest (IPv6) encapsulation.
pub const DEFAULT_MTU: u16 = 1420;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("netconnect must run as root to create network interfaces; try: sudo netconnect {0}")]
    NotRoot(String),
    #[error("{0}")]
    NoTun(String),
    #[error("interface {0} already exists; pick another name or remove it with `ip link del {0}`")]
    InterfaceExists(String),
    #[error(
        "{0:?} is not a valid interface name (1-15 characters: letters, digits, '-', '_', '.')"
    )]
    BadName(String),
    #[error("cannot create TUN device {name}: {source}")]
    Tun {
        name: String,
        source: std::io::Error,
    },
}

/// Root is what every TUN and route change needs; asking up front gives one
/// clear error instead of a half-made device.
pub fn require_root(command: &str) -> Result<(), PlatformError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(PlatformError::NotRoot(command.to_owned()))
    }
}

/// Linux limits names to IFNAMSIZ-1 bytes; we also refuse characters that
/// `ip` and `ifconfig` would need quoting for.
pub fn validate_interface_name(name: &str) -> Result<(), PlatformError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(PlatformError::BadName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for good in ["wg0", "nc-host_1", "utun7", "a.b"] {
            assert!(validate_interface_name(good).is_ok(), "{good}");
        }
        for bad in ["", "sixteen-chars-xx", "a b", "x/y", "..", "wg0\n"] {
            assert!(validate_interface_name(bad).is_err(), "{bad:?}");
        }
    }
}

//! The text of the cross-platform WireGuard configuration protocol
//! (<https://www.wireguard.com/xplatform/>), with no I/O: a `set` transaction
//! parses into a [`DeviceUpdate`], a [`DeviceStatus`] formats as a `get`
//! answer. Everything is validated before anything is applied, so a bad line
//! anywhere in a transaction leaves the device as it was.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

use ipnet::IpNet;

use crate::keys::{Key, PublicKey};
use crate::tunnel::{libc_errno, DeviceStatus, DeviceUpdate, PeerUpdate};

/// Lines longer than this are refused: the longest legal line is a key of
/// 64 hex digits, and an endpoint or CIDR is far shorter.
pub const MAX_LINE: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("line {line}: {msg}")]
    Invalid { line: usize, msg: String },
    #[error("unknown operation {0:?} (expected get=1 or set=1)")]
    UnknownOperation(String),
    #[error("line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("transaction ended without its closing blank line")]
    Unterminated,
}

impl ProtocolError {
    pub fn errno(&self) -> i32 {
        match self {
            ProtocolError::UnknownOperation(_) => libc_errno::EPROTO,
            _ => libc_errno::EINVAL,
        }
    }
}

fn invalid(line: usize, msg: impl Into<String>) -> ProtocolError {
    ProtocolError::Invalid {
        line,
        msg: msg.into(),
    }
}

/// Parse the body of a `set=1` transaction: the `key=value` lines between
/// `set=1` and the blank line. `first_line` numbers the lines in errors.
pub fn parse_set<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    first_line: usize,
) -> Result<DeviceUpdate, ProtocolError> {
    let mut update = DeviceUpdate::default();
    for (i, line) in lines.into_iter().enumerate() {
        let n = first_line + i;
        if line.len() > MAX_LINE {
            return Err(ProtocolError::LineTooLong);
        }
        let (key, value) = line
            .split_once('=')
            // The line itself is not echoed: it may hold a key.
            .ok_or_else(|| invalid(n, "expected key=value"))?;
        if key == "public_key" {
            let key = hex_key(n, value)?;
            update.peers.push(PeerUpdate::new(PublicKey::from(&key)));
            continue;
        }
        match (key, update.peers.last_mut()) {
            ("private_key", None) => update.private_key = Some(hex_key(n, value)?),
            ("listen_port", None) => update.listen_port = Some(number(n, key, value)?),
            // wg sends an empty value to mean "off".
            ("fwmark", None) if value.is_empty() => update.fwmark = Some(0),
            ("fwmark", None) => update.fwmark = Some(number(n, key, value)?),
            ("replace_peers", None) => update.replace_peers = flag(n, key, value)?,
            ("remove", Some(p)) => p.remove = flag(n, key, value)?,
            ("update_only", Some(p)) => p.update_only = flag(n, key, value)?,
            ("preshared_key", Some(p)) => p.preshared_key = Some(hex_key(n, value)?),
            ("endpoint", Some(p)) => {
                let ep: SocketAddr = value
                    .parse()
                    .map_err(|_| invalid(n, format!("endpoint {value:?} is not IP:port")))?;
                p.endpoint = Some(ep);
            }
            ("persistent_keepalive_interval", Some(p)) => {
                p.persistent_keepalive = Some(number(n, key, value)?);
            }
            ("replace_allowed_ips", Some(p)) => p.replace_allowed_ips = flag(n, key, value)?,
            ("allowed_ip", Some(p)) => {
                let net: IpNet = value
                    .parse()
                    .map_err(|_| invalid(n, format!("allowed_ip {value:?} is not a CIDR")))?;
                p.allowed_ips.push(net);
            }
            ("protocol_version", Some(_)) => {
                if value != "1" {
                    return Err(invalid(
                        n,
                        format!("protocol_version {value:?} unsupported"),
                    ));
                }
            }
            (
                "remove"
                | "update_only"
                | "preshared_key"
                | "endpoint"
                | "persistent_keepalive_interval"
                | "replace_allowed_ips"
                | "allowed_ip"
                | "protocol_version",
                None,
            ) => return Err(invalid(n, format!("{key} before any public_key"))),
            ("private_key" | "listen_port" | "fwmark" | "replace_peers", Some(_)) => {
                return Err(invalid(n, format!("device key {key} after a peer section")))
            }
            _ => return Err(invalid(n, format!("unknown key {key:?}"))),
        }
    }
    Ok(update)
}

fn hex_key(line: usize, value: &str) -> Result<Key, ProtocolError> {
    Key::from_hex(value).map_err(|e| invalid(line, e.to_string()))
}

fn number<T: std::str::FromStr>(line: usize, key: &str, value: &str) -> Result<T, ProtocolError> {
    value
        .parse()
        .map_err(|_| invalid(line, format!("{key} {value:?} is not a valid number")))
}

fn flag(line: usize, key: &str, value: &str) -> Result<bool, ProtocolError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(line, format!("{key} must be true or false"))),
    }
}

/// The `get=1` answer, terminated by `errno=0` and the blank line.
pub fn format_get(status: &DeviceStatus) -> String {
    let mut out = String::with_capacity(256 + 256 * status.peers.len());
    if let Some(k) = &status.private_key {
        let _ = writeln!(out, "private_key={}", k.to_hex());
    }
    let _ = writeln!(out, "listen_port={}", status.listen_port);
    if status.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", status.fwmark);
    }
    for p in &status.peers {
        let _ = writeln!(out, "public_key={}", p.public_key.to_hex());
        if let Some(psk) = &p.preshared_key {
            let _ = writeln!(out, "preshared_key={}", psk.to_hex());
        }
        let _ = writeln!(out, "protocol_version=1");
        if let Some(ep) = p.endpoint {
            let _ = writeln!(out, "endpoint={ep}");
        }
        // Unix time, as the protocol says (boringtun-cli sends the age
        // instead, which `wg show` prints as a date in 1970).
        let (sec, nsec) = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| (d.as_secs(), d.subsec_nanos()))
            .unwrap_or((0, 0));
        let _ = writeln!(out, "last_handshake_time_sec={sec}");
        let _ = writeln!(out, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(out, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive.unwrap_or(0)
        );
        for net in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    out.push_str("errno=0\n\n");
    out
}

/// The answer to a transaction: `errno=0`, or the failure as a negated
/// errno. `wg` negates what it reads after a `set` (wireguard-tools'
/// `ipc-uapi.h`: `errno = -ret`) and wireguard-go sends `-EINVAL` and
/// friends, so a positive value would print as "Unknown error -22".
pub fn format_errno(errno: i32) -> String {
    format!("errno={}\n\n", -errno.abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::PeerStatus;
    use std::time::{Duration, SystemTime};

    const K1: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    const K2: &str = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";

    fn parse(text: &str) -> Result<DeviceUpdate, ProtocolError> {
        parse_set(text.lines(), 2)
    }

    #[test]
    fn a_full_wg_set_transaction() {
        let u = parse(&format!(
            "private_key={K1}\nlisten_port=51820\nfwmark=0\nreplace_peers=true\n\
             public_key={K2}\npreshared_key={K1}\nendpoint=[fd00::2]:51821\n\
             persistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
             allowed_ip=10.33.33.2/32\nallowed_ip=fd33::/64\nprotocol_version=1"
        ))
        .unwrap();
        assert_eq!(u.private_key.unwrap().to_hex(), K1);
        assert_eq!(u.listen_port, Some(51820));
        assert_eq!(u.fwmark, Some(0));
        assert!(u.replace_peers);
        let p = &u.peers[0];
        assert_eq!(p.public_key.to_hex(), K2);
        assert_eq!(p.preshared_key.as_ref().unwrap().to_hex(), K1);
        assert_eq!(p.endpoint, Some("[fd00::2]:51821".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, Some(25));
        assert!(p.replace_allowed_ips && !p.remove && !p.update_only);
        assert_eq!(p.allowed_ips.len(), 2);
    }

    #[test]
    fn several_peers_and_remove() {
        let u = parse(&format!(
            "public_key={K1}\nremove=true\npublic_key={K2}\nupdate_only=true"
        ))
        .unwrap();
        assert_eq!(u.peers.len(), 2);
        assert!(u.peers[0].remove);
        assert!(u.peers[1].update_only && !u.peers[1].remove);
    }

    #[test]
    fn bad_lines_name_their_line() {
        let cases = [
            ("private_key=zz".to_string(), 2, "hex"),
            (format!("private_key={}", &K1[..10]), 2, "64 hex"),
            (
                format!("listen_port=1\npublic_key={K2}\nallowed_ip=10.0.0.0/33"),
                4,
                "CIDR",
            ),
            (format!("public_key={K2}\nallowed_ip=10.0.0.1"), 3, "CIDR"),
            ("bogus=1".to_string(), 2, "unknown key"),
            ("no equals sign".to_string(), 2, "key=value"),
            ("listen_port=70000".to_string(), 2, "number"),
            ("endpoint=1.2.3.4:5".to_string(), 2, "before any public_key"),
            (format!("public_key={K2}\nlisten_port=1"), 3, "after a peer"),
            (format!("public_key={K2}\nendpoint=nohost"), 3, "IP:port"),
            (format!("public_key={K2}\nremove=yes"), 3, "true or false"),
            (
                format!("public_key={K2}\nprotocol_version=2"),
                3,
                "unsupported",
            ),
        ];
        for (text, line, needle) in cases {
            match parse(&text) {
                Err(ProtocolError::Invalid { line: l, msg }) => {
                    assert_eq!(l, line, "{text}: {msg}");
                    assert!(msg.contains(needle), "{text}: {msg}");
                }
                other => panic!("{text}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn overlong_lines_are_refused() {
        let long = format!("endpoint={}", "1".repeat(MAX_LINE));
        assert_eq!(
            parse_set([long.as_str()], 2).unwrap_err(),
            ProtocolError::LineTooLong
        );
        assert_eq!(ProtocolError::LineTooLong.errno(), 22);
    }

    #[test]
    fn errors_are_negated_errnos_as_wg_reads_them() {
        assert_eq!(format_errno(0), "errno=0\n\n");
        assert_eq!(format_errno(libc_errno::EADDRINUSE), "errno=-98\n\n");
        assert_eq!(format_errno(-22), "errno=-22\n\n");
    }

    #[test]
    fn get_answer_is_what_wg_expects() {
        let status = DeviceStatus {
            private_key: Some(Key::from_hex(K1).unwrap()),
            public_key: None,
            listen_port: 51820,
            fwmark: 0,
            // Not a UAPI key: `wg` rejects keys it does not know.
            tun_refused: 5,
            peers: vec![PeerStatus {
                public_key: PublicKey::from(&Key::from_hex(K2).unwrap()),
                preshared_key: None,
                endpoint: Some("10.200.0.2:51821".parse().unwrap()),
                last_handshake: Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
                rx_bytes: 92,
                tx_bytes: 148,
                persistent_keepalive: None,
                allowed_ips: vec!["10.33.33.2/32".parse().unwrap()],
            }],
        };
        let expected = format!(
            "private_key={K1}\nlisten_port=51820\npublic_key={K2}\nprotocol_version=1\n\
             endpoint=10.200.0.2:51821\nlast_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=5\ntx_bytes=148\nrx_bytes=92\n\
             persistent_keepalive_interval=0\nallowed_ip=10.33.33.2/32\nerrno=0\n\n"
        );
        assert_eq!(format_get(&status), expected);
    }
}

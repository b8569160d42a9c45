//! A client of the cross-platform UAPI (`/var/run/wireguard/IFACE.sock`),
//! raw enough to send what `wg` never would.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Directory of WireGuard cross-platform UAPI sockets (shared by all namespaces).
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// Path of the UAPI socket of `iface`.
pub fn uapi_socket_path(iface: &str) -> PathBuf {
    Path::new(UAPI_DIR).join(format!("{iface}.sock"))
}

/// What came back for one UAPI request.
#[derive(Debug, Clone)]
pub struct UapiReply {
    /// Everything read before "\n\n", EOF, error or timeout.
    pub text: String,
    /// Error writing the request (e.g. the daemon closed early), if any.
    pub write_error: Option<String>,
    /// Error reading (other than EOF), e.g. timeout.
    pub read_error: Option<String>,
}

impl UapiReply {
    /// Value of the `errno=` line, if any.
    pub fn errno(&self) -> Option<i64> {
        self.text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("errno="))
            .and_then(|v| v.trim().parse().ok())
    }

    /// `key=value` pairs before `errno=`.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| *k != "errno")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Sends raw `request` to the UAPI socket of `iface`; if `close_write`, shuts
/// down the write half afterwards. Reads the reply (bounded by `timeout`).
pub fn uapi_raw(iface: &str, request: &[u8], close_write: bool, timeout: Duration) -> UapiReply {
    let path = uapi_socket_path(iface);
    let mut s =
        UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    let mut write_error = None;
    if let Err(e) = s.write_all(request) {
        write_error = Some(e.to_string());
    }
    if close_write {
        let _ = s.shutdown(Shutdown::Write);
    }
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut read_error = None;
    loop {
        if buf.ends_with(b"\n\n") {
            break;
        }
        if Instant::now() >= deadline {
            read_error = Some("timed out".into());
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
    }
    UapiReply {
        text: String::from_utf8_lossy(&buf).into_owned(),
        write_error,
        read_error,
    }
}

/// A complete UAPI transaction (`request` must end with the blank line).
pub fn uapi(iface: &str, request: &str) -> UapiReply {
    uapi_raw(iface, request.as_bytes(), false, Duration::from_secs(5))
}

/// `get=1` → reply; panics unless `errno=0`.
pub fn uapi_get(iface: &str) -> UapiReply {
    let r = uapi(iface, "get=1\n\n");
    assert_eq!(
        r.errno(),
        Some(0),
        "get=1 on {iface} did not answer errno=0: {r:?}"
    );
    r
}

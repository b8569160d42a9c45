//! Serving the UAPI on `/var/run/wireguard/IFACE.sock`, where `wg` looks.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::sockets::{PrivateSocket, SocketError};
use tracing::{debug, warn, Instrument};

use super::protocol::{format_errno, format_get, parse_set, ProtocolError, MAX_LINE};
use crate::tunnel::{ConfigError, Device, DeviceStatus, DeviceUpdate, TunIo};

pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// Upper bound on one `set` transaction; thousands of allowed IPs fit easily.
const MAX_TRANSACTION: usize = 16 << 20;

pub fn socket_path(iface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{iface}.sock"))
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "{0} is served by another running process; stop it first or pick another interface name"
    )]
    InUse(PathBuf),
    #[error(transparent)]
    Socket(SocketError),
}

/// The listening socket; removes its file when dropped.
pub struct UapiListener {
    /// Owns the file and its lock; removes the file when dropped.
    socket: PrivateSocket,
    listener: UnixListener,
}

impl UapiListener {
    /// Bind the socket for `iface`, replacing a stale file left by a crash
    /// but never one a live process still answers on.
    pub fn bind(iface: &str) -> Result<Self, BindError> {
        Self::bind_at(socket_path(iface))
    }

    pub fn bind_at(path: PathBuf) -> Result<Self, BindError> {
        // Root only, from its first instant: the socket hands out private keys.
        let socket = crate::sockets::bind_private(&path).map_err(|e| match e {
            SocketError::InUse(p) => BindError::InUse(p),
            e => BindError::Socket(e),
        })?;
        let listener = socket.tokio_listener().map_err(BindError::Socket)?;
        Ok(UapiListener { socket, listener })
    }

    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Accept clients until the task is dropped; each client runs on its own
    /// task so a slow or broken one cannot stall the others.
    pub async fn serve<T: TunIo>(&self, device: Arc<Device<T>>) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let device = device.clone();
                    tokio::spawn(
                        async move {
                            if let Err(e) = handle(stream, &*device).await {
                                debug!(error = %e, "uapi client");
                            }
                        }
                        .instrument(tracing::debug_span!("uapi")),
                    );
                }
                Err(e) => {
                    warn!(error = %e, "uapi accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// What a UAPI connection needs of the device: a trait so that the framing
/// can be driven with no TUN or socket behind it (`crate::fuzzing`).
pub(crate) trait Configure {
    fn name(&self) -> &str;
    fn status(&self) -> DeviceStatus;
    fn apply(&self, update: &DeviceUpdate) -> Result<(), ConfigError>;
}

impl<T: TunIo> Configure for Device<T> {
    fn name(&self) -> &str {
        Device::name(self)
    }
    fn status(&self) -> DeviceStatus {
        Device::status(self)
    }
    fn apply(&self, update: &DeviceUpdate) -> Result<(), ConfigError> {
        Device::apply(self, update)
    }
}

enum Line {
    Text(String),
    Eof,
}

/// Read one `\n`-terminated line of at most [`MAX_LINE`] bytes.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Line, ProtocolError> {
    buf.clear();
    let n = r
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', buf)
        .await
        .map_err(|_| ProtocolError::Unterminated)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() != Some(&b'\n') {
        return if buf.len() > MAX_LINE {
            Err(ProtocolError::LineTooLong)
        } else {
            Err(ProtocolError::Unterminated)
        };
    }
    buf.pop();
    if buf.len() > MAX_LINE {
        return Err(ProtocolError::LineTooLong);
    }
    String::from_utf8(std::mem::take(buf))
        .map(Line::Text)
        .map_err(|_| ProtocolError::Invalid {
            line: 0,
            msg: "not UTF-8".into(),
        })
}

/// Serve one client: transactions until it hangs up or sends a bad one.
pub(crate) async fn handle<S, D>(stream: S, device: &D) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite,
    D: Configure + ?Sized,
{
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let mut buf = Vec::with_capacity(128);
    loop {
        let reply = match read_line(&mut r, &mut buf).await {
            Ok(Line::Eof) => return Ok(()),
            Ok(Line::Text(op)) => match op.as_str() {
                "get=1" => match read_line(&mut r, &mut buf).await {
                    Ok(Line::Text(l)) if l.is_empty() => Ok(format_get(&device.status())),
                    Ok(_) => Err(ProtocolError::Invalid {
                        line: 2,
                        msg: "get=1 takes no arguments".into(),
                    }),
                    Err(e) => Err(e),
                },
                "set=1" => set(&mut r, &mut buf, device).await,
                _ => Err(ProtocolError::UnknownOperation(op_name(&op))),
            },
            Err(e) => Err(e),
        };
        match reply {
            Ok(text) => w.write_all(text.as_bytes()).await?,
            Err(e) => {
                warn!(iface = device.name(), error = %e, "rejected configuration");
                // Answer, then hang up: after a bad line we cannot know where
                // the next transaction starts.
                if !matches!(e, ProtocolError::Unterminated) {
                    w.write_all(format_errno(e.errno()).as_bytes()).await?;
                }
                return Ok(());
            }
        }
    }
}

async fn set<R: tokio::io::AsyncBufRead + Unpin, D: Configure + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    device: &D,
) -> Result<String, ProtocolError> {
    let mut lines = Vec::new();
    let mut total = 0usize;
    loop {
        match read_line(r, buf).await? {
            Line::Eof => return Err(ProtocolError::Unterminated),
            Line::Text(l) if l.is_empty() => break,
            Line::Text(l) => {
                total += l.len();
                if total > MAX_TRANSACTION {
                    return Err(ProtocolError::LineTooLong);
                }
                lines.push(l);
            }
        }
    }
    let update = parse_set(lines.iter().map(String::as_str), 2)?;
    Ok(match device.apply(&update) {
        Ok(()) => format_errno(0),
        Err(e) => {
            warn!(iface = device.name(), error = %e, "configuration not applied");
            format_errno(e.errno())
        }
    })
}

/// Operation names are echoed in logs: keep only the name, never a value
/// (a confused client may send `private_key=...` first), and keep it short.
fn op_name(line: &str) -> String {
    line.split('=')
        .next()
        .unwrap_or("")
        .chars()
        .take(32)
        .collect()
}

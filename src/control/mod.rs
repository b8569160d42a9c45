//! The control socket of a running `netconnect up`: how `status`, `doctor`
//! and `down` learn what the daemon knows (and ask it to stop) without
//! parsing logs or guessing from the outside.
//!
//! The protocol is one request line (`status` or `stop`) and one JSON
//! answer line; the socket is root-only (0600), since it can stop the
//! tunnel. It carries public keys only. [`snapshot`] holds the JSON shape,
//! which is the documented `status --json` output.

pub mod snapshot;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::sockets::{PrivateSocket, SocketError};
use tokio::sync::Notify;
use tracing::{debug, Instrument};

pub use snapshot::{Snapshot, SCHEMA};

/// Where `up` listens unless told otherwise (`--control-socket`).
pub const DEFAULT_SOCKET: &str = "/var/run/netconnect/netconnect.sock";
/// A request line longer than this is not ours.
const MAX_REQUEST: usize = 256;
/// Bound on one exchange from the client side: a daemon that accepts but
/// never answers must not hang `status`.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another `netconnect up` is running (it answers on {0}); stop it with `netconnect down` \
         or give this one another --control-socket"
    )]
    InUse(PathBuf),
    #[error(transparent)]
    Socket(SocketError),
    #[error("netconnect up is not running (nothing answers on {0})")]
    NotRunning(PathBuf),
    #[error("permission denied on {0}; the control socket is root-only: use sudo")]
    Permission(PathBuf),
    #[error("the daemon on {path} did not answer properly: {reason}")]
    Protocol { path: PathBuf, reason: String },
}

/// Builds the answer to `status` from the daemon's live state.
pub trait StatusSource: Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// The listening socket; removes its file when dropped.
pub struct ControlListener {
    listener: UnixListener,
    /// Owns the file and its lock.
    socket: PrivateSocket,
    /// Notified when a client asks the daemon to stop.
    pub stop: Arc<Notify>,
}

impl ControlListener {
    /// Bind at `path`, replacing a stale file left by a crash but never one
    /// a live daemon answers on. Must run inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let socket = crate::sockets::bind_private(path).map_err(|e| match e {
            SocketError::InUse(p) => ControlError::InUse(p),
            e => ControlError::Socket(e),
        })?;
        let listener = socket.tokio_listener().map_err(ControlError::Socket)?;
        Ok(ControlListener {
            listener,
            socket,
            stop: Arc::new(Notify::new()),
        })
    }

    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Answer clients until the future is dropped; each on its own task.
    pub async fn serve(&self, source: Arc<dyn StatusSource>) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let source = source.clone();
            let stop = self.stop.clone();
            tokio::spawn(
                async move {
                    if let Err(e) = answer(stream, source, stop).await {
                        debug!(error = %e, "control client");
                    }
                }
                .instrument(tracing::debug_span!("control_client")),
            );
        }
    }
}

async fn answer(
    stream: UnixStream,
    source: Arc<dyn StatusSource>,
    stop: Arc<Notify>,
) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r).take_bytes(MAX_REQUEST);
    tokio::time::timeout(CLIENT_TIMEOUT, r.read_line(&mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request"))??;
    let reply = match line.trim() {
        "status" => serde_json::to_string(&source.snapshot()).map_err(io::Error::other)?,
        "stop" => {
            stop.notify_one();
            r#"{"stopping":true}"#.to_string()
        }
        other => format!(
            r#"{{"error":{}}}"#,
            serde_json::Value::String(format!("unknown request {other:?}"))
        ),
    };
    w.write_all(reply.as_bytes()).await?;
    w.write_all(b"\n").await?;
    w.shutdown().await
}

trait TakeBytes: Sized {
    fn take_bytes(self, n: usize) -> tokio::io::Take<Self>;
}
impl<R: tokio::io::AsyncRead> TakeBytes for BufReader<R> {
    fn take_bytes(self, n: usize) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, n as u64)
    }
}

/// One request, one answer line.
async fn request(path: &Path, what: &str) -> Result<String, ControlError> {
    let exchange = async {
        let mut s = UnixStream::connect(path)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => ControlError::Permission(path.to_owned()),
                _ => ControlError::NotRunning(path.to_owned()),
            })?;
        let proto = |e: io::Error| ControlError::Protocol {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        s.write_all(format!("{what}\n").as_bytes())
            .await
            .map_err(proto)?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .await
            .map_err(proto)?;
        Ok(line)
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| ControlError::Protocol {
            path: path.to_owned(),
            reason: format!("no answer within {}s", CLIENT_TIMEOUT.as_secs()),
        })?
}

/// The running daemon's state.
pub async fn status(path: &Path) -> Result<Snapshot, ControlError> {
    let line = request(path, "status").await?;
    serde_json::from_str(&line).map_err(|e| ControlError::Protocol {
        path: path.to_owned(),
        reason: format!("bad status JSON: {e}"),
    })
}

/// Ask the daemon to stop; returns once it has acknowledged.
pub async fn stop(path: &Path) -> Result<(), ControlError> {
    let line = request(path, "stop").await?;
    if line.contains("\"stopping\":true") {
        Ok(())
    } else {
        Err(ControlError::Protocol {
            path: path.to_owned(),
            reason: format!("unexpected answer {:?}", line.trim()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl StatusSource for Fixed {
        fn snapshot(&self) -> Snapshot {
            Snapshot {
                pid: 4242,
                ..Snapshot::default()
            }
        }
    }

    #[tokio::test]
    async fn status_and_stop_over_the_socket() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("nc-ctl-{}", std::process::id()));
        let path = dir.join("sub/ctl.sock");
        assert!(matches!(
            status(&path).await,
            Err(ControlError::NotRunning(_))
        ));
        let l = ControlListener::bind(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A second daemon on the same path is refused while the first answers.
        assert!(matches!(
            ControlListener::bind(&path),
            Err(ControlError::InUse(_))
        ));
        let stop_signal = l.stop.clone();
        let server = tokio::spawn(async move {
            l.serve(Arc::new(Fixed)).await;
        });
        let snap = status(&path).await.unwrap();
        assert_eq!(snap.pid, 4242);
        assert_eq!(snap.schema, SCHEMA);
        let stopped = stop_signal.notified();
        stop(&path).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), stopped)
            .await
            .expect("stop was not signalled");
        server.abort();
        let _ = server.await;
        assert!(
            !path.exists(),
            "socket file left after the listener dropped"
        );
        // A stale socket (nothing answers) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let again = ControlListener::bind(&path).unwrap();
        drop(again);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

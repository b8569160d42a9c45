//! Root's listening sockets: the control socket of `up` and the UAPI socket
//! of a device. Both answer only root, and the UAPI one hands out private
//! keys, so they are made the way a careful daemon makes them:
//!
//! - in a folder only root can change (created 0755 if missing; an existing
//!   one is checked by the rule of `config::trust`): otherwise another user
//!   could swap the socket for their own and read what clients send;
//! - under an exclusive `flock` on `PATH.lock`, held while the socket
//!   lives, so two daemons can never both decide that a socket is stale and
//!   take it over;
//! - replacing a file at PATH only if it is a socket and nothing answers on
//!   it (a crash's leftover), never a regular file or a live socket;
//! - bound under umask 0177, so it is 0600 from its first instant, not
//!   after a chmod that leaves a window.

use std::fs::File;
use std::io;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _,
};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{umask, Mode};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A live process answers on the socket, or holds its lock.
    #[error("{0} is in use by another running process")]
    InUse(PathBuf),
    #[error("{}: {problem}; root makes its sockets only where no other user can replace them: {fix}", path.display())]
    Untrusted {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("{0} exists and is not a socket; move it away")]
    NotASocket(PathBuf),
    #[error("cannot create the socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A bound socket and the lock that makes it ours. Dropping it removes the
/// socket file (the lock file stays: removing it would let a second daemon
/// lock a new file while a first still holds the old one).
pub struct PrivateSocket {
    pub listener: UnixListener,
    path: PathBuf,
    _lock: Flock<File>,
}

impl PrivateSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A tokio listener on the same socket. Must run inside a tokio runtime.
    pub fn tokio_listener(&self) -> Result<tokio::net::UnixListener, SocketError> {
        let io_err = |source| SocketError::Io {
            path: self.path.clone(),
            source,
        };
        let l = self.listener.try_clone().map_err(io_err)?;
        l.set_nonblocking(true).map_err(io_err)?;
        tokio::net::UnixListener::from_std(l).map_err(io_err)
    }
}

impl Drop for PrivateSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn bind_private(path: &Path) -> Result<PrivateSocket, SocketError> {
    let io_err = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    let as_root = nix::unistd::geteuid().is_root();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(dir) {
            Ok(m) if as_root => {
                crate::config::trust(dir, m.uid(), m.mode(), true).map_err(|(problem, fix)| {
                    SocketError::Untrusted {
                        path: path.to_owned(),
                        problem,
                        fix,
                    }
                })?
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(io_err)?,
            Err(e) => return Err(io_err(e)),
        }
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(io_err)?;
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| SocketError::InUse(path.to_owned()))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io_err)?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(io_err)?;
    Ok(PrivateSocket {
        listener,
        path: path.to_owned(),
        _lock: lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nc-sockets-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_socket_is_private_locked_and_replaces_only_a_stale_socket() {
        let d = dir("basic");
        let p = d.join("sub/x.sock");
        let s = bind_private(&p).unwrap();
        let mode = std::fs::symlink_metadata(&p).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
        assert_eq!(
            std::fs::metadata(d.join("sub")).unwrap().mode() & 0o777,
            0o755
        );
        // A second daemon: the lock says no, whatever the socket does.
        assert!(matches!(bind_private(&p), Err(SocketError::InUse(_))));
        drop(s);
        assert!(!p.exists());
        // A crash's leftover: a socket nobody answers on is replaced.
        drop(UnixListener::bind(&p).unwrap());
        assert!(p.exists());
        let s = bind_private(&p).unwrap();
        drop(s);
        // A regular file is not ours to delete.
        std::fs::write(&p, "data").unwrap();
        assert!(matches!(bind_private(&p), Err(SocketError::NotASocket(_))));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "data");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The rule is root's (CI runs as root); a user's own daemon may bind
    /// where that user likes.
    #[test]
    fn root_refuses_a_folder_others_can_write() {
        let d = dir("open");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let r = bind_private(&d.join("x.sock"));
        if !nix::unistd::geteuid().is_root() {
            assert!(r.is_ok());
            return std::fs::remove_dir_all(&d).unwrap();
        }
        let e = r.err().unwrap().to_string();
        assert!(
            e.contains("is writable by group or others (mode 0777)"),
            "{e}"
        );
        assert!(
            e.contains(&format!("sudo chmod go-w {}", d.display())),
            "{e}"
        );
        assert!(!d.join("x.sock").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

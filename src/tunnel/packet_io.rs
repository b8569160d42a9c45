//! The packet interface the data plane runs on, as a trait: the TUN in
//! production, an in-memory pair in tests and benchmarks. The device code
//! is the same either way, so what the tests drive without root (handshakes,
//! routing by allowed IPs, the UAPI) is what runs on the Mac and in the VM.

use std::future::Future;
use std::io;

use tokio::sync::{mpsc, Mutex};

use super::tunio::{Tun, TunReader, TunWriter};

/// What the device asks of its packet interface: batches in, batches out.
pub trait TunIo: Send + Sync + 'static {
    /// Wait for packets and read a batch into `reader`; how many. An error
    /// with an OS error code ends the device; one without (a packet that
    /// could not be split) is dropped and reading goes on.
    fn recv(&self, reader: &mut TunReader) -> impl Future<Output = io::Result<usize>> + Send;

    /// Write what `writer` collected; on an error, how many packets were
    /// dropped.
    fn flush(
        &self,
        writer: &mut TunWriter,
    ) -> impl Future<Output = Result<(), (usize, io::Error)>> + Send;
}

impl TunIo for Tun {
    async fn recv(&self, reader: &mut TunReader) -> io::Result<usize> {
        reader.recv(self).await
    }

    async fn flush(&self, writer: &mut TunWriter) -> Result<(), (usize, io::Error)> {
        writer.flush(self).await
    }
}

/// An in-memory TUN: packets written by its [`MemTunPeer`] are read by the
/// device, and what the device writes arrives there. Bounded both ways; a
/// full queue toward the peer drops the packet, as a TUN whose reader is
/// slow does.
pub struct MemTun {
    from_peer: Mutex<mpsc::Receiver<Vec<u8>>>,
    to_peer: mpsc::Sender<Vec<u8>>,
}

/// The kernel's side of a [`MemTun`].
pub struct MemTunPeer {
    pub to_device: mpsc::Sender<Vec<u8>>,
    pub from_device: mpsc::Receiver<Vec<u8>>,
}

/// A connected pair holding up to `capacity` packets each way.
pub fn mem_tun(capacity: usize) -> (MemTun, MemTunPeer) {
    let (to_device, from_peer) = mpsc::channel(capacity);
    let (to_peer, from_device) = mpsc::channel(capacity);
    (
        MemTun {
            from_peer: Mutex::new(from_peer),
            to_peer,
        },
        MemTunPeer {
            to_device,
            from_device,
        },
    )
}

/// The error a closed in-memory TUN reports: an OS error, so the device
/// stops as it does when its TUN's interface is deleted (EBADFD there).
fn gone() -> io::Error {
    io::Error::from_raw_os_error(nix::libc::EBADF)
}

impl TunIo for MemTun {
    async fn recv(&self, reader: &mut TunReader) -> io::Result<usize> {
        let mut rx = self.from_peer.lock().await;
        let first = rx.recv().await.ok_or_else(gone)?;
        reader.load(0, &first);
        let mut n = 1;
        while n < reader.capacity() {
            match rx.try_recv() {
                Ok(p) => {
                    reader.load(n, &p);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        Ok(n)
    }

    async fn flush(&self, writer: &mut TunWriter) -> Result<(), (usize, io::Error)> {
        let mut dropped = 0;
        let mut closed = false;
        writer.drain(|p| match self.to_peer.try_send(p.to_vec()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => dropped += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                dropped += 1;
                closed = true;
            }
        });
        match (dropped, closed) {
            (0, _) => Ok(()),
            (n, true) => Err((n, gone())),
            // Counted, as a refused write is (ENOBUFS would pass as transient).
            (n, false) => Err((n, io::Error::other("the in-memory TUN is full"))),
        }
    }
}

//! The macOS utun under the names of `tunio_linux.rs`. utun has no
//! offloads: a read is one packet and a write is one packet, so a batch is
//! whatever the queue held when the reader looked.

use std::io;

use super::batch::Slots;

/// The packet interface a device runs on.
pub type Tun = tun::AsyncDevice;

/// Packets a reader drains into one batch.
pub const READ_BATCH: usize = 32;

/// Packets a writer holds before it must flush.
pub const WRITE_BATCH: usize = 32;

const MAX_PACKET: usize = 65536;

pub struct TunReader {
    slots: Slots,
    sizes: Box<[usize]>,
}

impl TunReader {
    pub fn new() -> TunReader {
        TunReader {
            slots: Slots::with_count(MAX_PACKET, READ_BATCH),
            sizes: vec![0; READ_BATCH].into_boxed_slice(),
        }
    }

    /// Wait for one packet, then take what else the utun holds, up to a
    /// batch. Errors are the utun's own.
    pub async fn recv(&mut self, tun: &Tun) -> io::Result<usize> {
        self.sizes[0] = tun.recv(self.slots.get_mut(0)).await?;
        let mut n = 1;
        while n < READ_BATCH {
            // The fd is non-blocking: an empty queue answers WouldBlock, and
            // the next `recv().await` re-arms readiness.
            match (**tun).recv(self.slots.get_mut(n)) {
                Ok(len) => {
                    self.sizes[n] = len;
                    n += 1;
                }
                Err(_) => break,
            }
        }
        Ok(n)
    }

    pub fn packet(&self, i: usize) -> &[u8] {
        &self.slots.get(i)[..self.sizes[i]]
    }

    /// How many packets a batch holds.
    pub fn capacity(&self) -> usize {
        READ_BATCH
    }

    /// Put `packet` in slot `i`, as a read would (the in-memory TUN).
    pub fn load(&mut self, i: usize, packet: &[u8]) {
        self.slots.get_mut(i)[..packet.len()].copy_from_slice(packet);
        self.sizes[i] = packet.len();
    }
}

pub struct TunWriter {
    bufs: Vec<Vec<u8>>,
    n: usize,
}

impl TunWriter {
    pub fn new() -> TunWriter {
        TunWriter {
            bufs: (0..WRITE_BATCH).map(|_| Vec::new()).collect(),
            n: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.n == WRITE_BATCH
    }

    /// Hand every collected packet to `f` and empty the batch (the
    /// in-memory TUN's write).
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        for b in &self.bufs[..std::mem::take(&mut self.n)] {
            f(b);
        }
    }

    pub fn slot(&mut self, max: usize) -> &mut [u8] {
        let b = &mut self.bufs[self.n];
        b.resize(max, 0);
        b
    }

    pub fn commit(&mut self, at: usize, len: usize) {
        let b = &mut self.bufs[self.n];
        if at != 0 {
            b.copy_within(at..at + len, 0);
        }
        b.truncate(len);
        self.n += 1;
    }

    /// One write per packet; a refused packet is dropped and the rest are
    /// still written. On an error, how many were refused and the first error.
    pub async fn flush(&mut self, tun: &Tun) -> Result<(), (usize, io::Error)> {
        let n = std::mem::take(&mut self.n);
        let mut refused = 0;
        let mut first = None;
        for b in &self.bufs[..n] {
            if let Err(e) = tun.send(b).await {
                refused += 1;
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err((refused, e)),
        }
    }
}

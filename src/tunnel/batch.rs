//! Batched UDP I/O: many datagrams per system call.
//!
//! At small packet sizes the cost of a tunnel is system calls, not crypto
//! (a profile of 64-byte UDP showed `recvfrom`/`sendto` and the wake-ups
//! around them well above ChaCha20-Poly1305). `recvmmsg`/`sendmmsg` move up
//! to [`BATCH`] datagrams per call, as wireguard-go does on Linux. Where
//! they do not exist (macOS) the same types fall back to one datagram per
//! call, so the device code has one shape everywhere.
//!
//! The buffers are one large allocation each, so the allocator takes them
//! from `mmap` and pages are only resident once a packet has touched them:
//! an idle device pays for the batch in address space, not in RSS.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use super::sys;

/// Datagrams per system call; wireguard-go uses 128 on Linux, quinn 32.
/// Beyond a few dozen the gain is small and the burst into the TUN large.
pub const BATCH: usize = 32;

/// Slots of a batch: `BATCH` fixed-size pieces of one allocation.
pub struct Slots {
    pub(super) buf: Box<[u8]>,
    pub(super) slot: usize,
}

impl Slots {
    pub fn new(slot: usize) -> Slots {
        Slots {
            buf: vec![0u8; slot * BATCH].into_boxed_slice(),
            slot,
        }
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.buf[i * self.slot..(i + 1) * self.slot]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * self.slot..(i + 1) * self.slot]
    }
}

/// Receives up to [`BATCH`] datagrams at once.
pub struct RecvBatch {
    slots: Slots,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    headers: sys::Headers,
}

impl RecvBatch {
    pub fn new(slot: usize) -> RecvBatch {
        RecvBatch {
            slots: Slots::new(slot),
            lens: [0; BATCH],
            from: [None; BATCH],
            headers: sys::Headers::new(),
        }
    }

    /// Datagram `i` of the last receive and who sent it.
    pub fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        (&self.slots.get(i)[..self.lens[i]], self.from[i])
    }

    /// Non-blocking: how many datagrams arrived, or `WouldBlock`.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        sys::recv(
            socket.as_raw_fd(),
            &mut self.headers,
            &mut self.slots,
            &mut self.lens,
            &mut self.from,
        )
    }
}

/// Collects encrypted datagrams, each with its destination, and sends them
/// with as few system calls as the platform allows.
pub struct SendBatch {
    slots: Slots,
    lens: [usize; BATCH],
    to: [Option<SocketAddr>; BATCH],
    n: usize,
    headers: sys::Headers,
}

impl SendBatch {
    pub fn new(slot: usize) -> SendBatch {
        SendBatch {
            slots: Slots::new(slot),
            lens: [0; BATCH],
            to: [None; BATCH],
            n: 0,
            headers: sys::Headers::new(),
        }
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn clear(&mut self) {
        self.n = 0;
    }

    /// The next free slot, to encrypt into; [`SendBatch::commit`] keeps it.
    pub fn slot(&mut self) -> &mut [u8] {
        let n = self.n;
        self.slots.get_mut(n)
    }

    /// Keep the first `len` bytes of the next slot, bound for `to` (already
    /// in the socket's address family).
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        self.lens[self.n] = len;
        self.to[self.n] = Some(to);
        self.n += 1;
    }

    /// Datagram `i` of the batch and its length.
    pub fn datagram(&self, i: usize) -> &[u8] {
        &self.slots.get(i)[..self.lens[i]]
    }

    /// Non-blocking: send datagrams `from..` and return how many went out
    /// (at least one), or `WouldBlock`.
    pub fn send(&mut self, socket: &impl AsRawFd, from: usize) -> io::Result<usize> {
        sys::send(
            socket.as_raw_fd(),
            &mut self.headers,
            &self.slots,
            &self.lens[..self.n],
            &self.to[..self.n],
            from,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn batches_round_trip_in_order_with_their_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut out = SendBatch::new(2048);
        for i in 0..5u8 {
            let slot = out.slot();
            slot[..3].copy_from_slice(&[i, i, i]);
            out.commit(3 + i as usize % 2, to);
        }
        let mut done = 0;
        while done < out.len() {
            done += out.send(&tx, done).unwrap();
        }
        let mut inb = RecvBatch::new(2048);
        let mut got = Vec::new();
        for _ in 0..100 {
            match inb.recv(&rx) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, from) = inb.datagram(i);
                        assert_eq!(from, Some(tx.local_addr().unwrap()));
                        got.push(d.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if got.len() == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let want: Vec<Vec<u8>> = (0..5u8)
            .map(|i| {
                let mut v = vec![i, i, i];
                v.truncate(3 + i as usize % 2);
                if i % 2 == 1 {
                    v.push(0);
                }
                v
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_empty_socket_would_block() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut inb = RecvBatch::new(2048);
        let e = inb.recv(&rx).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}

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

/// Datagrams per system call; wireguard-go uses 128 on Linux, quinn 32.
/// Beyond a few dozen the gain is small and the burst into the TUN large.
pub const BATCH: usize = 32;

/// nix's preallocated `mmsghdr` array. It holds raw pointers, so it is not
/// `Send`; but they point only into its own boxed address storage and at
/// iovecs that every call rewrites before use, and the value is never shared,
/// so moving it to another thread (a tokio worker) is sound.
#[cfg(target_os = "linux")]
struct Headers(nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>);

// SAFETY: see the type's comment: owned, unshared, pointers refreshed per call.
#[cfg(target_os = "linux")]
unsafe impl Send for Headers {}

/// Slots of a batch: `BATCH` fixed-size pieces of one allocation.
pub struct Slots {
    buf: Box<[u8]>,
    slot: usize,
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
    #[cfg(target_os = "linux")]
    headers: Headers,
}

impl RecvBatch {
    pub fn new(slot: usize) -> RecvBatch {
        RecvBatch {
            slots: Slots::new(slot),
            lens: [0; BATCH],
            from: [None; BATCH],
            #[cfg(target_os = "linux")]
            headers: Headers(nix::sys::socket::MultiHeaders::preallocate(BATCH, None)),
        }
    }

    /// Datagram `i` of the last receive and who sent it.
    pub fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        (&self.slots.get(i)[..self.lens[i]], self.from[i])
    }

    /// Non-blocking: how many datagrams arrived, or `WouldBlock`.
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        use nix::sys::socket::{recvmmsg, MsgFlags};
        use std::io::IoSliceMut;
        let mut chunks = self.slots.buf.chunks_mut(self.slots.slot);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().expect("BATCH slots"))]);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers.0,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for msg in results {
            self.lens[n] = msg.bytes;
            self.from[n] = msg.address.and_then(|a| to_std(&a));
            n += 1;
        }
        Ok(n)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        use std::os::fd::BorrowedFd;
        // SAFETY: the fd stays open for the duration of the call (the caller
        // holds the socket).
        let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
        let sock = socket2::SockRef::from(&fd);
        // SAFETY: recv_from writes initialised bytes only; MaybeUninit view of
        // an initialised buffer.
        let buf = unsafe {
            &mut *(self.slots.get_mut(0) as *mut [u8] as *mut [std::mem::MaybeUninit<u8>])
        };
        let (n, from) = sock.recv_from(buf)?;
        self.lens[0] = n;
        self.from[0] = from.as_socket();
        Ok(1)
    }
}

/// Collects encrypted datagrams, each with its destination, and sends them
/// with as few system calls as the platform allows.
pub struct SendBatch {
    slots: Slots,
    lens: [usize; BATCH],
    to: [Option<SocketAddr>; BATCH],
    n: usize,
    #[cfg(target_os = "linux")]
    headers: Headers,
}

impl SendBatch {
    pub fn new(slot: usize) -> SendBatch {
        SendBatch {
            slots: Slots::new(slot),
            lens: [0; BATCH],
            to: [None; BATCH],
            n: 0,
            #[cfg(target_os = "linux")]
            headers: Headers(nix::sys::socket::MultiHeaders::preallocate(BATCH, None)),
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
    #[cfg(target_os = "linux")]
    pub fn send(&mut self, socket: &impl AsRawFd, from: usize) -> io::Result<usize> {
        use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, SockaddrStorage};
        use std::io::IoSlice;
        let count = self.n - from;
        let mut addrs: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
        for (a, to) in addrs.iter_mut().zip(&self.to[from..self.n]) {
            *a = to.map(SockaddrStorage::from);
        }
        let slots = &self.slots;
        let lens = &self.lens;
        let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
            let k = (from + i).min(BATCH - 1);
            [IoSlice::new(&slots.get(k)[..lens[k]])]
        });
        let cmsgs: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut self.headers.0,
            iovs[..count].iter(),
            &addrs[..count],
            cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?
        .count();
        Ok(sent.max(1))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn send(&mut self, socket: &impl AsRawFd, from: usize) -> io::Result<usize> {
        use std::os::fd::BorrowedFd;
        // SAFETY: the caller holds the socket open during the call.
        let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
        let sock = socket2::SockRef::from(&fd);
        let to = self.to[from].expect("committed datagrams have a destination");
        sock.send_to(self.datagram(from), &to.into())?;
        Ok(1)
    }
}

#[cfg(target_os = "linux")]
fn to_std(a: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
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

//! Batched UDP I/O: many datagrams per system call, and on Linux many
//! datagrams per trip through the network stack.
//!
//! At small packet sizes the cost of a tunnel is system calls, not crypto
//! (a profile of 64-byte UDP showed `recvfrom`/`sendto` and the wake-ups
//! around them well above ChaCha20-Poly1305). `recvmmsg`/`sendmmsg` move up
//! to [`BATCH`] datagrams per call, as wireguard-go does on Linux. In bulk
//! the cost is the kernel's per-datagram work instead, so on Linux a run of
//! equal-sized datagrams to one peer leaves as one UDP GSO send
//! (`UDP_SEGMENT`: the stack sees one 64 KiB buffer, cut into datagrams at
//! the last moment) and arrives through UDP GRO (`UDP_GRO`: the receiver
//! gets such runs back whole, with their stride). Where none of this exists
//! (macOS) the same types move one datagram per call, so the device code
//! has one shape everywhere.
//!
//! Why not quinn-udp: it sends one `sendmsg` per run (no `sendmmsg` for the
//! mixed sizes of interactive traffic), sets the don't-fragment bit on every
//! socket (a TUN MTU raised above the path's then fails instead of
//! fragmenting, as it does with wireguard-go and the kernel), and its
//! batched macOS path calls private system calls behind an unsafe switch
//! that nothing here can test (`sys_macos.rs` says what is known of them).
//!
//! The buffers are one anonymous mapping each ([`PageBuf`]), so pages are
//! only resident once a packet has touched them: an idle device pays for
//! the batch in address space, not in RSS.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use super::sys;

/// Datagrams per system call; wireguard-go uses 128 on Linux, quinn 32.
/// Beyond a few dozen the gain is small and the burst into the TUN large.
pub const BATCH: usize = 32;

/// Zeroed memory straight from the kernel (an anonymous mapping): its pages
/// become resident only when a packet touches them. Through the allocator a
/// buffer freed and allocated again (the receive task's, at every rebind)
/// comes back from the heap and is zeroed by hand, all of it resident: 2 MiB
/// of an idle device's RSS.
pub struct PageBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: an owned, unaliased allocation, like a Box<[u8]>.
unsafe impl Send for PageBuf {}
unsafe impl Sync for PageBuf {}

impl PageBuf {
    pub fn new(len: usize) -> PageBuf {
        use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
        let size = std::num::NonZeroUsize::new(len).expect("a non-empty buffer");
        // SAFETY: a fresh private mapping, owned by the value from here on.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .unwrap_or_else(|e| panic!("cannot map {len} bytes for packet buffers: {e}"));
        PageBuf {
            ptr: ptr.cast(),
            len,
        }
    }
}

impl std::ops::Deref for PageBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` mapped, zero-initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for Deref, and &mut self makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

/// Slots of a batch: fixed-size pieces of one mapping.
pub struct Slots {
    pub(super) buf: PageBuf,
    pub(super) slot: usize,
}

impl Slots {
    pub fn new(slot: usize) -> Slots {
        Slots::with_count(slot, BATCH)
    }

    pub fn with_count(slot: usize, count: usize) -> Slots {
        Slots {
            buf: PageBuf::new(slot * count),
            slot,
        }
    }

    /// Every slot at once, as the buffers of a batched read (Linux's TUN
    /// reader; the utun reads one slot at a time).
    #[allow(dead_code)]
    pub fn split<const N: usize>(&mut self) -> [&mut [u8]; N] {
        let mut chunks = self.buf.chunks_mut(self.slot);
        std::array::from_fn(|_| chunks.next().expect("N slots"))
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.buf[i * self.slot..(i + 1) * self.slot]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * self.slot..(i + 1) * self.slot]
    }
}

/// Datagrams one send batch holds: a 64 KiB super-packet from the TUN,
/// split at a 1380-byte MSS, is 48 packets.
pub const SEND_BATCH: usize = 64;

/// Bytes a send batch holds, packed: four largest datagrams.
const ARENA: usize = 4 * 65568;

/// Receives up to [`BATCH`] messages at once; with UDP GRO a message is a
/// run of datagrams of `stride` bytes (the last may be shorter).
pub struct RecvBatch {
    slots: Slots,
    lens: [usize; BATCH],
    strides: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    headers: sys::RecvHeaders,
}

impl RecvBatch {
    pub fn new(slot: usize) -> RecvBatch {
        RecvBatch {
            slots: Slots::new(slot),
            lens: [0; BATCH],
            strides: [0; BATCH],
            from: [None; BATCH],
            headers: sys::RecvHeaders::new(),
        }
    }

    /// Message `i` of the last receive, its datagrams' stride, and who
    /// sent it.
    pub fn message(&self, i: usize) -> (&[u8], usize, Option<SocketAddr>) {
        (
            &self.slots.get(i)[..self.lens[i]],
            self.strides[i],
            self.from[i],
        )
    }

    /// Put message `i` in place by hand, a run of datagrams `stride` bytes
    /// apart as UDP GRO delivers them: an in-memory socket's receive.
    pub fn set(&mut self, i: usize, message: &[u8], stride: usize, from: SocketAddr) {
        self.slots.get_mut(i)[..message.len()].copy_from_slice(message);
        self.lens[i] = message.len();
        self.strides[i] = stride.max(1);
        self.from[i] = Some(from);
    }

    /// Non-blocking: how many messages arrived, or `WouldBlock`.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let n = sys::recv(
            socket.as_raw_fd(),
            &mut self.headers,
            &mut self.slots,
            &mut self.lens,
            &mut self.strides,
            &mut self.from,
        )?;
        for i in 0..n {
            if self.strides[i] == 0 {
                self.strides[i] = self.lens[i].max(1);
            }
        }
        Ok(n)
    }
}

/// Collects encrypted datagrams, each with its destination, packed one
/// after another so that a run of them can leave as one GSO send, and
/// sends them with as few system calls as the platform allows.
pub struct SendBatch {
    buf: PageBuf,
    pos: usize,
    starts: [usize; SEND_BATCH],
    lens: [usize; SEND_BATCH],
    to: [Option<SocketAddr>; SEND_BATCH],
    n: usize,
    headers: sys::SendHeaders,
}

/// What [`SendBatch`] hands the system-call layer.
pub struct Datagrams<'a> {
    pub buf: &'a [u8],
    pub starts: &'a [usize],
    pub lens: &'a [usize],
    pub to: &'a [Option<SocketAddr>],
}

impl Datagrams<'_> {
    pub fn get(&self, i: usize) -> &[u8] {
        &self.buf[self.starts[i]..self.starts[i] + self.lens[i]]
    }

    /// How many datagrams from `first` on can leave as one GSO send of at
    /// most `max_segments`: same destination, the same size but for a
    /// shorter last one, no more than a UDP payload holds in all. (Linux's
    /// kernel and the in-memory switch send this way; macOS has no GSO.)
    pub fn run(&self, first: usize, max_segments: usize) -> usize {
        let size = self.lens[first];
        let mut bytes = size;
        let mut k = 1;
        while first + k < self.lens.len() && k < max_segments {
            let j = first + k;
            let len = self.lens[j];
            if self.to[j] != self.to[first] || len > size || bytes + len > MAX_UDP_PAYLOAD {
                break;
            }
            bytes += len;
            k += 1;
            if len < size {
                break;
            }
        }
        k
    }
}

/// The largest payload one UDP send may carry (IPv4's limit, the lower).
const MAX_UDP_PAYLOAD: usize = 65507;

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            buf: PageBuf::new(ARENA),
            pos: 0,
            starts: [0; SEND_BATCH],
            lens: [0; SEND_BATCH],
            to: [None; SEND_BATCH],
            n: 0,
            headers: sys::SendHeaders::new(),
        }
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn clear(&mut self) {
        self.n = 0;
        self.pos = 0;
    }

    /// Whether a datagram of up to `size` bytes still fits.
    pub fn has_room(&self, size: usize) -> bool {
        self.n < SEND_BATCH && self.pos + size <= self.buf.len()
    }

    /// The free space after the last datagram, to encrypt into (check
    /// [`SendBatch::has_room`] first); [`SendBatch::commit`] keeps it.
    pub fn slot(&mut self) -> &mut [u8] {
        &mut self.buf[self.pos..]
    }

    /// Keep the first `len` bytes of the slot, bound for `to` (already in
    /// the socket's address family).
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        self.starts[self.n] = self.pos;
        self.lens[self.n] = len;
        self.to[self.n] = Some(to);
        self.pos += len;
        self.n += 1;
    }

    /// Datagram `i` of the batch.
    pub fn datagram(&self, i: usize) -> &[u8] {
        &self.buf[self.starts[i]..self.starts[i] + self.lens[i]]
    }

    /// The batch as the system-call layer sees it.
    pub fn datagrams(&self) -> Datagrams<'_> {
        Datagrams {
            buf: &self.buf,
            starts: &self.starts[..self.n],
            lens: &self.lens[..self.n],
            to: &self.to[..self.n],
        }
    }

    /// Non-blocking: send datagrams `from..` and return how many went out
    /// (at least one), or `WouldBlock`.
    pub fn send(&mut self, socket: &impl AsRawFd, from: usize) -> io::Result<usize> {
        let d = Datagrams {
            buf: &self.buf,
            starts: &self.starts[..self.n],
            lens: &self.lens[..self.n],
            to: &self.to[..self.n],
        };
        sys::send(socket.as_raw_fd(), &mut self.headers, &d, from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// Every datagram `rx` receives within a second, as (bytes, sender),
    /// with GRO runs cut at their stride.
    fn drain(rx: &UdpSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        drain_messages(rx, want).0
    }

    /// Also how many messages carried them.
    fn drain_messages(rx: &UdpSocket, want: usize) -> (Vec<(Vec<u8>, SocketAddr)>, usize) {
        rx.set_nonblocking(true).unwrap();
        let mut inb = RecvBatch::new(65536);
        let mut got = Vec::new();
        let mut messages = 0;
        for _ in 0..100 {
            match inb.recv(rx) {
                Ok(n) => {
                    messages += n;
                    for i in 0..n {
                        let (m, stride, from) = inb.message(i);
                        for d in m.chunks(stride) {
                            got.push((d.to_vec(), from.unwrap()));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if got.len() >= want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        (got, messages)
    }

    fn send_all(out: &mut SendBatch, tx: &UdpSocket) -> usize {
        let mut done = 0;
        let mut calls = 0;
        while done < out.len() {
            done += out.send(tx, done).unwrap();
            calls += 1;
        }
        calls
    }

    #[test]
    fn batches_round_trip_in_order_with_their_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut out = SendBatch::new();
        let mut want = Vec::new();
        for i in 0..5u8 {
            let len = 3 + i as usize % 2;
            out.slot()[..len].fill(i);
            out.commit(len, to);
            want.push((vec![i; len], tx.local_addr().unwrap()));
        }
        send_all(&mut out, &tx);
        assert_eq!(drain(&rx, 5), want);
    }

    #[test]
    fn runs_are_cut_at_size_destination_and_shorter_tail() {
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1".parse().unwrap();
        let mut out = SendBatch::new();
        for (len, to) in [
            (100, a),
            (100, a),
            (60, a),
            (100, a),
            (100, b),
            (200, b),
            (10, b),
        ] {
            out.commit(len, to);
        }
        let d = Datagrams {
            buf: &out.buf,
            starts: &out.starts[..out.n],
            lens: &out.lens[..out.n],
            to: &out.to[..out.n],
        };
        // 100,100,60 to a: a run ending in its shorter tail; then 100 to a
        // alone (b differs); 100 to b (200 is larger); 200, 10 to b.
        let runs: Vec<usize> = [0, 3, 4, 5].iter().map(|&i| d.run(i, 64)).collect();
        assert_eq!(runs, vec![3, 1, 1, 2]);
        assert_eq!(d.run(0, 2), 2, "capped by the segment limit");
    }

    /// A run of equal datagrams leaves in one system call (GSO) and
    /// arrives as the same datagrams, in order, whether or not the receiver
    /// asked for GRO.
    #[test]
    fn a_run_is_one_send_and_the_same_datagrams_arrive() {
        for gro in [false, true] {
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            if gro {
                sys::enable_gro(&socket2::SockRef::from(&rx));
            }
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = rx.local_addr().unwrap();
            let mut out = SendBatch::new();
            let mut want = Vec::new();
            for i in 0..40u8 {
                let len = if i == 39 { 700 } else { 1400 };
                out.slot()[..len].fill(i);
                out.commit(len, to);
                want.push((vec![i; len], tx.local_addr().unwrap()));
            }
            let calls = send_all(&mut out, &tx);
            let (got, messages) = drain_messages(&rx, 40);
            assert_eq!(got, want, "gro={gro}");
            if sys::GSO {
                assert_eq!(calls, 1, "gro={gro}");
                // With GRO the run arrives as one message, else one each.
                assert_eq!(messages, if gro { 1 } else { 40 });
            }
        }
    }

    #[test]
    fn an_empty_socket_would_block() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut inb = RecvBatch::new(2048);
        let e = inb.recv(&rx).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}

//! The device's side toward its peers: the kernel's UDP socket in
//! production, an in-memory switch in the micro-benchmark and in tests.
//!
//! Why a trait object and poll functions: the device holds one socket and
//! swaps it at every rebind, so a type parameter would spread through the
//! device's state for a choice made once; one virtual call per batch (never
//! per packet) costs nothing measurable, and poll functions keep the trait
//! object-safe without boxing a future per call.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};

use parking_lot::Mutex;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::batch::{RecvBatch, SendBatch, BATCH};
use super::device::ConfigError;

/// Socket buffers as wireguard-go sizes them: bursts from a fast sender
/// overflow the default 208 KiB first.
const SOCKET_BUFFER: usize = 7 << 20;

/// Where a device binds its socket.
pub trait Net: Send + Sync + 'static {
    /// A socket on `port` (0: any free one) with mark `fwmark` (0: none).
    fn bind(&self, port: u16, fwmark: u32) -> Result<Arc<dyn NetSocket>, ConfigError>;
}

/// One bound socket, shared by the device's tasks and its timer thread.
pub trait NetSocket: Send + Sync + 'static {
    fn local_port(&self) -> io::Result<u16>;
    /// IPv6 with IPv4 mapped in: peers' IPv4 addresses go out mapped.
    fn dual(&self) -> bool;
    fn set_mark(&self, mark: u32) -> io::Result<()>;
    /// Receive a batch into `batch`; how many messages arrived.
    fn poll_recv(&self, cx: &mut Context<'_>, batch: &mut RecvBatch) -> Poll<io::Result<usize>>;
    /// Send `batch`'s datagrams from `first` on; how many went (at least one).
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        batch: &mut SendBatch,
        first: usize,
    ) -> Poll<io::Result<usize>>;
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        to: SocketAddr,
    ) -> Poll<io::Result<usize>>;
    /// Without waiting, for the timer thread: a full buffer drops the
    /// datagram (boringtun sends again).
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
}

/// The kernel's UDP.
pub struct KernelNet;

impl Net for KernelNet {
    fn bind(&self, port: u16, fwmark: u32) -> Result<Arc<dyn NetSocket>, ConfigError> {
        let std_sock = bind_udp(port, fwmark)?;
        let socket =
            UdpSocket::from_std(std_sock).map_err(|source| ConfigError::Bind { port, source })?;
        let dual = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        Ok(Arc::new(KernelSocket { socket, dual }))
    }
}

struct KernelSocket {
    socket: UdpSocket,
    dual: bool,
}

impl KernelSocket {
    /// Wait for `interest`, then try `f`; `WouldBlock` clears the readiness
    /// and waits again.
    fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut f: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            if interest.is_readable() {
                ready!(self.socket.poll_recv_ready(cx))?;
            } else {
                ready!(self.socket.poll_send_ready(cx))?;
            }
            match self.socket.try_io(interest, &mut f) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

impl NetSocket for KernelSocket {
    fn local_port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.port())
    }

    fn dual(&self) -> bool {
        self.dual
    }

    fn set_mark(&self, mark: u32) -> io::Result<()> {
        super::sys::set_mark(&socket2::SockRef::from(&self.socket), mark)
    }

    fn poll_recv(&self, cx: &mut Context<'_>, batch: &mut RecvBatch) -> Poll<io::Result<usize>> {
        self.poll_io(cx, Interest::READABLE, || batch.recv(&self.socket))
    }

    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        batch: &mut SendBatch,
        first: usize,
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, Interest::WRITABLE, || batch.send(&self.socket, first))
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        to: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.socket.poll_send_to(cx, buf, to)
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        socket2::SockRef::from(&self.socket).send_to(buf, &to.into())
    }
}

/// One socket for both address families where the host has IPv6, IPv4 only
/// where it does not.
fn bind_udp(port: u16, fwmark: u32) -> Result<std::net::UdpSocket, ConfigError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let map = |source: io::Error| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ConfigError::AddrInUse(port)
        } else {
            ConfigError::Bind { port, source }
        }
    };
    let dual = || -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(false)?;
        s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
        Ok(s)
    };
    let socket = match dual() {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(map(e)),
        Err(_) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(map)?;
            s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())
                .map_err(map)?;
            s
        }
    };
    socket.set_nonblocking(true).map_err(map)?;
    // Best effort: without privilege the kernel caps these at rmem_max.
    super::sys::tune_buffers(&socket, SOCKET_BUFFER);
    super::sys::enable_gro(&socket);
    if fwmark != 0 {
        super::sys::set_mark(&socket, fwmark).map_err(|source| ConfigError::Fwmark {
            mark: fwmark,
            source,
        })?;
    }
    Ok(socket.into())
}

/// Runs an in-memory socket holds before it drops, as a socket buffer does.
const MEM_QUEUE: usize = 4096;

/// Datagrams a run may hold, as the kernel's UDP GRO.
const GRO_SEGMENTS: usize = 64;

/// An in-memory UDP switch: sockets on 127.0.0.1, a datagram goes to the
/// socket bound to its destination port, or nowhere. Runs of equal
/// datagrams travel together and arrive as one message with a stride, as
/// UDP GSO and GRO carry them through Linux: one copy and one channel hop a
/// run. No kernel, so the micro-benchmark times the device's own work.
#[derive(Clone, Default)]
pub struct MemNet {
    inner: Arc<MemNetInner>,
}

/// A run of datagrams in flight on a [`MemNet`]: their bytes, their stride
/// (the last may be shorter) and who sent them.
type MemDatagram = (Vec<u8>, usize, SocketAddr);

#[derive(Default)]
struct MemNetInner {
    ports: Mutex<HashMap<u16, mpsc::Sender<MemDatagram>>>,
    next: AtomicU16,
}

impl MemNet {
    pub fn new() -> MemNet {
        MemNet::default()
    }
}

impl Net for MemNet {
    fn bind(&self, port: u16, _fwmark: u32) -> Result<Arc<dyn NetSocket>, ConfigError> {
        let mut ports = self.inner.ports.lock();
        let port = if port != 0 {
            if ports.contains_key(&port) {
                return Err(ConfigError::AddrInUse(port));
            }
            port
        } else {
            (0..u16::MAX)
                .map(|_| 1 + self.inner.next.fetch_add(1, Ordering::Relaxed) % (u16::MAX - 1))
                .find(|p| !ports.contains_key(p))
                .ok_or_else(|| ConfigError::Bind {
                    port,
                    source: io::Error::from(io::ErrorKind::AddrInUse),
                })?
        };
        let (tx, rx) = mpsc::channel(MEM_QUEUE);
        ports.insert(port, tx);
        Ok(Arc::new(MemSocket {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            rx: Mutex::new(rx),
            net: Arc::downgrade(&self.inner),
        }))
    }
}

struct MemSocket {
    addr: SocketAddr,
    rx: Mutex<mpsc::Receiver<MemDatagram>>,
    net: Weak<MemNetInner>,
}

impl MemSocket {
    /// Deliver a run of datagrams `stride` bytes apart, or drop it (no such
    /// port, or its queue full).
    fn deliver(&self, run: Vec<u8>, stride: usize, to: SocketAddr) {
        if let Some(net) = self.net.upgrade() {
            if let Some(tx) = net.ports.lock().get(&to.port()) {
                let _ = tx.try_send((run, stride, self.addr));
            }
        }
    }
}

impl Drop for MemSocket {
    fn drop(&mut self) {
        if let Some(net) = self.net.upgrade() {
            net.ports.lock().remove(&self.addr.port());
        }
    }
}

impl NetSocket for MemSocket {
    fn local_port(&self) -> io::Result<u16> {
        Ok(self.addr.port())
    }

    fn dual(&self) -> bool {
        false
    }

    fn set_mark(&self, _mark: u32) -> io::Result<()> {
        Ok(())
    }

    fn poll_recv(&self, cx: &mut Context<'_>, batch: &mut RecvBatch) -> Poll<io::Result<usize>> {
        let mut rx = self.rx.lock();
        // Closed: the switch is gone, so nothing will ever arrive. Waiting
        // for ever is the truth; an error would make the receive task spin.
        let Some((run, stride, from)) = ready!(rx.poll_recv(cx)) else {
            return Poll::Pending;
        };
        batch.set(0, &run, stride, from);
        let mut n = 1;
        while n < BATCH {
            let Ok((run, stride, from)) = rx.try_recv() else {
                break;
            };
            batch.set(n, &run, stride, from);
            n += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_send(
        &self,
        _cx: &mut Context<'_>,
        batch: &mut SendBatch,
        first: usize,
    ) -> Poll<io::Result<usize>> {
        let d = batch.datagrams();
        let mut i = first;
        while i < batch.len() {
            let k = d.run(i, GRO_SEGMENTS);
            if let Some(to) = d.to[i] {
                // A run is packed: one slice of the batch's arena.
                let (start, last) = (d.starts[i], i + k - 1);
                let run = d.buf[start..d.starts[last] + d.lens[last]].to_vec();
                self.deliver(run, d.lens[i], to);
            }
            i += k;
        }
        Poll::Ready(Ok(batch.len() - first))
    }

    fn poll_send_to(
        &self,
        _cx: &mut Context<'_>,
        buf: &[u8],
        to: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.try_send_to(buf, to))
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.deliver(buf.to_vec(), buf.len(), to);
        Ok(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn mem_net_delivers_by_port_and_drops_the_rest() {
        let net = MemNet::new();
        let a = net.bind(0, 0).unwrap();
        let b = net.bind(5000, 0).unwrap();
        assert!(matches!(
            net.bind(5000, 0),
            Err(ConfigError::AddrInUse(5000))
        ));
        assert_ne!(a.local_port().unwrap(), 5000);
        let to_b = SocketAddr::from(([127, 0, 0, 1], 5000));
        // Nobody on 5001: gone, as UDP to a closed port is.
        a.try_send_to(b"lost", SocketAddr::from(([127, 0, 0, 1], 5001)))
            .unwrap();
        a.try_send_to(b"one", to_b).unwrap();
        poll_fn(|cx| a.poll_send_to(cx, b"two", to_b))
            .await
            .unwrap();
        let mut batch = RecvBatch::new(2048);
        let n = poll_fn(|cx| b.poll_recv(cx, &mut batch)).await.unwrap();
        assert_eq!(n, 2);
        let from = SocketAddr::from(([127, 0, 0, 1], a.local_port().unwrap()));
        assert_eq!(batch.message(0), (&b"one"[..], 3, Some(from)));
        assert_eq!(batch.message(1), (&b"two"[..], 3, Some(from)));
        // A closed socket frees its port.
        drop(b);
        net.bind(5000, 0).unwrap();
    }

    #[tokio::test]
    async fn mem_net_carries_a_batch_as_runs_with_their_stride() {
        let net = MemNet::new();
        let a = net.bind(0, 0).unwrap();
        let (b, c) = (net.bind(0, 0).unwrap(), net.bind(0, 0).unwrap());
        let addr =
            |s: &Arc<dyn NetSocket>| SocketAddr::from(([127, 0, 0, 1], s.local_port().unwrap()));
        let mut out = SendBatch::new();
        // To b: three of 100 bytes and a shorter tail; then one to c; then
        // two more to b, which start a new run.
        for (len, to, fill) in [
            (100, &b, 1u8),
            (100, &b, 2),
            (100, &b, 3),
            (40, &b, 4),
            (100, &c, 5),
            (100, &b, 6),
            (100, &b, 7),
        ] {
            out.slot()[..len].fill(fill);
            out.commit(len, addr(to));
        }
        let sent = poll_fn(|cx| a.poll_send(cx, &mut out, 0)).await.unwrap();
        assert_eq!(sent, 7);
        let mut inb = RecvBatch::new(65536);
        let n = poll_fn(|cx| b.poll_recv(cx, &mut inb)).await.unwrap();
        assert_eq!(n, 2, "b gets two runs");
        let (m, stride, from) = inb.message(0);
        assert_eq!((m.len(), stride, from), (340, 100, Some(addr(&a))));
        let fills: Vec<u8> = m.chunks(stride).map(|d| d[0]).collect();
        assert_eq!(fills, [1, 2, 3, 4]);
        assert_eq!(m.chunks(stride).last().unwrap().len(), 40);
        let (m, stride, _) = inb.message(1);
        assert_eq!((m.len(), stride), (200, 100));
        assert_eq!(m.chunks(stride).map(|d| d[0]).collect::<Vec<_>>(), [6, 7]);
        let n = poll_fn(|cx| c.poll_recv(cx, &mut inb)).await.unwrap();
        assert_eq!((n, inb.message(0).0), (1, &[5u8; 100][..]));
    }

    #[tokio::test]
    async fn mem_socket_outliving_its_switch_waits_instead_of_failing() {
        let net = MemNet::new();
        let a = net.bind(0, 0).unwrap();
        drop(net);
        let mut batch = RecvBatch::new(64);
        let polled = poll_fn(|cx| Poll::Ready(a.poll_recv(cx, &mut batch))).await;
        assert!(polled.is_pending());
        // Sending into a switch that is gone drops, as to a closed port.
        let to = SocketAddr::from(([127, 0, 0, 1], 9));
        assert_eq!(a.try_send_to(b"x", to).unwrap(), 1);
    }

    #[tokio::test]
    async fn mem_net_full_queue_drops() {
        let net = MemNet::new();
        let a = net.bind(0, 0).unwrap();
        let b = net.bind(0, 0).unwrap();
        let to_b = SocketAddr::from(([127, 0, 0, 1], b.local_port().unwrap()));
        for i in 0..MEM_QUEUE + 10 {
            a.try_send_to(&(i as u32).to_be_bytes(), to_b).unwrap();
        }
        let mut batch = RecvBatch::new(64);
        let mut got = 0;
        while let Poll::Ready(Ok(n)) = poll_fn(|cx| Poll::Ready(b.poll_recv(cx, &mut batch))).await
        {
            got += n;
        }
        assert_eq!(got, MEM_QUEUE);
    }
}

//! The userspace WireGuard device: a TUN, one UDP socket and the peers.
//!
//! Two tokio tasks move packets, modelled on onetun: TUN → encrypt → UDP and
//! UDP → decrypt → TUN; a timer thread drives handshakes and keepalives,
//! waking only when boringtun may have something due (`super::timers`).
//! Each direction owns its buffers, so the hot path allocates nothing;
//! shared state sits behind short, synchronous locks that are never held
//! across an `.await`.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn, Instrument};

use super::allowed_ips::AllowedIps;
use super::batch::{PageBuf, RecvBatch, SendBatch, SEND_BATCH};
use super::config::{DeviceStatus, DeviceUpdate, PeerStatus, PeerUpdate};
use super::net::{KernelNet, Net, NetSocket};
use super::packet_io::TunIo;
use super::peer::Peer;
use super::timers::{self, Alarm, Output, Sample};
use super::tunio::{Tun, TunReader, TunWriter, READ_BATCH};
use crate::keys::{Key, PublicKey};

/// Largest IP packet we read from the TUN or a datagram from the socket.
const MAX_PACKET: usize = 65536;
/// WireGuard adds 32 bytes to each packet; handshakes need 148.
const OUT_BUF: usize = MAX_PACKET + 32;
/// The least room boringtun needs to answer a datagram in place (a
/// handshake response, a cookie reply).
const HANDSHAKE_OUT: usize = 256;
/// Room to leave for encrypting a packet: 32 bytes of WireGuard, or a
/// 148-byte handshake initiation in its place.
const WG_GROWTH: usize = 148;
/// Handshakes per second before cookies are demanded (boringtun's device uses
/// the same figure).
const HANDSHAKE_RATE_LIMIT: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("UDP port {0} is already in use")]
    AddrInUse(u16),
    #[error("cannot open the UDP socket on port {port}: {source}")]
    Bind { port: u16, source: io::Error },
    #[error("cannot set fwmark {mark}: {source}")]
    Fwmark { mark: u32, source: io::Error },
    #[error("cannot start the timer thread: {0}")]
    Thread(io::Error),
}

impl ConfigError {
    /// The errno the UAPI reports for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            ConfigError::AddrInUse(_) => libc_errno::EADDRINUSE,
            ConfigError::Bind { source, .. }
            | ConfigError::Fwmark { source, .. }
            | ConfigError::Thread(source) => source.raw_os_error().unwrap_or(libc_errno::EIO),
        }
    }
}

/// errno values as the UAPI wants them (Linux numbering, which `wg` on every
/// platform reads back through `strerror`).
pub mod libc_errno {
    pub const EIO: i32 = 5;
    pub const EINVAL: i32 = 22;
    pub const EADDRINUSE: i32 = 98;
    pub const EPROTO: i32 = 71;
}

/// A running WireGuard device on packet interface `T` (a TUN unless a test
/// says otherwise). Dropping it stops its tasks and closes the TUN, which
/// removes the interface.
pub struct Device<T: TunIo = Tun> {
    shared: Arc<Shared<T>>,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    timers: parking_lot::Mutex<TimerThread>,
    failed: watch::Receiver<Option<String>>,
}

struct Shared<T> {
    name: String,
    tun: T,
    /// Where sockets come from: the kernel, or an in-memory switch.
    net: Arc<dyn Net>,
    state: RwLock<State>,
    /// Set when a task hits an error it cannot recover from (the TUN vanished).
    failed: watch::Sender<Option<String>>,
    /// Decrypted packets the TUN refused (interface down, a packet the
    /// kernel will not take): dropped, as a router drops, and counted.
    tun_refused: std::sync::atomic::AtomicU64,
    /// Wakes the timer thread when a packet or a change may have made
    /// something due sooner than it planned.
    alarm: Alarm,
    /// Armed by [`Device::offered`]: the next packet from the TUN that a
    /// peer takes wakes it.
    offered: Offered,
}

/// One flag and one wakeup: the send path pays a relaxed load per batch
/// while nobody waits, and `up` sleeps until traffic wants an answer.
#[derive(Default)]
struct Offered {
    armed: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

struct State {
    private_key: Option<Key>,
    secret: Option<x25519::StaticSecret>,
    public: Option<x25519::PublicKey>,
    limiter: Arc<RateLimiter>,
    listen_port: u16,
    fwmark: u32,
    socket: Option<Arc<dyn NetSocket>>,
    /// The socket is IPv6 with IPv4 mapped in (else IPv4 only).
    socket_dual: bool,
    socket_task: Option<JoinHandle<()>>,
    peers: HashMap<[u8; 32], Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    allowed: AllowedIps<Arc<Peer>>,
    next_index: u32,
}

impl<T: TunIo> Device<T> {
    /// Start a device on `tun`, listening on `listen_port` (0: any free port).
    /// Must be called inside a tokio runtime.
    pub fn start(name: &str, tun: T, listen_port: u16) -> Result<Device<T>, ConfigError> {
        Device::start_on(name, tun, Arc::new(KernelNet), listen_port)
    }

    /// [`Device::start`] with its sockets from `net` (the micro-benchmark's
    /// in-memory [`super::MemNet`]).
    pub fn start_on(
        name: &str,
        tun: T,
        net: Arc<dyn Net>,
        listen_port: u16,
    ) -> Result<Device<T>, ConfigError> {
        let (failed_tx, failed_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            tun,
            net,
            state: RwLock::new(State::new()),
            failed: failed_tx,
            tun_refused: std::sync::atomic::AtomicU64::new(0),
            alarm: Alarm::default(),
            offered: Offered::default(),
        });
        {
            let mut st = shared.state.write();
            shared.rebind(&mut st, listen_port)?;
        }
        let timers = TimerThread::spawn(&shared).map_err(ConfigError::Thread)?;
        // Debug level: an enabled span is entered and left on every poll,
        // which cost ~2 % of a 64-byte packet's budget; the events inside
        // are debug and trace anyway, and `fail` names the interface itself.
        let span = tracing::debug_span!("device", iface = %name);
        let tasks = vec![tokio::spawn(shared.clone().tun_to_net().instrument(span))];
        Ok(Device {
            shared,
            tasks: parking_lot::Mutex::new(tasks),
            timers: parking_lot::Mutex::new(timers),
            failed: failed_rx,
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Apply one configuration transaction. Steps that can fail (binding the
    /// port, setting the mark) run first, so a failed transaction changes
    /// nothing.
    pub fn apply(&self, update: &DeviceUpdate) -> Result<(), ConfigError> {
        let shared = &self.shared;
        let mut st = shared.state.write();
        if let Some(port) = update.listen_port {
            if port == 0 || port != st.listen_port {
                shared.rebind(&mut st, port)?;
            }
        }
        if let Some(mark) = update.fwmark {
            if mark != st.fwmark {
                if let Some(sock) = &st.socket {
                    sock.set_mark(mark)
                        .map_err(|source| ConfigError::Fwmark { mark, source })?;
                }
                st.fwmark = mark;
            }
        }
        if let Some(key) = &update.private_key {
            st.set_private_key(key);
        }
        if update.replace_peers {
            let all: Vec<[u8; 32]> = st.peers.keys().copied().collect();
            for pk in all {
                st.remove_peer(&pk);
            }
        }
        for p in &update.peers {
            st.update_peer(p);
        }
        // A new peer, key or keepalive setting may be due sooner than the
        // timer thread planned.
        shared.alarm.ring();
        Ok(())
    }

    /// Send one IP packet through the tunnel as if it had come from the TUN:
    /// routed by destination, encrypted, sent. `up` uses it for liveness
    /// probes to the VM's tunnel address, which must cross the same path as
    /// user traffic to prove anything. Returns false when no peer covers the
    /// destination or the peer has no endpoint yet.
    pub async fn inject(&self, packet: &[u8]) -> bool {
        let Some(dst) = Tunn::dst_address(packet) else {
            return false;
        };
        let (peer, socket) = {
            let st = self.shared.state.read();
            match st.allowed.lookup(dst) {
                Some(p) => (p.clone(), st.socket.clone()),
                None => return false,
            }
        };
        let mut buf = vec![0u8; packet.len() + 148];
        let (kick, result) = {
            let mut guard = peer.tunn.lock();
            let Some(t) = guard.as_mut() else {
                return false;
            };
            let kick = peer.freshen(t, &self.shared.alarm);
            let result = t.encapsulate(packet, &mut buf);
            if let TunnResult::WriteToNetwork(out) = &result {
                peer.produced(out, &self.shared.alarm);
            }
            (kick, result)
        };
        if let Some(k) = kick {
            send(&peer, socket.as_deref(), &k, None).await;
        }
        match result {
            TunnResult::WriteToNetwork(out) => {
                if peer.endpoint().is_none() {
                    return false;
                }
                send(&peer, socket.as_deref(), out, None).await;
                true
            }
            // Queued behind a handshake boringtun has just started.
            TunnResult::Done => true,
            _ => false,
        }
    }

    /// Start a handshake with every peer that has an endpoint, now rather
    /// than at the first packet or keepalive: the VM side calls this so the
    /// host, which cannot know the VM's address, learns it at once. `force`
    /// sends a new initiation even while one is outstanding.
    pub async fn initiate_handshakes(&self, force: bool) {
        let (peers, socket) = {
            let st = self.shared.state.read();
            let peers: Vec<Arc<Peer>> = st.peers.values().cloned().collect();
            (peers, st.socket.clone())
        };
        let mut buf = [0u8; 256];
        for peer in peers {
            let (kick, result) = {
                let mut guard = peer.tunn.lock();
                let Some(t) = guard.as_mut() else { continue };
                let kick = peer.freshen(t, &self.shared.alarm);
                let result = t.format_handshake_initiation(&mut buf, force);
                if let TunnResult::WriteToNetwork(out) = &result {
                    peer.produced(out, &self.shared.alarm);
                }
                (kick, result)
            };
            if let Some(k) = kick {
                send(&peer, socket.as_deref(), &k, None).await;
            }
            if let TunnResult::WriteToNetwork(out) = result {
                send(&peer, socket.as_deref(), out, None).await;
            }
        }
    }

    /// Resolves at the next packet from the TUN that is routed to a peer
    /// (sent, or queued behind a handshake). Packets that no peer takes
    /// (the host's own multicast chatter) do not count. Cancel-safe; a
    /// packet before the call does not count either, so nothing stale
    /// wakes an idle daemon.
    pub async fn offered(&self) {
        let o = &self.shared.offered;
        let notified = o.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        o.armed.store(true, Ordering::Release);
        notified.await;
    }

    /// A consistent picture of the device, for `wg show` and `status`.
    pub fn status(&self) -> DeviceStatus {
        let st = self.shared.state.read();
        let mut peers: Vec<&Arc<Peer>> = st.peers.values().collect();
        peers.sort_by_key(|p| p.index);
        let peers = peers
            .into_iter()
            .map(|p| {
                let settings = p.settings.lock().clone();
                PeerStatus {
                    public_key: p.public_key,
                    preshared_key: settings.preshared_key,
                    endpoint: p.endpoint(),
                    last_handshake: p.last_handshake(),
                    rx_bytes: p.rx_bytes.load(Ordering::Relaxed),
                    tx_bytes: p.tx_bytes.load(Ordering::Relaxed),
                    persistent_keepalive: settings.persistent_keepalive,
                    allowed_ips: st.allowed.prefixes_where(|q| Arc::ptr_eq(q, p)),
                }
            })
            .collect();
        DeviceStatus {
            private_key: st.private_key.clone(),
            public_key: st.public.map(|p| PublicKey(p.to_bytes())),
            listen_port: st.listen_port,
            fwmark: st.fwmark,
            peers,
            tun_refused: self.shared.tun_refused.load(Ordering::Relaxed),
        }
    }

    /// Resolves when the device can no longer work (its TUN is gone), with
    /// the reason.
    pub async fn failed(&self) -> String {
        let mut rx = self.failed.clone();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "device tasks ended".into(),
        };
        reason
    }

    /// Stop every task and wait until they are gone, so that once the last
    /// handle to the device drops, the TUN closes and the interface goes.
    pub async fn shutdown(&self) {
        self.timers.lock().stop();
        let socket_task = self.shared.state.write().socket_task.take();
        let tasks: Vec<_> = self.tasks.lock().drain(..).chain(socket_task).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl<T: TunIo> Drop for Device<T> {
    fn drop(&mut self) {
        for t in self.tasks.lock().iter() {
            t.abort();
        }
        if let Some(t) = self.shared.state.write().socket_task.take() {
            t.abort();
        }
    }
}

impl State {
    fn new() -> State {
        let placeholder = x25519::PublicKey::from([0u8; 32]);
        State {
            private_key: None,
            secret: None,
            public: None,
            limiter: Arc::new(RateLimiter::new(&placeholder, HANDSHAKE_RATE_LIMIT)),
            listen_port: 0,
            fwmark: 0,
            socket: None,
            socket_dual: false,
            socket_task: None,
            peers: HashMap::new(),
            by_index: HashMap::new(),
            allowed: AllowedIps::default(),
            next_index: 1,
        }
    }

    fn set_private_key(&mut self, key: &Key) {
        if key.is_zero() {
            self.private_key = None;
            self.secret = None;
            self.public = None;
        } else {
            if self.private_key.as_ref() == Some(key) {
                return;
            }
            let secret = x25519::StaticSecret::from(*key.as_bytes());
            let public = x25519::PublicKey::from(&secret);
            self.private_key = Some(key.clone());
            self.secret = Some(secret);
            self.public = Some(public);
            self.limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
            // A peer with our own public key would be talking to itself;
            // the kernel and wireguard-go drop it, so do we.
            self.remove_peer(&public.to_bytes());
        }
        for peer in self.peers.values() {
            peer.rebuild_tunn(self.secret.as_ref(), &self.limiter);
        }
    }

    fn remove_peer(&mut self, public_key: &[u8; 32]) {
        if let Some(peer) = self.peers.remove(public_key) {
            self.by_index.remove(&peer.index);
            self.allowed.retain(|_, p| !Arc::ptr_eq(p, &peer));
            debug!(peer = %peer.public_key, "peer removed");
        }
    }

    fn update_peer(&mut self, u: &PeerUpdate) {
        let pk = u.public_key.0;
        if u.remove {
            self.remove_peer(&pk);
            return;
        }
        if self.public.map(|p| p.to_bytes()) == Some(pk) {
            return;
        }
        let peer = match self.peers.get(&pk) {
            Some(p) => p.clone(),
            None if u.update_only => return,
            None => {
                let index = self.allocate_index();
                let peer = Arc::new(Peer::new(u.public_key, index));
                self.peers.insert(pk, peer.clone());
                self.by_index.insert(index, peer.clone());
                peer.rebuild_tunn(self.secret.as_ref(), &self.limiter);
                debug!(peer = %peer.public_key, "peer added");
                peer
            }
        };
        let mut settings = peer.settings.lock().clone();
        if let Some(psk) = &u.preshared_key {
            settings.preshared_key = (!psk.is_zero()).then(|| psk.clone());
        }
        if let Some(ka) = u.persistent_keepalive {
            settings.persistent_keepalive = (ka != 0).then_some(ka);
        }
        let changed = *peer.settings.lock() != settings;
        if changed {
            *peer.settings.lock() = settings;
            peer.rebuild_tunn(self.secret.as_ref(), &self.limiter);
        }
        if let Some(ep) = u.endpoint {
            *peer.endpoint.write() = Some(ep);
        }
        if u.replace_allowed_ips {
            self.allowed.retain(|_, p| !Arc::ptr_eq(p, &peer));
        }
        for net in &u.allowed_ips {
            self.allowed.insert(*net, peer.clone());
        }
    }

    /// Which peer a datagram is for, decided before any decryption from
    /// its receiver index (or, for an initiation, the sender's static key).
    fn route_datagram(&self, datagram: &[u8], from: SocketAddr) -> Route {
        let index = match Tunn::parse_incoming_packet(datagram) {
            Ok(Packet::HandshakeInit(ref init)) => {
                let (Some(secret), Some(public)) = (&self.secret, &self.public) else {
                    return Route::Drop;
                };
                // Check mac1 and the handshake rate before the costly
                // Diffie-Hellman that reveals who is calling. The limiter
                // counts per second; it is reset here, where it counts,
                // because the timer thread no longer runs every second.
                self.limiter.reset_count();
                let mut cookie = [0u8; 64];
                match self
                    .limiter
                    .verify_packet(Some(from.ip()), datagram, &mut cookie)
                {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(c)) => {
                        let len = c.len();
                        let mut out = [0u8; 64];
                        out[..len].copy_from_slice(c);
                        return Route::Cookie(out, len);
                    }
                    Err(_) => return Route::Drop,
                }
                return match parse_handshake_anon(secret, public, init) {
                    Ok(half) => match self.peers.get(&half.peer_static_public) {
                        Some(p) => Route::Peer {
                            peer: p.clone(),
                            roams: true,
                        },
                        None => {
                            debug!(%from, "handshake from an unknown key, dropped");
                            Route::Drop
                        }
                    },
                    Err(_) => Route::Drop,
                };
            }
            Ok(Packet::HandshakeResponse(p)) => (p.receiver_idx, true),
            Ok(Packet::PacketCookieReply(p)) => (p.receiver_idx, false),
            Ok(Packet::PacketData(p)) => (p.receiver_idx, true),
            Err(_) => return Route::Drop,
        };
        let (index, roams) = index;
        match self.by_index.get(&(index >> 8)) {
            Some(p) => Route::Peer {
                peer: p.clone(),
                roams,
            },
            None => Route::Drop,
        }
    }

    /// Whether `peer` may send from `source`: WireGuard's cryptokey routing,
    /// the check that stops a peer from spoofing another's addresses.
    fn admits(&self, peer: &Arc<Peer>, source: IpAddr) -> bool {
        self.allowed
            .lookup(source)
            .is_some_and(|p| Arc::ptr_eq(p, peer))
    }

    fn allocate_index(&mut self) -> u32 {
        // 24 bits; skip indices still in use after a wrap.
        loop {
            let i = self.next_index & 0x00ff_ffff;
            self.next_index = self.next_index.wrapping_add(1);
            if i != 0 && !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }
}

/// How an incoming datagram maps to a peer.
enum Route {
    /// `roams`: whether a datagram that authenticates may move the peer's
    /// endpoint. WireGuard roams on authenticated transport data and on
    /// handshake messages, never on a cookie reply: that is sealed with a
    /// key derived from our public key alone, so anyone who saw our last
    /// handshake can forge one from anywhere.
    Peer {
        peer: Arc<Peer>,
        roams: bool,
    },
    /// Under handshake load: answer with this cookie reply instead.
    Cookie([u8; 64], usize),
    Drop,
}

/// One step of taking a datagram in, as data: boringtun decides, the caller
/// does the I/O. Keeping this free of sockets and the TUN lets the fuzz
/// targets (`crate::fuzzing`) drive the real receive path.
enum Step<'a> {
    Stop,
    /// A handshake answer or a queued packet, to `to` (else the endpoint).
    Send(&'a [u8], Option<SocketAddr>),
    /// A decrypted packet and its source, still to be checked against the
    /// peer's allowed IPs.
    Deliver(&'a [u8], IpAddr),
}

/// Decrypt `input` (the datagram on the first call, then empty, which asks
/// boringtun for packets it queued during a handshake) and count what
/// authenticated; `len` is the datagram's length, `roams` its [`Route`]'s.
/// `kick` receives what boringtun's timers wanted sent when this was the
/// first packet after the timer thread slept (see `Peer::freshen`).
#[allow(clippy::too_many_arguments)]
fn decap_step<'a>(
    peer: &Peer,
    alarm: &Alarm,
    from: SocketAddr,
    len: usize,
    roams: bool,
    input: &mut &[u8],
    dst: &'a mut [u8],
    kick: &mut Option<Vec<u8>>,
) -> Step<'a> {
    let result = {
        let mut guard = peer.tunn.lock();
        let Some(t) = guard.as_mut() else {
            return Step::Stop;
        };
        *kick = peer.freshen(t, alarm);
        let result = t.decapsulate(Some(from.ip()), input, dst);
        if let TunnResult::WriteToNetwork(out) = &result {
            // A handshake answered, or a cookie: timers the thread must see.
            peer.produced(out, alarm);
        }
        result
    };
    let first = !input.is_empty();
    *input = &[];
    match result {
        TunnResult::Done => {
            if first {
                peer.authenticated(from, len, roams);
            }
            Step::Stop
        }
        TunnResult::Err(e) => {
            log_decap_error(peer, e);
            Step::Stop
        }
        // A handshake answer, or packets queued while it ran: the caller
        // keeps asking until the queue is empty.
        TunnResult::WriteToNetwork(out) => {
            if first {
                peer.authenticated(from, len, roams);
            }
            Step::Send(out, roams.then_some(from))
        }
        TunnResult::WriteToTunnelV4(packet, addr) => {
            peer.authenticated(from, len, roams);
            Step::Deliver(packet, IpAddr::V4(addr))
        }
        TunnResult::WriteToTunnelV6(packet, addr) => {
            peer.authenticated(from, len, roams);
            Step::Deliver(packet, IpAddr::V6(addr))
        }
    }
}

impl<T: TunIo> Shared<T> {
    /// Bind a new socket on `port` and move the receive task to it; the old
    /// socket stays until the new one is bound, so a failure changes nothing.
    fn rebind(self: &Arc<Self>, st: &mut State, port: u16) -> Result<(), ConfigError> {
        let socket = self.net.bind(port, st.fwmark)?;
        let actual = socket
            .local_port()
            .map_err(|source| ConfigError::Bind { port, source })?;
        if let Some(old) = st.socket_task.take() {
            old.abort();
        }
        let span = tracing::debug_span!("udp", iface = %self.name, port = actual);
        st.socket_task = Some(tokio::spawn(
            self.clone().net_to_tun(socket.clone()).instrument(span),
        ));
        st.socket_dual = socket.dual();
        st.socket = Some(socket);
        st.listen_port = actual;
        info!(iface = %self.name, port = actual, "listening");
        Ok(())
    }

    fn fail(&self, reason: String) {
        warn!(iface = %self.name, %reason, "device stopped working");
        self.failed.send_replace(Some(reason));
    }

    /// TUN → peer: route by destination, encrypt, send. A read yields a
    /// batch (a split super-packet, or what the queue held); it is
    /// encrypted and sent a `sendmmsg` at a time.
    async fn tun_to_net(self: Arc<Self>) {
        let mut reader = TunReader::new();
        let mut out = SendBatch::new();
        let mut route: Vec<Option<Arc<Peer>>> = vec![None; READ_BATCH];
        let mut senders: [Option<Arc<Peer>>; SEND_BATCH] = std::array::from_fn(|_| None);
        loop {
            let count = match self.tun.recv(&mut reader).await {
                Ok(n) => n,
                Err(e) if is_transient(&e) => continue,
                // No errno: a super-packet that could not be split. One
                // packet, not the device.
                Err(e) if e.raw_os_error().is_none() => {
                    debug!(error = %e, "a packet from the TUN could not be split; dropped");
                    continue;
                }
                Err(e) => return self.fail(format!("reading from the TUN device failed: {e}")),
            };
            let (socket, dual) = {
                let st = self.state.read();
                for (i, r) in route.iter_mut().enumerate().take(count) {
                    *r = Tunn::dst_address(reader.packet(i))
                        .and_then(|dst| st.allowed.lookup(dst))
                        .cloned();
                }
                (st.socket.clone(), st.socket_dual)
            };
            if self.offered.armed.load(Ordering::Relaxed)
                && route[..count].iter().any(Option::is_some)
                && self.offered.armed.swap(false, Ordering::AcqRel)
            {
                self.offered.notify.notify_waiters();
            }
            let mut i = 0;
            while i < count {
                out.clear();
                while i < count && out.has_room(reader.packet(i).len() + WG_GROWTH) {
                    let packet = reader.packet(i);
                    let Some(peer) = route[i].take() else {
                        i += 1;
                        trace!("no peer for destination, dropped");
                        continue;
                    };
                    i += 1;
                    let endpoint = peer.endpoint();
                    let (kick, result) = {
                        let mut guard = peer.tunn.lock();
                        let Some(t) = guard.as_mut() else { continue };
                        let kick = peer.freshen(t, &self.alarm);
                        let result = match t.encapsulate(packet, out.slot()) {
                            TunnResult::WriteToNetwork(b) => {
                                // A handshake initiation when there is no session.
                                peer.produced(b, &self.alarm);
                                Some(Ok(b.len()))
                            }
                            TunnResult::Err(e) => Some(Err(e)),
                            // Queued behind a handshake in progress.
                            _ => None,
                        };
                        (kick, result)
                    };
                    if let Some(k) = kick {
                        send(&peer, socket.as_deref(), &k, None).await;
                    }
                    let Some(result) = result else { continue };
                    match (result, endpoint) {
                        (Ok(len), Some(to)) => {
                            senders[out.len()] = Some(peer);
                            out.commit(len, wire_addr(dual, to));
                        }
                        (Ok(_), None) => {
                            trace!(peer = %peer.public_key, "no endpoint yet, packet dropped")
                        }
                        (Err(e), _) => {
                            debug!(peer = %peer.public_key, error = ?e, "encapsulate failed")
                        }
                    }
                }
                let Some(socket) = &socket else { continue };
                let mut done = 0;
                while done < out.len() {
                    match poll_fn(|cx| socket.poll_send(cx, &mut out, done)).await {
                        Ok(k) => {
                            for (j, sender) in senders.iter_mut().enumerate().skip(done).take(k) {
                                if let Some(p) = sender.take() {
                                    p.sent(out.datagram(j).len());
                                }
                            }
                            done += k;
                        }
                        Err(e) => {
                            debug!(error = %e, "send failed");
                            senders[done] = None;
                            done += 1;
                        }
                    }
                }
            }
        }
    }

    /// Peer → TUN: receive a batch, and for each datagram find the peer,
    /// decrypt, check the source against the peer's allowed IPs; then write
    /// what passed to the TUN, a batch at a time.
    async fn net_to_tun(self: Arc<Self>, socket: Arc<dyn NetSocket>) {
        let mut batch = RecvBatch::new(MAX_PACKET);
        let mut writer = TunWriter::new();
        let mut spare = PageBuf::new(OUT_BUF);
        loop {
            let n = match poll_fn(|cx| socket.poll_recv(cx, &mut batch)).await {
                Ok(n) => n,
                // ICMP errors from earlier sends surface here; not fatal.
                Err(e) => {
                    trace!(error = %e, "recvmmsg");
                    continue;
                }
            };
            for i in 0..n {
                let (message, stride, from) = batch.message(i);
                let Some(from) = from else { continue };
                let from = canonical(from);
                // A GRO message is a run of datagrams `stride` bytes apart.
                for datagram in message.chunks(stride) {
                    self.receive(&*socket, datagram, from, &mut writer, &mut spare)
                        .await;
                    if writer.is_full() {
                        self.flush(&mut writer).await;
                    }
                }
            }
            self.flush(&mut writer).await;
        }
    }

    /// Decrypt one datagram; a packet for the TUN joins `writer`.
    async fn receive(
        &self,
        socket: &dyn NetSocket,
        datagram: &[u8],
        from: SocketAddr,
        writer: &mut TunWriter,
        spare: &mut [u8],
    ) {
        let route = self.state.read().route_datagram(datagram, from);
        let (peer, roams) = match route {
            Route::Peer { peer, roams } => (peer, roams),
            Route::Cookie(c, len) => {
                let to = wire_addr(socket.dual(), from);
                let _ = poll_fn(|cx| socket.poll_send_to(cx, &c[..len], to)).await;
                return;
            }
            Route::Drop => return,
        };
        let mut input: &[u8] = datagram;
        loop {
            let mut kick = None;
            // The first step decrypts the datagram straight into the
            // writer's next slot (a data packet only shrinks); later steps
            // (packets queued behind a handshake) go out through `spare`.
            let first = !input.is_empty();
            let dst: &mut [u8] = if first {
                writer.slot(datagram.len().max(HANDSHAKE_OUT))
            } else {
                &mut *spare
            };
            let base = dst.as_ptr() as usize;
            let step = decap_step(
                &peer,
                &self.alarm,
                from,
                datagram.len(),
                roams,
                &mut input,
                dst,
                &mut kick,
            );
            if let Some(k) = kick {
                send(&peer, Some(socket), &k, None).await;
            }
            match step {
                Step::Stop => return,
                Step::Send(out, to) => send(&peer, Some(socket), out, to).await,
                Step::Deliver(packet, source) => {
                    let (at, len) = (packet.as_ptr() as usize - base, packet.len());
                    if !self.state.read().admits(&peer, source) {
                        debug!(peer = %peer.public_key, src = %source, "source not in peer's allowed IPs, dropped");
                    } else if first {
                        writer.commit(at, len);
                    }
                    return;
                }
            }
        }
    }

    /// Write what `writer` holds. One refused batch is never the end of the
    /// device: the kernel refuses a write while the interface is down (EIO)
    /// or a packet it cannot parse (EINVAL), and the next may be fine. The
    /// first refusal is a warning, the rest are counted (`status` shows the
    /// count).
    async fn flush(&self, writer: &mut TunWriter) {
        let Err((n, e)) = self.tun.flush(writer).await else {
            return;
        };
        if is_transient(&e) {
            return;
        }
        let before = self.tun_refused.fetch_add(n as u64, Ordering::Relaxed);
        if before == 0 {
            warn!(iface = %self.name, error = %e, "the TUN refused a packet; dropped (further refusals are counted, not logged)");
        } else {
            debug!(iface = %self.name, error = %e, packets = n, "the TUN refused a write; dropped");
        }
    }

    /// One timer pass: handshake retries, rekeys and keepalives. boringtun
    /// decides; we send. Runs on the timer thread, so sends are synchronous
    /// and a full socket buffer drops the packet (boringtun retries).
    /// Returns when the next pass is due (`None`: only when woken).
    fn tick_timers(&self, buf: &mut [u8], peers: &mut Vec<Arc<Peer>>) -> Option<Instant> {
        let (socket, dual) = {
            let st = self.state.read();
            peers.clear();
            peers.extend(st.peers.values().cloned());
            (st.socket.clone(), st.socket_dual)
        };
        for peer in peers.iter() {
            let mut sample = Sample::default();
            let out = {
                let mut guard = peer.tunn.lock();
                let Some(t) = guard.as_mut() else { continue };
                let (output, out) = match t.update_timers(buf) {
                    TunnResult::WriteToNetwork(out) => (Some(Output::of(out)), Some(out)),
                    TunnResult::Err(WireGuardError::ConnectionExpired) => (None, None),
                    // Something was due and failed (a handshake it could
                    // not format): boringtun tries again at the next pass,
                    // so keep ticking as after a handshake.
                    TunnResult::Err(e) => {
                        debug!(peer = %peer.public_key, error = ?e, "timer");
                        (Some(Output::Handshake), None)
                    }
                    _ => (None, None),
                };
                sample.output = output.unwrap_or_default();
                look(peer, t, &mut sample);
                out
            };
            peer.timer_facts.lock().observe(Instant::now(), &sample);
            let (Some(out), Some(socket)) = (out, &socket) else {
                continue;
            };
            let Some(to) = peer.endpoint() else { continue };
            match socket.try_send_to(out, wire_addr(dual, to)) {
                Ok(n) => peer.sent(n),
                Err(e) => debug!(peer = %peer.public_key, error = %e, "timer send failed"),
            }
        }
        let now = Instant::now();
        let next = timers::next_wake(now, peers.iter().map(|p| p.timer_facts.lock()));
        if next.is_some_and(|t| t <= now + timers::TICK) {
            return next;
        }
        // About to sleep past the next tick: from here on the data path
        // refreshes boringtun's clock itself (`Peer::freshen`). A packet
        // that slipped in before it saw the flag cleared is in boringtun's
        // state by the time we hold its lock again.
        for peer in peers.iter() {
            peer.timers_armed.store(false, Ordering::Relaxed);
        }
        for peer in peers.iter() {
            let mut sample = Sample::default();
            {
                let mut guard = peer.tunn.lock();
                let Some(t) = guard.as_mut() else { continue };
                look(peer, t, &mut sample);
            }
            peer.timer_facts.lock().observe(Instant::now(), &sample);
        }
        timers::next_wake(Instant::now(), peers.iter().map(|p| p.timer_facts.lock()))
    }
}

/// What the timer thread reads of a peer's noise state, under its lock.
fn look(peer: &Peer, t: &Tunn, sample: &mut Sample) {
    let (since_handshake, data_tx, data_rx, _, _) = t.stats();
    sample.expired = t.is_expired();
    sample.since_handshake = since_handshake;
    sample.data_tx = data_tx;
    sample.data_rx = data_rx;
    sample.persistent_keepalive = t.persistent_keepalive();
    sample.news = peer.timer_news.swap(false, Ordering::Relaxed);
}

/// The receive path without a socket or a TUN: a device's state and the
/// steps of `Shared::receive`, with the I/O handed back as data. The fuzz
/// targets (`crate::fuzzing`) feed it datagrams; nothing else uses it.
pub(crate) struct Receiver {
    state: State,
    dst: Vec<u8>,
    /// Never set: there is no timer thread to wake.
    alarm: Alarm,
}

/// What receiving one datagram did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    /// Sent back to the network (`None`: no address to send to, dropped).
    Send {
        to: Option<SocketAddr>,
        bytes: Vec<u8>,
    },
    /// Written to the TUN.
    Tun { packet: Vec<u8>, source: IpAddr },
    /// Decrypted, then dropped: the source is not the peer's.
    NotAllowed(IpAddr),
}

impl Receiver {
    /// A device configured by `update`, as [`Device::apply`] would leave it
    /// (the listening port and mark, which need a socket, are ignored).
    pub(crate) fn new(update: &DeviceUpdate) -> Receiver {
        let mut state = State::new();
        if let Some(key) = &update.private_key {
            state.set_private_key(key);
        }
        for p in &update.peers {
            state.update_peer(p);
        }
        // No timer thread runs boringtun's timers here, so none may fire
        // from the data path either: what a datagram does must not depend
        // on how long the fuzzer took to send it.
        for p in state.peers.values() {
            p.timers_armed.store(true, Ordering::Relaxed);
        }
        Receiver {
            state,
            dst: vec![0u8; OUT_BUF],
            alarm: Alarm::default(),
        }
    }

    pub(crate) fn receive(&mut self, datagram: &[u8], from: SocketAddr) -> Vec<Received> {
        let (peer, roams) = match self.state.route_datagram(datagram, from) {
            Route::Peer { peer, roams } => (peer, roams),
            Route::Cookie(c, len) => {
                return vec![Received::Send {
                    to: Some(from),
                    bytes: c[..len].to_vec(),
                }]
            }
            Route::Drop => return Vec::new(),
        };
        let mut out = Vec::new();
        let mut input: &[u8] = datagram;
        loop {
            let mut kick = None;
            let step = decap_step(
                &peer,
                &self.alarm,
                from,
                datagram.len(),
                roams,
                &mut input,
                &mut self.dst,
                &mut kick,
            );
            if let Some(bytes) = kick {
                out.push(Received::Send {
                    to: peer.endpoint(),
                    bytes,
                });
            }
            match step {
                Step::Stop => return out,
                Step::Send(bytes, to) => out.push(Received::Send {
                    to: to.or_else(|| peer.endpoint()),
                    bytes: bytes.to_vec(),
                }),
                Step::Deliver(packet, source) => {
                    out.push(if self.state.admits(&peer, source) {
                        Received::Tun {
                            packet: packet.to_vec(),
                            source,
                        }
                    } else {
                        Received::NotAllowed(source)
                    });
                    return out;
                }
            }
        }
    }

    pub(crate) fn endpoint(&self, peer: &PublicKey) -> Option<SocketAddr> {
        self.state.peers.get(&peer.0).and_then(|p| p.endpoint())
    }
}

/// The timer thread. A plain thread rather than a tokio interval: tokio's
/// hierarchical timer wheel parks twice for every deadline (once for the
/// coarse slot, once for the exact one); `park_timeout` wakes once. It
/// sleeps until `tick_timers` says something may be due, or until the data
/// path or a configuration change rings `Shared::alarm`. It holds the
/// device only weakly, so it never keeps a closed TUN alive.
struct TimerThread {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TimerThread {
    fn spawn<T: TunIo>(shared: &Arc<Shared<T>>) -> io::Result<TimerThread> {
        let weak = Arc::downgrade(shared);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let span = tracing::info_span!("timers", iface = %shared.name);
        let thread = std::thread::Builder::new()
            .name("wg-timers".into())
            .spawn(move || {
                let _enter = span.enter();
                let mut buf = vec![0u8; OUT_BUF];
                let mut peers = Vec::new();
                let mut next = None;
                loop {
                    match next {
                        Some(at) => {
                            let now = Instant::now();
                            if at > now {
                                std::thread::park_timeout(at - now);
                            }
                        }
                        None => std::thread::park(),
                    }
                    if stop2.load(Ordering::Acquire) {
                        return;
                    }
                    let Some(shared) = weak.upgrade() else { return };
                    next = shared.tick_timers(&mut buf, &mut peers);
                    trace!(next_in = ?next.map(|t| t.saturating_duration_since(Instant::now())), "timers ran");
                    peers.clear();
                }
            })?;
        shared.alarm.set(thread.thread().clone());
        Ok(TimerThread {
            stop,
            thread: Some(thread),
        })
    }
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for TimerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn send(peer: &Peer, socket: Option<&dyn NetSocket>, buf: &[u8], to: Option<SocketAddr>) {
    let Some(socket) = socket else { return };
    let Some(to) = to.or_else(|| peer.endpoint()) else {
        trace!(peer = %peer.public_key, "no endpoint yet, packet dropped");
        return;
    };
    let wire = wire_addr(socket.dual(), to);
    match poll_fn(|cx| socket.poll_send_to(cx, buf, wire)).await {
        Ok(n) => peer.sent(n),
        Err(e) => debug!(peer = %peer.public_key, %to, error = %e, "send failed"),
    }
}

fn log_decap_error(peer: &Peer, e: WireGuardError) {
    match e {
        // Reordered or replayed packets are routine on a busy link.
        WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => {
            trace!(peer = %peer.public_key, error = ?e, "decapsulate")
        }
        _ => debug!(peer = %peer.public_key, error = ?e, "decapsulate failed"),
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(nix::libc::ENOBUFS)
}

/// A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`; users and
/// `wg show` expect the plain IPv4 form.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The inverse of [`canonical`] for sending on a dual-stack socket.
fn wire_addr(dual: bool, to: SocketAddr) -> SocketAddr {
    match (dual, to) {
        (true, SocketAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:51820".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
        let real6: SocketAddr = "[fd00::1]:1".parse().unwrap();
        assert_eq!(canonical(real6), real6);
    }
}

//! One WireGuard peer: its noise state and the counters `wg show` reports.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use parking_lot::{Mutex, RwLock};

use super::timers::{Alarm, Output, PeerTimerFacts};
use crate::keys::{Key, PublicKey};

/// Settings that shape the noise state; changing one rebuilds the [`Tunn`],
/// since boringtun fixes them at construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NoiseSettings {
    pub preshared_key: Option<Key>,
    pub persistent_keepalive: Option<u16>,
}

pub(crate) struct Peer {
    pub public_key: PublicKey,
    /// 24-bit index; boringtun puts it in the top bits of every session index
    /// we hand out, so an incoming packet names its peer without a search.
    pub index: u32,
    /// `None` while the device has no private key.
    pub tunn: Mutex<Option<Tunn>>,
    pub settings: Mutex<NoiseSettings>,
    pub endpoint: RwLock<Option<SocketAddr>>,
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// The timer thread is ticking every second, so boringtun's clock is
    /// current. Cleared by the thread before it sleeps longer; read, under
    /// the `tunn` lock, before every packet (see [`Peer::freshen`]).
    pub timers_armed: AtomicBool,
    /// Something the timer thread cannot read from boringtun happened: a
    /// handshake began or was answered, or the noise state was rebuilt.
    /// Set under the `tunn` lock, taken by the thread under it.
    pub timer_news: AtomicBool,
    /// What the timer thread knows of this peer; only it locks this.
    pub timer_facts: Mutex<PeerTimerFacts>,
}

impl Peer {
    pub fn new(public_key: PublicKey, index: u32) -> Self {
        Peer {
            public_key,
            index,
            tunn: Mutex::new(None),
            settings: Mutex::new(NoiseSettings::default()),
            endpoint: RwLock::new(None),
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            timers_armed: AtomicBool::new(false),
            timer_news: AtomicBool::new(false),
            timer_facts: Mutex::new(PeerTimerFacts::default()),
        }
    }

    /// (Re)build the noise state for the device key `secret`, or drop it when
    /// the device has no key.
    pub fn rebuild_tunn(&self, secret: Option<&x25519::StaticSecret>, limiter: &Arc<RateLimiter>) {
        let settings = self.settings.lock().clone();
        let tunn = secret.map(|s| {
            Tunn::new(
                s.clone(),
                x25519::PublicKey::from(self.public_key.0),
                settings.preshared_key.as_ref().map(|k| *k.as_bytes()),
                settings.persistent_keepalive,
                self.index,
                Some(limiter.clone()),
            )
        });
        let mut guard = self.tunn.lock();
        *guard = tunn;
        // A new noise state counts its persistent keepalive from now.
        self.timer_news.store(true, Ordering::Relaxed);
    }

    /// Call under the `tunn` lock before `tunn` takes a packet in or out.
    /// boringtun stamps every event with the clock of its last
    /// `update_timers`; while the timer thread sleeps that clock goes stale,
    /// and a stale stamp makes it give up a new handshake at once (it looks
    /// 90 s old) or drop a fresh session. So the first packet after a sleep
    /// runs `update_timers` itself and wakes the thread; every other packet
    /// pays one relaxed load. Returns what `update_timers` wanted sent.
    ///
    /// Why it cannot miss a wake: the thread clears `timers_armed`, then
    /// looks at every peer under its `tunn` lock. A packet that took the
    /// lock before that look is seen by it (boringtun's counters, or
    /// `timer_news`); one that took it after reads `false` here.
    #[inline]
    pub fn freshen(&self, tunn: &mut Tunn, alarm: &Alarm) -> Option<Vec<u8>> {
        if self.timers_armed.load(Ordering::Relaxed) {
            return None;
        }
        self.freshen_cold(tunn, alarm)
    }

    #[cold]
    fn freshen_cold(&self, tunn: &mut Tunn, alarm: &Alarm) -> Option<Vec<u8>> {
        self.timers_armed.store(true, Ordering::Relaxed);
        let mut buf = [0u8; 256];
        let out = match tunn.update_timers(&mut buf) {
            TunnResult::WriteToNetwork(b) => {
                self.produced(b, alarm);
                Some(b.to_vec())
            }
            _ => None,
        };
        alarm.ring();
        out
    }

    /// Call under the `tunn` lock when `tunn` produced `datagram` for the
    /// network: a handshake message (or a cookie) starts timers the thread
    /// cannot read from boringtun; transport data it can.
    #[inline]
    pub fn produced(&self, datagram: &[u8], alarm: &Alarm) {
        if Output::of(datagram) == Output::Handshake {
            self.timer_news.store(true, Ordering::Relaxed);
            alarm.ring();
        }
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.read()
    }

    /// Called for every datagram that authenticated as this peer. WireGuard
    /// roams (`roams`: transport data or a handshake message), so the last
    /// address a peer spoke from is where replies go.
    pub fn authenticated(&self, from: SocketAddr, len: usize, roams: bool) {
        self.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
        if roams && self.endpoint() != Some(from) {
            *self.endpoint.write() = Some(from);
        }
    }

    pub fn sent(&self, len: usize) {
        self.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    pub fn last_handshake(&self) -> Option<SystemTime> {
        let since = self.tunn.lock().as_ref()?.stats().0?;
        SystemTime::now().checked_sub(since)
    }
}

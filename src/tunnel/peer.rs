//! One WireGuard peer: its noise state and the counters `wg show` reports.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;
use boringtun::x25519;
use parking_lot::{Mutex, RwLock};

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
        *self.tunn.lock() = tunn;
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

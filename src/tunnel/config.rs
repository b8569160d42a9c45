//! The typed configuration API of a [`Device`](super::Device).
//!
//! These types are the one way to change or read a device: `netconnect up`
//! and the VM-side helper build them in code, and the UAPI socket parses text
//! into them. Their meaning follows the cross-platform WireGuard
//! configuration protocol (<https://www.wireguard.com/xplatform/>), so a
//! `wg set` transaction maps onto one [`DeviceUpdate`] applied at once.

use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::keys::{Key, PublicKey};

/// One configuration transaction. Fields left `None` are not changed.
#[derive(Debug, Default, Clone)]
pub struct DeviceUpdate {
    /// A new private key; the all-zero key removes it.
    pub private_key: Option<Key>,
    /// UDP port to listen on; 0 picks a free one.
    pub listen_port: Option<u16>,
    /// `SO_MARK` for the UDP socket (Linux); 0 removes it.
    pub fwmark: Option<u32>,
    /// Remove every peer before applying `peers`.
    pub replace_peers: bool,
    pub peers: Vec<PeerUpdate>,
}

/// Changes to one peer, created if it does not exist (unless `update_only`).
#[derive(Debug, Clone)]
pub struct PeerUpdate {
    pub public_key: PublicKey,
    pub remove: bool,
    pub update_only: bool,
    /// A new preshared key; the all-zero key removes it.
    pub preshared_key: Option<Key>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds; 0 turns persistent keepalive off.
    pub persistent_keepalive: Option<u16>,
    /// Remove the peer's allowed IPs before adding `allowed_ips`.
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<IpNet>,
}

impl PeerUpdate {
    pub fn new(public_key: PublicKey) -> Self {
        PeerUpdate {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// What a device reports about itself (the UAPI `get`).
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    pub private_key: Option<Key>,
    pub public_key: Option<PublicKey>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: Vec<PeerStatus>,
    /// Decrypted packets the TUN refused and the device dropped.
    pub tun_refused: u64,
}

#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub public_key: PublicKey,
    pub preshared_key: Option<Key>,
    pub endpoint: Option<SocketAddr>,
    /// Wall-clock time of the last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes of WireGuard datagrams received from and sent to this peer.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
    pub allowed_ips: Vec<IpNet>,
}

//! The Linux TUN with offloads, as wireguard-go runs it: `IFF_VNET_HDR` and
//! `TUNSETOFFLOAD` (checksum, TSO4/6 and, from Linux 6.2, USO4/6).
//!
//! With them a local TCP sender hands the TUN one 64 KiB super-packet and
//! skips its checksums; one read here splits it into MTU-sized packets
//! (finishing their checksums), which then share a lookup, a lock and a
//! `sendmmsg`. The other way, decrypted TCP segments of one flow are
//! coalesced back into one super-packet per write (GRO). Both halves are
//! tun-rs's port of wireguard-go's `tun/offload_linux.go`.
//!
//! `tunio_macos.rs` has the same names over a plain utun.

use std::io;

use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN};

use super::batch::{PageBuf, Slots};

/// The packet interface a device runs on.
pub type Tun = tun_rs::AsyncDevice;

/// Bytes the writer keeps in front of each packet: the virtio header that
/// tells the kernel how a coalesced packet was built.
const HEADROOM: usize = VIRTIO_NET_HDR_LEN;

/// Packets one read may yield: a 64 KiB super-packet split at an MSS of 512
/// bytes or more fits (a TUN MTU of ~560 and up; below that a super-packet
/// that does not fit is dropped with a debug line).
const MAX_SEGMENTS: usize = 128;

/// Packets a reader holds: two reads' worth, so that small packets, one per
/// read, can be drained into one batch while a super-packet always fits.
pub const READ_BATCH: usize = 2 * MAX_SEGMENTS;

/// Packets a writer holds before it must flush.
pub const WRITE_BATCH: usize = MAX_SEGMENTS;

/// Largest packet a single read can return, and so a slot's size: the TUN's
/// MTU may be raised at runtime up to the IP limit.
const MAX_PACKET: usize = 65536;

/// Reads batches of packets from the TUN.
pub struct TunReader {
    /// One raw read: the virtio header and a packet or super-packet.
    raw: PageBuf,
    slots: Slots,
    sizes: Box<[usize]>,
}

impl TunReader {
    pub fn new() -> TunReader {
        TunReader {
            raw: PageBuf::new(VIRTIO_NET_HDR_LEN + MAX_PACKET),
            slots: Slots::with_count(MAX_PACKET, READ_BATCH),
            sizes: vec![0; READ_BATCH].into_boxed_slice(),
        }
    }

    /// Wait until the TUN has packets, then read while it has more and the
    /// batch has room. Returns how many packets [`TunReader::packet`] holds.
    ///
    /// An error with an OS error code is the TUN's own (the caller decides
    /// whether it is fatal); one without is a super-packet the kernel sent
    /// that could not be split, already dropped: the caller reads on.
    pub async fn recv(&mut self, tun: &Tun) -> io::Result<usize> {
        let mut bufs: [&mut [u8]; READ_BATCH] = self.slots.split();
        let mut n = tun
            .recv_multiple(&mut self.raw, &mut bufs, &mut self.sizes, 0)
            .await?;
        while n + MAX_SEGMENTS <= READ_BATCH {
            match tun.try_recv_multiple(&mut self.raw, &mut bufs[n..], &mut self.sizes[n..], 0) {
                Ok(k) => n += k,
                // Empty (WouldBlock), or a read error the next `recv` will
                // see again: either way this batch is done.
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

/// Collects decrypted packets and writes them to the TUN, coalesced.
pub struct TunWriter {
    bufs: Vec<Vec<u8>>,
    n: usize,
    /// Made at the first flush of two packets or more: its flow tables are
    /// ~1 MiB resident, which a device that only ever saw pings and
    /// keepalives should not pay.
    gro: Option<GROTable>,
}

impl TunWriter {
    pub fn new() -> TunWriter {
        TunWriter {
            // Empty until used: see `slot`.
            bufs: (0..WRITE_BATCH).map(|_| Vec::new()).collect(),
            n: 0,
            gro: None,
        }
    }

    pub fn is_full(&self) -> bool {
        self.n == WRITE_BATCH
    }

    /// Hand every collected packet to `f` and empty the batch (the
    /// in-memory TUN's write).
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        for b in &self.bufs[..std::mem::take(&mut self.n)] {
            f(&b[HEADROOM..]);
        }
    }

    /// Room for one packet of at most `max` bytes, to decrypt into;
    /// [`TunWriter::commit`] keeps it.
    pub fn slot(&mut self, max: usize) -> &mut [u8] {
        let b = &mut self.bufs[self.n];
        // Coalescing appends to the first packet of a run in place and skips
        // a run whose buffer would have to grow, so a buffer gets room for a
        // whole super-packet at its first use (an idle device has none).
        b.reserve_exact((2 * HEADROOM + MAX_PACKET).saturating_sub(b.len()));
        b.resize(HEADROOM + max, 0);
        &mut b[HEADROOM..]
    }

    /// Keep `len` bytes of the last slot, starting at `at`.
    pub fn commit(&mut self, at: usize, len: usize) {
        let b = &mut self.bufs[self.n];
        if at != 0 {
            b.copy_within(HEADROOM + at..HEADROOM + at + len, HEADROOM);
        }
        b.truncate(HEADROOM + len);
        self.n += 1;
    }

    /// Write every collected packet, coalescing TCP (and UDP, where the
    /// kernel takes it) segments of a flow. The batch is consumed either
    /// way; on an error, how many packets it held (tun-rs reports the last
    /// error of the batch, not which packets it refused) and the error.
    pub async fn flush(&mut self, tun: &Tun) -> Result<(), (usize, io::Error)> {
        let n = std::mem::take(&mut self.n);
        if n == 0 {
            return Ok(());
        }
        if n == 1 {
            // Nothing to coalesce: written as is, behind an empty virtio
            // header (no GSO, checksum complete) where the TUN expects one.
            // Pings and keepalive-sized traffic never build the GRO table.
            let b = &mut self.bufs[0];
            let start = if tun.tcp_gso() {
                b[..HEADROOM].fill(0);
                0
            } else {
                HEADROOM
            };
            return tun.send(&b[start..]).await.map(drop).map_err(|e| (1, e));
        }
        let gro = self.gro.get_or_insert_with(GROTable::new);
        tun.send_multiple(gro, &mut self.bufs[..n], HEADROOM)
            .await
            .map(drop)
            .map_err(|e| (n, e))
    }
}

//! Traffic between namespaces: a bounded, hashed TCP transfer and UDP
//! datagrams sent and collected.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::names::next_id;
use crate::netns::Netns;
use crate::wg::unix_now;

/// Result of [`tcp_transfer`].
#[derive(Debug, Clone)]
pub struct TransferReport {
    pub sent: u64,
    pub received: u64,
    pub sha_sent: String,
    pub sha_received: String,
    pub elapsed: Duration,
}

impl TransferReport {
    pub fn mbit_per_s(&self) -> f64 {
        self.received as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    pub fn assert_ok(&self, expected: u64) {
        assert_eq!(
            self.sent, expected,
            "sender did not send everything: {self:?}"
        );
        assert_eq!(
            self.received, expected,
            "receiver byte count differs: {self:?}"
        );
        assert_eq!(
            self.sha_sent, self.sha_received,
            "SHA-256 mismatch: {self:?}"
        );
    }
}

/// xorshift64* stream: fast incompressible test data.
struct Prng(u64);

impl Prng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Streams `bytes` pseudo-random bytes over TCP from a socket in `sender` to a
/// listener on `dst:port` in `receiver`, hashing SHA-256 on both ends. Every
/// step is bounded by `timeout` (overall) and a 20 s stall limit.
pub fn tcp_transfer(
    sender: &Netns,
    receiver: &Netns,
    dst: IpAddr,
    port: u16,
    bytes: u64,
    timeout: Duration,
) -> Result<TransferReport, String> {
    let deadline = Instant::now() + timeout;
    let stall = Duration::from_secs(20).min(timeout);
    let addr = SocketAddr::new(dst, port);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();

    let rx_handle = receiver.spawn_in(move || -> Result<(u64, String), String> {
        let l = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("bind {addr}: {e}");
                let _ = ready_tx.send(Err(msg.clone()));
                return Err(msg);
            }
        };
        l.set_nonblocking(true).unwrap();
        let _ = ready_tx.send(Ok(()));
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err("receiver: no connection before deadline".into());
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(stall)).unwrap();
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if Instant::now() >= deadline {
                return Err(format!("receiver: deadline passed after {n} bytes"));
            }
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("receiver: read after {n} bytes: {e}")),
            }
        }
        drop(s);
        Ok((n, hex::encode(h.finalize())))
    });

    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = rx_handle.join();
            return Err(e);
        }
        Err(_) => return Err("receiver thread did not start".into()),
    }

    let t0 = Instant::now();
    let tx_handle = sender.spawn_in(move || -> Result<(u64, String), String> {
        let mut s = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => break s,
                Err(e) => {
                    if Instant::now() + Duration::from_secs(1) >= deadline {
                        return Err(format!("sender: connect {addr}: {e}"));
                    }
                    thread::sleep(Duration::from_millis(200));
                }
            }
        };
        s.set_write_timeout(Some(stall)).unwrap();
        s.set_read_timeout(Some(stall)).unwrap();
        let seed = (unix_now() << 20)
            ^ (std::process::id() as u64)
            ^ (next_id() << 40)
            ^ 0x9E37_79B9_7F4A_7C15;
        let mut prng = Prng(seed | 1);
        let mut h = Sha256::new();
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        while sent < bytes {
            if Instant::now() >= deadline {
                return Err(format!("sender: deadline passed after {sent} bytes"));
            }
            let k = ((bytes - sent) as usize).min(buf.len());
            prng.fill(&mut buf[..k]);
            s.write_all(&buf[..k])
                .map_err(|e| format!("sender: write after {sent} bytes: {e}"))?;
            h.update(&buf[..k]);
            sent += k as u64;
        }
        s.shutdown(Shutdown::Write)
            .map_err(|e| format!("sender: shutdown: {e}"))?;
        // Wait for the receiver to close: it has read everything.
        let mut tmp = [0u8; 16];
        loop {
            match s.read(&mut tmp) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("sender: waiting for receiver close: {e}")),
            }
        }
        Ok((sent, hex::encode(h.finalize())))
    });

    let join = |h: thread::JoinHandle<Result<(u64, String), String>>, who: &str| match h.join() {
        Ok(r) => r,
        Err(_) => Err(format!("{who} thread panicked")),
    };
    let txr = join(tx_handle, "sender");
    let rxr = join(rx_handle, "receiver");
    let elapsed = t0.elapsed();
    match (txr, rxr) {
        (Ok((sent, sha_sent)), Ok((received, sha_received))) => Ok(TransferReport {
            sent,
            received,
            sha_sent,
            sha_received,
            elapsed,
        }),
        (t, r) => Err(format!(
            "transfer to {addr} failed: sender {t:?}; receiver {r:?}"
        )),
    }
}

/// Sends `count` UDP datagrams with `payload` from `src` (bound inside `ns`) to `dst`.
pub fn udp_send_from(ns: &Netns, src: SocketAddr, dst: SocketAddr, payload: &[u8], count: u32) {
    let payload = payload.to_vec();
    ns.run_in(move || {
        let s = UdpSocket::bind(src).unwrap_or_else(|e| panic!("bind udp {src}: {e}"));
        for _ in 0..count {
            s.send_to(&payload, dst)
                .unwrap_or_else(|e| panic!("send {src} -> {dst}: {e}"));
            thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Datagrams received on `sock` within `window` (each paired with its source).
pub fn udp_collect(sock: &UdpSocket, window: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return got;
        }
        sock.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => got.push((buf[..n].to_vec(), from)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("recv_from: {e}"),
        }
    }
}

/// Number of open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Binds a UDP socket on `addr` inside `ns` and returns it (it stays in `ns`).
pub fn bind_udp_in(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    ns.run_in(move || UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}")))
}

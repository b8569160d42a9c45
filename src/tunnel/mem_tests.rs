//! The device on in-memory TUNs, over real UDP on loopback: no root, no
//! namespace, no second implementation. What crosses here is the same code
//! path as on a TUN but for the two batch calls of [`super::TunIo`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::timeout;

use super::{mem_tun, Device, DeviceUpdate, MemTun, MemTunPeer, PeerUpdate};
use crate::keys::{Key, PublicKey};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// An IPv4/UDP packet from `src` to `dst` carrying `payload` (header
/// checksums left zero: nothing on this path checks them).
fn packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&2000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

struct End {
    device: Arc<Device<MemTun>>,
    tun: MemTunPeer,
    key: Key,
}

impl End {
    fn new(name: &str) -> End {
        End::with_capacity(name, 1024)
    }

    /// An end whose TUN queues hold `capacity` packets each way.
    fn with_capacity(name: &str, capacity: usize) -> End {
        let (mem, tun) = mem_tun(capacity);
        let device = Device::start(name, mem, 0).unwrap();
        let key = Key::generate_private();
        device
            .apply(&DeviceUpdate {
                private_key: Some(key.clone()),
                ..Default::default()
            })
            .unwrap();
        End {
            device: Arc::new(device),
            tun,
            key,
        }
    }

    fn public(&self) -> PublicKey {
        public(&self.key)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            self.device.status().listen_port,
        )
    }

    /// Make `other` a peer of this end, owning `ip`/32.
    fn peer(&self, other: &End, ip: Ipv4Addr) {
        let mut p = PeerUpdate::new(other.public());
        p.endpoint = Some(other.addr());
        p.allowed_ips = vec![format!("{ip}/32").parse().unwrap()];
        self.device
            .apply(&DeviceUpdate {
                peers: vec![p],
                ..Default::default()
            })
            .unwrap();
    }

    async fn send(&self, p: Vec<u8>) {
        self.tun.to_device.send(p).await.unwrap();
    }

    /// The next packet the device writes, if one comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Vec<u8>> {
        timeout(wait, self.tun.from_device.recv())
            .await
            .ok()
            .flatten()
    }
}

async fn pair() -> (End, End) {
    let a = End::new("mem-a");
    let b = End::new("mem-b");
    a.peer(&b, B);
    b.peer(&a, A);
    (a, b)
}

fn public(private: &Key) -> PublicKey {
    PublicKey(*private.public_key().as_bytes())
}

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_cross_both_ways_intact_and_in_order() {
    let (mut a, mut b) = pair().await;
    // The first packet waits for the handshake it starts.
    let first = packet(A, B, b"hello");
    a.send(first.clone()).await;
    assert_eq!(b.next(WAIT).await, Some(first));
    let sent: Vec<Vec<u8>> = (0..300u32)
        .map(|i| packet(A, B, &i.to_be_bytes().repeat(1 + i as usize % 300)))
        .collect();
    for p in &sent {
        a.send(p.clone()).await;
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match b.next(WAIT).await {
            Some(p) => got.push(p),
            None => break,
        }
    }
    assert_eq!(got.len(), sent.len(), "packets lost on loopback");
    assert!(got == sent, "packets changed or reordered");
    let back = packet(B, A, b"and back");
    b.send(back.clone()).await;
    assert_eq!(a.next(WAIT).await, Some(back));
    let st = a.device.status();
    assert!(st.peers[0].last_handshake.is_some());
    assert!(st.peers[0].tx_bytes > 300 * 32, "{:?}", st.peers[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_send_from_an_address_it_does_not_own() {
    let (a, mut b) = pair().await;
    a.send(packet(A, B, b"up")).await;
    assert!(b.next(WAIT).await.is_some());
    // Decrypts fine at B, but 10.0.0.99 is not A's: dropped.
    a.send(packet(Ipv4Addr::new(10, 0, 0, 99), B, b"spoofed"))
        .await;
    assert_eq!(b.next(QUIET).await, None, "a spoofed source was delivered");
    // No peer covers the destination: never leaves A.
    a.send(packet(A, Ipv4Addr::new(10, 9, 9, 9), b"nowhere"))
        .await;
    let ok = packet(A, B, b"still fine");
    a.send(ok.clone()).await;
    assert_eq!(b.next(WAIT).await, Some(ok));
    assert_eq!(b.next(QUIET).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_tun_ends_the_device_with_its_reason() {
    let a = End::new("mem-gone");
    let device = a.device.clone();
    drop(a.tun);
    let reason = timeout(WAIT, device.failed())
        .await
        .expect("device noticed");
    assert!(
        reason.contains("reading from the TUN device failed"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tun_drops_and_counts_instead_of_stalling() {
    let mut a = End::with_capacity("mem-full", 4);
    let b = End::new("mem-sender");
    a.peer(&b, B);
    b.peer(&a, A);
    let (device, tun) = (a.device.clone(), &mut a.tun);
    b.send(packet(B, A, b"handshake")).await;
    timeout(WAIT, tun.from_device.recv())
        .await
        .unwrap()
        .unwrap();
    // Nobody reads the receiving TUN now: 4 packets fit, the rest are refused.
    for i in 0..50u8 {
        b.send(packet(B, A, &[i; 100])).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while device.status().tun_refused < 46 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(device.status().tun_refused, 46);
    // The device still delivers once there is room.
    let mut got = 0;
    while tun.from_device.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(got, 4);
    b.send(packet(B, A, b"after")).await;
    let p = timeout(WAIT, tun.from_device.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&p[28..], b"after");
}

/// The UAPI's edge cases against a real device, no TUN, no `wg`: a bad
/// request is refused with an errno, applies nothing, and the socket goes
/// on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uapi_refuses_bad_requests_and_keeps_serving() {
    use std::os::unix::fs::DirBuilderExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let a = End::new("mem-uapi");
    let dir = std::env::temp_dir().join(format!("nc-uapi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    let path = dir.join("mem-uapi.sock");
    let listener = crate::uapi::UapiListener::bind_at(path.clone()).unwrap();
    let server = tokio::spawn({
        let device = a.device.clone();
        async move { listener.serve(device).await }
    });
    // One request, then EOF: the server answers and hangs up.
    let ask = |req: Vec<u8>| {
        let path = path.clone();
        async move {
            let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
            s.write_all(&req).await.unwrap();
            s.shutdown().await.unwrap();
            let mut out = String::new();
            let _ = timeout(WAIT, s.read_to_string(&mut out)).await;
            out
        }
    };
    let errno = |reply: &str| -> Option<i64> {
        reply
            .lines()
            .find_map(|l| l.strip_prefix("errno="))
            .and_then(|v| v.parse().ok())
    };
    let get = || ask(b"get=1\n\n".to_vec());

    let port = a.device.status().listen_port;
    let fresh = get().await;
    assert_eq!(errno(&fresh), Some(0), "{fresh}");
    assert!(fresh.contains(&format!("listen_port={port}\n")), "{fresh}");

    let peer = public(&Key::generate_private()).to_hex();
    let long = format!("set=1\nprivate_key={}\n\n", "a".repeat(10_000));
    for (req, what) in [
        ("set=1\nprivate_key=zzz\n\n".to_string(), "bad key"),
        (
            format!("set=1\nprivate_key={}\n\n", "g".repeat(64)),
            "non-hex key",
        ),
        (
            format!("set=1\npublic_key={peer}\nallowed_ip=10.0.0.0/33\n\n"),
            "bad CIDR",
        ),
        (
            format!("set=1\npublic_key={peer}\nallowed_ip=fd00::/129\n\n"),
            "bad v6 CIDR",
        ),
        ("set=1\nbogus=1\n\n".to_string(), "unknown key"),
        ("frobnicate=1\n\n".to_string(), "unknown operation"),
        (long, "10 000-byte line"),
    ] {
        let r = ask(req.into_bytes()).await;
        assert!(errno(&r).is_none_or(|e| e != 0), "{what}: accepted: {r:?}");
        let g = get().await;
        assert_eq!(errno(&g), Some(0), "{what}: not serving after it: {g:?}");
        assert!(!g.contains("/33") && !g.contains("/129"), "{what}: {g}");
        assert!(
            !g.contains(&peer),
            "{what}: a refused transaction left its peer: {g}"
        );
    }
    // No blank line before EOF: half a transaction, not applied (port 0
    // would have moved the device to another free port).
    ask(b"set=1\nlisten_port=0\n".to_vec()).await;
    assert_eq!(
        a.device.status().listen_port,
        port,
        "half a transaction applied"
    );
    // A whole one is.
    let r = ask(b"set=1\nlisten_port=0\n\n".to_vec()).await;
    assert_eq!(errno(&r), Some(0), "{r}");
    assert_ne!(a.device.status().listen_port, port);
    // The device key stayed what End::new set: no refused key got in.
    assert_eq!(a.device.status().private_key, Some(a.key.clone()));
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

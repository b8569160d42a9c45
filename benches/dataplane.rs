//! Per-packet cost of the data plane without a TUN, a namespace or another
//! process: two devices on in-memory TUNs (`tunnel::MemTun`). A burst goes
//! in at A's TUN and is timed until all of it has come out of B's: route,
//! encrypt, batch, send, receive, decrypt, check allowed IPs, write.
//! `mem_net` carries the datagrams over an in-memory switch
//! (`tunnel::MemNet`), so no kernel is involved and the figure is the
//! device's own work; `loopback` over UDP on loopback, so the difference is
//! what the kernel's UDP costs.
//!
//!     cargo bench --bench dataplane
//!
//! Root is not needed, but as root the loopback sockets get their 7 MiB
//! buffers, as in production; without, a burst may overflow loopback's
//! default buffers and the bench stops with a message instead of hanging.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use netconnect::keys::{Key, PublicKey};
use netconnect::tunnel::{
    mem_tun, Device, DeviceUpdate, KernelNet, MemNet, MemTun, MemTunPeer, Net, PeerUpdate,
};

fn main() {
    divan::main();
}

/// Packets per timed burst: a few reads' worth, well inside the UDP buffers.
const BURST: usize = 256;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn packet(size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&A.octets());
    p[16..20].copy_from_slice(&B.octets());
    p
}

struct End {
    device: Device<MemTun>,
    tun: MemTunPeer,
    key: Key,
}

fn end(net: Arc<dyn Net>) -> End {
    let (mem, tun) = mem_tun(4 * BURST);
    let device = Device::start_on("bench", mem, net, 0).expect("device");
    let key = Key::generate_private();
    device
        .apply(&DeviceUpdate {
            private_key: Some(key.clone()),
            ..Default::default()
        })
        .expect("key");
    End { device, tun, key }
}

fn link(from: &End, to: &End, ip: Ipv4Addr) {
    let mut p = PeerUpdate::new(PublicKey(*to.key.public_key().as_bytes()));
    p.endpoint = Some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        to.device.status().listen_port,
    ));
    p.allowed_ips = vec![format!("{ip}/32").parse().expect("cidr")];
    from.device
        .apply(&DeviceUpdate {
            peers: vec![p],
            ..Default::default()
        })
        .expect("peer");
}

/// A's TUN to B's TUN, `size`-byte IPv4 packets, over the in-memory
/// switch: the device alone.
#[divan::bench(args = [64, 1420])]
fn mem_net(bencher: Bencher, size: usize) {
    let net: Arc<dyn Net> = Arc::new(MemNet::new());
    tun_to_tun(bencher, size, net)
}

/// The same over UDP on loopback: the device and the kernel's UDP.
#[divan::bench(args = [64, 1420])]
fn loopback(bencher: Bencher, size: usize) {
    tun_to_tun(bencher, size, Arc::new(KernelNet))
}

fn tun_to_tun(bencher: Bencher, size: usize, net: Arc<dyn Net>) {
    // One thread for both devices: a burst's time is then the CPU work of
    // both ends (and of the kernel's UDP, on loopback), not how well two
    // workers happened to overlap it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (a, mut b) = rt.block_on(async {
        let a = end(net.clone());
        let b = end(net);
        link(&a, &b, B);
        link(&b, &a, A);
        (a, b)
    });
    let p = packet(size);
    let burst = |a: &End, b: &mut End| {
        rt.block_on(async {
            for _ in 0..BURST {
                a.tun
                    .to_device
                    .send(p.clone())
                    .await
                    .expect("device running");
            }
            for i in 0..BURST {
                let got = tokio::time::timeout(Duration::from_secs(5), b.tun.from_device.recv())
                    .await
                    .ok()
                    .flatten();
                assert!(
                    got.is_some(),
                    "packet {i} of {BURST} lost (on loopback: run as root for 7 MiB socket buffers)"
                );
            }
        })
    };
    // The first burst pays for the handshake.
    burst(&a, &mut b);
    bencher
        .counter(ItemsCount::new(BURST))
        .counter(BytesCount::new(BURST * size))
        .bench_local(|| burst(&a, &mut b));
}

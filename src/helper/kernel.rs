//! Kernel WireGuard in the VM. Docker Desktop's VM kernel has WireGuard, so
//! there the helper creates a `wireguard` link over rtnetlink, configures it
//! over generic netlink (what `wg setconf` does) and exits: the interface
//! lives on in the VM with no process of ours. On a kernel without the
//! module, creating the link fails with `EOPNOTSUPP` and the helper runs the
//! userspace data plane instead.
//!
//! The private key crosses into the kernel in one netlink message and is
//! never logged; errors carry the errno, not the message.

use std::net::{IpAddr, SocketAddr};

use futures::TryStreamExt as _;
use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr as NlAddr};

use crate::keys::{Key, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The kernel has no WireGuard: use the userspace peer.
    #[error("the kernel has no WireGuard support")]
    Unsupported,
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("creating WireGuard interface {iface} failed: {source}")]
    Link {
        iface: String,
        source: rtnetlink::Error,
    },
    #[error("configuring WireGuard interface {iface} over generic netlink failed: {reason}")]
    Genl { iface: String, reason: String },
}

/// The one peer the VM side has: the host.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    pub allowed_ips: Vec<IpNet>,
}

/// The `WG_CMD_SET_DEVICE` message that gives `iface` its key and exactly
/// these peers (replacing any it had), in the attribute order `wg setconf`
/// uses. Pure, so it is tested against a capture of `wg` itself.
pub fn set_device(
    iface: &str,
    private_key: &Key,
    listen_port: Option<u16>,
    fwmark: Option<u32>,
    peers: &[PeerConfig],
) -> WireguardMessage {
    let mut attributes = vec![
        WireguardAttribute::IfName(iface.to_owned()),
        WireguardAttribute::PrivateKey(*private_key.as_bytes()),
    ];
    if let Some(port) = listen_port {
        attributes.push(WireguardAttribute::ListenPort(port));
    }
    if let Some(mark) = fwmark {
        attributes.push(WireguardAttribute::Fwmark(mark));
    }
    attributes.push(WireguardAttribute::Flags(
        WireguardDeviceFlags::ReplacePeers,
    ));
    let peers = peers
        .iter()
        .map(|p| {
            let mut a = vec![
                WireguardPeerAttribute::PublicKey(p.public_key.0),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
            ];
            if let Some(ep) = p.endpoint {
                a.push(WireguardPeerAttribute::Endpoint(ep));
            }
            if let Some(ka) = p.persistent_keepalive {
                a.push(WireguardPeerAttribute::PersistentKeepalive(ka));
            }
            a.push(WireguardPeerAttribute::AllowedIps(
                p.allowed_ips.iter().map(allowed_ip).collect(),
            ));
            WireguardPeer(a)
        })
        .collect();
    attributes.push(WireguardAttribute::Peers(peers));
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes,
    }
}

fn allowed_ip(net: &IpNet) -> WireguardAllowedIp {
    let family = match net.addr() {
        IpAddr::V4(_) => WireguardAddressFamily::Ipv4,
        IpAddr::V6(_) => WireguardAddressFamily::Ipv6,
    };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(net.network()),
        WireguardAllowedIpAttr::Cidr(net.prefix_len()),
    ])
}

/// Create the `wireguard` link `iface`, replacing one left by an earlier
/// helper (its key and peer belong to a host session that is over).
/// `Unsupported` when the kernel has no WireGuard.
pub async fn create_link(iface: &str) -> Result<(), KernelError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::Socket)?;
    let task = tokio::spawn(conn);
    let result = async {
        let mut existing = handle.link().get().match_name(iface.to_owned()).execute();
        if let Ok(Some(link)) = existing.try_next().await {
            handle.link().del(link.header.index).execute().await?;
        }
        handle
            .link()
            .add(rtnetlink::LinkWireguard::new(iface).build())
            .execute()
            .await
    }
    .await;
    task.abort();
    match result {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(nix::libc::EOPNOTSUPP) => Err(KernelError::Unsupported),
        Err(source) => Err(KernelError::Link {
            iface: iface.into(),
            source,
        }),
    }
}

/// Delete `iface` (best effort: used to undo a half-made kernel setup).
pub async fn delete_link(iface: &str) {
    let Ok((conn, handle, _)) = rtnetlink::new_connection() else {
        return;
    };
    let task = tokio::spawn(conn);
    let mut links = handle.link().get().match_name(iface.to_owned()).execute();
    if let Ok(Some(link)) = links.try_next().await {
        let _ = handle.link().del(link.header.index).execute().await;
    }
    task.abort();
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// The message that moves the one peer `key` of `iface` to `endpoint`,
/// leaving its allowed IPs and the device as they are (the way home is
/// tried one candidate at a time, `super::endpoint`).
pub fn set_endpoint(iface: &str, key: &PublicKey, endpoint: SocketAddr) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfName(iface.to_owned()),
            WireguardAttribute::Peers(vec![WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(key.0),
                WireguardPeerAttribute::Endpoint(endpoint),
            ])]),
        ],
    }
}

/// Send `msg` to the kernel's WireGuard family and wait for its ack.
pub fn apply(iface: &str, msg: WireguardMessage) -> Result<(), KernelError> {
    let fail = |reason: String| KernelError::Genl {
        iface: iface.into(),
        reason,
    };
    let (sock, family) = open_family(iface)?;
    let mut genl = GenlMessage::from_payload(msg);
    genl.set_resolved_family_id(family);
    request(&sock, genl, 2, NLM_F_REQUEST | NLM_F_ACK).map_err(fail)?;
    Ok(())
}

/// When peer `key` of `iface` last completed a handshake (`wg show
/// IFACE latest-handshakes`); `None`: never.
pub fn last_handshake(
    iface: &str,
    key: &PublicKey,
) -> Result<Option<std::time::SystemTime>, KernelError> {
    let fail = |reason: String| KernelError::Genl {
        iface: iface.into(),
        reason,
    };
    let (sock, family) = open_family(iface)?;
    let mut genl = GenlMessage::from_payload(WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(iface.to_owned())],
    });
    genl.set_resolved_family_id(family);
    let replies = request(&sock, genl, 3, NLM_F_REQUEST | NLM_F_DUMP).map_err(fail)?;
    let messages = replies.into_iter().filter_map(|r| match r.payload {
        NetlinkPayload::InnerMessage(m) => Some(m.payload),
        _ => None,
    });
    Ok(handshake_of(messages, key))
}

/// The peer's last handshake in a `WG_CMD_GET_DEVICE` answer (it may
/// span several messages); zero seconds means never.
fn handshake_of(
    messages: impl IntoIterator<Item = WireguardMessage>,
    key: &PublicKey,
) -> Option<std::time::SystemTime> {
    for m in messages {
        for a in m.attributes {
            let WireguardAttribute::Peers(peers) = a else {
                continue;
            };
            for WireguardPeer(attrs) in peers {
                if !attrs
                    .iter()
                    .any(|p| matches!(p, WireguardPeerAttribute::PublicKey(k) if *k == key.0))
                {
                    continue;
                }
                for p in attrs {
                    if let WireguardPeerAttribute::LastHandshake(t) = p {
                        if t.seconds <= 0 {
                            return None;
                        }
                        return Some(
                            std::time::UNIX_EPOCH
                                + std::time::Duration::new(
                                    t.seconds as u64,
                                    t.nano_seconds.clamp(0, 999_999_999) as u32,
                                ),
                        );
                    }
                }
            }
        }
    }
    None
}

/// A generic netlink socket and the WireGuard family's id.
fn open_family(iface: &str) -> Result<(Socket, u16), KernelError> {
    let fail = |reason: String| KernelError::Genl {
        iface: iface.into(),
        reason,
    };
    let mut sock = Socket::new(NETLINK_GENERIC).map_err(|e| fail(e.to_string()))?;
    sock.bind_auto().map_err(|e| fail(e.to_string()))?;
    sock.connect(&NlAddr::new(0, 0))
        .map_err(|e| fail(e.to_string()))?;
    let family = resolve_family(&sock, "wireguard").map_err(fail)?;
    Ok((sock, family))
}

fn resolve_family(sock: &Socket, name: &str) -> Result<u16, String> {
    let msg = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
    });
    let replies = request(sock, msg, 1, NLM_F_REQUEST | NLM_F_ACK)
        .map_err(|e| format!("generic netlink family {name:?}: {e}"))?;
    for reply in replies {
        if let NetlinkPayload::InnerMessage(m) = reply.payload {
            for nla in m.payload.nlas {
                if let GenlCtrlAttrs::FamilyId(id) = nla {
                    return Ok(id);
                }
            }
        }
    }
    Err(format!("the kernel has no generic netlink family {name:?}"))
}

/// One request (`NLM_F_ACK`, or `NLM_F_DUMP`); the replies before the
/// ack or the dump's end.
fn request<F>(
    sock: &Socket,
    payload: GenlMessage<F>,
    seq: u32,
    flags: u16,
) -> Result<Vec<NetlinkMessage<GenlMessage<F>>>, String>
where
    F: netlink_packet_generic::GenlFamily
        + netlink_packet_core::Emitable
        + netlink_packet_core::ParseableParametrized<[u8], netlink_packet_generic::GenlHeader>
        + std::fmt::Debug,
{
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    sock.send(&buf, 0).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        let (data, _) = sock.recv_from_full().map_err(|e| e.to_string())?;
        let mut off = 0;
        while off + 16 <= data.len() {
            let reply = NetlinkMessage::<GenlMessage<F>>::deserialize(&data[off..])
                .map_err(|e| format!("unreadable netlink reply: {e}"))?;
            let len = reply.header.length as usize;
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
            match reply.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(out),
                        Some(code) => {
                            Err(std::io::Error::from_raw_os_error(-code.get()).to_string())
                        }
                    }
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::InnerMessage(_) => out.push(reply),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    /// What `wg setconf` sends for a device with one peer, captured with
    /// nlmon and published in netlink-packet-wireguard's tests (generic
    /// netlink header first, netlink header stripped): our builder must
    /// produce it byte for byte from the same configuration.
    #[rustfmt::skip]
    const WG_SETCONF: [u8; 196] = [
        0x01, 0x01, 0x00, 0x00, 0x08, 0x00, 0x02, 0x00, 0x77, 0x67, 0x30, 0x00,
        0x24, 0x00, 0x03, 0x00, 0x08, 0xf8, 0x74, 0x0f, 0xc2, 0x87, 0xda, 0x7a,
        0x1c, 0x44, 0xfc, 0x1a, 0x73, 0x5c, 0xec, 0xf3, 0xb0, 0x9e, 0x33, 0x81,
        0x18, 0x22, 0x08, 0x75, 0x34, 0x8b, 0x88, 0xac, 0x75, 0x5b, 0xfe, 0x59,
        0x06, 0x00, 0x06, 0x00, 0x03, 0xd9, 0x00, 0x00, 0x08, 0x00, 0x07, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x7c, 0x00, 0x08, 0x80, 0x78, 0x00, 0x00, 0x80, 0x24, 0x00, 0x01, 0x00,
        0x7b, 0xff, 0x32, 0x8c, 0x65, 0x6b, 0x0d, 0xa2, 0x38, 0x58, 0x16, 0xee,
        0x0b, 0x47, 0xe9, 0xdc, 0x5b, 0xba, 0x3b, 0xf7, 0x79, 0x82, 0xd8, 0xdc,
        0x99, 0x34, 0x73, 0xed, 0xe5, 0x72, 0xb4, 0x0f, 0x08, 0x00, 0x03, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x48, 0x00, 0x09, 0x80, 0x1c, 0x00, 0x00, 0x80,
        0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0x00, 0x02, 0x00,
        0xc0, 0x00, 0x02, 0x02, 0x05, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x00,
        0x28, 0x00, 0x00, 0x80, 0x06, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x02, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x05, 0x00, 0x03, 0x00,
        0x80, 0x00, 0x00, 0x00,
    ];

    fn key(bytes: &[u8]) -> [u8; 32] {
        bytes.try_into().unwrap()
    }

    #[test]
    fn set_device_matches_a_capture_of_wg_setconf() {
        let private = Key::from_bytes(key(&WG_SETCONF[16..48]));
        let peer = PeerConfig {
            public_key: PublicKey(key(&WG_SETCONF[84..116])),
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: vec![
                "192.0.2.2/32".parse().unwrap(),
                "2001:db8:1::2/128".parse().unwrap(),
            ],
        };
        let msg = set_device("wg0", &private, Some(55555), Some(0), &[peer]);
        let genl = GenlMessage::from_payload(msg);
        let mut buf = vec![0u8; genl.buffer_len()];
        genl.emit(&mut buf);
        assert_eq!(buf, WG_SETCONF);
    }

    #[test]
    fn the_helper_message_carries_endpoint_and_keepalive() {
        let private = Key::from_bytes([7; 32]);
        let peer = PeerConfig {
            public_key: PublicKey([9; 32]),
            endpoint: Some("192.168.65.254:51820".parse().unwrap()),
            persistent_keepalive: Some(0),
            allowed_ips: vec!["10.33.33.1/32".parse().unwrap()],
        };
        let msg = set_device("netconnect0", &private, None, None, &[peer]);
        let WireguardAttribute::Peers(peers) = msg.attributes.last().unwrap() else {
            panic!("peers last: {msg:?}")
        };
        assert_eq!(
            peers[0].0,
            vec![
                WireguardPeerAttribute::PublicKey([9; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                WireguardPeerAttribute::Endpoint("192.168.65.254:51820".parse().unwrap()),
                // Zero clears a keepalive an older helper left.
                WireguardPeerAttribute::PersistentKeepalive(0),
                WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
                    WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                    WireguardAllowedIpAttr::IpAddr("10.33.33.1".parse().unwrap()),
                    WireguardAllowedIpAttr::Cidr(32),
                ])]),
            ]
        );
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, WireguardAttribute::ListenPort(_))));
    }

    /// A `WG_CMD_GET_DEVICE` answer as the kernel sends it (emitted and
    /// parsed back, so the wire form is exercised): two peers, the host's
    /// with a handshake, the other never; and the set-endpoint message
    /// names only the interface and the peer's key and endpoint.
    #[test]
    fn last_handshake_is_read_from_the_peer_s_attributes() {
        use netlink_packet_core::ParseableParametrized;
        use netlink_packet_generic::{GenlFamily, GenlHeader};
        use netlink_packet_wireguard::WireguardTimeSpec;
        let host = PublicKey([7; 32]);
        let other = PublicKey([8; 32]);
        let peer = |k: &PublicKey, s: i64| {
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(k.0),
                WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                    seconds: s,
                    nano_seconds: 5,
                }),
            ])
        };
        let answer = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::IfName("nc0".into()),
                WireguardAttribute::Peers(vec![peer(&other, 0), peer(&host, 1_700_000_000)]),
            ],
        };
        let mut buf = vec![0; answer.buffer_len()];
        answer.emit(&mut buf);
        let back = WireguardMessage::parse_with_param(
            &buf,
            GenlHeader {
                cmd: answer.command(),
                version: 1,
            },
        )
        .unwrap();
        let want = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        assert_eq!(handshake_of([back.clone()], &host), Some(want));
        assert_eq!(handshake_of([back], &other), None);
        assert_eq!(handshake_of([], &host), None);

        let m = set_endpoint("nc0", &host, "192.168.5.2:51820".parse().unwrap());
        assert_eq!(
            m.attributes,
            vec![
                WireguardAttribute::IfName("nc0".into()),
                WireguardAttribute::Peers(vec![WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey(host.0),
                    WireguardPeerAttribute::Endpoint("192.168.5.2:51820".parse().unwrap()),
                ])]),
            ]
        );
    }

    /// The generic netlink transport against the real kernel: the control
    /// family always exists (id 0x10), WireGuard's does not without the
    /// module, and asking it to configure a device then fails cleanly.
    #[test]
    fn generic_netlink_resolves_families_from_the_real_kernel() {
        let mut sock = Socket::new(NETLINK_GENERIC).unwrap();
        sock.bind_auto().unwrap();
        sock.connect(&NlAddr::new(0, 0)).unwrap();
        assert_eq!(resolve_family(&sock, "nlctrl"), Ok(0x10));
        let err = resolve_family(&sock, "no-such-family").unwrap_err();
        assert!(err.contains("No such file or directory"), "{err}");
        if !std::path::Path::new("/sys/module/wireguard").exists() {
            let msg = set_device("nc-none", &Key::from_bytes([1; 32]), None, None, &[]);
            let err = apply("nc-none", msg).unwrap_err().to_string();
            assert!(
                err.contains("nc-none") && err.contains("No such file"),
                "{err}"
            );
        }
    }

    /// This machine's kernel has no WireGuard module (nor does CI's): the
    /// helper must see `Unsupported`, its cue for the userspace peer, and
    /// leave no interface behind. Needs root (rtnetlink writes).
    #[tokio::test]
    async fn a_kernel_without_wireguard_reports_unsupported() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs tests as root"
            );
            eprintln!("skipped: needs root");
            return;
        }
        let has_module = std::path::Path::new("/sys/module/wireguard").exists();
        let iface = format!("nckt{}", std::process::id() % 100_000);
        let r = create_link(&iface).await;
        if has_module {
            r.expect("the kernel has WireGuard: creating the link must work");
            delete_link(&iface).await;
        } else {
            assert!(matches!(r, Err(KernelError::Unsupported)), "{r:?}");
        }
        assert!(!std::path::Path::new(&format!("/sys/class/net/{iface}")).exists());
    }
}

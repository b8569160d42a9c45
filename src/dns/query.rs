//! One question to one DNS server, the way `doctor` asks netconnect's own:
//! straight to its address, not through the system's resolver (that is
//! the next link `doctor` checks, separately).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no answer from {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
    /// ICMP port unreachable, or a TCP reset: nothing listens there.
    #[error("nothing listens on {0}")]
    Refused(SocketAddr),
    #[error("{0:?} is not a DNS name")]
    BadName(String),
    #[error("asking {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("unreadable answer from {0}: {1}")]
    Garbled(SocketAddr, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Ask `server` for `name`'s records of `qtype`.
pub async fn ask(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    transport: Transport,
    timeout: Duration,
) -> Result<Reply, QueryError> {
    let m = exchange(server, &question(name, qtype)?, transport, timeout).await?;
    Ok(Reply {
        code: m.metadata.response_code,
        authoritative: m.metadata.authoritative,
        addresses: m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect(),
    })
}

/// A recursive question for `name`'s records of `qtype`, with a random id.
pub fn question(name: &str, qtype: RecordType) -> Result<Message, QueryError> {
    let qname = Name::from_ascii(name).map_err(|_| QueryError::BadName(name.to_owned()))?;
    let id: u16 = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, qtype));
    Ok(msg)
}

/// Send `msg` to `server` and wait for the message that answers it (same
/// id), bounded by `timeout`.
pub async fn exchange(
    server: SocketAddr,
    msg: &Message,
    transport: Transport,
    timeout: Duration,
) -> Result<Message, QueryError> {
    let id = msg.metadata.id;
    let bytes = msg
        .to_vec()
        .map_err(|e| QueryError::Garbled(server, e.to_string()))?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset => {
            QueryError::Refused(server)
        }
        _ => QueryError::Io(server, e),
    };
    let exchange = async {
        match transport {
            Transport::Udp => {
                let bind: SocketAddr = if server.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let sock = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
                sock.connect(server).await.map_err(io)?;
                sock.send(&bytes).await.map_err(io)?;
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = sock.recv(&mut buf).await.map_err(io)?;
                    match Message::from_vec(&buf[..n]) {
                        Ok(m) if m.metadata.id == id => return Ok(m),
                        // Someone else's answer, or noise: keep waiting.
                        _ => continue,
                    }
                }
            }
            Transport::Tcp => {
                let mut s = tokio::net::TcpStream::connect(server).await.map_err(io)?;
                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                s.write_all(&framed).await.map_err(io)?;
                let len = s.read_u16().await.map_err(io)?;
                let mut buf = vec![0u8; usize::from(len)];
                s.read_exact(&mut buf).await.map_err(io)?;
                Message::from_vec(&buf).map_err(|e| QueryError::Garbled(server, e.to_string()))
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| QueryError::Timeout(server, timeout))?
}

/// The server answering the table, end to end through hickory's sockets
/// and wire format (on loopback, port 0: no root needed).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::names::{Domain, Table};
    use crate::dns::server::{serve, ServeError, Zone};
    use crate::docker::ContainerInfo;

    fn container(name: &str, addresses: &[&str]) -> ContainerInfo {
        ContainerInfo {
            id: name.into(),
            name: name.into(),
            labels: Default::default(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    /// Docker's `_` and the wildcard survive hickory's wire format both
    /// ways: the question's name as asked, the answer's owner the same.
    #[tokio::test]
    async fn underscores_and_the_wildcard_on_the_wire() {
        let domain: Domain = "docker.internal".parse().unwrap();
        let zone = Zone::new(domain.clone());
        let routed = ["172.18.0.0/16".parse().unwrap()].into();
        zone.set(Table::build(
            &domain,
            &[container("shop_web_1", &["172.18.0.2"])],
            &routed,
        ));
        let server = serve("127.0.0.1:0".parse().unwrap(), zone.clone())
            .await
            .unwrap();
        let t = Duration::from_secs(2);
        for q in [
            "shop_web_1.docker.internal",
            "shop-web-1.docker.internal",
            "static.shop_web_1.docker.internal",
        ] {
            let r = ask(server.addr, q, RecordType::A, Transport::Udp, t)
                .await
                .unwrap();
            assert_eq!(r.code, ResponseCode::NoError, "{q}");
            assert_eq!(
                r.addresses,
                ["172.18.0.2".parse::<IpAddr>().unwrap()],
                "{q}"
            );
        }
        let r = ask(
            server.addr,
            "shop_web_2.docker.internal",
            RecordType::A,
            Transport::Udp,
            t,
        )
        .await
        .unwrap();
        assert_eq!(r.code, ResponseCode::NXDomain);
        server.stop().await;
    }

    /// A pointer, a label domain and a reverse zone's SOA, as a resolver
    /// reads them off the wire.
    #[tokio::test]
    async fn pointers_and_label_domains_on_the_wire() {
        use hickory_proto::op::Message;
        let domain: Domain = "docker.internal".parse().unwrap();
        let zone = Zone::new(domain.clone());
        let routed = ["172.18.0.0/16".parse().unwrap()].into();
        let mut web = container("shop_web_1", &["172.18.0.2"]);
        web.labels
            .insert(crate::dns::names::DOMAINS_LABEL.into(), "shop.test".into());
        zone.set(Table::build(&domain, &[web], &routed));
        let server = serve("127.0.0.1:0".parse().unwrap(), zone.clone())
            .await
            .unwrap();
        let t = Duration::from_secs(2);
        let m: Message = exchange(
            server.addr,
            &question("2.0.18.172.in-addr.arpa.", RecordType::PTR).unwrap(),
            Transport::Udp,
            t,
        )
        .await
        .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        let ptr: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(ptr, ["shop_web_1.docker.internal."]);
        // No such address: NXDOMAIN, with the reverse zone's SOA.
        let m = exchange(
            server.addr,
            &question("9.0.18.172.in-addr.arpa.", RecordType::PTR).unwrap(),
            Transport::Tcp,
            t,
        )
        .await
        .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let soa: Vec<String> = m.authorities.iter().map(|r| r.name.to_string()).collect();
        assert_eq!(soa, ["18.172.in-addr.arpa."]);
        let r = ask(
            server.addr,
            "www.shop.test",
            RecordType::A,
            Transport::Udp,
            t,
        )
        .await
        .unwrap();
        assert_eq!(r.addresses, ["172.18.0.2".parse::<IpAddr>().unwrap()]);
        // Outside every zone: refused, as before.
        let r = ask(
            server.addr,
            "2.2.0.192.in-addr.arpa",
            RecordType::PTR,
            Transport::Udp,
            t,
        )
        .await
        .unwrap();
        assert_eq!(r.code, ResponseCode::Refused);
        server.stop().await;
    }

    #[tokio::test]
    async fn answers_over_udp_and_tcp_and_follows_the_table() {
        let domain: Domain = "docker.internal".parse().unwrap();
        let zone = Zone::new(domain.clone());
        let routed = ["172.18.0.0/16".parse().unwrap()].into();
        zone.set(Table::build(
            &domain,
            &[container("web", &["172.18.0.2"])],
            &routed,
        ));
        let server = serve("127.0.0.1:0".parse().unwrap(), zone.clone())
            .await
            .unwrap();
        let t = Duration::from_secs(2);
        let at = server.addr;
        for tr in [Transport::Udp, Transport::Tcp] {
            let r = ask(at, "Web.docker.internal.", RecordType::A, tr, t)
                .await
                .unwrap();
            assert_eq!(r.code, ResponseCode::NoError, "{tr:?}");
            assert!(r.authoritative);
            assert_eq!(
                r.addresses,
                ["172.18.0.2".parse::<IpAddr>().unwrap()],
                "{tr:?}"
            );
            let r = ask(at, "db.docker.internal", RecordType::A, tr, t)
                .await
                .unwrap();
            assert_eq!(r.code, ResponseCode::NXDomain, "{tr:?}");
            let r = ask(at, "example.com", RecordType::A, tr, t).await.unwrap();
            assert_eq!(r.code, ResponseCode::Refused, "{tr:?}");
            assert!(!r.authoritative);
        }
        let r = ask(
            at,
            "web.docker.internal",
            RecordType::AAAA,
            Transport::Udp,
            t,
        )
        .await
        .unwrap();
        assert_eq!((r.code, r.addresses.len()), (ResponseCode::NoError, 0));
        // A new table is answered at once.
        zone.set(Table::build(
            &domain,
            &[container("db", &["172.18.0.3"])],
            &routed,
        ));
        let r = ask(at, "web.docker.internal", RecordType::A, Transport::Udp, t)
            .await
            .unwrap();
        assert_eq!(r.code, ResponseCode::NXDomain);
        let r = ask(at, "db.docker.internal", RecordType::A, Transport::Udp, t)
            .await
            .unwrap();
        assert_eq!(r.addresses, ["172.18.0.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(zone.answered(), 9);

        // The port is taken while it serves.
        match serve(at, Zone::new(domain)).await {
            Err(ServeError::InUse {
                transport: "UDP",
                addr,
            }) => assert_eq!(addr, at),
            other => panic!("{:?}", other.map(|s| s.addr)),
        }
        server.stop().await;
        // Stopped: nothing listens (ICMP port unreachable on loopback).
        let e = ask(at, "db.docker.internal", RecordType::A, Transport::Udp, t)
            .await
            .unwrap_err();
        assert!(matches!(e, QueryError::Refused(_)), "{e}");
    }

    /// A cluster's zone through the server: asked of the cluster's DNS
    /// (here another of our servers, standing for CoreDNS), answered as
    /// it answered, under the alias zone with the names asked by; a
    /// cluster whose DNS is gone is SERVFAIL, not a wait.
    #[tokio::test]
    async fn cluster_zones_are_forwarded_and_renamed() {
        use crate::kube::names::{Forward, Forwards};
        use crate::kube::{ClusterId, Flavor};
        let t = Duration::from_secs(3);
        let svc: Domain = "default.svc.cluster.local".parse().unwrap();
        let coredns = Zone::new(svc.clone());
        coredns.set(Table::build(
            &svc,
            &[container("sampleservice", &["10.96.28.96"])],
            &["10.96.0.0/16".parse().unwrap()].into(),
        ));
        let coredns = serve("127.0.0.1:0".parse().unwrap(), coredns)
            .await
            .unwrap();
        let ours: Domain = "docker.internal".parse().unwrap();
        let front = Zone::new(ours.clone());
        let id = ClusterId {
            flavor: Flavor::Kind,
            name: "dev".into(),
        };
        let zone = |zone: &str, servers| Forward {
            cluster: id.clone(),
            zone: zone.into(),
            domain: "cluster.local".into(),
            servers,
        };
        front.set_forwards(Forwards::from_zones(vec![
            zone("cluster.local", vec![coredns.addr]),
            zone("dev.kube.docker.internal", vec![coredns.addr]),
        ]));
        let server = serve("127.0.0.1:0".parse().unwrap(), front.clone())
            .await
            .unwrap();
        let want: Vec<IpAddr> = vec!["10.96.28.96".parse().unwrap()];
        for tr in [Transport::Udp, Transport::Tcp] {
            let r = ask(
                server.addr,
                "sampleservice.default.svc.cluster.local",
                RecordType::A,
                tr,
                t,
            )
            .await
            .unwrap();
            assert_eq!(
                (r.code, &r.addresses),
                (ResponseCode::NoError, &want),
                "{tr:?}"
            );
            assert!(!r.authoritative, "a relayed answer is not ours");
        }
        let alias = "sampleservice.default.svc.dev.kube.docker.internal.";
        let m = exchange(
            server.addr,
            &question(alias, RecordType::A).unwrap(),
            Transport::Udp,
            t,
        )
        .await
        .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(
            m.answers[0].name.to_string(),
            alias,
            "answered under the name asked"
        );
        assert_eq!(m.queries[0].name().to_string(), alias);
        let r = ask(
            server.addr,
            "nothere.default.svc.cluster.local",
            RecordType::A,
            Transport::Udp,
            t,
        )
        .await
        .unwrap();
        assert_eq!(
            r.code,
            ResponseCode::NXDomain,
            "the cluster's no is relayed"
        );
        // Our own names are still ours.
        let r = ask(
            server.addr,
            "web.docker.internal",
            RecordType::A,
            Transport::Udp,
            t,
        )
        .await
        .unwrap();
        assert_eq!(r.code, ResponseCode::NXDomain);
        assert!(r.authoritative);
        coredns.stop().await;
        let r = ask(
            server.addr,
            "sampleservice.default.svc.cluster.local",
            RecordType::A,
            Transport::Udp,
            t,
        )
        .await
        .unwrap();
        assert_eq!(r.code, ResponseCode::ServFail);
        // No cluster: cluster.local is not ours to answer.
        front.set_forwards(Forwards::default());
        let r = ask(
            server.addr,
            "sampleservice.default.svc.cluster.local",
            RecordType::A,
            Transport::Udp,
            t,
        )
        .await
        .unwrap();
        assert_eq!(r.code, ResponseCode::Refused);
        server.stop().await;
    }
}

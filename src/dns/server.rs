//! The names served: hickory's server does the sockets and the wire
//! format (UDP and TCP, truncation, EDNS); this module only turns a
//! question into [`Table::lookup`] and its [`Answer`] into records.
//!
//! The table lives in a [`Zone`] the session replaces whole at each
//! change; a question reads whichever table is current, so an answer is
//! never half old, half new.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use parking_lot::RwLock;
use tracing::{debug, warn};

use super::names::{Answer, Domain, QType, Table};
use super::query::{self, Transport};
use super::TTL;
use crate::kube::names::{Ask, Forwards};

/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_QUEUE: usize = 32;
/// How long a cluster's DNS server is given for one question; a resolver
/// asks again after a few seconds itself.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// The current table, shared by the session (which replaces it) and the
/// server (which reads it).
#[derive(Debug)]
pub struct Zone {
    table: RwLock<Arc<Table>>,
    /// Zones answered by a cluster's DNS service (`crate::kube::names`),
    /// looked at before the table.
    forwards: RwLock<Arc<Forwards>>,
    /// The SOA serial: one more at each change, so a resolver that looks
    /// can tell the zone changed.
    serial: AtomicU32,
    answered: AtomicU64,
}

impl Zone {
    pub fn new(domain: Domain) -> Arc<Zone> {
        Arc::new(Zone {
            table: RwLock::new(Arc::new(Table::empty(domain))),
            forwards: RwLock::new(Arc::new(Forwards::default())),
            serial: AtomicU32::new(1),
            answered: AtomicU64::new(0),
        })
    }

    /// Replace the table; a table equal to the current one changes nothing.
    pub fn set(&self, table: Table) -> bool {
        let mut cur = self.table.write();
        if **cur == table {
            return false;
        }
        *cur = Arc::new(table);
        self.serial.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub fn current(&self) -> Arc<Table> {
        self.table.read().clone()
    }

    /// Replace the forwarded zones; equal ones change nothing.
    pub fn set_forwards(&self, forwards: Forwards) -> bool {
        let mut cur = self.forwards.write();
        if **cur == forwards {
            return false;
        }
        *cur = Arc::new(forwards);
        true
    }

    pub fn forwards(&self) -> Arc<Forwards> {
        self.forwards.read().clone()
    }

    /// Questions answered since the start.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

/// The server once listening; [`DnsServer::stop`] closes its sockets.
pub struct DnsServer {
    server: hickory_server::Server<Handler>,
    pub addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another program holds the port: the caller names it if it can.
    #[error("{transport} port {} on {} is already in use", addr.port(), addr.ip())]
    InUse {
        transport: &'static str,
        addr: SocketAddr,
    },
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl ServeError {
    pub fn transport(&self) -> &'static str {
        match self {
            ServeError::InUse { transport, .. } | ServeError::Bind { transport, .. } => transport,
        }
    }
}

/// Listen on `addr`, UDP and TCP, and answer from `zone` until stopped.
pub async fn serve(addr: SocketAddr, zone: Arc<Zone>) -> Result<DnsServer, ServeError> {
    let err = |transport, source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            ServeError::InUse { transport, addr }
        } else {
            ServeError::Bind {
                transport,
                addr,
                source,
            }
        }
    };
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|e| err("UDP", e))?;
    // Port 0 (tests): TCP on the port UDP got.
    let addr = udp.local_addr().map_err(|e| err("UDP", e))?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| err("TCP", e))?;
    let mut server = hickory_server::Server::new(Handler { zone });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, TCP_QUEUE);
    Ok(DnsServer { server, addr })
}

impl DnsServer {
    pub async fn stop(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            warn!(error = %e, "DNS server stopped with an error");
        }
    }
}

pub struct Handler {
    zone: Arc<Zone>,
}

impl Handler {
    /// The SOA of the zone `apex` (the domain, a label domain, a reverse
    /// zone); the contact is always under the domain.
    fn soa(&self, table: &Table, apex: &str) -> Option<Record> {
        let apex = Name::from_ascii(format!("{apex}.")).ok()?;
        let rname = Name::from_ascii(format!("hostmaster.{}.", table.domain())).ok()?;
        let serial = self.zone.serial.load(Ordering::Relaxed);
        // Refresh, retry and expire mean nothing without secondaries; the
        // minimum is how long "no such name" may be cached.
        let soa = SOA::new(apex.clone(), rname, serial, 3600, 600, 86400, TTL);
        Some(Record::from_rdata(apex, TTL, RData::SOA(soa)))
    }
}

/// The question's type as the names' rules know it.
pub fn qtype(t: RecordType) -> QType {
    match t {
        RecordType::A => QType::A,
        RecordType::AAAA => QType::Aaaa,
        RecordType::PTR => QType::Ptr,
        RecordType::ANY => QType::Any,
        RecordType::SOA => QType::Soa,
        _ => QType::Other,
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let mut edns = None;
        if let Some(asked) = &request.edns {
            let mut e = Edns::new();
            e.set_max_payload(asked.max_payload().max(512));
            e.set_version(0);
            edns = Some(e);
        }
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let query = match request.queries.queries() {
            [q] if request.metadata.op_code == OpCode::Query
                && request.metadata.message_type == MessageType::Query =>
            {
                q
            }
            _ => {
                meta.response_code = if request.metadata.op_code == OpCode::Query {
                    ResponseCode::FormErr
                } else {
                    ResponseCode::NotImp
                };
                return send(&mut response, builder.build_no_records(meta)).await;
            }
        };
        if let Some(ask) = self.zone.forwards().route(&query.name().to_string()) {
            self.zone.answered.fetch_add(1, Ordering::Relaxed);
            let (answers, authority) = match forward(&ask, query.query_type()).await {
                Ok(reply) => {
                    meta.response_code = reply.metadata.response_code;
                    meta.recursion_available = true;
                    relay(reply, &ask)
                }
                Err(e) => {
                    debug!(name = %query.name(), error = %e, "the cluster's DNS did not answer");
                    meta.response_code = ResponseCode::ServFail;
                    (Vec::new(), Vec::new())
                }
            };
            let msg = builder.build(meta, &answers, &[], &authority, &[]);
            return send(&mut response, msg).await;
        }
        let table = self.zone.current();
        let qname = query.name().to_string();
        let (answer, apex) = table.answer(&qname, qtype(query.query_type()));
        let apex = apex.unwrap_or(table.domain().as_str()).to_owned();
        debug!(name = %query.name(), qtype = %query.query_type(), ?answer, "DNS question");
        self.zone.answered.fetch_add(1, Ordering::Relaxed);
        let name = Name::from(query.name().clone());
        let mut answers = Vec::new();
        let mut authority = Vec::new();
        meta.authoritative = true;
        match answer {
            Answer::Refused => {
                meta.authoritative = false;
                meta.response_code = ResponseCode::Refused;
            }
            Answer::NxDomain => {
                meta.response_code = ResponseCode::NXDomain;
                authority.extend(self.soa(&table, &apex));
            }
            Answer::NoData => authority.extend(self.soa(&table, &apex)),
            Answer::Soa => answers.extend(self.soa(&table, &apex)),
            Answer::Addresses(addrs) => answers.extend(addrs.into_iter().map(|a| {
                let rdata = match a {
                    std::net::IpAddr::V4(a) => RData::A(A(a)),
                    std::net::IpAddr::V6(a) => RData::AAAA(AAAA(a)),
                };
                Record::from_rdata(name.clone(), TTL, rdata)
            })),
            Answer::Names(names) => answers.extend(names.into_iter().filter_map(|n| {
                let target = Name::from_ascii(format!("{n}.")).ok()?;
                Some(Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::PTR(hickory_server::proto::rr::rdata::PTR(target)),
                ))
            })),
        }
        let msg = builder.build(meta, &answers, &[], &authority, &[]);
        send(&mut response, msg).await
    }
}

/// Ask the cluster's DNS servers in turn, by UDP, and again by TCP when
/// the answer was cut.
async fn forward(
    ask: &Ask,
    qtype: RecordType,
) -> Result<hickory_server::proto::op::Message, String> {
    let msg = query::question(&format!("{}.", ask.name), qtype).map_err(|e| e.to_string())?;
    let mut last = String::from("no DNS server");
    for server in &ask.servers {
        match query::exchange(*server, &msg, Transport::Udp, FORWARD_TIMEOUT).await {
            Ok(m) if m.metadata.truncation => {
                match query::exchange(*server, &msg, Transport::Tcp, FORWARD_TIMEOUT).await {
                    Ok(m) => return Ok(m),
                    Err(e) => last = e.to_string(),
                }
            }
            Ok(m) => return Ok(m),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// The cluster's answer and authority records under the names they were
/// asked by (an alias zone's), CNAME targets too; nothing else changed.
pub fn relay(reply: hickory_server::proto::op::Message, ask: &Ask) -> (Vec<Record>, Vec<Record>) {
    let rename = |n: &Name| -> Name {
        ask.rename(&n.to_string())
            .and_then(|r| Name::from_ascii(format!("{r}.")).ok())
            .unwrap_or_else(|| n.clone())
    };
    let fix = |mut r: Record| -> Record {
        r.name = rename(&r.name);
        if let RData::CNAME(c) = &r.data {
            r.data = RData::CNAME(hickory_server::proto::rr::rdata::CNAME(rename(&c.0)));
        }
        r
    };
    (
        reply.answers.into_iter().map(fix).collect(),
        reply.authorities.into_iter().map(fix).collect(),
    )
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let meta = *msg.metadata();
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            debug!(error = %e, "DNS answer not sent");
            let mut h = hickory_server::proto::op::Header {
                metadata: meta,
                counts: Default::default(),
            };
            h.metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(h)
        }
    }
}

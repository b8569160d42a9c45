//! Linux: the routing table and the tunnel watched through rtnetlink
//! notifications (what `ip monitor route link` reads). One netlink socket
//! bound to the link and IPv4/IPv6 route groups, read by the daemon's own
//! task: no connection task, no timer; at rest it is one blocked read.
//!
//! Not rtnetlink's `Connection`: it would read the socket in a task of its
//! own and queue every notification on an unbounded channel. Here the
//! kernel's socket buffer is the only queue, and when it overflows
//! (ENOBUFS) we say so as an event instead of losing it.

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::route::{RouteFlags, RouteHeader, RouteMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use nix::libc;

use crate::routes::WatchEvent;

/// Watches the routing table and interface `name`. See
/// [`RouteWatch::next`].
pub struct RouteWatch {
    socket: TokioSocket,
    name: String,
    /// Our interface's index; `None` if it did not exist when watching
    /// began, which the first event reports.
    index: Option<u32>,
    gone_at_start: bool,
}

impl RouteWatch {
    /// Subscribes first, then looks the interface up: an interface deleted
    /// in between is reported, not missed. Needs a tokio runtime.
    pub(super) fn new(name: &str) -> std::io::Result<RouteWatch> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
        let groups = libc::RTMGRP_LINK | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE;
        socket
            .socket_mut()
            .bind(&SocketAddr::new(0, groups as u32))?;
        let index = nix::net::if_::if_nametoindex(name).ok();
        Ok(RouteWatch {
            socket,
            name: name.to_owned(),
            index,
            gone_at_start: index.is_none(),
        })
    }

    /// The next change, with whatever else is already queued folded into
    /// it (a route flush is one event, not a hundred). `None` when the
    /// socket failed: watch again, and re-read the table meanwhile.
    ///
    /// Cancel-safe: the only await is the socket's readiness, and a read
    /// that completes is classified without awaiting again.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        if std::mem::take(&mut self.gone_at_start) {
            return Some(WatchEvent::InterfaceGone);
        }
        loop {
            let first = match self.socket.recv_from_full().await {
                Ok((datagram, _)) => self.classify(&datagram),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Some(self.lost_change()),
                Err(e) => {
                    tracing::warn!(error = %e, "netlink route watch failed");
                    return None;
                }
            };
            let Some(mut event) = first else { continue };
            // Drain without waiting: the socket is non-blocking.
            loop {
                match self.socket.socket_ref().recv_from_full() {
                    Ok((datagram, _)) => {
                        if let Some(e) = self.classify(&datagram) {
                            event = event.merge(e);
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        event = event.merge(self.lost_change());
                    }
                    // WouldBlock: drained. Another error: the next call
                    // meets it again and returns `None`.
                    Err(_) => break,
                }
            }
            return Some(event);
        }
    }

    /// A change we could not read (the kernel dropped notifications, or
    /// one did not parse): routes for sure, and perhaps our interface's
    /// deletion, which its absence tells.
    fn lost_change(&self) -> WatchEvent {
        tracing::debug!("netlink route watch lost a notification; re-reading");
        if nix::net::if_::if_nametoindex(self.name.as_str()).ok() == self.index {
            WatchEvent::Routes
        } else {
            WatchEvent::InterfaceGone
        }
    }

    /// One datagram may hold several messages.
    fn classify(&self, mut datagram: &[u8]) -> Option<WatchEvent> {
        let mut events = Vec::new();
        while !datagram.is_empty() {
            let Ok(buffer) = NetlinkBuffer::new_checked(datagram) else {
                // A truncated datagram: we cannot tell what it said.
                events.push(self.lost_change());
                break;
            };
            let len = (buffer.length() as usize).clamp(1, datagram.len());
            let (message, rest) = datagram.split_at(len);
            let message_type = buffer.message_type();
            datagram = rest;
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(message) {
                Ok(m) => events.extend(self.classify_message(m)),
                // Newer kernels add attributes faster than the crate
                // learns them; the type alone still says enough.
                Err(_) => match message_type {
                    libc::RTM_NEWROUTE | libc::RTM_DELROUTE | libc::RTM_DELLINK => {
                        events.push(self.lost_change())
                    }
                    _ => {}
                },
            }
        }
        WatchEvent::coalesce(events)
    }

    fn classify_message(&self, m: NetlinkMessage<RouteNetlinkMessage>) -> Option<WatchEvent> {
        let NetlinkPayload::InnerMessage(inner) = m.payload else {
            return None;
        };
        classify(inner, self.index)
    }
}

/// What one notification means for the daemon watching interface `ours`.
fn classify(message: RouteNetlinkMessage, ours: Option<u32>) -> Option<WatchEvent> {
    match message {
        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
            route_matters(&r).then_some(WatchEvent::Routes)
        }
        RouteNetlinkMessage::DelLink(l) if Some(l.header.index) == ours => {
            Some(WatchEvent::InterfaceGone)
        }
        // Another link's deletion takes its IPv4 routes with it, and the
        // kernel sends no RTM_DELROUTE for those: a conflict may be gone.
        RouteNetlinkMessage::DelLink(_) => Some(WatchEvent::Routes),
        // Ours going down flushes its IPv4 routes silently in the same way
        // (someone ran `ip link set … down`); its other changes are rare.
        RouteNetlinkMessage::NewLink(l) if Some(l.header.index) == ours => Some(WatchEvent::Routes),
        _ => None,
    }
}

/// The main table is what the routers read and write; the local table
/// (every address's own entry) and the IPv6 route cache change with every
/// address and every connection, and no plan depends on them.
fn route_matters(r: &RouteMessage) -> bool {
    super::netlink::table(r) == RouteHeader::RT_TABLE_MAIN as u32
        && !r.header.flags.contains(RouteFlags::Cloned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkMessage;
    use netlink_packet_route::route::RouteAttribute;

    fn route(table: u8) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.table = table;
        r
    }

    #[test]
    fn main_table_routes_count_and_local_and_cache_do_not() {
        use RouteNetlinkMessage::{DelRoute, NewRoute};
        let main = RouteHeader::RT_TABLE_MAIN;
        assert_eq!(
            classify(NewRoute(route(main)), Some(3)),
            Some(WatchEvent::Routes)
        );
        assert_eq!(
            classify(DelRoute(route(main)), None),
            Some(WatchEvent::Routes)
        );
        assert_eq!(
            classify(NewRoute(route(libc::RT_TABLE_LOCAL)), Some(3)),
            None
        );
        // Tables past 255 are in the attribute, the header says 252.
        let mut big = route(libc::RT_TABLE_COMPAT);
        big.attributes.push(RouteAttribute::Table(1000));
        assert_eq!(classify(NewRoute(big), Some(3)), None);
        let mut cached = route(main);
        cached.header.flags = RouteFlags::Cloned;
        assert_eq!(classify(NewRoute(cached), Some(3)), None);
    }

    #[test]
    fn links_our_deletion_and_others() {
        use RouteNetlinkMessage::{DelLink, NewLink};
        let link = |index| {
            let mut l = LinkMessage::default();
            l.header.index = index;
            l
        };
        assert_eq!(
            classify(DelLink(link(7)), Some(7)),
            Some(WatchEvent::InterfaceGone)
        );
        assert_eq!(
            classify(DelLink(link(8)), Some(7)),
            Some(WatchEvent::Routes)
        );
        assert_eq!(
            classify(NewLink(link(7)), Some(7)),
            Some(WatchEvent::Routes)
        );
        assert_eq!(classify(NewLink(link(8)), Some(7)), None);
    }
}

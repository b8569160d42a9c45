//! Linux routes and interface addresses through rtnetlink: no parsing of
//! `ip` output, and errors carry the kernel's errno.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::routes::SystemRoute;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("interface {0} not found")]
    NoInterface(String),
    #[error(
        "interface {name} is a {kind} link, not a tunnel netconnect made; left alone \
         (check --interface and --vm-interface)"
    )]
    NotOurs { name: String, kind: String },
    #[error("{what}: {source}")]
    Request {
        what: String,
        source: rtnetlink::Error,
    },
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// Routes through one interface, in the main table.
pub struct NetlinkRouter {
    handle: Handle,
    index: u32,
    name: String,
}

impl NetlinkRouter {
    /// Must run inside a tokio runtime: the netlink connection is a task.
    pub async fn new(interface: &str) -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        let index = link_index(&handle, interface).await?;
        Ok(NetlinkRouter {
            handle,
            index,
            name: interface.to_owned(),
        })
    }

    pub fn interface(&self) -> &str {
        &self.name
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Set the MTU, bring the interface up and give it its point-to-point
    /// addresses (`ip addr add LOCAL peer PEER`, one pair per family).
    /// Idempotent. The link goes up first: an IPv6 peer address added while
    /// the link is down never gets its route to the peer.
    pub async fn configure(
        &self,
        pairs: &[(IpAddr, IpAddr)],
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        // No IPv6 link-local address, as a kernel WireGuard link has none:
        // a tunnel to one peer needs none, and with one the kernel sends
        // router solicitations into the tunnel (a wakeup for nothing, and
        // a packet in an idle tunnel). Before the link goes up, when the
        // kernel would make it. IPv6 may be off: then there is nothing to do.
        let mode = format!("/proc/sys/net/ipv6/conf/{}/addr_gen_mode", self.name);
        if let Err(e) = std::fs::write(&mode, "1") {
            tracing::debug!(file = %mode, error = %e, "no IPv6 address generation to turn off");
        }
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(self.index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(req(format!("bringing {} up", self.name)))?;
        for &(local, peer) in pairs {
            let prefix = if local.is_ipv4() { 32 } else { 128 };
            let mut add = self.handle.address().add(self.index, local, prefix);
            let attrs = &mut add.message_mut().attributes;
            // rtnetlink sets IFA_ADDRESS = IFA_LOCAL; on a point-to-point
            // link IFA_ADDRESS is the peer, and the kernel adds its route.
            for attr in attrs.iter_mut() {
                if let AddressAttribute::Address(a) = attr {
                    *a = peer;
                }
            }
            // No duplicate detection on a tunnel with one peer: it only
            // delays the address by a second.
            if local.is_ipv6() {
                attrs.push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            add.replace()
                .execute()
                .await
                .map_err(req(format!("adding {local} peer {peer} to {}", self.name)))?;
        }
        Ok(())
    }

    /// The interface as the kernel shows it: MTU, up, each address with
    /// its peer (IFA_ADDRESS, where it differs from IFA_LOCAL).
    pub async fn view(&self) -> Result<crate::readback::InterfaceView, NetlinkError> {
        use netlink_packet_route::link::LinkFlags;
        let mut links = self.handle.link().get().match_index(self.index).execute();
        let link = links
            .try_next()
            .await
            .map_err(req(format!("reading {}", self.name)))?
            .ok_or_else(|| NetlinkError::NoInterface(self.name.clone()))?;
        let mut view = crate::readback::InterfaceView {
            up: link.header.flags.contains(LinkFlags::Up),
            mtu: link.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            }),
            addresses: Vec::new(),
        };
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(req(format!("reading {}'s addresses", self.name)))?
        {
            let (mut local, mut address) = (None, None);
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Local(l) => local = Some(*l),
                    AddressAttribute::Address(x) => address = Some(*x),
                    _ => {}
                }
            }
            match (local, address) {
                (Some(l), Some(p)) if l != p => view.addresses.push((l, Some(p))),
                (Some(l), _) => view.addresses.push((l, None)),
                (None, Some(x)) => view.addresses.push((x, None)),
                (None, None) => {}
            }
        }
        Ok(view)
    }

    /// Our routes (static, through this interface) and everyone else's, from
    /// the main table, both families. Host routes of the kernel's own (local,
    /// broadcast, multicast) are not routes a subnet can conflict with.
    pub async fn current(&self) -> Result<(BTreeSet<IpNet>, Vec<SystemRoute>), NetlinkError> {
        let mut ours = BTreeSet::new();
        let mut system = Vec::new();
        let names = self.link_names().await?;
        for msg in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut routes = self.handle.route().get(msg).execute();
            while let Some(r) = routes.try_next().await.map_err(req("listing routes"))? {
                if table(&r) != RouteHeader::RT_TABLE_MAIN as u32
                    || r.header.kind != RouteType::Unicast
                {
                    continue;
                }
                let Some(dest) = destination(&r) else {
                    continue;
                };
                let oif = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                if oif == Some(self.index) {
                    // Routes the kernel made for the interface itself (the
                    // peer address, fe80::/64) are neither ours nor a conflict.
                    if r.header.protocol == RouteProtocol::Static {
                        ours.insert(dest);
                    }
                } else {
                    let interface = oif
                        .and_then(|i| names.iter().find(|(idx, _)| *idx == i))
                        .map(|(_, n)| n.clone())
                        .unwrap_or_else(|| "?".into());
                    system.push(SystemRoute {
                        destination: dest,
                        interface,
                    });
                }
            }
        }
        Ok((ours, system))
    }

    pub async fn add(&self, net: IpNet) -> Result<(), NetlinkError> {
        self.handle
            .route()
            .add(self.route_message(net))
            .replace()
            .execute()
            .await
            .map_err(req(format!("adding route {net} dev {}", self.name)))
    }

    pub async fn remove(&self, net: IpNet) -> Result<(), NetlinkError> {
        self.handle
            .route()
            .del(self.route_message(net))
            .execute()
            .await
            .map_err(req(format!("removing route {net} dev {}", self.name)))
    }

    fn route_message(&self, net: IpNet) -> RouteMessage {
        match net {
            IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(n.network(), n.prefix_len())
                .output_interface(self.index)
                .build(),
            IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(n.network(), n.prefix_len())
                .output_interface(self.index)
                .build(),
        }
    }

    async fn link_names(&self) -> Result<Vec<(u32, String)>, NetlinkError> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(l) = links.try_next().await.map_err(req("listing interfaces"))? {
            if let Some(name) = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }) {
                out.push((l.header.index, name));
            }
        }
        Ok(out)
    }
}

/// The routing protocol number that marks the VM-side routes netconnect
/// adds (`ip route` shows `proto 78`), so that `down` and a restarted
/// helper find them whatever the configuration said when they were made.
pub const VM_ROUTE_PROTOCOL: u8 = 78;

/// A route to `net` through gateway `gw` (no interface: the kernel picks
/// the one that reaches `gw`), the VM side of an extra route such as a KinD
/// pod CIDR behind its node. Replaces an existing route to `net`.
pub async fn add_via(handle: &Handle, net: IpNet, gw: IpAddr) -> Result<(), NetlinkError> {
    handle
        .route()
        .add(via_message(net, gw)?)
        .replace()
        .execute()
        .await
        .map_err(req(format!("adding route {net} via {gw}")))
}

pub async fn remove_via(handle: &Handle, net: IpNet, gw: IpAddr) -> Result<(), NetlinkError> {
    handle
        .route()
        .del(via_message(net, gw)?)
        .execute()
        .await
        .map_err(req(format!("removing route {net} via {gw}")))
}

fn via_message(net: IpNet, gw: IpAddr) -> Result<RouteMessage, NetlinkError> {
    let mismatch = || NetlinkError::NoInterface(format!("(gateway {gw} is not of {net}'s family)"));
    Ok(match (net, gw) {
        (IpNet::V4(n), IpAddr::V4(g)) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .gateway(g)
            .protocol(RouteProtocol::Other(VM_ROUTE_PROTOCOL))
            .build(),
        (IpNet::V6(n), IpAddr::V6(g)) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .gateway(g)
            .protocol(RouteProtocol::Other(VM_ROUTE_PROTOCOL))
            .build(),
        _ => return Err(mismatch()),
    })
}

/// What [`set_vm_routes`] did.
#[derive(Debug, Default)]
pub struct VmRoutesSet {
    pub added: Vec<(IpNet, IpAddr)>,
    pub removed: Vec<(IpNet, IpAddr)>,
    /// A route the kernel refused (its gateway unreachable: a node that
    /// went a moment ago), with why; the others are still set.
    pub failed: Vec<((IpNet, IpAddr), NetlinkError)>,
}

/// Make the marked VM routes exactly `wanted`: those not wanted go, those
/// wanted are added (or replaced, when their gateway changed).
pub async fn set_vm_routes(
    handle: &Handle,
    wanted: &[(IpNet, IpAddr)],
) -> Result<VmRoutesSet, NetlinkError> {
    let mut out = VmRoutesSet::default();
    let have = marked_vm_routes(handle).await?;
    for r in &have {
        if !wanted.contains(r) {
            match remove_via(handle, r.0, r.1).await {
                Ok(()) => out.removed.push(*r),
                Err(e) => out.failed.push((*r, e)),
            }
        }
    }
    for r in wanted {
        if have.contains(r) {
            continue;
        }
        match add_via(handle, r.0, r.1).await {
            Ok(()) => out.added.push(*r),
            Err(e) => out.failed.push((*r, e)),
        }
    }
    Ok(out)
}

/// The VM-side routes netconnect made ([`VM_ROUTE_PROTOCOL`]), main table.
pub async fn marked_vm_routes(handle: &Handle) -> Result<Vec<(IpNet, IpAddr)>, NetlinkError> {
    let mut out = Vec::new();
    for msg in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut routes = handle.route().get(msg).execute();
        while let Some(r) = routes.try_next().await.map_err(req("listing routes"))? {
            if r.header.protocol != RouteProtocol::Other(VM_ROUTE_PROTOCOL)
                || table(&r) != RouteHeader::RT_TABLE_MAIN as u32
            {
                continue;
            }
            let gw = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
                RouteAttribute::Gateway(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
                _ => None,
            });
            if let (Some(dest), Some(gw)) = (destination(&r), gw) {
                out.push((dest, gw));
            }
        }
    }
    Ok(out)
}

/// Delete interface `name` (and with it its addresses and routes), only if
/// it is of a kind netconnect makes: a name alone is not proof, and
/// `--vm-interface eth0` must not cut the VM off its network.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<(), NetlinkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    let link = match links.try_next().await {
        Ok(Some(l)) => l,
        Ok(None) | Err(_) => return Err(NetlinkError::NoInterface(name.to_owned())),
    };
    let kind = link_kind(&link.attributes);
    if !is_ours(kind) {
        return Err(NetlinkError::NotOurs {
            name: name.to_owned(),
            kind: kind.map_or("kernel (no kind)".to_owned(), |k| k.to_string()),
        });
    }
    let index = link.header.index;
    handle
        .link()
        .del(index)
        .execute()
        .await
        .map_err(req(format!("deleting interface {name}")))
}

/// The kinds of link netconnect makes: a TUN (the host's, and the VM's
/// userspace peer) and a kernel WireGuard link (the VM's).
fn is_ours(kind: Option<&InfoKind>) -> bool {
    matches!(kind, Some(InfoKind::Tun | InfoKind::Wireguard))
}

fn link_kind(attributes: &[LinkAttribute]) -> Option<&InfoKind> {
    attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, NetlinkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(l.header.index),
        Ok(None) | Err(_) => Err(NetlinkError::NoInterface(name.to_owned())),
    }
}

pub(super) fn table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(r.header.table as u32)
}

fn destination(r: &RouteMessage) -> Option<IpNet> {
    let len = r.header.destination_prefix_length;
    let addr = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    });
    match addr {
        Some(a) => IpNet::new(a, len).ok(),
        // No destination attribute: the default route of that family.
        None if len == 0 => Some(match r.header.address_family {
            netlink_packet_route::AddressFamily::Inet6 => "::/0".parse().ok()?,
            _ => "0.0.0.0/0".parse().ok()?,
        }),
        None => None,
    }
}

crate::routes::router_by_inherent_methods!(NetlinkRouter, NetlinkError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tunnels_we_make_are_ours() {
        let with_kind = |k: InfoKind| vec![LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k)])];
        for (attrs, ours) in [
            (with_kind(InfoKind::Tun), true),
            (with_kind(InfoKind::Wireguard), true),
            (with_kind(InfoKind::Veth), false),
            (with_kind(InfoKind::Bridge), false),
            (with_kind(InfoKind::Dummy), false),
            // A physical NIC (eth0) carries no kind at all.
            (vec![LinkAttribute::IfName("eth0".into())], false),
        ] {
            assert_eq!(is_ours(link_kind(&attrs)), ours, "{attrs:?}");
        }
    }
}

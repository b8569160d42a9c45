//! Configuring a device the way a user would: `wg set` and `ip addr`.

use std::path::Path;

use crate::netns::Netns;

/// `wg set IFACE listen-port P private-key FILE peer PUB [endpoint E] allowed-ips A [persistent-keepalive K]`
#[allow(clippy::too_many_arguments)]
pub fn wg_set(
    ns: &Netns,
    iface: &str,
    keyfile: &Path,
    listen_port: u16,
    peer_pub: &str,
    endpoint: Option<&str>,
    allowed_ips: &str,
    keepalive: Option<u16>,
) {
    let port = listen_port.to_string();
    let mut args: Vec<String> = vec![
        "wg".into(),
        "set".into(),
        iface.into(),
        "listen-port".into(),
        port,
        "private-key".into(),
        keyfile.to_str().unwrap().into(),
        "peer".into(),
        peer_pub.into(),
    ];
    if let Some(e) = endpoint {
        args.push("endpoint".into());
        args.push(e.into());
    }
    args.push("allowed-ips".into());
    args.push(allowed_ips.into());
    if let Some(k) = keepalive {
        args.push("persistent-keepalive".into());
        args.push(k.to_string());
    }
    ns.ok(&args);
}

/// `mtu 1420 up` and point-to-point tunnel addresses on `iface`.
///
/// The link goes up first: an IPv6 `peer` address added while the link is
/// down gets no route to the peer when the link comes up later (kernel quirk).
pub fn addr_up(ns: &Netns, iface: &str, local4: &str, peer4: &str, local6: &str, peer6: &str) {
    ns.ok(&["ip", "link", "set", iface, "mtu", "1420", "up"]);
    ns.ok(&["ip", "addr", "add", local4, "peer", peer4, "dev", iface]);
    ns.ok(&[
        "ip", "-6", "addr", "add", local6, "peer", peer6, "dev", iface, "nodad",
    ]);
}

/// [`wg_set`] followed by [`addr_up`]; allowed-ips are the peer's /32 and /128.
#[allow(clippy::too_many_arguments)]
pub fn configure(
    ns: &Netns,
    iface: &str,
    keyfile: &Path,
    listen_port: u16,
    peer_pub: &str,
    endpoint: Option<&str>,
    local4: &str,
    peer4: &str,
    local6: &str,
    peer6: &str,
) {
    let allowed = format!("{peer4}/32,{peer6}/128");
    wg_set(
        ns,
        iface,
        keyfile,
        listen_port,
        peer_pub,
        endpoint,
        &allowed,
        None,
    );
    addr_up(ns, iface, local4, peer4, local6, peer6);
}

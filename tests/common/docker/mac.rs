//! The Mac: a namespace joined to the root namespace (the VM) by veth, and
//! what `up` changes in it (routes, links).

use std::thread;
use std::time::{Duration, Instant};

use super::commands::host_ok;
use crate::names::unique_ifname_stem;
use crate::netns::Netns;
use crate::ping::wait_ping;

/// A namespace with veth `<stem>m` in the root namespace (10.212.N.1/24)
/// and `eth0` inside (10.212.N.2/24). Dropping the namespace removes the
/// veth pair.
pub struct MacNs {
    pub ns: Netns,
    pub root_veth: String,
    /// The Mac's address, what the VM side uses as the endpoint.
    pub addr: String,
    pub root_addr: String,
}

impl MacNs {
    /// `netconnect --control-socket SOCKET status --json` run in the
    /// namespace, parsed; panics with what it printed otherwise.
    pub fn status_json(&self, socket: &str) -> serde_json::Value {
        let o = self.ns.exec(&[
            crate::cargo::netconnect_bin(),
            "--control-socket",
            socket,
            "status",
            "--json",
        ]);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
    }

    pub fn new(n: u8) -> MacNs {
        let prefix = format!("10.212.{n}.");
        let used = host_ok(&["ip", "-o", "-4", "addr", "show"]);
        assert!(
            !used.contains(&format!(" {prefix}")),
            "10.212.{n}.0/24 is already in use in the root namespace: {used}"
        );
        let ns = Netns::new("mac");
        let root_veth = format!("{}m", unique_ifname_stem());
        host_ok(&[
            "ip",
            "link",
            "add",
            &root_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]);
        let mac = MacNs {
            ns,
            root_veth,
            addr: format!("{prefix}2"),
            root_addr: format!("{prefix}1"),
        };
        host_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", mac.root_addr),
            "dev",
            &mac.root_veth,
        ]);
        host_ok(&["ip", "link", "set", &mac.root_veth, "up"]);
        mac.ns.ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", mac.addr),
            "dev",
            "eth0",
        ]);
        // No IPv6 router solicitations (there is no router): the quiet
        // minute test counts every packet on this link.
        mac.ns.ok(&[
            "sh",
            "-c",
            "echo 0 > /proc/sys/net/ipv6/conf/eth0/router_solicitations",
        ]);
        mac.ns.ok(&["ip", "link", "set", "eth0", "up"]);
        wait_ping(&mac.ns, &mac.root_addr, Duration::from_secs(10));
        // The IPv6 link-local address (and its route in table local)
        // appears once DAD is done; wait, so that before/after
        // comparisons of the routes see a settled namespace.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            let a = mac
                .ns
                .ok(&["ip", "-6", "addr", "show", "dev", "eth0", "scope", "link"]);
            if a.contains("inet6") && !a.contains("tentative") {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        mac
    }

    /// `ip route` (both families) in the Mac namespace, sorted lines.
    pub fn routes(&self) -> Vec<String> {
        let mut v: Vec<String> = ["-4", "-6"]
            .iter()
            .flat_map(|f| {
                self.ns
                    .ok(&["ip", f, "route", "show", "table", "all"])
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v
    }

    /// Names of the links in the Mac namespace, sorted.
    pub fn links(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ns
            .ok(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect();
        v.sort();
        v
    }

    /// The Mac's route for `subnet`, if any (`ip route show SUBNET`).
    pub fn route_for(&self, subnet: &str) -> Option<String> {
        let family = if subnet.contains(':') { "-6" } else { "-4" };
        let out = self.ns.ok(&["ip", family, "route", "show", subnet]);
        let l = out.trim();
        (!l.is_empty()).then(|| l.to_string())
    }

    /// Waits until the route for `subnet` is present (`want`) or gone.
    pub fn wait_route(
        &self,
        subnet: &str,
        want: bool,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let t0 = Instant::now();
        loop {
            let r = self.route_for(subnet);
            if r.is_some() == want {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() >= timeout {
                return Err(format!(
                    "route for {subnet} still {} after {timeout:?}; routes: {:?}",
                    if want { "missing" } else { "present" },
                    self.routes()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

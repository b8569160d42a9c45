//! Whether Docker's networks are already reachable from here: on Linux
//! with the engine in this very network namespace, its bridges are local
//! interfaces and every container answers by IP without netconnect. Then
//! `up` has nothing to do. When the engine is elsewhere (Docker Desktop's
//! VM, another namespace as in our tests), the gateways are not ours.

use std::net::IpAddr;

use super::NetworkInfo;

/// A bridge network whose gateway is one of this machine's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBridge {
    pub network: String,
    pub gateway: IpAddr,
}

/// The first bridge network (local scope) whose gateway is in `local`.
pub fn local_bridge(networks: &[NetworkInfo], local: &[IpAddr]) -> Option<LocalBridge> {
    networks
        .iter()
        .filter(|n| n.driver == "bridge" && n.scope == "local")
        .find_map(|n| {
            n.gateways
                .iter()
                .find(|g| local.contains(g))
                .map(|g| LocalBridge {
                    network: n.name.clone(),
                    gateway: *g,
                })
        })
}

pub use crate::platform::local_addresses;

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, driver: &str, gateways: &[&str]) -> NetworkInfo {
        NetworkInfo {
            id: format!("id-{name}"),
            name: name.into(),
            driver: driver.into(),
            scope: "local".into(),
            subnets: vec![],
            gateways: gateways.iter().map(|g| g.parse().unwrap()).collect(),
        }
    }
    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn engine_in_this_namespace_is_recognised_by_its_bridge_gateways() {
        let nets = [
            net("host", "host", &[]),
            net("bridge", "bridge", &["172.17.0.1"]),
            net("kind", "bridge", &["172.18.0.1", "fc00:f853:ccd:e793::1"]),
        ];
        // Linux host running dockerd: docker0 has 172.17.0.1.
        assert_eq!(
            local_bridge(&nets, &ips(&["127.0.0.1", "192.168.64.3", "172.17.0.1"])),
            Some(LocalBridge {
                network: "bridge".into(),
                gateway: "172.17.0.1".parse().unwrap()
            })
        );
        // An IPv6 gateway counts too.
        assert_eq!(
            local_bridge(&nets, &ips(&["fc00:f853:ccd:e793::1"])).map(|b| b.network),
            Some("kind".into())
        );
        // A Mac, or a namespace the engine is not in: nothing local.
        assert_eq!(
            local_bridge(&nets, &ips(&["127.0.0.1", "10.212.1.2", "10.33.33.1"])),
            None
        );
        // Only bridges: a macvlan's gateway is the LAN router, often local-ish.
        assert_eq!(
            local_bridge(
                &[net("lan", "macvlan", &["192.168.1.1"])],
                &ips(&["192.168.1.1"])
            ),
            None
        );
    }

    #[test]
    fn this_machine_has_loopback() {
        assert!(local_addresses().contains(&"127.0.0.1".parse().unwrap()));
    }
}

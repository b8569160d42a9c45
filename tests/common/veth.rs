//! Two namespaces, "host" and "vm", joined by a veth pair: the underlay the
//! tunnels run over.

use std::time::Duration;

use crate::netns::Netns;
use crate::ping::wait_ping;

/// Underlay (veth) addresses of the two-namespace fixture.
pub const HOST_UNDERLAY4: &str = "10.200.1.1";
pub const VM_UNDERLAY4: &str = "10.200.1.2";
pub const HOST_UNDERLAY6: &str = "fd00:200::1";
pub const VM_UNDERLAY6: &str = "fd00:200::2";

/// Two namespaces, "host" and "vm", joined by a veth pair (MTU 1500, up):
/// host `vh0` = 10.200.1.1/24, fd00:200::1/64; vm `vv0` = 10.200.1.2/24, fd00:200::2/64.
pub struct TwoHosts {
    pub host: Netns,
    pub vm: Netns,
}

pub type VethPair = TwoHosts;

impl TwoHosts {
    pub const HOST_VETH: &'static str = "vh0";
    pub const VM_VETH: &'static str = "vv0";

    // Not `Default`: it creates namespaces and a veth pair.
    #[allow(clippy::new_without_default)]
    pub fn new() -> TwoHosts {
        let host = Netns::new("host");
        let vm = Netns::new("vm");
        host.ok(&[
            "ip",
            "link",
            "add",
            Self::HOST_VETH,
            "mtu",
            "1500",
            "type",
            "veth",
            "peer",
            "name",
            Self::VM_VETH,
            "mtu",
            "1500",
            "netns",
            vm.name(),
        ]);
        for (ns, dev, a4, a6) in [
            (&host, Self::HOST_VETH, HOST_UNDERLAY4, HOST_UNDERLAY6),
            (&vm, Self::VM_VETH, VM_UNDERLAY4, VM_UNDERLAY6),
        ] {
            ns.ok(&["ip", "addr", "add", &format!("{a4}/24"), "dev", dev]);
            ns.ok(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{a6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ns.ok(&["ip", "link", "set", dev, "mtu", "1500", "up"]);
        }
        let th = TwoHosts { host, vm };
        wait_ping(&th.host, VM_UNDERLAY4, Duration::from_secs(10));
        wait_ping(&th.host, VM_UNDERLAY6, Duration::from_secs(10));
        th
    }
}

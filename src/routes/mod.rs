//! Routes through the tunnel: the desired set comes from Docker, the current
//! set from the OS; [`plan`] decides, an executor applies (netlink on Linux,
//! `route` commands on macOS).
//!
//! Both executors have the same methods, pinned by the [`Router`] trait;
//! `PlatformRouter` is this OS's. The macOS executor is plain command plans,
//! so it is compiled and tested on Linux too.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;

use ipnet::IpNet;

#[cfg(target_os = "linux")]
mod linux;
pub mod macos;
mod plan;

#[cfg(target_os = "linux")]
pub use linux::{
    add_via, delete_link, marked_vm_routes, remove_via, NetlinkError, NetlinkRouter,
    VM_ROUTE_PROTOCOL,
};
pub use macos::MacRouter;
pub use plan::{overlaps, plan, RoutePlan, Skipped, SystemRoute};

/// What `up` needs from an OS's routing: address the tunnel, read the
/// routes (ours through the tunnel, and the machine's others), add and
/// remove ours.
pub trait Router: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;
    fn interface(&self) -> &str;
    fn configure(
        &self,
        pairs: &[(IpAddr, IpAddr)],
        mtu: u32,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    #[allow(clippy::type_complexity)]
    fn current(
        &self,
    ) -> impl Future<Output = Result<(BTreeSet<IpNet>, Vec<SystemRoute>), Self::Error>> + Send;
    fn add(&self, net: IpNet) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn remove(&self, net: IpNet) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Implements [`Router`] by the type's inherent methods of the same names
/// (inherent methods win in path calls), so callers need no trait import.
macro_rules! router_by_inherent_methods {
    ($ty:ty, $err:ty $(, $gen:ident : $bound:path)?) => {
        impl$(<$gen: $bound>)? Router for $ty {
            type Error = $err;
            fn interface(&self) -> &str {
                <$ty>::interface(self)
            }
            async fn configure(&self, pairs: &[(IpAddr, IpAddr)], mtu: u32) -> Result<(), $err> {
                <$ty>::configure(self, pairs, mtu).await
            }
            async fn current(&self) -> Result<(BTreeSet<IpNet>, Vec<SystemRoute>), $err> {
                <$ty>::current(self).await
            }
            async fn add(&self, net: IpNet) -> Result<(), $err> {
                <$ty>::add(self, net).await
            }
            async fn remove(&self, net: IpNet) -> Result<(), $err> {
                <$ty>::remove(self, net).await
            }
        }
    };
}

#[cfg(target_os = "linux")]
router_by_inherent_methods!(NetlinkRouter, NetlinkError);
router_by_inherent_methods!(MacRouter<R>, crate::command::CommandError, R: crate::command::Runner);

#[cfg(target_os = "linux")]
pub type PlatformRouter = NetlinkRouter;
#[cfg(target_os = "macos")]
pub type PlatformRouter = MacRouter<crate::command::SystemRunner>;

/// The router for tunnel interface `interface` on this OS.
#[cfg(target_os = "linux")]
pub async fn open(interface: &str) -> Result<PlatformRouter, NetlinkError> {
    NetlinkRouter::new(interface).await
}
#[cfg(target_os = "macos")]
pub async fn open(interface: &str) -> Result<PlatformRouter, crate::command::CommandError> {
    Ok(MacRouter::new(interface, crate::command::SystemRunner))
}

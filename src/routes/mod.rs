//! Routes through the tunnel: the desired set comes from Docker, the current
//! set from the OS; [`plan`] decides, an executor applies (netlink on Linux,
//! `route` commands on macOS).
//!
//! Both executors have the same methods, pinned by the [`Router`] trait;
//! `crate::platform::OsRouter` is this OS's. The macOS executor is plain
//! command plans, so it is compiled and tested on Linux too; the netlink one
//! lives in `platform/linux/`.
//!
//! What changes the table is reported by the OS's watcher
//! (`crate::platform::watch`) as a [`WatchEvent`]; the macOS one reads
//! `route -n monitor` through [`macos_monitor`], plain text tested here.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;

use ipnet::IpNet;

pub mod macos;
pub mod macos_monitor;
mod plan;
pub mod scope;
pub mod watch;

pub use macos::MacRouter;
pub use plan::{overlaps, plan, RoutePlan, SkipReason, Skipped, SystemRoute};
pub use watch::WatchEvent;

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
    /// The tunnel interface as the OS shows it (`ifconfig NAME`, netlink),
    /// to read back what [`Router::configure`] asked.
    fn view(
        &self,
    ) -> impl Future<Output = Result<crate::readback::InterfaceView, Self::Error>> + Send;

    /// Read the routes back after [`Router::set`] changed them: what the
    /// table shows through the tunnel against what was meant to be there.
    fn confirm(
        &self,
        plan: &RoutePlan,
        desired: &BTreeSet<IpNet>,
    ) -> impl Future<Output = Result<Vec<crate::readback::Disagreement>, Self::Error>> + Send {
        async move {
            let (ours, _) = self.current().await?;
            let skipped: BTreeSet<IpNet> = plan.skipped.iter().map(|s| s.subnet).collect();
            let wanted: BTreeSet<IpNet> = desired.difference(&skipped).copied().collect();
            Ok(crate::readback::check_routes(
                self.interface(),
                &wanted,
                &ours,
            ))
        }
    }

    /// Declarative, as tailscale's router `Set`: make the routes through the
    /// tunnel exactly `desired`, less what would cover a route of the
    /// machine's own. Reads the table, plans ([`plan`]), removes, adds, and
    /// returns what it did. An empty set removes all of ours.
    fn set(
        &self,
        desired: &BTreeSet<IpNet>,
    ) -> impl Future<Output = Result<RoutePlan, Self::Error>> + Send {
        async move {
            let (ours, system) = self.current().await?;
            let plan = plan(desired, &ours, &system);
            for net in &plan.remove {
                self.remove(*net).await?;
            }
            for net in &plan.add {
                self.add(*net).await?;
            }
            Ok(plan)
        }
    }
}

/// Implements [`Router`] by the type's inherent methods of the same names
/// (inherent methods win in path calls), so callers need no trait import.
macro_rules! router_by_inherent_methods {
    ($ty:ty, $err:ty $(, $gen:ident : $bound:path)?) => {
        impl$(<$gen: $bound>)? $crate::routes::Router for $ty {
            type Error = $err;
            fn interface(&self) -> &str {
                <$ty>::interface(self)
            }
            async fn configure(&self, pairs: &[(::std::net::IpAddr, ::std::net::IpAddr)], mtu: u32) -> Result<(), $err> {
                <$ty>::configure(self, pairs, mtu).await
            }
            async fn current(&self) -> Result<(::std::collections::BTreeSet<::ipnet::IpNet>, Vec<$crate::routes::SystemRoute>), $err> {
                <$ty>::current(self).await
            }
            async fn add(&self, net: ::ipnet::IpNet) -> Result<(), $err> {
                <$ty>::add(self, net).await
            }
            async fn remove(&self, net: ::ipnet::IpNet) -> Result<(), $err> {
                <$ty>::remove(self, net).await
            }
            async fn view(&self) -> Result<$crate::readback::InterfaceView, $err> {
                <$ty>::view(self).await
            }
        }
    };
}

// For the netlink router in `platform/linux/`; unused where that is not built.
#[allow(unused_imports)]
pub(crate) use router_by_inherent_methods;

router_by_inherent_methods!(MacRouter<R>, crate::command::CommandError, R: crate::command::Runner);

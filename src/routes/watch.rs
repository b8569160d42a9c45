//! What watching the routing table reports, on every OS: the daemon does
//! not poll for a route someone else deleted (a VPN client, `route
//! delete`) or for its tunnel going away; the kernel tells it. The OS
//! watchers (`crate::platform::watch`: netlink route notifications on
//! Linux, `route -n monitor` on macOS) turn what the kernel says into these
//! events and nothing more: what to do about them (re-plan with
//! [`crate::routes::plan`], rebuild the tunnel) is the daemon's.

/// One change, or a burst of changes read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEvent {
    /// Some route was added, removed or changed (ours or anyone's): read
    /// the table again and re-plan. Our own `add`/`remove` come back as
    /// this too; the plan is idempotent, so the echo costs one re-read.
    Routes,
    /// The watched interface is gone (or, on macOS, down): its routes went
    /// with it, and only a new tunnel brings them back.
    InterfaceGone,
}

impl WatchEvent {
    /// The event a burst amounts to: a gone interface outranks route
    /// changes, since rebuilding the tunnel re-plans its routes anyway.
    pub fn merge(self, other: WatchEvent) -> WatchEvent {
        if self == WatchEvent::InterfaceGone || other == WatchEvent::InterfaceGone {
            WatchEvent::InterfaceGone
        } else {
            WatchEvent::Routes
        }
    }

    /// Folds the events of one burst into one; `None` if nothing mattered.
    pub fn coalesce(events: impl IntoIterator<Item = WatchEvent>) -> Option<WatchEvent> {
        events.into_iter().reduce(WatchEvent::merge)
    }
}

#[cfg(test)]
mod tests {
    use super::WatchEvent::{self, InterfaceGone, Routes};

    #[test]
    fn a_gone_interface_outranks_route_changes() {
        assert_eq!(Routes.merge(Routes), Routes);
        assert_eq!(Routes.merge(InterfaceGone), InterfaceGone);
        assert_eq!(InterfaceGone.merge(Routes), InterfaceGone);
        assert_eq!(
            WatchEvent::coalesce([Routes, InterfaceGone, Routes]),
            Some(InterfaceGone)
        );
        assert_eq!(WatchEvent::coalesce([Routes, Routes]), Some(Routes));
        assert_eq!(WatchEvent::coalesce([]), None);
    }
}

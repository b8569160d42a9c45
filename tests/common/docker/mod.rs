//! Fixtures for the end-to-end tests of `netconnect up`. The root network
//! namespace plays the Docker VM (dockerd runs there); a namespace joined to
//! it by veth plays the Mac.
//!
//! Every `up` starts a helper container with host networking that creates a
//! tunnel interface in the root namespace and inserts iptables rules for it,
//! so these tests must not overlap: [`DockerSession`] holds a file lock for
//! the whole test, across threads and processes (`cargo test`, nextest).
//! Whatever a test creates (containers, networks, rules, the helper and its
//! interface) is removed on drop, and what a killed test process left behind
//! is swept when the next one takes the lock.
//!
//! The tests take it all at once (`use common::docker::*;`): each module's
//! public items are re-exported here.

use std::time::Duration;

pub mod commands;
pub mod compose;
pub mod dockerd;
pub mod engines;
pub mod http;
pub mod images;
pub mod iptables;
pub mod kube;
pub mod mac;
pub mod proxy;
pub mod session;
pub mod sweep;
pub mod things;
pub mod up;

pub use commands::*;
pub use compose::*;
pub use dockerd::*;
pub use engines::*;
pub use http::*;
pub use images::*;
pub use iptables::*;
pub use kube::*;
pub use mac::*;
pub use proxy::*;
pub use session::*;
pub use sweep::*;
pub use things::*;
pub use up::*;

pub const DOCKER_SOCK: &str = "/var/run/docker.sock";
/// Label on every container and network a test creates; value: its pid.
pub const TEST_LABEL: &str = "io.netconnect.e2e";
/// Label the helper containers carry (`src/up/container.rs`).
pub const HELPER_LABEL: &str = "io.netconnect.helper";
/// Comment on the iptables rules that the tests themselves insert.
pub fn test_rule_comment() -> String {
    format!("nct-e2e-{}", std::process::id())
}
/// Name of the tunnel interface inside the Mac namespace.
pub const MAC_TUN: &str = "nctun0";
/// Bound for one `docker` command (`run` is slow on fuse-overlayfs).
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether this is CI (`CI=true`, as `.ci/run` sets it).
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false" && v != "0")
        .unwrap_or(false)
}

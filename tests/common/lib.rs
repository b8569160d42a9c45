//! Shared end-to-end test harness: network namespaces, veth fixtures, WireGuard
//! daemons (netconnect or wireguard-go), key handling, `wg` helpers, UAPI client,
//! bounded process execution and in-namespace TCP transfers; and in [`docker`],
//! fixtures for `netconnect up` against the real engine.
//!
//! Every helper is bounded in time and every guard cleans up on `Drop`, including
//! when a test panics. All names (namespaces, interfaces, UAPI sockets) are unique
//! per process and per call, so tests can run in parallel under `cargo test` and
//! `cargo nextest`.
//!
//! These tests need root and a few tools; they never skip: a missing prerequisite
//! is a test failure with a one-line message naming the packages to install.
//!
//! One module per concern; the test binaries take everything at once
//! (`use common::*;`), so each module's public items are re-exported here.

// Linux only (namespaces, veth, iptables), like the tests that use it; a
// workspace build for macOS compiles it empty.
#![cfg(target_os = "linux")]

pub mod cargo;
pub mod config;
pub mod daemon;
pub mod dig;
pub mod docker;
pub mod keys;
pub mod names;
pub mod netns;
pub mod ping;
pub mod prereqs;
pub mod process;
pub mod transfer;
pub mod tunnel;
pub mod uapi;
pub mod veth;
pub mod wg;

pub use cargo::*;
pub use config::*;
pub use daemon::*;
pub use dig::*;
pub use keys::*;
pub use names::*;
pub use netns::*;
pub use ping::*;
pub use prereqs::*;
pub use process::*;
pub use transfer::*;
pub use tunnel::*;
pub use uapi::*;
pub use veth::*;
pub use wg::*;

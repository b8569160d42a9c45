//! netconnect: reach Docker containers on macOS by IP address.
//!
//! The pieces, one module each: [`tunnel`] is the userspace WireGuard data
//! plane; [`uapi`] serves the `wg` configuration socket over it; [`platform`]
//! holds what differs between macOS and Linux; [`cli`] is the command line.

pub mod cli;
pub mod command;
pub mod device_cmd;
pub mod docker;
pub mod helper;
pub mod keys;
pub mod platform;
pub mod routes;
pub mod service;
pub mod signals;
pub mod tunnel;
pub mod uapi;
pub mod up;

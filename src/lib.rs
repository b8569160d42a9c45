//! netconnect: reach Docker containers on macOS by IP address.
//!
//! The pieces, one module each: [`tunnel`] is the userspace WireGuard data
//! plane; [`uapi`] serves the `wg` configuration socket over it; [`platform`]
//! holds what differs between macOS and Linux; [`cli`] is the command line,
//! and [`settings`] is where its flags meet the file.
//! Operating it: [`control`] (the daemon's socket), [`config`] (the file),
//! [`status`], [`doctor`], [`down`], [`bugreport`] and [`manual`]
//! (completions, man page); [`progress`] is what the first `up` draws on a
//! terminal.
//! [`docker`] is the engine, and through it the VM side: the helper
//! container and the one-shots that look into the VM ([`docker::vmside`]).

pub mod bugreport;
pub mod cli;
pub mod command;
pub mod config;
pub mod control;
pub mod device_cmd;
pub mod dns;
pub mod docker;
pub mod doctor;
pub mod down;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod helper;
pub mod keys;
pub mod kube;
pub mod manual;
pub mod platform;
pub mod progress;
pub mod readback;
pub mod routes;
pub mod service;
pub mod settings;
pub mod signals;
pub mod sockets;
pub mod status;
pub mod tunnel;
pub mod uapi;
pub mod up;

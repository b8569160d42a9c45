//! The WireGuard UAPI: the Unix socket `wg` talks to. A thin layer over the
//! device's typed API: text in, [`DeviceUpdate`](crate::tunnel::DeviceUpdate)
//! out, and back.

pub mod protocol;
mod server;
pub(crate) use server::{handle, Configure};

pub use protocol::{format_get, parse_set, ProtocolError, MAX_LINE};
pub use server::{socket_path, UapiListener, SOCKET_DIR};

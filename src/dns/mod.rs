//! Containers by name from the Mac: `web.docker.internal`, and
//! `web.shop.docker.internal` for a Compose service. `up` already follows
//! the engine's events for its routes, so it can keep names exact: it
//! serves them itself, on the tunnel's host address, and points the Mac's
//! resolver at that server for one domain only.
//!
//! - [`names`]: which name answers which addresses (plain data, the rules);
//! - [`server`]: hickory serving that table over UDP and TCP;
//! - [`query`]: one question to a server, as `doctor` asks it;
//! - [`resolver`]: `/etc/resolver/<domain>`, how macOS sends one domain's
//!   questions to one server (resolver(5));
//! - [`resolved`]: the same for a Linux host that runs systemd-resolved
//!   (per-link DNS on the tunnel interface).
//!
//! netconnect is not a recursive resolver: a name outside its domain is
//! refused; the one exception is a KinD or k3d cluster's domain, asked of
//! that cluster's DNS Service through the tunnel (`crate::kube::names`).

pub mod names;
pub mod query;
pub mod resolved;
pub mod resolver;
pub mod server;

/// The domain names live under unless the configuration file says
/// otherwise. `.internal` is reserved for private use (ICANN, 2024), so it
/// never collides with a public name.
pub const DEFAULT_DOMAIN: &str = "docker.internal";
pub const DEFAULT_PORT: u16 = 53;
/// Seconds a resolver may keep an answer: containers come and go with
/// every `docker compose up`, and a stale address is worse than a query.
pub const TTL: u32 = 2;

/// Where the resolver file goes: the configured folder, else the
/// platform's (macOS: `/etc/resolver`; Linux: none, systemd-resolved
/// instead).
pub fn resolver_dir(cfg: &crate::config::DnsConfig) -> Option<std::path::PathBuf> {
    cfg.resolver_dir
        .clone()
        .or_else(|| crate::platform::RESOLVER_DIR.map(std::path::PathBuf::from))
}

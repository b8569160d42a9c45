//! The name server's life in `up`: started once the tunnel has its host
//! address, this machine's resolver pointed at it for the one domain, both
//! undone at the end. Names are a convenience on top of the tunnel: when
//! the port is taken or the resolver cannot be wired, `up` says so in one
//! line and runs on, reachable by IP.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

use super::live::View;
use crate::config::DnsConfig;
use crate::control::snapshot::DnsState;
use crate::dns::resolved;
use crate::dns::resolver::ResolverFile;
use crate::dns::server::{self, DnsServer, ServeError, Zone};
use crate::platform;
use crate::progress;

/// How the system's resolver was pointed at the server, to undo it.
enum Wiring {
    File(ResolverFile),
    Resolved { iface: String },
}

pub struct Names {
    server: DnsServer,
    pub zone: Arc<Zone>,
    wiring: Option<Wiring>,
}

/// Start serving on `host:port` and wire the resolver. `None` when names
/// are off, by choice or because the port is taken (said once, here).
pub async fn start(cfg: &DnsConfig, host: IpAddr, iface: &str, view: &View) -> Option<Names> {
    let domain = cfg.domain();
    let addr = SocketAddr::new(host, *cfg.port.get_ref());
    let mut state = DnsState {
        domain: domain.to_string(),
        address: addr.to_string(),
        ..Default::default()
    };
    if !cfg.enabled {
        state.state = "disabled".into();
        view.set_dns(state, None);
        return None;
    }
    let zone = Zone::new(domain.clone());
    let server = match server::serve(addr, zone.clone()).await {
        Ok(s) => s,
        Err(e) => {
            let why = bind_error(&e).await;
            warn!("{why}");
            state.state = "failed".into();
            state.error = Some(why);
            view.set_dns(state, None);
            return None;
        }
    };
    state.state = "serving".into();
    view.set_dns(state, Some(zone.clone()));
    let wiring = wire(cfg, &domain.to_string(), host, iface).await;
    let (resolver, error) = match &wiring {
        Ok(Some(w)) => (Some(describe(w)), None),
        Ok(None) => (None, None),
        Err(e) => {
            warn!(
                "names are served on {addr}, but this machine's resolver is not pointed at it: {e}"
            );
            (None, Some(e.clone()))
        }
    };
    let via = resolver
        .as_deref()
        .map(|r| format!(" (resolver: {r})"))
        .unwrap_or_default();
    info!(target: progress::TARGET, domain = %domain, address = %addr, resolver = resolver.as_deref().unwrap_or("none"), "serving container names");
    progress::line(format!(
        "Names: <container>.{domain} answered on {addr}{via}"
    ));
    view.set_resolver(resolver, error);
    let port = *cfg.port.get_ref();
    let found = match &wiring {
        Ok(Some(Wiring::File(f))) => read_back(f, &domain.to_string(), host, port).await,
        Ok(Some(Wiring::Resolved { iface })) => {
            read_back_resolved(iface, host, port, &domain.to_string()).await
        }
        _ => Vec::new(),
    };
    for d in &found {
        warn!("{d}");
    }
    view.set_os_view("resolver", &found);
    Some(Names {
        server,
        zone,
        wiring: wiring.ok().flatten(),
    })
}

/// How long macOS is given to take a new resolver file into the list it
/// resolves with (it watches the folder; `scutil --dns` shows the file
/// within a moment).
const RESOLVER_SETTLE: std::time::Duration = std::time::Duration::from_millis(1500);

/// The resolver file as written, then as the system resolves with it
/// (macOS's `scutil --dns`; Linux has no such list).
async fn read_back(
    f: &ResolverFile,
    domain: &str,
    host: IpAddr,
    port: u16,
) -> Vec<crate::readback::Disagreement> {
    use crate::dns::resolver::FileState;
    use crate::readback::{check_resolver, Disagreement};
    let effect = format!("resolver file {}", f.path().display());
    let asked = format!("nameserver {host} port {port}");
    let seen = match f.state() {
        FileState::Ours {
            nameserver: Some(n),
            port: Some(p),
        } if n == host && p == port => None,
        FileState::Ours { nameserver, port } => Some(format!(
            "nameserver {} port {}",
            nameserver.map_or("none".into(), |n| n.to_string()),
            port.map_or("none".into(), |p| p.to_string())
        )),
        FileState::Missing => Some("no file".into()),
        FileState::Foreign => Some("a file netconnect did not write".into()),
        FileState::Unreadable(e) => Some(format!("an unreadable file ({e})")),
    };
    if let Some(seen) = seen {
        return vec![Disagreement {
            effect,
            asked,
            seen,
        }];
    }
    let t0 = tokio::time::Instant::now();
    loop {
        let Some(list) = platform::system_resolvers().await else {
            return Vec::new();
        };
        match check_resolver(domain, host, port, &list) {
            None => return Vec::new(),
            Some(d) if t0.elapsed() >= RESOLVER_SETTLE => return vec![d],
            Some(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// systemd-resolved's link read back (`resolvectl dns|domain IFACE`).
async fn read_back_resolved(
    iface: &str,
    host: IpAddr,
    port: u16,
    domain: &str,
) -> Vec<crate::readback::Disagreement> {
    use crate::command::Runner as _;
    let [dns, dom] = resolved::view_plan(iface);
    let runner = crate::command::SystemRunner;
    let (dns, dom) = (runner.run(&dns).await, runner.run(&dom).await);
    match (dns, dom) {
        (Ok(a), Ok(b)) => resolved::check(iface, host, port, domain, &a, &b)
            .into_iter()
            .collect(),
        (Err(e), _) | (_, Err(e)) => vec![crate::readback::Disagreement {
            effect: format!("resolver systemd-resolved ({iface})"),
            asked: format!("DNS {host} port {port}, domain ~{domain}"),
            seen: format!("nothing readable ({e})"),
        }],
    }
}

/// The port-in-use error, with who holds it when that can be found.
async fn bind_error(e: &ServeError) -> String {
    let holder = match e {
        ServeError::InUse { addr, transport } => {
            let t = if *transport == "TCP" {
                platform::Transport::Tcp
            } else {
                platform::Transport::Udp
            };
            platform::port_holder(t, *addr)
                .await
                .map(|h| format!(" by {h}"))
                .unwrap_or_default()
        }
        ServeError::Bind { .. } => String::new(),
    };
    format!(
        "names are off: {e}{holder}; containers stay reachable by IP (stop that program, or set dns.port in the configuration file)"
    )
}

async fn wire(
    cfg: &DnsConfig,
    domain: &str,
    host: IpAddr,
    iface: &str,
) -> Result<Option<Wiring>, String> {
    let port = *cfg.port.get_ref();
    if let Some(dir) = crate::dns::resolver_dir(cfg) {
        let file = ResolverFile::new(&dir, domain);
        file.install(host, port).map_err(|e| e.to_string())?;
        return Ok(Some(Wiring::File(file)));
    }
    if resolved::running() {
        resolved::apply(
            &resolved::set_plan(iface, host, port, domain),
            &crate::command::SystemRunner,
        )
        .await
        .map_err(|e| e.to_string())?;
        return Ok(Some(Wiring::Resolved {
            iface: iface.to_owned(),
        }));
    }
    info!(domain, "no resolver to point at the name server (no resolver folder, no systemd-resolved); ask it directly");
    Ok(None)
}

fn describe(w: &Wiring) -> String {
    match w {
        Wiring::File(f) => f.path().display().to_string(),
        Wiring::Resolved { iface } => format!("systemd-resolved ({iface})"),
    }
}

/// The resolver files of the zones besides the domain, each existing only
/// while something answers in it: a cluster's domain (`cluster.local`), a
/// container's label domain (`shop.test`), a routed network's reverse zone
/// (`18.172.in-addr.arpa`). Beside the main one, in the same folder
/// (macOS's /etc/resolver).
#[derive(Debug)]
pub struct ZoneResolvers {
    dir: PathBuf,
    host: IpAddr,
    port: u16,
    ours: String,
    files: BTreeMap<String, ResolverFile>,
}

impl ZoneResolvers {
    /// Where the main resolver file is a file; `None` otherwise (no folder:
    /// systemd-resolved or nothing; ask the server directly).
    pub fn new(cfg: &DnsConfig, host: IpAddr) -> Option<ZoneResolvers> {
        if !cfg.enabled {
            return None;
        }
        Some(ZoneResolvers {
            dir: crate::dns::resolver_dir(cfg)?,
            host,
            port: *cfg.port.get_ref(),
            ours: cfg.domain().to_string(),
            files: BTreeMap::new(),
        })
    }

    /// Files for exactly `domains` (ours is never one of them: it has its
    /// own file). A domain's file is written once and left alone while the
    /// domain stays.
    pub fn sync(&mut self, domains: &[String]) {
        let gone: Vec<String> = self
            .files
            .keys()
            .filter(|d| !domains.contains(d))
            .cloned()
            .collect();
        for d in gone {
            if let Some(f) = self.files.remove(&d) {
                match f.remove() {
                    Ok(_) => {
                        info!(file = %f.path().display(), "resolver file removed")
                    }
                    Err(e) => warn!(error = %e, "removing a resolver file failed"),
                }
            }
        }
        for d in domains {
            if *d == self.ours || self.files.contains_key(d) {
                continue;
            }
            let f = ResolverFile::new(&self.dir, d);
            match f.install(self.host, self.port) {
                Ok(()) => {
                    info!(file = %f.path().display(), domain = %d, "resolver file written");
                    self.files.insert(d.clone(), f);
                }
                Err(e) => {
                    warn!(domain = %d, error = %e, "a zone's names are not wired into this machine's resolver")
                }
            }
        }
    }

    /// The files written, for the status.
    pub fn paths(&self) -> Vec<String> {
        self.files
            .values()
            .map(|f| f.path().display().to_string())
            .collect()
    }
}

impl Names {
    /// Unwire the resolver first (no question should wait on a server that
    /// is going), then close the sockets.
    pub async fn stop(self) {
        match self.wiring {
            Some(Wiring::File(f)) => match f.remove() {
                Ok(_) => info!(file = %f.path().display(), "resolver file removed"),
                Err(e) => warn!(error = %e, "removing the resolver file failed"),
            },
            // The interface goes next, and its settings with it; reverting
            // first keeps the resolver from asking a server that stops.
            Some(Wiring::Resolved { iface }) => {
                let plan = resolved::revert_plan(&iface);
                if let Err(e) = resolved::apply(&plan, &crate::command::SystemRunner).await {
                    tracing::debug!(error = %e, "reverting systemd-resolved's DNS for the tunnel failed");
                }
            }
            None => {}
        }
        self.server.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file as written reads back as asked; one changed under us, or
    /// gone, is said with what it holds. (Linux has no system list; on
    /// macOS `scutil --dns` is read too, `crate::readback`'s tests.)
    #[tokio::test]
    async fn the_resolver_file_is_read_back() {
        let dir = std::env::temp_dir().join(format!("nc-readback-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let host: IpAddr = "10.33.33.1".parse().unwrap();
        let f = ResolverFile::new(&dir, "docker.internal");
        f.install(host, 53).unwrap();
        assert!(read_back(&f, "docker.internal", host, 53).await.is_empty());
        std::fs::write(
            f.path(),
            crate::dns::resolver::render("docker.internal", host, 5353),
        )
        .unwrap();
        let d: Vec<String> = read_back(&f, "docker.internal", host, 53)
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            d,
            [format!(
                "resolver file {}: asked nameserver 10.33.33.1 port 53, the OS shows nameserver 10.33.33.1 port 5353",
                f.path().display()
            )]
        );
        std::fs::remove_file(f.path()).unwrap();
        let d = read_back(&f, "docker.internal", host, 53).await;
        assert_eq!(d[0].seen, "no file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

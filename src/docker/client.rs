//! Talking to the engine with bollard: connect (trying each discovered
//! candidate), list networks, follow events.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bollard::models::{EventMessage, EventMessageTypeEnum, Network};
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::Stream;
use ipnet::IpNet;
use tracing::{debug, info, warn};

use super::discovery::{Candidate, Source};

/// Every call to the engine is bounded: a wedged Docker Desktop must show up
/// as an error in the log, not as a daemon that silently waits forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("no Docker engine answered; tried: {0}")]
    NoEngine(String),
    #[error("Docker API call failed: {0}")]
    Api(#[from] bollard::errors::Error),
    #[error("Docker API call timed out after {}s", CALL_TIMEOUT.as_secs())]
    Timeout,
    #[error(
        "{path} belongs to uid {found}, but uid {user}'s Docker files name it: as root, \
         netconnect connects only to a socket of that user or root (use --docker-host to \
         choose an engine)"
    )]
    ForeignSocket { path: String, found: u32, user: u32 },
}

/// A socket named by `user`'s files must be `user`'s or root's.
pub fn check_socket_owner(path: &str, user: u32) -> Result<(), DockerError> {
    use std::os::unix::fs::MetadataExt as _;
    // Followed links: what counts is who owns what answers.
    let found = match std::fs::metadata(path) {
        Ok(m) => m.uid(),
        // Missing: connecting fails with the usual error.
        Err(_) => return Ok(()),
    };
    if found == user || found == 0 {
        return Ok(());
    }
    Err(DockerError::ForeignSocket {
        path: path.to_owned(),
        found,
        user,
    })
}

/// A connected engine and how we found it.
#[derive(Clone)]
pub struct Engine {
    pub docker: Docker,
    pub host: String,
    pub source: Source,
    pub server_version: String,
    pub api_version: String,
    /// Which runtime this is ([`super::runtime`]).
    pub runtime: super::Runtime,
    /// The engine runs rootless: the helper cannot work there.
    pub rootless: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("host", &self.host)
            .field("source", &self.source)
            .field("server_version", &self.server_version)
            .field("runtime", &self.runtime)
            .finish()
    }
}

pub async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, DockerError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(DockerError::from),
        Err(_) => Err(DockerError::Timeout),
    }
}

/// Connect to the first candidate that answers `/version`, negotiating the
/// API version down from bollard's newest (Engine 29 refuses clients older
/// than 1.44; Engine 20.10 speaks 1.41).
pub async fn connect(candidates: &[Candidate]) -> Result<Engine, DockerError> {
    let mut tried = Vec::new();
    for c in candidates {
        match try_connect(c).await {
            Ok(engine) => {
                // `up`'s first stage on a terminal says it (progress).
                info!(
                    target: crate::progress::TARGET,
                    host = %engine.host,
                    reason = c.source.describe(),
                    version = %engine.server_version,
                    api = %engine.api_version,
                    "connected to Docker"
                );
                return Ok(engine);
            }
            Err(e @ DockerError::ForeignSocket { .. }) => {
                warn!(error = %e, "engine candidate refused");
                tried.push(format!("{} ({}): {e}", c.host, c.source.describe()));
            }
            Err(e) => {
                debug!(host = %c.host, error = %e, "engine candidate did not answer");
                tried.push(format!("{} ({}): {e}", c.host, c.source.describe()));
            }
        }
    }
    Err(DockerError::NoEngine(tried.join("; ")))
}

async fn try_connect(c: &Candidate) -> Result<Engine, DockerError> {
    let timeout = CALL_TIMEOUT.as_secs();
    let docker = if let Some(path) = c.host.strip_prefix("unix://") {
        if let Some(user) = c.owner {
            check_socket_owner(path, user)?;
        }
        Docker::connect_with_unix(path, timeout, API_DEFAULT_VERSION)?
    } else {
        Docker::connect_with_host(&c.host)?.with_timeout(CALL_TIMEOUT)
    };
    let docker = timed(docker.negotiate_version()).await?;
    let v = timed(docker.version()).await?;
    // `/info` only names the runtime: an engine whose answer bollard
    // cannot read is still an engine.
    let info = match timed(docker.info()).await {
        Ok(i) => Some(i),
        Err(e) => {
            debug!(error = %e, "the engine's /info answer could not be read");
            None
        }
    };
    let facts = runtime_facts(&v, info.as_ref());
    let runtime = super::runtime::identify(&facts, c.source, &c.host, c.context.as_deref());
    Ok(Engine {
        api_version: docker.client_version().to_string(),
        docker,
        host: c.host.clone(),
        source: c.source,
        server_version: v.version.unwrap_or_default(),
        runtime,
        rootless: facts.rootless(),
    })
}

/// What names the runtime in the engine's `/version` and `/info`.
fn runtime_facts(
    v: &bollard::models::SystemVersion,
    info: Option<&bollard::models::SystemInfo>,
) -> super::runtime::Facts {
    super::runtime::Facts {
        operating_system: info
            .and_then(|i| i.operating_system.clone())
            .unwrap_or_default(),
        name: info.and_then(|i| i.name.clone()).unwrap_or_default(),
        kernel: info
            .and_then(|i| i.kernel_version.clone())
            .or_else(|| v.kernel_version.clone())
            .unwrap_or_default(),
        labels: info.and_then(|i| i.labels.clone()).unwrap_or_default(),
        components: v
            .components
            .as_ref()
            .map(|c| c.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default(),
        security_options: info
            .and_then(|i| i.security_options.clone())
            .unwrap_or_default(),
        platform: v
            .platform
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
    }
}

/// What netconnect needs to know about a Docker network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    pub subnets: Vec<IpNet>,
    /// The gateways Docker gave the network's bridge (one per subnet).
    pub gateways: Vec<std::net::IpAddr>,
}

impl NetworkInfo {
    pub fn from_model(n: &Network) -> Self {
        let subnets = n
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .map(|c| {
                c.iter()
                    .filter_map(|c| c.subnet.as_deref())
                    .filter_map(|s| s.parse::<IpNet>().ok())
                    .map(|n| n.trunc())
                    .collect()
            })
            .unwrap_or_default();
        // Engine 20.10 lists the default bridge without its gateway; Docker
        // then gives the bridge the subnet's first address (172.17.0.1).
        let gateways = n
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .map(|c| {
                c.iter()
                    .filter_map(|c| match c.gateway.as_deref() {
                        Some(g) => g.parse().ok(),
                        None => first_address(c.subnet.as_deref()?.parse().ok()?),
                    })
                    .collect()
            })
            .unwrap_or_default();
        NetworkInfo {
            id: n.id.clone().unwrap_or_default(),
            name: n.name.clone().unwrap_or_default(),
            driver: n.driver.clone().unwrap_or_default(),
            scope: n.scope.clone().unwrap_or_default(),
            subnets,
            gateways,
        }
    }

    /// Networks whose containers live in the VM and have addresses there:
    /// local scope (swarm overlays are not reachable this way), and not the
    /// `host`/`none` pseudo-networks.
    pub fn is_routable(&self) -> bool {
        self.scope == "local" && !matches!(self.driver.as_str(), "host" | "null" | "none")
    }
}

/// The address after the network address, where Docker puts a bridge's
/// gateway unless told otherwise.
fn first_address(net: IpNet) -> Option<std::net::IpAddr> {
    Some(match net {
        IpNet::V4(n) => std::net::Ipv4Addr::from(u32::from(n.network()).checked_add(1)?).into(),
        IpNet::V6(n) => std::net::Ipv6Addr::from(u128::from(n.network()).checked_add(1)?).into(),
    })
}

pub async fn networks(docker: &Docker) -> Result<Vec<NetworkInfo>, DockerError> {
    let list = timed(docker.list_networks(None::<ListNetworksOptions>)).await?;
    let mut out: Vec<NetworkInfo> = list.iter().map(NetworkInfo::from_model).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The subnets to route: every IPv4 and IPv6 subnet of every routable network.
pub fn desired_subnets(networks: &[NetworkInfo]) -> BTreeSet<IpNet> {
    networks
        .iter()
        .filter(|n| n.is_routable())
        .flat_map(|n| n.subnets.iter().copied())
        .collect()
}

/// What netconnect needs to know about a running container: its names
/// ([`crate::dns::names`]) come from these.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its addresses on every network it is attached to.
    pub addresses: Vec<std::net::IpAddr>,
    /// Each network it is attached to, with its aliases there.
    pub networks: Vec<Attachment>,
}

/// A container on one network: the names it was given there
/// (`--network-alias`, Compose's `aliases:` and service name) and its
/// addresses on it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    pub network: String,
    /// Without the engine's own: the container's name and its short ID,
    /// which Docker adds to every attachment.
    pub aliases: Vec<String>,
    pub addresses: Vec<std::net::IpAddr>,
}

impl ContainerInfo {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    pub fn from_model(c: &bollard::models::ContainerSummary) -> Self {
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        let nets = c
            .network_settings
            .as_ref()
            .and_then(|s| s.networks.as_ref());
        let id = c.id.clone().unwrap_or_default();
        let (addresses, networks) = (endpoint_addresses(nets), attachments(nets, &id, &name));
        ContainerInfo {
            id,
            name,
            labels: c
                .labels
                .as_ref()
                .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            addresses,
            networks,
        }
    }
}

impl ContainerInfo {
    /// From `docker inspect`; `None` unless it runs.
    pub fn from_inspect(c: &bollard::models::ContainerInspectResponse) -> Option<Self> {
        if !c.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            return None;
        }
        let nets = c
            .network_settings
            .as_ref()
            .and_then(|s| s.networks.as_ref());
        let id = c.id.clone().unwrap_or_default();
        let name = c
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned();
        let (addresses, networks) = (endpoint_addresses(nets), attachments(nets, &id, &name));
        Some(ContainerInfo {
            id,
            name,
            networks,
            labels: c
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            addresses,
        })
    }
}

/// A container's addresses on every network it is attached to, both
/// families, each once (list and inspect answers alike).
fn endpoint_addresses(
    networks: Option<&HashMap<String, bollard::models::EndpointSettings>>,
) -> Vec<std::net::IpAddr> {
    networks
        .map(|nets| {
            nets.values()
                .flat_map(|e| [e.ip_address.as_deref(), e.global_ipv6_address.as_deref()])
                .flatten()
                .filter_map(|a| a.parse().ok())
                .collect::<BTreeSet<std::net::IpAddr>>()
                .into_iter()
                .collect()
        })
        .unwrap_or_default()
}

/// Each network of a container, in name order, with the aliases a user
/// gave it there: the engine adds the container's short ID (Docker) and
/// its name (Podman) to every attachment, which are not names anyone chose.
fn attachments(
    networks: Option<&HashMap<String, bollard::models::EndpointSettings>>,
    id: &str,
    name: &str,
) -> Vec<Attachment> {
    let mut out: Vec<Attachment> = networks
        .map(|nets| {
            nets.iter()
                .map(|(net, e)| {
                    let mut aliases: Vec<String> = e
                        .aliases
                        .iter()
                        .flatten()
                        .filter(|a| !is_engine_alias(a, id, name))
                        .cloned()
                        .collect();
                    aliases.sort();
                    aliases.dedup();
                    Attachment {
                        network: net.clone(),
                        aliases,
                        addresses: [e.ip_address.as_deref(), e.global_ipv6_address.as_deref()]
                            .into_iter()
                            .flatten()
                            .filter_map(|a| a.parse().ok())
                            .collect(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.network.cmp(&b.network));
    out
}

/// An alias the engine gave, not the user: the container's name, or a
/// prefix of its ID of 12 or more hex digits.
fn is_engine_alias(alias: &str, id: &str, name: &str) -> bool {
    alias.is_empty()
        || alias == name
        || (alias.len() >= 12
            && id.starts_with(alias)
            && alias.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One container as it is now, `None` if it does not run (or is gone).
/// Its events are sent before Engine 20.10 updates the list it answers
/// `docker ps` from (a network connect, a die), so a list made at an event
/// can be stale; inspecting waits for the container's lock, which the
/// engine holds until the change is complete.
pub async fn container(docker: &Docker, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
    match timed(docker.inspect_container(
        id,
        None::<bollard::query_parameters::InspectContainerOptions>,
    ))
    .await
    {
        Ok(c) => Ok(ContainerInfo::from_inspect(&c)),
        Err(DockerError::Api(bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How many inspects [`containers`] has in flight at once.
const INSPECTS_AT_ONCE: usize = 8;

/// The running containers: one list, then an inspect of each that has an
/// address, since the list leaves out the aliases (Engine 20.10 answers
/// `"Aliases": null` there, whatever the container was given). A
/// container gone in between is left out; one whose inspect fails keeps
/// what the list said.
pub async fn containers(docker: &Docker) -> Result<Vec<ContainerInfo>, DockerError> {
    use futures::StreamExt as _;
    let list = timed(docker.list_containers(Some(
        ListContainersOptionsBuilder::default().all(false).build(),
    )))
    .await?;
    let listed: Vec<ContainerInfo> = list.iter().map(ContainerInfo::from_model).collect();
    let mut out: Vec<ContainerInfo> = futures::stream::iter(listed)
        .map(|c| async move {
            if c.addresses.is_empty() {
                return Some(c);
            }
            match container(docker, &c.id).await {
                Ok(now) => now,
                Err(e) => {
                    debug!(container = %c.name, error = %e, "inspect failed; its aliases are not known");
                    Some(c)
                }
            }
        })
        .buffer_unordered(INSPECTS_AT_ONCE)
        .filter_map(|c| async move { c })
        .collect()
        .await;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What a command run in a container printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The engine's id of the exec, whose `exec_die` event is ours.
    pub exec_id: String,
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
}

/// The most of a command's output kept; a cluster's nodes and services
/// in kubectl's JSON are a few hundred KiB at most.
const EXEC_OUTPUT_MAX: usize = 8 << 20;

/// Run `argv` in running container `id`, as `docker exec` does (no TTY,
/// no input), and wait for it, under one [`CALL_TIMEOUT`].
pub async fn exec(docker: &Docker, id: &str, argv: &[&str]) -> Result<ExecOutput, DockerError> {
    use bollard::exec::{StartExecOptions, StartExecResults};
    use bollard::models::ExecConfig;
    use futures::StreamExt as _;
    let run = async {
        let created = docker
            .create_exec(
                id,
                ExecConfig {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(argv.iter().map(|a| a.to_string()).collect()),
                    ..Default::default()
                },
            )
            .await?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let started = docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(1 << 20),
                }),
            )
            .await?;
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                let (to, bytes) = match chunk? {
                    bollard::container::LogOutput::StdOut { message } => (&mut stdout, message),
                    bollard::container::LogOutput::StdErr { message } => (&mut stderr, message),
                    _ => continue,
                };
                if to.len() + bytes.len() <= EXEC_OUTPUT_MAX {
                    to.extend_from_slice(&bytes);
                }
            }
        }
        let inspected = docker.inspect_exec(&created.id).await?;
        Ok::<_, bollard::errors::Error>(ExecOutput {
            exec_id: created.id,
            exit_code: inspected.exit_code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    };
    timed(run).await
}

/// The events that change routes (network create/destroy), the helper
/// (container start/die) or names (also a container renamed, or attached
/// to or detached from a network). The stream ends (or errors) when the
/// engine goes away; the caller reconnects.
pub fn events(docker: &Docker) -> impl Stream<Item = Result<EventMessage, bollard::errors::Error>> {
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([
        ("type", vec!["network", "container"]),
        (
            "event",
            vec![
                "create",
                "destroy",
                "start",
                "die",
                "rename",
                "connect",
                "disconnect",
                // Podman 4.3 filters on its own names: `died` for what it
                // reports as `die` (fixed in 4.4), and Podman 5 names a
                // network's removal `remove`. Docker ignores the extras.
                "died",
                "remove",
                // A command run in a container ended: KinD and k3d make a
                // cluster by running kubeadm and kubectl in its nodes, so
                // a cluster still being made is read again then.
                "exec_die",
                // Podman's name for it (libpod's ExecDied status).
                "exec_died",
            ],
        ),
    ]);
    docker.events(Some(
        EventsOptionsBuilder::default().filters(&filters).build(),
    ))
}

/// What an event means to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Networks,
    ContainerStarted(String),
    /// A container stopped; `exit_code` as the event reports it.
    ContainerDied {
        id: String,
        exit_code: Option<i64>,
    },
    /// A container renamed, or attached to or detached from a network.
    Container(String),
    /// A command run in container `id` ended (`docker exec`).
    ExecDied {
        id: String,
        exec_id: String,
    },
    Other,
}

impl Change {
    /// The container whose names or addresses may differ now.
    pub fn container(&self) -> Option<&str> {
        match self {
            Change::ContainerStarted(id)
            | Change::ContainerDied { id, .. }
            | Change::Container(id) => Some(id),
            _ => None,
        }
    }
}

/// What an event means on `runtime`. Podman (4.3, Debian's; checked
/// here) sends no network create or destroy event at all, so there a
/// container started or attached may be on a network we have not listed:
/// the networks are listed again first (one request per such event, no
/// polling). A network removed is seen at the next listing.
pub fn changes(ev: &EventMessage, runtime: super::Runtime) -> Vec<Change> {
    let ch = classify(ev);
    let may_be_new_network = matches!(ch, Change::ContainerStarted(_))
        || (matches!(ch, Change::Container(_)) && ev.typ == Some(EventMessageTypeEnum::NETWORK));
    if runtime == super::Runtime::Podman && may_be_new_network {
        vec![Change::Networks, ch]
    } else {
        vec![ch]
    }
}

pub fn classify(ev: &EventMessage) -> Change {
    let id = ev
        .actor
        .as_ref()
        .and_then(|a| a.id.clone())
        .unwrap_or_default();
    match (ev.typ, ev.action.as_deref()) {
        (Some(EventMessageTypeEnum::NETWORK), Some("create" | "destroy" | "remove")) => {
            Change::Networks
        }
        // The actor is the network; the container is an attribute.
        (Some(EventMessageTypeEnum::NETWORK), Some("connect" | "disconnect")) => {
            match ev
                .actor
                .as_ref()
                .and_then(|a| a.attributes.as_ref())
                .and_then(|a| a.get("container"))
            {
                Some(c) => Change::Container(c.clone()),
                // Podman names the container as the actor, and the
                // network nowhere.
                None if !id.is_empty() => Change::Container(id),
                None => Change::Other,
            }
        }
        (Some(EventMessageTypeEnum::CONTAINER), Some("rename")) => Change::Container(id),
        (Some(EventMessageTypeEnum::CONTAINER), Some("start")) => Change::ContainerStarted(id),
        (Some(EventMessageTypeEnum::CONTAINER), Some("exec_die" | "exec_died")) => {
            Change::ExecDied {
                exec_id: ev
                    .actor
                    .as_ref()
                    .and_then(|a| a.attributes.as_ref())
                    .and_then(|a| a.get("execID"))
                    .cloned()
                    .unwrap_or_default(),
                id,
            }
        }
        (Some(EventMessageTypeEnum::CONTAINER), Some("die" | "died")) => Change::ContainerDied {
            exit_code: ev
                .actor
                .as_ref()
                .and_then(|a| a.attributes.as_ref())
                .and_then(|a| a.get("exitCode"))
                .and_then(|c| c.parse().ok()),
            id,
        },
        _ => Change::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker 20.10's inspect of a Compose v1 container on two networks:
    /// the aliases a user gave stay; the engine's (its short ID, its
    /// name) go.
    #[test]
    fn a_containers_aliases_per_network_without_the_engines() {
        let c: bollard::models::ContainerInspectResponse = serde_json::from_str(
            r#"{"Id":"1a2b3c4d5e6f7a8b9c0d","Name":"/shop_db_1","State":{"Running":true},
                "Config":{"Labels":{"com.docker.compose.service":"db"}},
                "NetworkSettings":{"Networks":{
                  "shop_front":{"Aliases":["db","1a2b3c4d5e6f","shop_db_1"],"IPAddress":"172.22.0.5","GlobalIPv6Address":""},
                  "shop_backend":{"Aliases":["store","db","db"],"IPAddress":"172.21.0.5","GlobalIPv6Address":"fd00:21::5"},
                  "bridge":{"Aliases":null,"IPAddress":"172.17.0.4"}}}}"#,
        )
        .unwrap();
        let c = ContainerInfo::from_inspect(&c).unwrap();
        assert_eq!(c.name, "shop_db_1");
        let nets: Vec<(&str, Vec<&str>, Vec<String>)> = c
            .networks
            .iter()
            .map(|a| {
                (
                    a.network.as_str(),
                    a.aliases.iter().map(String::as_str).collect(),
                    a.addresses.iter().map(|a| a.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            nets,
            [
                ("bridge", vec![], vec!["172.17.0.4".to_string()]),
                (
                    "shop_backend",
                    vec!["db", "store"],
                    vec!["172.21.0.5".to_string(), "fd00:21::5".to_string()]
                ),
                ("shop_front", vec!["db"], vec!["172.22.0.5".to_string()]),
            ]
        );
        assert!(is_engine_alias("1a2b3c4d5e6f", "1a2b3c4d5e6f7a8b9c0d", "x"));
        // Hex, but a name someone chose: not a prefix of the ID.
        assert!(!is_engine_alias(
            "deadbeefcafe",
            "1a2b3c4d5e6f7a8b9c0d",
            "x"
        ));
        assert!(!is_engine_alias("1a2b3c", "1a2b3c4d5e6f7a8b9c0d", "x"));
    }

    /// Docker 20.10's `exec_die` (recorded here, `docker exec NODE true`):
    /// the container is the actor, the exec an attribute.
    #[test]
    fn an_exec_ending_names_its_container_and_exec() {
        let ev: EventMessage = serde_json::from_str(
            r#"{"status":"exec_die","id":"64d1489866776010ec288b3cf6ac27a9203cd67b3cf795a6005e91860ab87b47","from":"netconnect-test-busybox:1","Type":"container","Action":"exec_die","Actor":{"ID":"64d1489866776010ec288b3cf6ac27a9203cd67b3cf795a6005e91860ab87b47","Attributes":{"execID":"161b8b47a735dedacdac5cc647456ed44413bb81b635404a14d8d7ad4809feda","exitCode":"0","image":"netconnect-test-busybox:1","io.x-k8s.kind.cluster":"kind","name":"evx"}},"scope":"local","time":1796650161,"timeNano":1796650161516521058}"#,
        )
        .unwrap();
        let ch = classify(&ev);
        assert_eq!(
            ch,
            Change::ExecDied {
                id: "64d1489866776010ec288b3cf6ac27a9203cd67b3cf795a6005e91860ab87b47".into(),
                exec_id: "161b8b47a735dedacdac5cc647456ed44413bb81b635404a14d8d7ad4809feda".into()
            }
        );
        // Names do not change with an exec: no inspect for it.
        assert_eq!(ch.container(), None);
        // Podman names it exec_died.
        let mut podman = ev.clone();
        podman.action = Some("exec_died".into());
        assert_eq!(classify(&podman), ch);
    }

    /// Podman 4.3's events as its compat API streams them (recorded on
    /// this machine): a network connect names the container as the
    /// actor; a start makes Podman's networks be listed again, Docker's not.
    #[test]
    fn podman_events_mean_what_docker_s_do() {
        let connect: EventMessage = serde_json::from_str(
            r#"{"status":"connect","id":"db8bcab8d22d","Type":"network","Action":"connect","Actor":{"ID":"db8bcab8d22d","Attributes":{"containerExitCode":"0","image":"","name":"pe2","podId":""}},"scope":"local","time":1796623240,"timeNano":1796623240016483655}"#,
        )
        .unwrap();
        assert_eq!(classify(&connect), Change::Container("db8bcab8d22d".into()));
        let start: EventMessage = serde_json::from_str(
            r#"{"status":"start","id":"6f3ac4b1","from":"localhost/netconnect-test-busybox:1","Type":"container","Action":"start","Actor":{"ID":"6f3ac4b1","Attributes":{"containerExitCode":"0","image":"localhost/netconnect-test-busybox:1","name":"pe1","podId":""}},"scope":"local","time":1796623211}"#,
        )
        .unwrap();
        assert_eq!(
            changes(&start, super::super::Runtime::Podman),
            vec![
                Change::Networks,
                Change::ContainerStarted("6f3ac4b1".into())
            ]
        );
        assert_eq!(
            changes(&start, super::super::Runtime::Dockerd),
            vec![Change::ContainerStarted("6f3ac4b1".into())]
        );
        assert_eq!(
            changes(&connect, super::super::Runtime::Podman),
            vec![Change::Networks, Change::Container("db8bcab8d22d".into())]
        );
        let die: EventMessage = serde_json::from_str(
            r#"{"status":"die","id":"6f3a","Type":"container","Action":"die","Actor":{"ID":"6f3a","Attributes":{"containerExitCode":"0","exitCode":"3","name":"pe1","podId":""}}}"#,
        )
        .unwrap();
        let removed: EventMessage = serde_json::from_str(
            r#"{"Type":"network","Action":"remove","Actor":{"ID":"3f2a","Attributes":{"name":"pnet"}}}"#,
        )
        .unwrap();
        assert_eq!(
            classify(&removed),
            Change::Networks,
            "Podman 5's network removal"
        );
        assert_eq!(
            changes(&die, super::super::Runtime::Podman),
            vec![Change::ContainerDied {
                id: "6f3a".into(),
                exit_code: Some(3)
            }]
        );
    }

    #[test]
    fn a_die_event_carries_its_exit_code() {
        let ev: EventMessage = serde_json::from_str(
            r#"{"Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"0","name":"h"}}}"#,
        )
        .unwrap();
        assert_eq!(
            classify(&ev),
            Change::ContainerDied {
                id: "abc".into(),
                exit_code: Some(0)
            }
        );
        let ev: EventMessage = serde_json::from_str(
            r#"{"Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"137"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            classify(&ev),
            Change::ContainerDied {
                exit_code: Some(137),
                ..
            }
        ));
        let ev: EventMessage =
            serde_json::from_str(r#"{"Type":"network","Action":"destroy","Actor":{"ID":"n"}}"#)
                .unwrap();
        assert_eq!(classify(&ev), Change::Networks);
        let ev: EventMessage = serde_json::from_str(
            r#"{"Type":"container","Action":"rename","Actor":{"ID":"c1","Attributes":{"name":"new","oldName":"/old"}}}"#,
        )
        .unwrap();
        assert_eq!(classify(&ev), Change::Container("c1".into()));
        for action in ["connect", "disconnect"] {
            let ev: EventMessage = serde_json::from_str(&format!(
                r#"{{"Type":"network","Action":"{action}","Actor":{{"ID":"net1","Attributes":{{"container":"c2","name":"shop"}}}}}}"#
            ))
            .unwrap();
            assert_eq!(classify(&ev), Change::Container("c2".into()), "{action}");
        }
        assert_eq!(Change::Networks.container(), None);
        assert_eq!(
            Change::ContainerDied {
                id: "c3".into(),
                exit_code: None
            }
            .container(),
            Some("c3")
        );
    }

    #[test]
    fn a_container_from_the_list() {
        let c: bollard::models::ContainerSummary = serde_json::from_str(
            r#"{"Id":"abc","Names":["/shop-web-1"],
                "Labels":{"com.docker.compose.service":"web","com.docker.compose.project":"shop"},
                "NetworkSettings":{"Networks":{
                    "shop_default":{"IPAddress":"172.19.0.3","GlobalIPv6Address":"fd00:19::3"},
                    "other":{"IPAddress":"172.20.0.5","GlobalIPv6Address":""}}}}"#,
        )
        .unwrap();
        let info = ContainerInfo::from_model(&c);
        assert_eq!(info.name, "shop-web-1");
        assert_eq!(info.label("com.docker.compose.project"), Some("shop"));
        assert_eq!(
            info.addresses,
            ["172.19.0.3", "172.20.0.5", "fd00:19::3"]
                .map(|a| a.parse::<std::net::IpAddr>().unwrap())
        );
        let inspected: bollard::models::ContainerInspectResponse = serde_json::from_str(
            r#"{"Id":"abc","Name":"/shop-web-1","State":{"Running":true},
                "Config":{"Labels":{"com.docker.compose.service":"web"}},
                "NetworkSettings":{"Networks":{
                    "shop_default":{"IPAddress":"172.19.0.3","GlobalIPv6Address":"fd00:19::3"},
                    "other":{"IPAddress":"172.20.0.5","GlobalIPv6Address":""}}}}"#,
        )
        .unwrap();
        let i = ContainerInfo::from_inspect(&inspected).unwrap();
        assert_eq!((i.id.as_str(), i.name.as_str()), ("abc", "shop-web-1"));
        assert_eq!(i.addresses, info.addresses);
        assert_eq!(i.label("com.docker.compose.service"), Some("web"));
        let stopped: bollard::models::ContainerInspectResponse =
            serde_json::from_str(r#"{"Id":"abc","Name":"/x","State":{"Running":false}}"#).unwrap();
        assert_eq!(ContainerInfo::from_inspect(&stopped), None);
        // Host networking: listed with no address.
        let c: bollard::models::ContainerSummary = serde_json::from_str(
            r#"{"Id":"h","Names":["/helper"],"NetworkSettings":{"Networks":{"host":{"IPAddress":""}}}}"#,
        )
        .unwrap();
        assert!(ContainerInfo::from_model(&c).addresses.is_empty());
    }

    /// A socket another user owns, named by a user's context, is refused
    /// before any connection is made; one of the user's or root's is tried.
    #[tokio::test]
    async fn root_connects_only_to_the_users_or_roots_socket() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = std::env::temp_dir().join(format!("nc-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Counts connections and closes each at once: not an engine.
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(c);
            }
        });
        let connections = || accepted.load(std::sync::atomic::Ordering::SeqCst);
        let me = std::fs::metadata(&path).unwrap().uid();
        // As root the socket is root's, which any user's files may name;
        // hand it to a third user to make it foreign.
        let (found, user) = if me == 0 {
            nix::unistd::chown(&path, Some(65534.into()), None).unwrap();
            (65534, 1000)
        } else {
            (me, me + 1)
        };
        let candidate = |owner| Candidate {
            host: format!("unix://{}", path.display()),
            source: Source::Context,
            owner: Some(owner),
            context: None,
        };
        let e = connect(&[candidate(user)]).await.unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "{} belongs to uid {found}, but uid {user}'s Docker files name it",
                path.display()
            )),
            "{e}"
        );
        assert_eq!(connections(), 0, "a connection reached the foreign socket");
        // Its owner's own socket is tried (and fails only for not being Docker).
        let e = connect(&[candidate(found)]).await.unwrap_err().to_string();
        assert!(!e.contains("belongs to uid"), "{e}");
        assert!(connections() > 0, "the owner's socket was not tried");
        let _ = std::fs::remove_dir_all(&dir);
    }
    use bollard::models::{Ipam, IpamConfig};

    fn net(name: &str, driver: &str, scope: &str, subnets: &[&str]) -> Network {
        Network {
            id: Some(format!("id-{name}")),
            name: Some(name.into()),
            driver: Some(driver.into()),
            scope: Some(scope.into()),
            ipam: Some(Ipam {
                config: Some(
                    subnets
                        .iter()
                        .map(|s| IpamConfig {
                            subnet: Some((*s).into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn routable_subnets_from_networks() {
        let nets: Vec<NetworkInfo> = [
            net("bridge", "bridge", "local", &["172.17.0.0/16"]),
            net(
                "kind",
                "bridge",
                "local",
                &["172.18.0.0/16", "fc00:f853:ccd:e793::/64"],
            ),
            net("host", "host", "local", &[]),
            net("none", "null", "local", &[]),
            net("ingress", "overlay", "swarm", &["10.0.0.0/24"]),
            net("odd", "bridge", "local", &["not-a-cidr", "10.99.0.1/24"]),
        ]
        .iter()
        .map(NetworkInfo::from_model)
        .collect();
        let want: BTreeSet<IpNet> = [
            "172.17.0.0/16",
            "172.18.0.0/16",
            "fc00:f853:ccd:e793::/64",
            "10.99.0.0/24",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(desired_subnets(&nets), want);
        // No gateway listed (the default bridge on Engine 20.10): the first host.
        assert_eq!(
            nets[0].gateways,
            ["172.17.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            nets[1].gateways,
            [
                "172.18.0.1".parse::<std::net::IpAddr>().unwrap(),
                "fc00:f853:ccd:e793::1".parse().unwrap()
            ]
        );
        let mut listed = net("user", "bridge", "local", &["10.5.0.0/16"]);
        listed.ipam.as_mut().unwrap().config.as_mut().unwrap()[0].gateway = Some("10.5.9.9".into());
        assert_eq!(
            NetworkInfo::from_model(&listed).gateways,
            ["10.5.9.9".parse::<std::net::IpAddr>().unwrap()]
        );
    }
}

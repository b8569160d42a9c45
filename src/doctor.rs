//! `netconnect doctor`: walk the chain from this machine to a container,
//! link by link, and stop at the first broken one with what is wrong and
//! the command that fixes it. Exit 0 when every link holds, 1 otherwise.
//!
//! The links, in order: root, the engine, the helper image, the daemon,
//! the helper container, a fresh handshake, a route per network, no
//! conflicts, the VM's interface and firewall rules, an answer from a
//! container through the tunnel, and that container by name.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{HelperCommand, VmArgs};
use crate::config::Config;
use crate::control::snapshot::{RouteState, SkipReason};
use crate::control::{self, ControlError, Snapshot};
use crate::docker::vmside::Shadow;
use crate::settings::Target;

/// WireGuard re-handshakes every 2 minutes while packets flow; neither side
/// sends keepalives, so an older handshake means an idle tunnel, which is
/// fine: the next packet starts a new one.
const HANDSHAKE_FRESH: Duration = Duration::from_secs(180);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// After a quiet spell the first packet may wake the VM side: `up` probes
/// it after 1 s unanswered and re-runs the helper, within about 7 s.
const PROBE_TIMEOUT_IDLE: Duration = Duration::from_secs(10);
const PROBE_PORT: u16 = 80;
/// The commands doctor tells a user to run, each parsed by a unit test.
const RESTART: &str = "sudo netconnect down && sudo netconnect up";
const HANDSHAKE_FIX: &str = "check that the VM reaches this machine \
    (sudo netconnect down && sudo netconnect up --host-endpoint HOST[:PORT]); \
    a firewall on this machine must let UDP to the listen port in";
const ENGINE_FIX: &str = "start Docker (Docker Desktop, Colima, ...), or name its socket: \
                          sudo netconnect doctor --docker-host unix:///path/to/docker.sock";

/// One link's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok(String),
    Broken { what: String, fix: String },
}

fn ok(s: impl Into<String>) -> Verdict {
    Verdict::Ok(s.into())
}
fn broken(what: impl Into<String>, fix: impl Into<String>) -> Verdict {
    Verdict::Broken {
        what: what.into(),
        fix: fix.into(),
    }
}

pub async fn run(mut target: Target, socket: &Path, _config: &Config) -> anyhow::Result<ExitCode> {
    let mut links = Links;
    let healthy = check(&mut target, socket, &mut links).await;
    if healthy {
        println!("healthy: every link from here to the containers works");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// Prints each verdict as it comes.
struct Links;

impl Links {
    /// Prints the verdict; true if the link holds.
    fn say(&mut self, name: &str, v: Verdict) -> bool {
        match v {
            Verdict::Ok(d) => {
                println!("ok    {name}: {d}");
                true
            }
            Verdict::Broken { what, fix } => {
                println!("FAIL  {name}: {what}");
                println!("      fix: {fix}");
                false
            }
        }
    }
}

async fn check(target: &mut Target, socket: &Path, l: &mut Links) -> bool {
    // 1. root
    if !l.say("root", root()) {
        return false;
    }
    // The daemon, if any, says which engine, image and interfaces it uses.
    let snap = match control::status(socket).await {
        Ok(s) => Some(s),
        Err(ControlError::NotRunning(_)) => None,
        Err(e) => return l.say("daemon", broken(e.to_string(), RESTART)),
    };
    if let Some(s) = &snap {
        if let Some(e) = &s.engine {
            target.docker_host = Some(e.host.clone());
        }
        if !s.helper.image.is_empty() {
            target.helper_image = s.helper.image.clone();
            target.vm_interface = s.helper.vm_interface.clone();
        }
        if let Some(t) = &s.tunnel {
            target.interface = t.interface.clone();
        }
    }
    // 2. engine
    let engine = match crate::status::connect(target).await {
        Ok(e) => e,
        Err(e) => return l.say("engine", broken(e.to_string(), ENGINE_FIX)),
    };
    if !l.say(
        "engine",
        ok(format!(
            "{} answers (Docker {}, API {})",
            engine.host, engine.server_version, engine.api_version
        )),
    ) {
        return false;
    }
    // 2b. runtime
    let runtime = runtime_verdict(engine.runtime, engine.rootless);
    let runtime_ok = l.say("runtime", runtime);
    if !runtime_ok {
        return false;
    }
    // OrbStack routes by itself: with no daemon of ours, nothing is left
    // to check (a daemon run with --force is checked as any other).
    if engine.runtime.routes_containers_itself() && snap.is_none() {
        return true;
    }
    // 3. helper image
    let image =
        match crate::docker::vmside::image_present(&engine.docker, &target.helper_image).await {
            Ok(true) => ok(format!("{} present", target.helper_image)),
            Ok(false) => broken(
                format!("{} is not in the engine", target.helper_image),
                "build it with helper-image/build.sh (or `docker load -i <archive>`)",
            ),
            Err(e) => broken(e.to_string(), "check the engine: docker info"),
        };
    if !l.say("helper image", image) {
        return false;
    }
    // 4. daemon
    let Some(snap) = snap else {
        return l.say(
            "daemon",
            broken(
                format!(
                    "netconnect up is not running (nothing answers on {})",
                    socket.display()
                ),
                "sudo netconnect up",
            ),
        );
    };
    if !l.say(
        "daemon",
        ok(format!("netconnect up running (pid {})", snap.pid)),
    ) {
        return false;
    }
    // 4b. the tunnel interface as the OS shows it, and what `up` read back
    if !l.say("os view", os_view(&snap, interface_view(&snap).await)) {
        return false;
    }
    // 5. helper
    if !l.say("helper", helper(&snap, &engine.docker).await) {
        return false;
    }
    // 6. handshake
    if !l.say("handshake", handshake(&snap)) {
        return false;
    }
    // 7. routes, 8. conflicts
    let installed = match installed_routes(&snap).await {
        Ok(r) => r,
        Err(e) => return l.say("routes", broken(e, RESTART)),
    };
    if !l.say("routes", routes(&snap, &installed)) {
        return false;
    }
    if !l.say("conflicts", conflicts(&snap)) {
        return false;
    }
    // 9. VM firewall
    let (firewall, shadows) = vm_firewall(target, &engine.docker, &snap).await;
    if !l.say("vm firewall", firewall) {
        return false;
    }
    // 10. a container answers
    if !l.say(
        "probe",
        probe(target, &engine.docker, &snap, &shadows).await,
    ) {
        return false;
    }
    // 11. the clusters in containers, each: read, routed, its DNS answers
    for c in &snap.clusters {
        let dns = cluster_dns(c).await;
        if !l.say("cluster", cluster_verdict(c, &installed, dns, snap.pid)) {
            return false;
        }
    }
    // 12. and a container by its name
    l.say("names", names(&engine.docker, &snap).await)
}

/// How long a cluster's DNS Service is given to answer.
const CLUSTER_DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// Ask the cluster's DNS Service for the `kubernetes` Service, through
/// the tunnel: any answer (even "no such name") shows it is reached.
async fn cluster_dns(c: &crate::control::snapshot::ClusterState) -> Option<Result<String, String>> {
    let ip: IpAddr = c.dns.first()?.parse().ok()?;
    let domain = c.domain.as_deref().unwrap_or(crate::kube::DEFAULT_DOMAIN);
    let name = format!("kubernetes.default.svc.{domain}.");
    let r = crate::dns::query::ask(
        SocketAddr::new(ip, crate::kube::names::DNS_PORT),
        &name,
        hickory_proto::rr::RecordType::A,
        crate::dns::query::Transport::Udp,
        CLUSTER_DNS_TIMEOUT,
    )
    .await;
    Some(
        r.map(|r| {
            format!(
                "{} {}",
                name.trim_end_matches('.'),
                match r.addresses.first() {
                    Some(a) => a.to_string(),
                    None => r.code.to_string(),
                }
            )
        })
        .map_err(|e| e.to_string()),
    )
}

/// One cluster's link: read, every range routed and in the kernel, its
/// DNS answering (`dns`: what asking it gave; `None`: no DNS Service).
fn cluster_verdict(
    c: &crate::control::snapshot::ClusterState,
    installed: &[ipnet::IpNet],
    dns: Option<Result<String, String>>,
    pid: u32,
) -> Verdict {
    let name = format!("{} ({})", c.name, c.flavor);
    match c.state.as_str() {
        "ready" | "incomplete" => {}
        "unreadable" => {
            return broken(
                format!(
                    "cluster {name} cannot be read: {}",
                    c.error.as_deref().unwrap_or("?")
                ),
                format!(
                    "check the cluster answers: docker exec {} kubectl get nodes",
                    c.nodes.first().map(String::as_str).unwrap_or("NODE")
                ),
            )
        }
        _ => {
            return broken(
                format!("cluster {name} is not read yet"),
                format!("wait a moment; sudo kill -HUP {pid} reads it again"),
            )
        }
    }
    if !c.not_routed.is_empty() {
        return broken(
            format!("cluster {name}: {} not routed (overlaps a route this machine has)", c.not_routed.join(", ")),
            "`netconnect status` names the route in the way; remove it, or make the cluster with other pod and service ranges",
        );
    }
    let gone: Vec<&String> = c
        .routed
        .iter()
        .filter(|r| {
            !r.parse::<ipnet::IpNet>()
                .is_ok_and(|n| installed.contains(&n))
        })
        .collect();
    if !gone.is_empty() {
        return broken(
            format!(
                "cluster {name}: the route for {} is gone from the kernel",
                gone.iter()
                    .map(|g| g.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("sudo kill -HUP {pid} (a reload resyncs the routes)"),
        );
    }
    let dns = match dns {
        None => "no DNS Service found".to_owned(),
        Some(Ok(answer)) => format!("DNS {} answers ({answer})", c.dns.join(" ")),
        Some(Err(e)) => {
            return broken(
                format!("cluster {name}: its DNS Service does not answer through the tunnel: {e}"),
                format!(
                    "check the cluster's DNS: docker exec {} kubectl -n kube-system get pods",
                    c.nodes.first().map(String::as_str).unwrap_or("NODE")
                ),
            )
        }
    };
    let n = c.nodes.len();
    ok(format!(
        "cluster {name}: {n} node{}, {} range(s) routed, {dns}{}",
        if n == 1 { "" } else { "s" },
        c.routed.len(),
        if c.state == "incomplete" {
            "; a node has no pod range yet"
        } else {
            ""
        }
    ))
}

/// The runtime link: which one answers, and what that runtime needs.
fn runtime_verdict(runtime: crate::docker::Runtime, rootless: bool) -> Verdict {
    if rootless {
        let p = runtime.rootless_problem();
        let (what, fix) = p.split_once("; ").unwrap_or((&p, ""));
        return broken(what, fix);
    }
    match runtime.advice() {
        Some(a) => ok(format!("{} ({a})", runtime.as_str())),
        None => ok(runtime.as_str()),
    }
}

/// Resolve one running container's name: from netconnect's server
/// directly, then through this machine's resolver, naming the link that
/// breaks.
async fn names(docker: &bollard::Docker, s: &Snapshot) -> Verdict {
    let Some(d) = &s.dns else {
        return ok("this daemon serves no names (it predates them)");
    };
    match d.state.as_str() {
        "serving" => {}
        "disabled" => return ok("off (dns.enabled = false in the configuration file)"),
        _ => {
            return broken(
                d.error
                    .clone()
                    .unwrap_or_else(|| format!("the name server is {}", d.state)),
                format!("free the port, or set dns.port in the configuration file; then {RESTART}"),
            )
        }
    }
    let (Ok(domain), Ok(server)) = (
        d.domain.parse::<crate::dns::names::Domain>(),
        d.address.parse::<SocketAddr>(),
    ) else {
        return broken(
            format!("the daemon reports an unreadable name server {d:?}"),
            RESTART,
        );
    };
    let routed = s
        .networks
        .iter()
        .filter(|r| r.route == RouteState::Installed)
        .map(|r| &r.subnet)
        .chain(
            s.extra_routes
                .iter()
                .filter(|r| r.route == RouteState::Installed)
                .map(|r| &r.subnet),
        )
        .filter_map(|r| r.parse().ok())
        .collect();
    let containers = match crate::docker::containers(docker).await {
        Ok(c) => c,
        Err(e) => return broken(e.to_string(), "check the engine: docker info"),
    };
    let table = crate::dns::names::Table::build(&domain, &containers, &routed);
    // A container's own name, not a Compose service's: one address to expect.
    let Some((name, want)) = containers.iter().find_map(|c| {
        let name = format!("{}.{domain}", c.name.to_ascii_lowercase());
        let (n, a) = table.entries().find(|(n, _)| *n == name)?;
        Some((
            n.to_owned(),
            a.iter()
                .copied()
                .find(|a| a.is_ipv4())
                .or(a.first().copied())?,
        ))
    }) else {
        return ok(format!(
            "*.{domain} served on {server}; no running container with a name to resolve"
        ));
    };
    let qtype = if want.is_ipv4() {
        hickory_proto::rr::RecordType::A
    } else {
        hickory_proto::rr::RecordType::AAAA
    };
    let direct = crate::dns::query::ask(
        server,
        &name,
        qtype,
        crate::dns::query::Transport::Udp,
        NAME_TIMEOUT,
    )
    .await;
    let file = d
        .resolver
        .as_deref()
        .filter(|r| r.starts_with('/'))
        .and_then(|p| {
            let p = Path::new(p);
            let file =
                crate::dns::resolver::ResolverFile::new(p.parent()?, p.file_name()?.to_str()?);
            Some(file.state())
        });
    let system = match direct {
        Ok(ref r) if r.addresses.contains(&want) => Some(system_lookup(&name).await),
        _ => None,
    };
    names_verdict(&name, want, server, direct, d, file, system)
}

const NAME_TIMEOUT: Duration = Duration::from_secs(2);

/// The system's resolver, as any program on this machine asks it.
async fn system_lookup(name: &str) -> Result<Vec<IpAddr>, String> {
    match tokio::time::timeout(NAME_TIMEOUT * 3, tokio::net::lookup_host((name, 0))).await {
        Ok(Ok(a)) => Ok(a.map(|a| a.ip()).collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {:?}", NAME_TIMEOUT * 3)),
    }
}

/// The names link's verdict from what was found; pure, so each broken
/// link is a unit test.
fn names_verdict(
    name: &str,
    want: IpAddr,
    server: SocketAddr,
    direct: Result<crate::dns::query::Reply, crate::dns::query::QueryError>,
    d: &crate::control::snapshot::DnsState,
    file: Option<crate::dns::resolver::FileState>,
    system: Option<Result<Vec<IpAddr>, String>>,
) -> Verdict {
    use crate::dns::query::QueryError;
    use crate::dns::resolver::FileState;
    use hickory_proto::op::ResponseCode;
    let reply = match direct {
        Ok(r) => r,
        Err(e @ (QueryError::Timeout(..) | QueryError::Refused(_))) => {
            return broken(format!("the name server is not listening: {e}"), RESTART)
        }
        Err(e) => return broken(e.to_string(), RESTART),
    };
    if reply.code == ResponseCode::NXDomain {
        return broken(
            format!(
                "name unknown: {server} answers that {name} does not exist, yet the container runs"
            ),
            format!("netconnect missed a Docker event; {RESTART}"),
        );
    }
    if !reply.addresses.contains(&want) {
        return broken(
            format!(
                "{server} answers {name} with {:?} ({}), not the container's {want}",
                reply.addresses, reply.code
            ),
            format!("netconnect missed a Docker event; {RESTART}"),
        );
    }
    if let Some(e) = &d.resolver_error {
        return broken(
            format!("{name} answers on {server}, but this machine's resolver is not pointed at it: {e}"),
            "move the file netconnect refuses to overwrite away (or set dns.domain), then sudo netconnect down && sudo netconnect up",
        );
    }
    if let (Some(path), Some(state)) = (&d.resolver, file) {
        match state {
            FileState::Missing => {
                return broken(
                    format!(
                    "resolver file missing: {path}, so this machine does not ask {server} for {}",
                    d.domain
                ),
                    RESTART,
                )
            }
            FileState::Unreadable(e) => return broken(format!("cannot read {path}: {e}"), RESTART),
            FileState::Foreign => {
                return broken(
                    format!("{path} was replaced by a file netconnect did not write"),
                    format!("move {path} away, then {RESTART}"),
                )
            }
            FileState::Ours { nameserver, port } => {
                if nameserver != Some(server.ip()) || port.unwrap_or(53) != server.port() {
                    return broken(
                        format!("{path} points at {nameserver:?} port {port:?}, not at {server}"),
                        RESTART,
                    );
                }
            }
        }
    }
    match system {
        Some(Ok(found)) if found.contains(&want) => ok(format!(
            "{name} resolves to {want} through this machine's resolver (server {server})"
        )),
        Some(found) if d.resolver.is_some() => broken(
            format!(
                "{name} answers on {server}, but this machine's resolver gives {}",
                match found {
                    Ok(a) => format!("{a:?}"),
                    Err(e) => e,
                }
            ),
            "the resolver may hold an old answer: flush it (macOS: sudo dscacheutil -flushcache; sudo killall -HUP mDNSResponder)",
        ),
        _ => ok(format!(
            "{name} answers {want} on {server}; nothing points this machine's resolver at it (no resolver folder, no systemd-resolved): ask {server} directly"
        )),
    }
}

fn root() -> Verdict {
    if nix::unistd::geteuid().is_root() {
        ok("running as root")
    } else {
        broken("not running as root", "sudo netconnect doctor")
    }
}

async fn helper(s: &Snapshot, docker: &bollard::Docker) -> Verdict {
    let name = &s.helper.container;
    let running = match &s.helper.id {
        Some(id) => crate::docker::vmside::container::is_running(docker, id).await,
        None => false,
    };
    if running {
        ok(format!("{name} running"))
    } else if s.helper.state == "idle" {
        ok(format!(
            "{name} left after a quiet spell; the next packet for the VM starts it again"
        ))
    } else {
        broken(
            format!("the helper container {name} is not running (daemon says: {})", s.helper.state),
            format!(
                "netconnect up starts it again within seconds; if it keeps failing, read `docker logs {name}` \
                 and restart with `sudo netconnect down && sudo netconnect up`"
            ),
        )
    }
}

fn handshake(s: &Snapshot) -> Verdict {
    let Some(t) = &s.tunnel else {
        return broken(
            "the daemon has no tunnel yet",
            "wait a few seconds and run doctor again",
        );
    };
    let way = match &s.vm {
        Some(v) => match (&v.endpoint, &v.endpoint_source) {
            (Some(e), Some(src)) => format!("; the VM sends to {e} ({src})"),
            _ => String::new(),
        },
        None => String::new(),
    };
    match t.last_handshake_age_s {
        Some(age) if age <= HANDSHAKE_FRESH.as_secs() => {
            ok(format!("last handshake {age} s ago{way}"))
        }
        // The probe below sends a packet, which starts a new one.
        Some(age) => ok(format!(
            "last handshake {age} s ago{way}: the tunnel is idle, and the next packet starts a new one"
        )),
        None => match s.vm.as_ref().and_then(|v| v.error.as_deref()) {
            Some(e) => broken(format!("no handshake with the VM side yet: {e}"), HANDSHAKE_FIX),
            None => broken("no handshake with the VM side yet", HANDSHAKE_FIX),
        },
    }
}

/// Routes through the tunnel interface in the kernel's main table.
/// The tunnel interface read now, through the OS's own view.
async fn interface_view(s: &Snapshot) -> Option<Result<crate::readback::InterfaceView, String>> {
    let t = s.tunnel.as_ref()?;
    let router = match crate::platform::open_router(&t.interface).await {
        Ok(r) => r,
        Err(e) => return Some(Err(e.to_string())),
    };
    Some(router.view().await.map_err(|e| e.to_string()))
}

/// What `up` read back (its status's `os_view`), and the interface read
/// again now against the addresses and MTU `up` gives it: the same checks
/// (`crate::readback`), so a disagreement reads alike in both.
fn os_view(s: &Snapshot, seen: Option<Result<crate::readback::InterfaceView, String>>) -> Verdict {
    const REPORT: &str = "the OS answered otherwise than netconnect expects: please report it with this line and the archive `netconnect bugreport` writes";
    if let Some(first) = s.os_view.first() {
        return broken(first.clone(), REPORT);
    }
    let (Some(t), Some(seen)) = (&s.tunnel, seen) else {
        return ok("nothing to read back");
    };
    let seen = match seen {
        Ok(v) => v,
        Err(e) => return broken(format!("interface {}: {e}", t.interface), RESTART),
    };
    let pairs: Vec<(IpAddr, IpAddr)> = [
        (&t.host_address, &t.vm_address),
        (&t.host_address6, &t.vm_address6),
    ]
    .into_iter()
    .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
    .collect();
    let mtu = u32::from(crate::platform::DEFAULT_MTU);
    match crate::readback::check_interface(&t.interface, &pairs, mtu, &seen).first() {
        Some(d) => broken(d.to_string(), REPORT),
        None => ok(format!(
            "{} shows its {} address pair(s) and MTU {mtu}; every effect read back as asked",
            t.interface,
            pairs.len()
        )),
    }
}

async fn installed_routes(s: &Snapshot) -> Result<Vec<ipnet::IpNet>, String> {
    let Some(t) = &s.tunnel else {
        return Ok(Vec::new());
    };
    let router = crate::platform::open_router(&t.interface)
        .await
        .map_err(|e| e.to_string())?;
    let (ours, _) = router.current().await.map_err(|e| e.to_string())?;
    Ok(ours.into_iter().collect())
}

fn routes(s: &Snapshot, installed: &[ipnet::IpNet]) -> Verdict {
    let mut n = 0;
    for r in &s.networks {
        let subnet: Option<ipnet::IpNet> = r.subnet.parse().ok();
        let in_kernel = subnet.is_some_and(|x| installed.contains(&x));
        match r.route {
            RouteState::Installed if in_kernel => n += 1,
            RouteState::Installed => {
                return broken(
                    format!("the route for {} ({}) is gone from the kernel", r.name, r.subnet),
                    format!("sudo kill -HUP {} (netconnect up puts back a deleted route as soon as the routing table says so; this one it missed, and a reload resyncs)", s.pid),
                )
            }
            RouteState::NotRouted => {
                return broken(
                    format!("network {} ({}) has no route yet", r.name, r.subnet),
                    format!("sudo kill -HUP {} to resync now; `netconnect status` shows the state", s.pid),
                )
            }
            _ => {}
        }
    }
    ok(format!("{n} Docker subnet(s) routed through the tunnel"))
}

fn conflicts(s: &Snapshot) -> Verdict {
    let skipped = |why: SkipReason| {
        s.networks
            .iter()
            .find(|r| r.route == RouteState::Skipped && r.skip_reason == Some(why))
    };
    if let Some(r) = skipped(SkipReason::Conflict) {
        return broken(
            format!(
                "network {} ({}) is not routed: it overlaps {}",
                r.name,
                r.subnet,
                r.conflicts_with
                    .as_deref()
                    .unwrap_or("a route of this machine")
            ),
            format!(
                "remove the overlapping route, recreate the network with another subnet \
                 (docker network create --subnet ...), or exclude it: add \"{}\" to [networks] \
                 exclude in the config file and run `sudo kill -HUP {}`",
                r.name, s.pid
            ),
        );
    }
    if let Some(r) = skipped(SkipReason::Public) {
        return broken(
            format!(
                "network {} ({}) is not routed: its subnet holds public addresses",
                r.name, r.subnet
            ),
            format!(
                "recreate it with a private subnet (10/8, 172.16/12, 192.168/16, 100.64/10, \
                 fc00::/7), or allow it: add \"{}\" to allow_public under [networks] in the \
                 config file and run `sudo kill -HUP {}`",
                r.subnet, s.pid
            ),
        );
    }
    ok("no Docker subnet overlaps a route of this machine or is public")
}

/// The verdict, and the VM's DOCKER-USER rules above ours that may drop
/// tunnel traffic, with their counters (`shadow` lines of `helper-check`).
async fn vm_firewall(
    target: &Target,
    docker: &bollard::Docker,
    s: &Snapshot,
) -> (Verdict, Vec<Shadow>) {
    let command = HelperCommand::Check(VmArgs {
        interface: target.vm_interface.clone(),
        routes: Vec::new(),
    });
    let o = match crate::docker::vmside::run_oneshot(
        docker,
        &target.helper_image,
        &target.vm_interface,
        &command,
    )
    .await
    {
        Ok(o) => o,
        Err(e) => {
            let v = broken(
                format!("cannot look into the VM: {e}"),
                "check the engine: docker info",
            );
            return (v, Vec::new());
        }
    };
    let shadows = o.output.lines().filter_map(Shadow::parse).collect();
    (firewall_verdict(&o, s), shadows)
}

fn firewall_verdict(o: &crate::docker::vmside::Oneshot, s: &Snapshot) -> Verdict {
    match o {
        o if o.exit_code == 0 => ok("tunnel interface and firewall rules in place"),
        o => {
            let missing: Vec<&str> = o
                .output
                .lines()
                .filter(|l| l.starts_with("missing "))
                .map(|l| l.trim_start_matches("missing "))
                .collect();
            broken(
                format!("missing in the VM: {}", missing.join("; ")),
                format!(
                    "docker rm -f {} (netconnect up starts a new helper, which puts the interface and rules back)",
                    s.helper.container
                ),
            )
        }
    }
}

async fn probe(
    target: &Target,
    docker: &bollard::Docker,
    s: &Snapshot,
    shadows: &[Shadow],
) -> Verdict {
    let routed: Vec<ipnet::IpNet> = s
        .networks
        .iter()
        .filter(|r| r.route == RouteState::Installed)
        .filter_map(|r| r.subnet.parse().ok())
        .collect();
    let addrs = match crate::docker::vmside::container_addresses(docker).await {
        Ok(a) => a,
        Err(e) => return broken(e.to_string(), "check the engine: docker info"),
    };
    let Some((name, ip)) = addrs
        .into_iter()
        .find(|(_, ip)| routed.iter().any(|n| n.contains(ip)))
    else {
        return ok("no running container on a routed network to probe");
    };
    let result = tcp_probe(ip, probe_timeout(s)).await;
    // A refusal is the container's RST, or a REJECT in the VM; silence a
    // DROP, or the container. The counters of the rules above ours tell.
    let culprits = match &result {
        Ok(Probe::Accepted) => Vec::new(),
        _ if shadows.is_empty() => Vec::new(),
        _ => {
            let (_, after) = vm_firewall(target, docker, s).await;
            counted(shadows, &after)
        }
    };
    match result {
        Ok(Probe::Accepted) => ok(format!(
            "container {name} ({ip}) answers through the tunnel (TCP port {PROBE_PORT} accepted)"
        )),
        Ok(Probe::Refused) if culprits.is_empty() => ok(format!(
            "container {name} ({ip}) answers through the tunnel (TCP port {PROBE_PORT} refused)"
        )),
        Ok(Probe::Refused) => broken(
            format!("container {name} ({ip}): refused by a rule in the VM, not by the container"),
            probe_fix(&culprits),
        ),
        Err(e) => broken(
            format!("container {name} ({ip}) does not answer: {e}"),
            probe_fix(&culprits),
        ),
    }
}

/// The rules whose packet counter rose between `before` and `after`: they
/// met the probe.
fn counted(before: &[Shadow], after: &[Shadow]) -> Vec<String> {
    after
        .iter()
        .filter(|a| {
            before
                .iter()
                .find(|b| b.rule == a.rule)
                .is_none_or(|b| a.packets > b.packets)
        })
        .map(|a| a.rule.clone())
        .collect()
}

/// What to do when the tunnel is up and a container still does not answer:
/// remove the rules of the VM's DOCKER-USER chain above ours that counted
/// the probe; without one, look at the container.
fn probe_fix(culprits: &[String]) -> String {
    match culprits {
        [] => "the tunnel is up but the container does not answer: check the container's own \
               firewall and that it listens, then restart netconnect with \
               `sudo netconnect down && sudo netconnect up`"
            .into(),
        rules => format!(
            "the VM's DOCKER-USER chain drops tunnel traffic before netconnect's rules: `{}`; \
             remove {} (iptables -D DOCKER-USER ... inside the VM) or put an ACCEPT for the \
             tunnel above {}; the probe was counted by {}",
            rules.join("`; `"),
            if rules.len() == 1 { "it" } else { "them" },
            if rules.len() == 1 { "it" } else { "them" },
            if rules.len() == 1 { "it" } else { "each" },
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Accepted,
    Refused,
}

/// How long the probe waits: longer when the tunnel has been idle, since
/// its first packet may have to wake the VM side.
fn probe_timeout(s: &Snapshot) -> Duration {
    let idle = s.helper.state == "idle"
        || s.tunnel
            .as_ref()
            .and_then(|t| t.last_handshake_age_s)
            .is_some_and(|age| age > HANDSHAKE_FRESH.as_secs());
    if idle {
        PROBE_TIMEOUT_IDLE
    } else {
        PROBE_TIMEOUT
    }
}

/// A TCP connection attempt: accepted or refused, something answered.
async fn tcp_probe(ip: IpAddr, timeout: Duration) -> Result<Probe, String> {
    let addr = SocketAddr::new(ip, PROBE_PORT);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(Probe::Accepted),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(Probe::Refused),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no reply within {}s", timeout.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::{NetworkRoute, TunnelState};

    fn snap(routes: Vec<NetworkRoute>, age: Option<u64>) -> Snapshot {
        Snapshot {
            running: true,
            pid: 7,
            tunnel: Some(TunnelState {
                last_handshake_age_s: age,
                ..Default::default()
            }),
            networks: routes,
            ..Default::default()
        }
    }

    #[test]
    fn the_runtime_line_names_it_and_what_it_needs() {
        use crate::docker::Runtime;
        assert_eq!(runtime_verdict(Runtime::Dockerd, false), ok("dockerd"));
        let Verdict::Ok(t) = runtime_verdict(Runtime::Colima, false) else {
            panic!()
        };
        assert!(
            t.starts_with("colima (") && t.contains("--network-address"),
            "{t}"
        );
        let Verdict::Broken { what, fix } = runtime_verdict(Runtime::Podman, true) else {
            panic!("a rootless Podman passed")
        };
        assert!(what.contains("podman engine runs rootless"), "{what}");
        assert_eq!(
            fix,
            "make the Podman machine rootful: podman machine stop && podman machine set --rootful && podman machine start"
        );
        let Verdict::Ok(t) = runtime_verdict(Runtime::OrbStack, false) else {
            panic!()
        };
        assert!(t.contains("not needed"), "{t}");
    }

    #[test]
    fn the_handshake_line_says_which_way_home_and_why_none() {
        use crate::control::snapshot::VmState;
        let mut s = snap(vec![], Some(4));
        s.vm = Some(VmState {
            state: "found".into(),
            endpoint: Some("192.168.5.2:4000".into()),
            endpoint_source: Some("host.lima.internal".into()),
            ..Default::default()
        });
        assert_eq!(
            handshake(&s),
            ok("last handshake 4 s ago; the VM sends to 192.168.5.2:4000 (host.lima.internal)")
        );
        let mut s = snap(vec![], None);
        s.vm = Some(VmState {
            state: "none".into(),
            error: Some("the VM side reached this machine through none of: 10.0.0.1:4 (default-gateway); pass ...".into()),
            ..Default::default()
        });
        let Verdict::Broken { what, .. } = handshake(&s) else {
            panic!()
        };
        assert!(
            what.starts_with("no handshake with the VM side yet: the VM side reached this machine through none of: 10.0.0.1:4"),
            "{what}"
        );
    }

    fn net(name: &str, subnet: &str, route: RouteState) -> NetworkRoute {
        NetworkRoute {
            name: name.into(),
            subnet: subnet.into(),
            route,
            conflicts_with: (route == RouteState::Skipped).then(|| "172.18.0.0/20 via en0".into()),
            skip_reason: (route == RouteState::Skipped).then_some(SkipReason::Conflict),
            ..Default::default()
        }
    }

    /// The commands doctor tells a user to run must parse.
    /// Each broken link of the names check, from what was found.
    #[test]
    fn the_names_link_says_which_part_is_broken() {
        use crate::control::snapshot::DnsState;
        use crate::dns::query::{QueryError, Reply};
        use crate::dns::resolver::FileState;
        use hickory_proto::op::ResponseCode;
        let server: SocketAddr = "10.33.33.1:53".parse().unwrap();
        let want: IpAddr = "172.18.0.2".parse().unwrap();
        let name = "web.docker.internal";
        let d = DnsState {
            state: "serving".into(),
            domain: "docker.internal".into(),
            address: server.to_string(),
            resolver: Some("/etc/resolver/docker.internal".into()),
            ..Default::default()
        };
        let reply = |code, addresses: Vec<IpAddr>| {
            Ok(Reply {
                code,
                authoritative: true,
                addresses,
            })
        };
        let good = || reply(ResponseCode::NoError, vec![want]);
        let ours = || {
            Some(FileState::Ours {
                nameserver: Some(server.ip()),
                port: Some(53),
            })
        };
        let verdict = |direct, d: &DnsState, file, system| {
            names_verdict(name, want, server, direct, d, file, system)
        };
        let what = |v: Verdict| match v {
            Verdict::Broken { what, .. } => what,
            Verdict::Ok(s) => panic!("ok: {s}"),
        };
        // Every link holds.
        let v = verdict(good(), &d, ours(), Some(Ok(vec![want])));
        assert_eq!(
            v,
            ok("web.docker.internal resolves to 172.18.0.2 through this machine's resolver (server 10.33.33.1:53)")
        );
        // The server.
        let w = what(verdict(
            Err(QueryError::Timeout(server, NAME_TIMEOUT)),
            &d,
            ours(),
            None,
        ));
        assert!(
            w.starts_with("the name server is not listening: no answer from 10.33.33.1:53"),
            "{w}"
        );
        let w = what(verdict(Err(QueryError::Refused(server)), &d, ours(), None));
        assert!(
            w.starts_with("the name server is not listening: nothing listens"),
            "{w}"
        );
        // The name.
        let w = what(verdict(
            reply(ResponseCode::NXDomain, vec![]),
            &d,
            ours(),
            None,
        ));
        assert!(w.starts_with("name unknown: "), "{w}");
        let w = what(verdict(
            reply(ResponseCode::NoError, vec!["172.18.0.9".parse().unwrap()]),
            &d,
            ours(),
            None,
        ));
        assert!(w.contains("not the container's 172.18.0.2"), "{w}");
        // The resolver file.
        let w = what(verdict(
            good(),
            &d,
            Some(FileState::Missing),
            Some(Err("x".into())),
        ));
        assert!(
            w.starts_with("resolver file missing: /etc/resolver/docker.internal"),
            "{w}"
        );
        let w = what(verdict(good(), &d, Some(FileState::Foreign), None));
        assert!(w.contains("not write"), "{w}");
        let other = Some(FileState::Ours {
            nameserver: Some(server.ip()),
            port: Some(5353),
        });
        let w = what(verdict(good(), &d, other, None));
        assert!(w.contains("not at 10.33.33.1:53"), "{w}");
        let refused = DnsState {
            resolver: None,
            resolver_error: Some(
                "/etc/resolver/docker.internal exists and was not written by netconnect".into(),
            ),
            ..d.clone()
        };
        let w = what(verdict(good(), &refused, None, None));
        assert!(
            w.contains("not pointed at it: /etc/resolver/docker.internal exists"),
            "{w}"
        );
        // The system's resolver.
        let w = what(verdict(
            good(),
            &d,
            ours(),
            Some(Err("no such host".into())),
        ));
        assert!(
            w.ends_with("this machine's resolver gives no such host"),
            "{w}"
        );
        // Nothing wired (a Linux host without systemd-resolved): said, not failed.
        let bare = DnsState {
            resolver: None,
            ..d.clone()
        };
        assert!(matches!(
            verdict(good(), &bare, None, Some(Err("no such host".into()))),
            Verdict::Ok(s) if s.contains("nothing points this machine's resolver at it")
        ));
    }

    #[test]
    fn fix_commands_are_valid_command_lines() {
        use clap::Parser as _;
        let mut n = 0;
        for fix in [ENGINE_FIX, HANDSHAKE_FIX, RESTART, &probe_fix(&[])] {
            // Each `sudo netconnect ...` up to `&&`, `)`, `;` or a backtick.
            for part in fix.split("sudo ").skip(1) {
                let Some(line) = part.strip_prefix("netconnect") else {
                    continue;
                };
                let end = line.find(['&', ')', ';', '`']).unwrap_or(line.len());
                let argv: Vec<&str> = std::iter::once("netconnect")
                    .chain(line[..end].split_whitespace())
                    .collect();
                crate::cli::Cli::try_parse_from(&argv)
                    .unwrap_or_else(|e| panic!("{argv:?} (in {fix:?}) does not parse: {e}"));
                n += 1;
            }
        }
        assert!(n >= 7, "only {n} commands found");
    }

    #[test]
    fn a_failed_probe_names_the_rule_that_drops_it() {
        let rule = "-A DOCKER-USER -i nc0 -j DROP".to_string();
        let fix = probe_fix(std::slice::from_ref(&rule));
        assert_eq!(
            fix,
            "the VM's DOCKER-USER chain drops tunnel traffic before netconnect's rules: \
             `-A DOCKER-USER -i nc0 -j DROP`; remove it (iptables -D DOCKER-USER ... inside the \
             VM) or put an ACCEPT for the tunnel above it; the probe was counted by it"
        );
        assert!(!probe_fix(&[]).contains("DOCKER-USER"));
    }

    #[test]
    fn only_rules_that_counted_the_probe_are_named() {
        let sh = |packets, rule: &str| Shadow {
            packets,
            rule: rule.into(),
        };
        let before = [
            sh(3, "-A DOCKER-USER -j DROP"),
            sh(9, "-A DOCKER-USER -s 1.2.3.4 -j DROP"),
        ];
        let after = [
            sh(5, "-A DOCKER-USER -j DROP"),
            sh(9, "-A DOCKER-USER -s 1.2.3.4 -j DROP"),
            sh(1, "-A DOCKER-USER -p tcp -j REJECT"),
        ];
        assert_eq!(
            counted(&before, &after),
            ["-A DOCKER-USER -j DROP", "-A DOCKER-USER -p tcp -j REJECT"]
        );
        assert!(counted(&after, &after).is_empty());
    }

    #[test]
    fn a_handshake_must_have_happened_and_an_old_one_means_idle() {
        assert!(matches!(handshake(&snap(vec![], Some(30))), Verdict::Ok(_)));
        let idle = snap(vec![], Some(600));
        assert_eq!(
            handshake(&idle),
            ok("last handshake 600 s ago: the tunnel is idle, and the next packet starts a new one")
        );
        // The probe then gives the VM side time to wake.
        assert_eq!(probe_timeout(&idle), PROBE_TIMEOUT_IDLE);
        assert_eq!(probe_timeout(&snap(vec![], Some(30))), PROBE_TIMEOUT);
        assert!(matches!(
            handshake(&snap(vec![], None)),
            Verdict::Broken { .. }
        ));
    }

    #[test]
    fn the_os_view_link_reads_the_interface_and_what_up_read_back() {
        use crate::control::snapshot::TunnelState;
        use crate::readback::InterfaceView;
        let mut s = snap(Vec::new(), Some(3));
        s.tunnel = Some(TunnelState {
            interface: "utun4".into(),
            host_address: "10.33.33.1".into(),
            vm_address: "10.33.33.2".into(),
            host_address6: "fd33::1".into(),
            vm_address6: "fd33::2".into(),
            ..Default::default()
        });
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        let good = InterfaceView {
            mtu: Some(u32::from(crate::platform::DEFAULT_MTU)),
            up: true,
            addresses: vec![
                (ip("10.33.33.1"), Some(ip("10.33.33.2"))),
                (ip("fd33::1"), Some(ip("fd33::2"))),
            ],
        };
        assert!(matches!(
            os_view(&s, Some(Ok(good.clone()))),
            Verdict::Ok(_)
        ));
        let mut mtu = good.clone();
        mtu.mtu = Some(1500);
        match os_view(&s, Some(Ok(mtu))) {
            Verdict::Broken { what, fix } => {
                assert_eq!(
                    what,
                    format!(
                        "interface utun4: asked MTU {}, the OS shows MTU 1500",
                        crate::platform::DEFAULT_MTU
                    )
                );
                assert!(fix.contains("netconnect bugreport"), "{fix}");
            }
            v => panic!("{v:?}"),
        }
        // What `up` read back comes first.
        s.os_view = vec!["route 172.18.0.0/16: asked via utun4, the OS shows no route for 172.18.0.0/16 via utun4".into()];
        match os_view(&s, Some(Ok(good))) {
            Verdict::Broken { what, .. } => {
                assert!(what.starts_with("route 172.18.0.0/16"), "{what}")
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_route_missing_from_the_kernel_is_named() {
        let s = snap(
            vec![
                net("bridge", "172.17.0.0/16", RouteState::Installed),
                net("app", "10.1.0.0/24", RouteState::Installed),
                net("tmp", "10.2.0.0/24", RouteState::Excluded),
            ],
            Some(1),
        );
        let all: Vec<ipnet::IpNet> = vec![
            "172.17.0.0/16".parse().unwrap(),
            "10.1.0.0/24".parse().unwrap(),
        ];
        assert_eq!(
            routes(&s, &all),
            ok("2 Docker subnet(s) routed through the tunnel")
        );
        match routes(&s, &all[..1]) {
            Verdict::Broken { what, fix } => {
                assert!(what.contains("app (10.1.0.0/24)"), "{what}");
                assert!(fix.contains("kill -HUP 7"), "{fix}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn conflicts_name_the_network_and_how_to_exclude_it() {
        let s = snap(
            vec![net("kind", "172.18.0.0/16", RouteState::Skipped)],
            Some(1),
        );
        match conflicts(&s) {
            Verdict::Broken { what, fix } => {
                assert!(
                    what.contains("kind") && what.contains("172.18.0.0/20 via en0"),
                    "{what}"
                );
                assert!(fix.contains("exclude"), "{fix}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_public_subnet_names_the_setting_that_allows_it() {
        let mut public = net("odd", "8.8.8.0/24", RouteState::Skipped);
        public.conflicts_with = None;
        public.skip_reason = Some(SkipReason::Public);
        match conflicts(&snap(vec![public], Some(1))) {
            Verdict::Broken { what, fix } => {
                assert!(what.contains("odd (8.8.8.0/24)"), "{what}");
                assert!(
                    fix.contains("add \"8.8.8.0/24\" to allow_public under [networks]"),
                    "{fix}"
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_cluster_link_says_what_is_wrong_and_the_fix() {
        use crate::control::snapshot::ClusterState;
        let c = ClusterState {
            name: "kind".into(),
            flavor: "kind".into(),
            state: "ready".into(),
            nodes: vec!["kind-control-plane".into(), "kind-worker".into()],
            dns: vec!["10.96.0.10".into()],
            domain: Some("cluster.local".into()),
            routed: vec!["10.96.0.0/16".into(), "10.244.0.0/24".into()],
            ..Default::default()
        };
        let installed: Vec<ipnet::IpNet> = vec![
            "10.96.0.0/16".parse().unwrap(),
            "10.244.0.0/24".parse().unwrap(),
        ];
        let answered = Some(Ok(
            "kubernetes.default.svc.cluster.local 10.96.0.1".to_string()
        ));
        assert_eq!(
            cluster_verdict(&c, &installed, answered.clone(), 7),
            ok("cluster kind (kind): 2 nodes, 2 range(s) routed, DNS 10.96.0.10 answers (kubernetes.default.svc.cluster.local 10.96.0.1)")
        );
        let Verdict::Broken { what, fix } =
            cluster_verdict(&c, &installed[..1], answered.clone(), 7)
        else {
            panic!("a route missing from the kernel passed");
        };
        assert_eq!(
            what,
            "cluster kind (kind): the route for 10.244.0.0/24 is gone from the kernel"
        );
        assert_eq!(fix, "sudo kill -HUP 7 (a reload resyncs the routes)");
        let Verdict::Broken { what, .. } = cluster_verdict(
            &c,
            &installed,
            Some(Err("no answer from 10.96.0.10:53 within 3s".into())),
            7,
        ) else {
            panic!("a silent DNS passed");
        };
        assert!(
            what.contains("its DNS Service does not answer through the tunnel: no answer"),
            "{what}"
        );
        let conflicted = ClusterState {
            not_routed: vec!["10.96.0.0/16".into()],
            ..c.clone()
        };
        assert!(
            matches!(cluster_verdict(&conflicted, &installed, answered.clone(), 7), Verdict::Broken { what, .. } if what.contains("10.96.0.0/16 not routed"))
        );
        let unreadable = ClusterState {
            state: "unreadable".into(),
            error: Some("kubectl in kind-control-plane exited with 1: refused".into()),
            ..c
        };
        let Verdict::Broken { fix, .. } = cluster_verdict(&unreadable, &installed, None, 7) else {
            panic!("an unreadable cluster passed");
        };
        assert_eq!(
            fix,
            "check the cluster answers: docker exec kind-control-plane kubectl get nodes"
        );
    }
}

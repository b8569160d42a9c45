//! Running the VM-side helper container and reading back its public key.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, HostConfig, Mount, MountType, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use crate::cli::{HelperArgs, HelperCommand, HelperMode};
use crate::docker::client::timed;
use crate::helper::endpoint::{Report, HOST_GATEWAY_NAME, VM_HOSTS};
use crate::helper::{Mode, MODE_PREFIX, NO_KERNEL_WIREGUARD, PUBLIC_KEY_PREFIX};
use crate::keys::{Key, PublicKey};

/// Marks our helper containers, so they can be found again (and removed by
/// `down`) whatever they are called.
pub const LABEL: &str = "io.netconnect.helper";
/// Docker restarts a failed helper this many times before giving up (and
/// leaving it to `up`).
pub const RESTART_RETRIES: i64 = 10;
/// Bound on the helper reaching "public_key=": it creates an interface and
/// runs a few iptables commands.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The only capabilities a container of the helper image gets. NET_ADMIN:
/// links, addresses, routes, WireGuard over netlink, nf_tables. NET_RAW:
/// iptables-legacy talks to the kernel's x_tables through a raw socket
/// (libiptc's `socket(AF_INET, SOCK_RAW, IPPROTO_RAW)`; without NET_RAW it
/// fails with "can't initialize iptables table `filter': Permission
/// denied", checked on Engine 20.10), and which backend is needed is known
/// only inside the container, after it has looked at both.
pub const CAPABILITIES: [&str; 2] = ["NET_ADMIN", "NET_RAW"];
/// Where the helper keeps its key (`netconnect helper --key-file`): an
/// anonymous volume of the container's own, since the root is read-only.
/// Unlike a tmpfs it survives Docker restarting the container after a
/// crash, which keeps the key, so the tunnel resumes without `up`; it goes
/// with the container ([`remove`] removes volumes too).
pub const KEY_DIR: &str = "/var/lib/netconnect";
/// The one writable place besides the key's: `/run`, for the xtables lock
/// (`iptables -w` opens `/run/xtables.lock`; legacy refuses to run without
/// it). Private to the container, see `helper::firewall`.
pub const RUN_TMPFS: (&str, &str) = ("/run", "rw,nosuid,nodev,noexec,size=64k,mode=0755");

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(
        "helper image {image} is missing from the engine and no archive was found (looked in {}); \
         build and load it with `helper-image/build.sh` from the source tree, or pass \
         --helper-archive FILE (made by `packaging/build-helper-image.sh`)",
        if looked_in.is_empty() { "no place".to_string() } else {
            looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        }
    )]
    NoImage {
        image: String,
        looked_in: Vec<std::path::PathBuf>,
    },
    #[error("cannot load the helper image from {}: {reason}", archive.display())]
    Load {
        archive: std::path::PathBuf,
        reason: String,
    },
    #[error("the helper container exited before it was ready: {0}")]
    Exited(String),
    #[error("the helper did not report its key within 30 s; its output: {0}")]
    NotReady(String),
    #[error(transparent)]
    Docker(#[from] crate::docker::DockerError),
}

impl From<BollardError> for HelperError {
    fn from(e: BollardError) -> Self {
        HelperError::Docker(e.into())
    }
}

/// What the helper container needs from the host.
#[derive(Debug, Clone)]
pub struct HelperSpec {
    pub image: String,
    pub name: String,
    pub host_public_key: PublicKey,
    /// `--host-endpoint` as the user gave it; `None`: the helper finds the
    /// way (`crate::helper::endpoint`).
    pub host_endpoint: Option<String>,
    /// The host side's UDP port.
    pub host_port: u16,
    pub vm_interface: String,
    pub vm_address: std::net::IpAddr,
    pub host_address: std::net::IpAddr,
    pub vm_address6: std::net::Ipv6Addr,
    pub host_address6: std::net::Ipv6Addr,
    /// Image archives to load the image from when the engine lacks it.
    pub archives: Vec<std::path::PathBuf>,
    /// Extra routes with a gateway inside the VM.
    pub routes: Vec<(ipnet::IpNet, std::net::IpAddr)>,
    /// Mount the VM's `/etc/hosts` for the runtime's name for the Mac.
    /// Not on Docker Desktop, where a bind mount's source is a path on the
    /// Mac (the Mac's own /etc/hosts, or refused when file sharing leaves
    /// /private out) and host-gateway is the Mac already; not when the
    /// user named the endpoint.
    pub vm_hosts: bool,
}

impl HelperSpec {
    /// The helper container for `mode`: [`Mode::Kernel`] runs `--mode
    /// kernel` with no TUN device (it configures a kernel interface and
    /// exits, or reports `mode=no-kernel-wireguard`); [`Mode::Userspace`]
    /// runs the userspace peer and gets `/dev/net/tun`, the only container
    /// The helper's command line for `mode`, as a value.
    pub fn command(&self, mode: HelperMode) -> HelperCommand {
        HelperCommand::Helper(HelperArgs {
            host_public_key: self.host_public_key.to_base64(),
            host_endpoint: self.host_endpoint.clone(),
            host_port: self.host_port,
            interface: self.vm_interface.clone(),
            vm_address: self.vm_address,
            host_address: self.host_address,
            vm_address6: self.vm_address6,
            host_address6: self.host_address6,
            key_file: format!("{KEY_DIR}/vm.key"),
            mode,
            routes: self.routes.clone(),
        })
    }

    /// The helper container for `mode`: [`Mode::Kernel`] runs `--mode
    /// kernel` with no TUN device (it configures a kernel interface and
    /// exits, or reports `mode=no-kernel-wireguard`); [`Mode::Userspace`]
    /// runs the userspace peer and gets `/dev/net/tun`, the only container
    /// that does. Both: [`vm_host_config`], plus the key's volume and a
    /// bounded restart policy.
    pub fn body(&self, mode: Mode) -> ContainerCreateBody {
        let helper_mode = match mode {
            Mode::Kernel => HelperMode::Kernel,
            Mode::Userspace => HelperMode::Userspace,
        };
        let cmd = self.command(helper_mode).argv();
        let mut hc = vm_host_config();
        let mut mounts = vec![Mount {
            target: Some(KEY_DIR.into()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }];
        if self.vm_hosts && self.host_endpoint.is_none() {
            // The VM's own /etc/hosts, read-only: a host-network
            // container gets a copy of it only when it has no ExtraHosts
            // (moby builds a fresh file otherwise, checked on Engine
            // 20.10), and the helper needs both the host-gateway entry and
            // the runtime's name for the Mac (Lima's host.lima.internal).
            mounts.push(Mount {
                source: Some("/etc/hosts".into()),
                target: Some(VM_HOSTS.into()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
        hc.mounts = Some(mounts);
        if mode == Mode::Userspace {
            hc.devices = Some(vec![DeviceMapping {
                path_on_host: Some("/dev/net/tun".into()),
                path_in_container: Some("/dev/net/tun".into()),
                cgroup_permissions: Some("rwm".into()),
            }]);
        }
        // A crashed or killed userspace helper is restarted by Docker at
        // once; its key survives in its volume, so the tunnel resumes with
        // no word from `up`. Bounded, and a clean exit (kernel mode, no
        // kernel WireGuard, or the host gone for good) is not restarted,
        // so an orphan cannot run on.
        hc.restart_policy = Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::ON_FAILURE),
            maximum_retry_count: Some(RESTART_RETRIES),
        });
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(cmd),
            labels: Some(HashMap::from([(
                LABEL.to_string(),
                self.vm_interface.clone(),
            )])),
            host_config: Some(hc),
            ..Default::default()
        }
    }
}

/// What every container of the helper image gets (the helper and the
/// one-shots of `down` and `doctor`): the VM's network namespace (the
/// tunnel interface must live next to Docker's bridges, and the firewall
/// rules are that namespace's), [`CAPABILITIES`] and nothing else,
/// `no-new-privileges`, a read-only root with a small tmpfs on `/run`.
/// Not the VM's PID namespace: the helper runs only its image's binaries
/// and looks at no other process. `--privileged` is refused on some
/// engines and is far more.
pub fn vm_host_config() -> HostConfig {
    HostConfig {
        network_mode: Some("host".into()),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(CAPABILITIES.map(String::from).to_vec()),
        security_opt: Some(vec!["no-new-privileges".into()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            RUN_TMPFS.0.to_string(),
            RUN_TMPFS.1.to_string(),
        )])),
        // The engine's host-gateway under a name of our own, one of the
        // helper's candidates for the way home (`crate::helper::endpoint`);
        // the runtime's own names keep the VM's answers.
        extra_hosts: Some(vec![format!("{HOST_GATEWAY_NAME}:host-gateway")]),
        ..Default::default()
    }
}

/// A started helper and the VM public key it reported.
#[derive(Debug, Clone)]
pub struct RunningHelper {
    pub id: String,
    pub vm_public_key: PublicKey,
    /// Kernel WireGuard: the container has exited and the interface lives
    /// on in the VM; liveness is then judged by the tunnel alone.
    pub mode: Mode,
    /// The helper's word on the way home ([`Report`]), as it comes: it
    /// follows the announcement once a handshake completes (or none
    /// could). A task follows the helper's output for it until the
    /// helper says where or its output ends; dropping every receiver
    /// stops the task.
    pub way_home: Option<tokio::sync::watch::Receiver<Option<Report>>>,
}

/// What the helper's output told `up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// Ready: its public key, and how it runs.
    Ready(PublicKey, Mode),
    /// `--mode kernel` found no WireGuard in the VM kernel.
    NoKernelWireGuard,
}

/// Start the helper and wait for its key. `known` is what an earlier start
/// in this `up` learned: without it (or when it was [`Mode::Kernel`]) a
/// kernel-mode helper goes first, with no TUN device; if the kernel has no
/// WireGuard, a userspace helper with `/dev/net/tun` follows (one more
/// short-lived container, on the first start only: `up` passes
/// [`Mode::Userspace`] from then on). The image must be there
/// ([`super::image::ensure`]).
pub async fn start(
    docker: &Docker,
    spec: &HelperSpec,
    known: Option<Mode>,
) -> Result<RunningHelper, HelperError> {
    if known != Some(Mode::Userspace) {
        match start_one(docker, spec, Mode::Kernel).await? {
            (id, Announcement::Ready(vm_public_key, mode), rest) => {
                return Ok(RunningHelper {
                    id,
                    vm_public_key,
                    mode,
                    way_home: Some(follow_way_home(rest)),
                })
            }
            (_, Announcement::NoKernelWireGuard, _) => {
                tracing::info!("the VM kernel has no WireGuard; starting the userspace helper, with /dev/net/tun")
            }
        }
    }
    match start_one(docker, spec, Mode::Userspace).await? {
        (id, Announcement::Ready(vm_public_key, mode), rest) => Ok(RunningHelper {
            id,
            vm_public_key,
            mode,
            way_home: Some(follow_way_home(rest)),
        }),
        (id, Announcement::NoKernelWireGuard, _) => Err(HelperError::Exited(format!(
            "a userspace helper said {NO_KERNEL_WIREGUARD}: {}",
            output(docker, &id).await
        ))),
    }
}

/// The helper's output after its announcement: the stream being read, and
/// what of it was read past the announcement.
struct Rest {
    logs: LogStream,
    buf: String,
}

type LogStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogOutput, BollardError>> + Send>>;

/// Reads [`Report`] lines from the rest of the helper's output into a
/// watch channel, in a task of its own; it ends at a found way home, at
/// the end of the output (the helper exited), or when nobody listens.
fn follow_way_home(mut rest: Rest) -> tokio::sync::watch::Receiver<Option<Report>> {
    use tracing::Instrument as _;
    let (tx, rx) = tokio::sync::watch::channel(None);
    let task = async move {
        let mut consumed = 0;
        loop {
            // Whole lines only: a line may arrive in pieces.
            while let Some(nl) = rest.buf[consumed..].find('\n') {
                let line = &rest.buf[consumed..consumed + nl];
                consumed += nl + 1;
                if let Some(r) = Report::parse(line) {
                    let found = matches!(r, Report::Found { .. });
                    if tx.send(Some(r)).is_err() || found {
                        return;
                    }
                }
            }
            tokio::select! {
                item = rest.logs.next() => match item {
                    Some(Ok(LogOutput::StdOut { message })) => {
                        rest.buf.push_str(&String::from_utf8_lossy(&message));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                },
                () = tx.closed() => return,
            }
        }
    };
    tokio::spawn(task.instrument(tracing::info_span!("helper-output")));
    rx
}

/// Remove any helper of the same name, start `spec.body(mode)`, and wait
/// for its announcement.
async fn start_one(
    docker: &Docker,
    spec: &HelperSpec,
    mode: Mode,
) -> Result<(String, Announcement, Rest), HelperError> {
    remove(docker, &spec.name).await?;
    let created = timed(
        docker.create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&spec.name)
                    .build(),
            ),
            spec.body(mode),
        ),
    )
    .await?;
    timed(docker.start_container(&created.id, None)).await?;
    match tokio::time::timeout(READY_TIMEOUT, read_announcement(docker, &created.id)).await {
        Ok(Ok((found, rest))) => Ok((created.id, found, rest)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HelperError::NotReady(output(docker, &created.id).await)),
    }
}

async fn read_announcement(docker: &Docker, id: &str) -> Result<(Announcement, Rest), HelperError> {
    let mut logs: LogStream = Box::pin(
        docker.logs(
            id,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(false)
                    .follow(true)
                    .build(),
            ),
        ),
    );
    let mut buf = String::new();
    while let Some(item) = logs.next().await {
        if let LogOutput::StdOut { message } = item? {
            buf.push_str(&String::from_utf8_lossy(&message));
            if let Some(found) = parse_announcement(&buf) {
                // What follows the key's line is the rest of the output.
                let after = buf
                    .find(PUBLIC_KEY_PREFIX)
                    .and_then(|i| buf[i..].find('\n').map(|n| i + n + 1))
                    .unwrap_or(buf.len());
                let rest = Rest {
                    logs,
                    buf: buf[after..].to_owned(),
                };
                return Ok((found, rest));
            }
        }
    }
    Err(HelperError::Exited(output(docker, id).await))
}

/// The helper's announcement: `mode=…` (absent from older helpers: then
/// userspace) and `public_key=…`, or [`NO_KERNEL_WIREGUARD`] alone.
pub fn parse_announcement(out: &str) -> Option<Announcement> {
    let mut mode = Mode::Userspace;
    for line in out.lines() {
        if line.trim() == NO_KERNEL_WIREGUARD {
            return Some(Announcement::NoKernelWireGuard);
        }
        if line.trim() == format!("{MODE_PREFIX}kernel") {
            mode = Mode::Kernel;
        }
        if let Some(k) = line.strip_prefix(PUBLIC_KEY_PREFIX) {
            if let Ok(k) = Key::from_base64(k.trim()) {
                return Some(Announcement::Ready(PublicKey::from(&k), mode));
            }
        }
    }
    None
}

/// The helper's stderr, to show why it failed.
async fn output(docker: &Docker, id: &str) -> String {
    let mut logs = docker.logs(
        id,
        Some(
            LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .tail("20")
                .build(),
        ),
    );
    let mut out = String::new();
    while let Some(Ok(item)) = logs.next().await {
        out.push_str(&String::from_utf8_lossy(&item.into_bytes()));
    }
    out.trim().replace('\n', " | ")
}

/// Running, or about to be restarted by its restart policy. Docker decides
/// on the restart before it emits the `die` event, so this is settled when
/// the event arrives; a `docker kill` or `docker stop` is never restarted.
pub async fn is_running_or_restarting(docker: &Docker, id: &str) -> bool {
    match timed(docker.inspect_container(id, None::<InspectContainerOptions>)).await {
        Ok(c) => c
            .state
            .is_some_and(|s| s.running == Some(true) || s.restarting == Some(true)),
        Err(_) => false,
    }
}

pub async fn is_running(docker: &Docker, id: &str) -> bool {
    match timed(docker.inspect_container(id, None::<InspectContainerOptions>)).await {
        Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
        Err(_) => false,
    }
}

pub async fn remove(docker: &Docker, name: &str) -> Result<(), HelperError> {
    match timed(
        docker.remove_container(
            name,
            // v: the key's anonymous volume goes with its container.
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        ),
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(crate::docker::DockerError::Api(BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        })) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> HelperSpec {
        HelperSpec {
            image: "netconnect-helper:test".into(),
            name: "netconnect-helper-netconnect0".into(),
            host_public_key: PublicKey([7; 32]),
            host_endpoint: None,
            host_port: 51820,
            // None of the CLI's defaults, so that a flag left out of the
            // rendering shows in the round trip.
            vm_interface: "nc-vm1".into(),
            vm_address: "10.40.0.2".parse().unwrap(),
            host_address: "10.40.0.1".parse().unwrap(),
            vm_address6: "fd40::2".parse().unwrap(),
            host_address6: "fd40::1".parse().unwrap(),
            archives: vec![],
            routes: vec![
                (
                    "10.244.0.0/16".parse().unwrap(),
                    "172.18.0.2".parse().unwrap(),
                ),
                ("fd10::/64".parse().unwrap(), "fc00::2".parse().unwrap()),
            ],
            vm_hosts: true,
        }
    }

    /// Docker Desktop (bind sources are the Mac's paths) and a named
    /// endpoint get no mount of the VM's /etc/hosts.
    #[test]
    fn the_vm_hosts_file_is_mounted_only_where_it_is_the_vm_s_and_needed() {
        let targets = |s: &HelperSpec| -> Vec<String> {
            let hc = s.body(Mode::Userspace).host_config.unwrap();
            hc.mounts
                .unwrap()
                .into_iter()
                .filter_map(|m| m.target)
                .collect()
        };
        assert_eq!(targets(&spec()), [KEY_DIR, VM_HOSTS]);
        let desktop = HelperSpec {
            vm_hosts: false,
            ..spec()
        };
        assert_eq!(targets(&desktop), [KEY_DIR]);
        let named = HelperSpec {
            host_endpoint: Some("192.168.5.2".into()),
            ..spec()
        };
        assert_eq!(targets(&named), [KEY_DIR]);
    }

    #[test]
    fn helper_container_has_least_privilege_and_no_secret() {
        for mode in [Mode::Kernel, Mode::Userspace] {
            let body = spec().body(mode);
            let hc = body.host_config.as_ref().unwrap();
            assert_eq!(hc.network_mode.as_deref(), Some("host"));
            assert_eq!(hc.pid_mode, None, "the VM's PID namespace is not needed");
            assert_eq!(hc.privileged, None);
            assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
            assert_eq!(hc.cap_add.clone().unwrap(), vec!["NET_ADMIN", "NET_RAW"]);
            assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
            assert_eq!(hc.readonly_rootfs, Some(true));
            // Writable: /run (a tmpfs, for the xtables lock) and the key's
            // own volume; of the VM's filesystem only /etc/hosts, read-only.
            let tmpfs = hc.tmpfs.clone().unwrap();
            assert_eq!(tmpfs.keys().collect::<Vec<_>>(), ["/run"]);
            assert!(tmpfs["/run"].contains("size="), "{tmpfs:?}");
            let mounts = hc.mounts.clone().unwrap();
            assert_eq!(mounts.len(), 2);
            assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
            assert_eq!(mounts[0].source, None, "an anonymous volume");
            assert_eq!(mounts[0].target.as_deref(), Some(KEY_DIR));
            assert_eq!(mounts[1].typ, Some(MountType::BIND));
            assert_eq!(mounts[1].source.as_deref(), Some("/etc/hosts"));
            assert_eq!(mounts[1].target.as_deref(), Some(VM_HOSTS));
            assert_eq!(mounts[1].read_only, Some(true));
            assert_eq!(
                hc.extra_hosts,
                Some(vec![format!("{HOST_GATEWAY_NAME}:host-gateway")])
            );
            assert_eq!(hc.binds, None);
            // Only public material travels to the container.
            assert_eq!(body.env, None);
            let rp = hc.restart_policy.clone().unwrap();
            assert_eq!(rp.name, Some(RestartPolicyNameEnum::ON_FAILURE));
            assert_eq!(rp.maximum_retry_count, Some(RESTART_RETRIES));
            let cmd = body.cmd.unwrap().join(" ");
            assert!(cmd.contains(&PublicKey([7; 32]).to_base64()), "{cmd}");
            assert!(!cmd.to_lowercase().contains("private"), "{cmd}");
            assert!(
                cmd.contains(&format!("--key-file {KEY_DIR}/vm.key")),
                "{cmd}"
            );
        }
    }

    #[test]
    fn only_the_userspace_helper_gets_the_tun_device() {
        let kernel = spec().body(Mode::Kernel);
        let hc = kernel.host_config.unwrap();
        assert_eq!(hc.devices, None, "a kernel-mode helper needs no device");
        assert!(kernel
            .cmd
            .unwrap()
            .join(" ")
            .starts_with("helper --mode kernel "));

        let user = spec().body(Mode::Userspace);
        let devices = user.host_config.unwrap().devices.unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].path_on_host.as_deref(), Some("/dev/net/tun"));
        assert_eq!(
            devices[0].path_in_container.as_deref(),
            Some("/dev/net/tun")
        );
        assert!(user
            .cmd
            .unwrap()
            .join(" ")
            .starts_with("helper --mode userspace "));
    }

    /// The argument list the host builds is one the helper's own CLI
    /// accepts, mode and key file included.
    #[test]
    fn the_helper_cli_parses_the_command_up_builds() {
        use clap::Parser as _;
        for (mode, want) in [
            (Mode::Kernel, HelperMode::Kernel),
            (Mode::Userspace, HelperMode::Userspace),
        ] {
            let mut argv = vec!["netconnect".to_string()];
            argv.extend(spec().body(mode).cmd.unwrap());
            let cli = crate::cli::Cli::try_parse_from(&argv).unwrap();
            let crate::cli::Command::Helper(args) = cli.command else {
                panic!("not the helper command: {argv:?}")
            };
            assert_eq!(HelperCommand::Helper(args), spec().command(want));
        }
    }

    #[test]
    fn announcements_give_key_and_mode() {
        let k = Key::from_bytes([3; 32]);
        let pk = PublicKey::from(&k.public_key());
        let ready = |m| Some(Announcement::Ready(pk, m));
        let line = format!("public_key={}\n", k.public_key().to_base64());
        assert_eq!(parse_announcement(&line), ready(Mode::Userspace));
        let kernel = format!("mode=kernel\n{line}");
        assert_eq!(parse_announcement(&kernel), ready(Mode::Kernel));
        let user = format!("mode=userspace\n{line}");
        assert_eq!(parse_announcement(&user), ready(Mode::Userspace));
        // Half a line (the log stream cut mid-key) is not a key yet.
        assert_eq!(parse_announcement(&line[..30]), None);
        assert_eq!(parse_announcement("mode=kernel\n"), None);
        assert_eq!(
            parse_announcement("mode=no-kernel-wireguard\n"),
            Some(Announcement::NoKernelWireGuard)
        );
    }
}

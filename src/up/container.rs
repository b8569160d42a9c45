//! Running the VM-side helper container and reading back its public key.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use crate::docker::client::timed;
use crate::helper::{Mode, MODE_PREFIX, PUBLIC_KEY_PREFIX};
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
    pub host_endpoint: String,
    pub vm_interface: String,
    pub vm_address: std::net::IpAddr,
    pub host_address: std::net::IpAddr,
    pub vm_address6: std::net::Ipv6Addr,
    pub host_address6: std::net::Ipv6Addr,
    /// Image archives to load the image from when the engine lacks it.
    pub archives: Vec<std::path::PathBuf>,
    /// Extra routes with a gateway inside the VM.
    pub routes: Vec<(ipnet::IpNet, std::net::IpAddr)>,
}

impl HelperSpec {
    /// The container: host network (the tunnel interface must live in the
    /// VM's own namespace, next to Docker's bridges), host PID namespace (to
    /// find dockerd and use its iptables), every capability dropped but:
    /// NET_ADMIN (interface, addresses, firewall), SYS_ADMIN and SYS_CHROOT
    /// (setns into dockerd's mount namespace), SYS_PTRACE (open another
    /// process's namespace files). `/dev/net/tun` is for the userspace data
    /// plane. `--privileged` is refused on some engines and is far more.
    pub fn body(&self) -> ContainerCreateBody {
        let mut cmd = vec![
            "helper".to_string(),
            "--host-public-key".into(),
            self.host_public_key.to_base64(),
            "--host-endpoint".into(),
            self.host_endpoint.clone(),
            "--interface".into(),
            self.vm_interface.clone(),
            "--vm-address".into(),
            self.vm_address.to_string(),
            "--host-address".into(),
            self.host_address.to_string(),
            "--vm-address6".into(),
            self.vm_address6.to_string(),
            "--host-address6".into(),
            self.host_address6.to_string(),
        ];
        for (net, gw) in &self.routes {
            cmd.extend(["--route".to_string(), format!("{net}={gw}")]);
        }
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(cmd),
            labels: Some(HashMap::from([(
                LABEL.to_string(),
                self.vm_interface.clone(),
            )])),
            host_config: Some(HostConfig {
                network_mode: Some("host".into()),
                pid_mode: Some("host".into()),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(
                    ["NET_ADMIN", "SYS_ADMIN", "SYS_CHROOT", "SYS_PTRACE"]
                        .map(String::from)
                        .to_vec(),
                ),
                devices: Some(vec![DeviceMapping {
                    path_on_host: Some("/dev/net/tun".into()),
                    path_in_container: Some("/dev/net/tun".into()),
                    cgroup_permissions: Some("rwm".into()),
                }]),
                // A name the static helper can resolve without DNS.
                extra_hosts: Some(vec!["host.docker.internal:host-gateway".into()]),
                // A crashed or killed userspace helper is restarted by
                // Docker at once; its key file survives in the container's
                // filesystem, so the tunnel resumes with no word from `up`.
                // Bounded, and a clean exit (kernel mode, or the host gone
                // for good) is not restarted, so an orphan cannot run on.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::ON_FAILURE),
                    maximum_retry_count: Some(RESTART_RETRIES),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
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
}

/// Remove any helper of the same name, start a new one and wait for its
/// key. The image must be there ([`super::image::ensure`]).
pub async fn start(docker: &Docker, spec: &HelperSpec) -> Result<RunningHelper, HelperError> {
    remove(docker, &spec.name).await?;
    let created = timed(
        docker.create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&spec.name)
                    .build(),
            ),
            spec.body(),
        ),
    )
    .await?;
    timed(docker.start_container(&created.id, None)).await?;
    let key = tokio::time::timeout(READY_TIMEOUT, read_key(docker, &created.id)).await;
    match key {
        Ok(Ok((k, mode))) => Ok(RunningHelper {
            id: created.id,
            vm_public_key: k,
            mode,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HelperError::NotReady(output(docker, &created.id).await)),
    }
}

async fn read_key(docker: &Docker, id: &str) -> Result<(PublicKey, Mode), HelperError> {
    let mut logs = docker.logs(
        id,
        Some(
            LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(false)
                .follow(true)
                .build(),
        ),
    );
    let mut buf = String::new();
    while let Some(item) = logs.next().await {
        if let LogOutput::StdOut { message } = item? {
            buf.push_str(&String::from_utf8_lossy(&message));
            if let Some(found) = parse_announcement(&buf) {
                return Ok(found);
            }
        }
    }
    Err(HelperError::Exited(output(docker, id).await))
}

/// The helper's announcement: `mode=…` (absent from older helpers: then
/// userspace) and `public_key=…`.
pub fn parse_announcement(out: &str) -> Option<(PublicKey, Mode)> {
    let mut mode = Mode::Userspace;
    for line in out.lines() {
        if line.trim() == format!("{MODE_PREFIX}kernel") {
            mode = Mode::Kernel;
        }
        if let Some(k) = line.strip_prefix(PUBLIC_KEY_PREFIX) {
            if let Ok(k) = Key::from_base64(k.trim()) {
                return Some((PublicKey::from(&k), mode));
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
    match timed(docker.remove_container(
        name,
        Some(RemoveContainerOptionsBuilder::default().force(true).build()),
    ))
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

    #[test]
    fn helper_container_has_least_privilege_and_no_secret() {
        let spec = HelperSpec {
            image: "netconnect-helper:test".into(),
            name: "netconnect-helper-netconnect0".into(),
            host_public_key: PublicKey([7; 32]),
            host_endpoint: "host.docker.internal:51820".into(),
            vm_interface: "netconnect0".into(),
            vm_address: "10.33.33.2".parse().unwrap(),
            host_address: "10.33.33.1".parse().unwrap(),
            vm_address6: "fd33:33:33::2".parse().unwrap(),
            host_address6: "fd33:33:33::1".parse().unwrap(),
            archives: vec![],
            routes: vec![],
        };
        let body = spec.body();
        let hc = body.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert_eq!(hc.privileged, None);
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            hc.cap_add.clone().unwrap(),
            vec!["NET_ADMIN", "SYS_ADMIN", "SYS_CHROOT", "SYS_PTRACE"]
        );
        // Only public material travels to the container.
        assert_eq!(body.env, None);
        let rp = hc.restart_policy.clone().unwrap();
        assert_eq!(rp.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(rp.maximum_retry_count, Some(RESTART_RETRIES));
        let cmd = body.cmd.unwrap().join(" ");
        assert!(cmd.contains(&PublicKey([7; 32]).to_base64()), "{cmd}");
        assert!(!cmd.to_lowercase().contains("private"), "{cmd}");
    }

    #[test]
    fn announcements_give_key_and_mode() {
        let k = Key::from_bytes([3; 32]);
        let pk = PublicKey::from(&k.public_key());
        let line = format!("public_key={}\n", k.public_key().to_base64());
        assert_eq!(parse_announcement(&line), Some((pk, Mode::Userspace)));
        let kernel = format!("mode=kernel\n{line}");
        assert_eq!(parse_announcement(&kernel), Some((pk, Mode::Kernel)));
        let user = format!("mode=userspace\n{line}");
        assert_eq!(parse_announcement(&user), Some((pk, Mode::Userspace)));
        // Half a line (the log stream cut mid-key) is not a key yet.
        assert_eq!(parse_announcement(&line[..30]), None);
        assert_eq!(parse_announcement("mode=kernel\n"), None);
    }
}

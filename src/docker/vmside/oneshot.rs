//! Looking into and cleaning the VM from outside a running `up`: one-shot
//! containers of the helper image (the helper's network namespace and
//! capabilities, [`container::vm_host_config`], so they see the firewall
//! the helper wrote, through the same backend choice), helper containers
//! by label, and containers to probe. Used by `down`, `doctor` and
//! `status`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use crate::cli::HelperCommand;
use crate::docker::client::timed;
use crate::docker::vmside::container::{self, HelperError, LABEL};
use crate::docker::DockerError;

/// Bound on a one-shot command (a few iptables calls).
const ONESHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Marks one-shot containers, so that a crashed `down` leaves findable ones.
pub const ONESHOT_LABEL: &str = "io.netconnect.oneshot";

/// What a one-shot container printed and how it ended.
#[derive(Debug, Clone)]
pub struct Oneshot {
    pub exit_code: i64,
    pub output: String,
}

/// Whether `image` exists in the engine.
pub async fn image_present(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    match timed(docker.inspect_image(image)).await {
        Ok(_) => Ok(true),
        Err(DockerError::Api(BollardError::DockerResponseServerError {
            status_code: 404, ..
        })) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Run `netconnect ARGS` from the helper image in the VM's host namespaces,
/// wait for it, return its output, remove it.
pub async fn run_oneshot(
    docker: &Docker,
    image: &str,
    vm_interface: &str,
    command: &HelperCommand,
) -> Result<Oneshot, HelperError> {
    // Load the shipped archive if the image is missing, as `up` does.
    crate::docker::vmside::image::ensure(
        docker,
        image,
        &crate::docker::vmside::image::archives(None),
    )
    .await?;
    let name = format!("netconnect-{}-{vm_interface}", command.name());
    container::remove(docker, &name).await?;
    // The helper's own privileges, without the TUN device and the key's
    // volume, which only the helper needs, and without a restart policy: a
    // one-shot that fails has said why, and is read, not run again.
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(command.argv()),
        labels: Some(HashMap::from([(
            ONESHOT_LABEL.to_string(),
            vm_interface.to_string(),
        )])),
        host_config: Some(container::vm_host_config()),
        ..Default::default()
    };
    let created = timed(docker.create_container(
        Some(CreateContainerOptionsBuilder::default().name(&name).build()),
        body,
    ))
    .await?;
    let result = async {
        timed(docker.start_container(&created.id, None)).await?;
        let mut wait = docker.wait_container(&created.id, None);
        let code = match tokio::time::timeout(ONESHOT_TIMEOUT, wait.next()).await {
            Ok(Some(Ok(r))) => r.status_code,
            Ok(Some(Err(BollardError::DockerContainerWaitError { code, .. }))) => code,
            Ok(Some(Err(e))) => return Err(HelperError::from(e)),
            Ok(None) => -1,
            Err(_) => {
                return Err(HelperError::NotReady(format!(
                    "{name} did not finish within {}s",
                    ONESHOT_TIMEOUT.as_secs()
                )))
            }
        };
        Ok(Oneshot {
            exit_code: code,
            output: logs(docker, &created.id).await,
        })
    }
    .await;
    let _ = container::remove(docker, &name).await;
    result
}

async fn logs(docker: &Docker, id: &str) -> String {
    let mut s = docker.logs(
        id,
        Some(
            LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build(),
        ),
    );
    let mut out = String::new();
    while let Some(Ok(item)) = s.next().await {
        out.push_str(&String::from_utf8_lossy(&item.into_bytes()));
    }
    out
}

/// A helper container: its name, id and whether it runs.
#[derive(Debug, Clone)]
pub struct HelperContainer {
    pub name: String,
    pub id: String,
    pub running: bool,
    pub state: String,
}

/// Helper containers for VM interface `vm_interface` (by label, whatever
/// their name).
pub async fn helpers(
    docker: &Docker,
    vm_interface: &str,
) -> Result<Vec<HelperContainer>, DockerError> {
    let filters = HashMap::from([("label", vec![format!("{LABEL}={vm_interface}")])]);
    let list = timed(
        docker.list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        )),
    )
    .await?;
    Ok(list
        .into_iter()
        .map(|c| {
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            HelperContainer {
                name: c
                    .names
                    .and_then(|n| n.first().cloned())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                id: c.id.unwrap_or_default(),
                running: state == "running",
                state,
            }
        })
        .collect())
}

/// Running containers' addresses: `(container name, address)`, helpers and
/// host-network containers left out. What `doctor` probes.
pub async fn container_addresses(docker: &Docker) -> Result<Vec<(String, IpAddr)>, DockerError> {
    let list = timed(docker.list_containers(None)).await?;
    let mut out = Vec::new();
    for c in list {
        let labels = c.labels.unwrap_or_default();
        if labels.contains_key(LABEL) || labels.contains_key(ONESHOT_LABEL) {
            continue;
        }
        let name = c
            .names
            .and_then(|n| n.first().cloned())
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let nets = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        let mut nets: Vec<_> = nets.into_iter().collect();
        nets.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, ep) in nets {
            if let Some(ip) = ep
                .ip_address
                .as_deref()
                .and_then(|a| a.parse::<IpAddr>().ok())
            {
                out.push((name.clone(), ip));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A rule of the VM's DOCKER-USER chain above ours that may drop tunnel
/// traffic, with its packet counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    pub packets: u64,
    /// As `iptables -S` prints it, without the counters.
    pub rule: String,
}

impl Shadow {
    /// `helper-check`'s line for it, which [`Shadow::parse`] reads back.
    pub fn line(&self) -> String {
        format!("shadow {} {}", self.packets, self.rule)
    }

    pub fn parse(line: &str) -> Option<Shadow> {
        let (packets, rule) = line.strip_prefix("shadow ")?.split_once(' ')?;
        Some(Shadow {
            packets: packets.parse().ok()?,
            rule: rule.to_owned(),
        })
    }
}

//! What the session needs from the world, as three small traits: the
//! Docker engine ([`EngineApi`]), the tunnel device ([`TunnelApi`]) and the
//! routing table's change notices ([`RouteEvents`]); routes themselves go
//! through [`crate::routes::Router`]. The real implementations are thin
//! wrappers here; `session`'s tests drive the loop with fakes under
//! `tokio::time::pause()`, with no root and no Docker.

use futures::stream::BoxStream;
use futures::StreamExt as _;

use crate::docker::vmside::{container, image, HelperError, HelperSpec, RunningHelper};
use crate::docker::{self, Change, ContainerInfo, DockerError, Engine, NetworkInfo};
use crate::helper::Mode;
use crate::keys::PublicKey;
use crate::routes::WatchEvent;
use crate::tunnel::{ConfigError, Device, DeviceUpdate};

/// The engine's side of the session. Every call is one request (or one
/// stream): the tests count them.
#[allow(async_fn_in_trait)]
pub trait EngineApi {
    async fn networks(&self) -> Result<Vec<NetworkInfo>, DockerError>;
    /// The running containers, for their names.
    async fn containers(&self) -> Result<Vec<ContainerInfo>, DockerError>;
    /// One container as it is now; `None` unless it runs.
    async fn container(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError>;
    /// Network and container events until the engine goes away.
    fn events(&self) -> BoxStream<'static, Result<Change, String>>;
    /// Load the helper image if the engine lacks it.
    async fn ensure_image(&self, spec: &HelperSpec) -> Result<(), HelperError>;
    async fn start_helper(
        &self,
        spec: &HelperSpec,
        known: Option<Mode>,
    ) -> Result<RunningHelper, HelperError>;
    async fn is_running(&self, id: &str) -> bool;
    /// Running, or about to be restarted by its restart policy.
    async fn is_running_or_restarting(&self, id: &str) -> bool;
    async fn remove_helper(&self, name: &str) -> Result<(), HelperError>;
    /// Run a command in a running container, as `docker exec`.
    async fn exec(&self, id: &str, argv: &[&str]) -> Result<docker::ExecOutput, DockerError>;
    /// Make the VM's routes that the helper marks exactly `routes`, with
    /// a one-shot of the helper image (`helper-routes`).
    async fn set_vm_routes(
        &self,
        spec: &HelperSpec,
        routes: &[(ipnet::IpNet, std::net::IpAddr)],
    ) -> Result<(), HelperError>;
    /// Connect again (the engine restarted); returns when one answers.
    async fn reconnect(&mut self) -> &Engine;
}

/// The tunnel device's side of the session.
#[allow(async_fn_in_trait)]
pub trait TunnelApi {
    fn name(&self) -> &str;
    /// The peer's received bytes and whether it ever completed a handshake.
    fn peer(&self, key: &PublicKey) -> Option<PeerSeen>;
    fn apply(&self, update: &DeviceUpdate) -> Result<(), ConfigError>;
    /// Send one packet through the tunnel as if it came from the TUN.
    async fn inject(&self, packet: &[u8]) -> bool;
    /// Resolves when the device stops working, with the reason.
    async fn failed(&self) -> String;
    /// Resolves at the next packet that goes into the tunnel.
    async fn offered(&self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerSeen {
    pub rx_bytes: u64,
    pub handshaken: bool,
}

/// The routing table's change notices.
#[allow(async_fn_in_trait)]
pub trait RouteEvents {
    /// The next change; cancel-safe. `None`: no more notices will come.
    async fn next(&mut self) -> Option<WatchEvent>;
}

/// The real engine: bollard, reconnecting through discovery's candidates.
pub struct DockerApi {
    pub engine: Engine,
    pub candidates: Vec<docker::Candidate>,
}

impl EngineApi for DockerApi {
    async fn networks(&self) -> Result<Vec<NetworkInfo>, DockerError> {
        docker::networks(&self.engine.docker).await
    }

    async fn containers(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        docker::containers(&self.engine.docker).await
    }

    async fn container(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        docker::container(&self.engine.docker, id).await
    }

    fn events(&self) -> BoxStream<'static, Result<Change, String>> {
        let runtime = self.engine.runtime;
        docker::events(&self.engine.docker)
            .flat_map(move |r| {
                let v: Vec<Result<Change, String>> = match r {
                    Ok(ev) => docker::changes(&ev, runtime).into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e.to_string())],
                };
                futures::stream::iter(v)
            })
            .boxed()
    }

    async fn ensure_image(&self, spec: &HelperSpec) -> Result<(), HelperError> {
        image::ensure(&self.engine.docker, &spec.image, &spec.archives).await
    }

    async fn start_helper(
        &self,
        spec: &HelperSpec,
        known: Option<Mode>,
    ) -> Result<RunningHelper, HelperError> {
        container::start(&self.engine.docker, spec, known).await
    }

    async fn is_running(&self, id: &str) -> bool {
        container::is_running(&self.engine.docker, id).await
    }

    async fn is_running_or_restarting(&self, id: &str) -> bool {
        container::is_running_or_restarting(&self.engine.docker, id).await
    }

    async fn remove_helper(&self, name: &str) -> Result<(), HelperError> {
        container::remove(&self.engine.docker, name).await
    }

    async fn exec(&self, id: &str, argv: &[&str]) -> Result<docker::ExecOutput, DockerError> {
        docker::exec(&self.engine.docker, id, argv).await
    }

    async fn set_vm_routes(
        &self,
        spec: &HelperSpec,
        routes: &[(ipnet::IpNet, std::net::IpAddr)],
    ) -> Result<(), HelperError> {
        let command = crate::cli::HelperCommand::Routes(crate::cli::VmArgs {
            interface: spec.vm_interface.clone(),
            routes: routes.to_vec(),
        });
        let done = crate::docker::vmside::run_oneshot(
            &self.engine.docker,
            &spec.image,
            &spec.vm_interface,
            &command,
        )
        .await?;
        if done.exit_code == 0 {
            Ok(())
        } else {
            Err(HelperError::Exited(done.output.trim().to_owned()))
        }
    }

    async fn reconnect(&mut self) -> &Engine {
        self.engine = super::connect_until_up(&self.candidates).await;
        &self.engine
    }
}

impl TunnelApi for std::sync::Arc<Device> {
    fn name(&self) -> &str {
        Device::name(self)
    }

    fn peer(&self, key: &PublicKey) -> Option<PeerSeen> {
        self.status()
            .peers
            .iter()
            .find(|p| p.public_key == *key)
            .map(|p| PeerSeen {
                rx_bytes: p.rx_bytes,
                handshaken: p.last_handshake.is_some(),
            })
    }

    fn apply(&self, update: &DeviceUpdate) -> Result<(), ConfigError> {
        Device::apply(self, update)
    }

    async fn inject(&self, packet: &[u8]) -> bool {
        Device::inject(self, packet).await
    }

    async fn failed(&self) -> String {
        Device::failed(self).await
    }

    async fn offered(&self) {
        Device::offered(self).await
    }
}

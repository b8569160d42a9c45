//! Containers and networks a test creates, named and labelled after its
//! process, removed on drop.

use std::sync::Mutex;

use super::commands::{docker, docker_try};
use super::images::BUSYBOX_IMAGE;
use super::TEST_LABEL;
use crate::names::next_id;

/// Containers and networks of one test, named `nct-<pid>-<n>-<tag>` and
/// labelled with the pid; removed (containers first) on drop.
#[derive(Default)]
pub struct DockerThings {
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
}

impl DockerThings {
    pub fn new() -> DockerThings {
        DockerThings::default()
    }

    fn name(tag: &str) -> String {
        format!("nct-{}-{}-{tag}", std::process::id(), next_id())
    }

    fn label() -> String {
        format!("{TEST_LABEL}={}", std::process::id())
    }

    /// `docker network create --subnet SUBNET [opts] NAME`; returns NAME.
    pub fn network(&self, tag: &str, subnet: &str, opts: &[&str]) -> String {
        let name = Self::name(tag);
        self.networks.lock().unwrap().push(name.clone());
        let mut args: Vec<String> = vec![
            "network".into(),
            "create".into(),
            "--label".into(),
            Self::label(),
            "--subnet".into(),
            subnet.into(),
        ];
        args.extend(opts.iter().map(|s| s.to_string()));
        args.push(name.clone());
        docker(&args);
        name
    }

    /// `docker network rm NAME` now (it is no longer removed on drop).
    pub fn remove_network(&self, name: &str) {
        docker(&["network", "rm", name]);
        self.networks.lock().unwrap().retain(|n| n != name);
    }

    /// Runs a busybox web server whose `/` answers its own name, on
    /// `network` (default: the default bridge), optionally at `ip`.
    /// `--init` makes it stop at once on SIGTERM. Returns its name.
    pub fn web(
        &self,
        tag: &str,
        network: Option<&str>,
        ip: Option<&str>,
        extra: &[&str],
    ) -> String {
        let name = Self::name(tag);
        self.containers.lock().unwrap().push(name.clone());
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--init".into(),
            "--name".into(),
            name.clone(),
            "--label".into(),
            Self::label(),
        ];
        if let Some(n) = network {
            args.extend(["--network".into(), n.into()]);
        }
        if let Some(ip) = ip {
            args.extend(["--ip".into(), ip.into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([
            BUSYBOX_IMAGE.into(),
            "sh".into(),
            "-c".into(),
            format!(
                "mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www"
            ),
        ]);
        docker(&args);
        name
    }

    /// `docker run -d --name NAME --label ... ARGS...` (ARGS: options,
    /// image, command); returns NAME. Removed, with its volumes, on drop.
    pub fn run(&self, tag: &str, args: &[&str]) -> String {
        let name = Self::name(tag);
        self.containers.lock().unwrap().push(name.clone());
        let mut all: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--label".into(),
            Self::label(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        docker(&all);
        name
    }

    pub fn remove_container(&self, name: &str) {
        docker(&["rm", "-f", "-v", name]);
        self.containers.lock().unwrap().retain(|n| n != name);
    }
}

impl Drop for DockerThings {
    fn drop(&mut self) {
        for c in self.containers.lock().unwrap().drain(..) {
            let _ = docker_try(&["rm", "-f", "-v", &c]);
        }
        for n in self.networks.lock().unwrap().drain(..) {
            let _ = docker_try(&["network", "rm", &n]);
        }
    }
}

/// The address of container `name` on `network` ("bridge": the default).
pub fn container_ip(name: &str, network: &str) -> String {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    docker(&["inspect", "--format", &f, name])
        .trim()
        .to_string()
}

pub fn container_running(name: &str) -> bool {
    docker_try(&["inspect", "--format", "{{.State.Running}}", name])
        .map(|s| s.trim() == "true")
        .unwrap_or(false)
}

/// `docker inspect NAME` as JSON (the one object).
pub fn inspect(name: &str) -> serde_json::Value {
    let text = docker(&["inspect", name]);
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("docker inspect {name}: {e}"));
    v[0].clone()
}

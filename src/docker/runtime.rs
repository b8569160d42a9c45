//! Which container runtime answers: Docker Desktop, Colima, Rancher
//! Desktop, Podman, Lima, OrbStack or a plain dockerd. A user should never
//! need to know; `up` needs to, for the few things that differ (OrbStack
//! already routes container addresses to the Mac; Podman's API is not
//! Docker's everywhere), and says it in its first lines, `status` and
//! `doctor` so that a bug report names it.
//!
//! Pure: the engine's own answers (`/info`, `/version`) first, since a
//! context or `DOCKER_HOST` can point anywhere; the socket's path and the
//! context's name only when the answers say nothing.

use super::discovery::Source;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    DockerDesktop,
    Colima,
    RancherDesktop,
    Podman,
    Lima,
    OrbStack,
    /// A dockerd nothing else claims (Linux, a VM of one's own).
    #[default]
    Dockerd,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::DockerDesktop => "docker-desktop",
            Runtime::Colima => "colima",
            Runtime::RancherDesktop => "rancher-desktop",
            Runtime::Podman => "podman",
            Runtime::Lima => "lima",
            Runtime::OrbStack => "orbstack",
            Runtime::Dockerd => "dockerd",
        }
    }

    /// Whether the runtime already routes container addresses to the Mac,
    /// so that a tunnel of ours would only shadow its routes.
    pub fn routes_containers_itself(self) -> bool {
        self == Runtime::OrbStack
    }

    /// Why a rootless engine of this runtime cannot be used, and what to
    /// do instead.
    pub fn rootless_problem(self) -> String {
        let fix = match self {
            Runtime::Podman => {
                "make the Podman machine rootful: podman machine stop && podman machine set --rootful && podman machine start"
            }
            // Lima's `docker` template runs dockerd rootless.
            Runtime::Lima => "start a rootful engine instead: limactl start template://docker-rootful",
            _ => "use the engine's rootful mode (a rootless engine's host network is a user namespace's)",
        };
        format!(
            "the {} engine runs rootless: the VM-side helper needs the VM's own network (host networking with NET_ADMIN); {fix}",
            self.as_str()
        )
    }

    /// What `doctor` tells a user of this runtime, beyond the checks.
    pub fn advice(self) -> Option<&'static str> {
        match self {
            Runtime::OrbStack => Some(
                "OrbStack routes container addresses to this Mac itself: netconnect is not needed (up --force runs it anyway)",
            ),
            Runtime::Colima => Some(
                "a Colima VM started with --network-address has an address of its own on this Mac; container addresses still need netconnect",
            ),
            Runtime::Podman => Some(
                "the helper needs a rootful Podman machine (host network, NET_ADMIN in the VM): podman machine stop; podman machine set --rootful; podman machine start",
            ),
            Runtime::RancherDesktop => Some(
                "Rancher Desktop must run the dockerd (moby) engine, not containerd: Preferences > Container Engine",
            ),
            Runtime::DockerDesktop | Runtime::Lima | Runtime::Dockerd => None,
        }
    }
}

/// What identifies a runtime in the engine's answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `/info` `OperatingSystem`: "Docker Desktop", "OrbStack", "Ubuntu 24.04.1 LTS".
    pub operating_system: String,
    /// `/info` `Name`: the VM's host name ("docker-desktop", "colima", "lima-rancher-desktop").
    pub name: String,
    /// `/info` `KernelVersion`.
    pub kernel: String,
    /// `/info` `Labels` (`key=value`).
    pub labels: Vec<String>,
    /// `/version` `Components[].Name` ("Engine", "Podman Engine").
    pub components: Vec<String>,
    /// `/version` `Platform.Name` ("Docker Desktop 4.33.0 (160616)",
    /// "Docker Engine - Community", "linux/arm64/fedora-41").
    pub platform: String,
    /// `/info` `SecurityOptions` (`name=seccomp,profile=default`,
    /// `name=rootless`).
    pub security_options: Vec<String>,
}

impl Facts {
    /// A rootless engine (Docker's rootless mode, a rootless Podman
    /// machine) says so in `SecurityOptions`; its "host network" is a
    /// user namespace's, where the helper can change nothing of the VM's.
    pub fn rootless(&self) -> bool {
        self.security_options
            .iter()
            .any(|o| o.split(',').any(|kv| kv == "name=rootless"))
    }
}

/// The runtime behind an engine: its answers, then where we found it.
pub fn identify(facts: &Facts, source: Source, host: &str, context: Option<&str>) -> Runtime {
    let os = facts.operating_system.to_ascii_lowercase();
    let name = facts.name.to_ascii_lowercase();
    if facts
        .components
        .iter()
        .any(|c| c.to_ascii_lowercase().starts_with("podman"))
    {
        return Runtime::Podman;
    }
    if os == "orbstack" || facts.kernel.contains("orbstack") {
        return Runtime::OrbStack;
    }
    if os == "docker desktop"
        || name == "docker-desktop"
        || facts.platform.starts_with("Docker Desktop")
        || facts
            .labels
            .iter()
            .any(|l| l.starts_with("com.docker.desktop."))
    {
        return Runtime::DockerDesktop;
    }
    if name.contains("rancher-desktop")
        || facts
            .security_options
            .iter()
            .any(|o| o.contains("/etc/rancher-desktop/"))
    {
        return Runtime::RancherDesktop;
    }
    if name == "colima" || name.starts_with("colima-") {
        return Runtime::Colima;
    }
    if name.starts_with("lima-") {
        return Runtime::Lima;
    }
    // The answers say nothing: where we found it.
    let path = host.strip_prefix("unix://").unwrap_or("");
    let context = context.unwrap_or("");
    match source {
        Source::DockerDesktop => return Runtime::DockerDesktop,
        Source::Colima => return Runtime::Colima,
        Source::RancherDesktop => return Runtime::RancherDesktop,
        Source::OrbStack => return Runtime::OrbStack,
        Source::Podman => return Runtime::Podman,
        Source::Lima => return Runtime::Lima,
        _ => {}
    }
    if path.contains("/.orbstack/") || context == "orbstack" {
        Runtime::OrbStack
    } else if path.contains("/.rd/") || context == "rancher-desktop" {
        Runtime::RancherDesktop
    } else if path.contains("/.colima/") || context.starts_with("colima") {
        Runtime::Colima
    } else if path.contains("/.lima/") || context.starts_with("lima-") {
        Runtime::Lima
    } else if path.contains("podman") || context.starts_with("podman") {
        Runtime::Podman
    } else if path.contains("/.docker/run/") || context == "desktop-linux" {
        Runtime::DockerDesktop
    } else {
        Runtime::Dockerd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(os: &str, name: &str, kernel: &str, labels: &[&str], components: &[&str]) -> Facts {
        Facts {
            operating_system: os.into(),
            name: name.into(),
            kernel: kernel.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            components: components.iter().map(|s| s.to_string()).collect(),
            platform: String::new(),
            security_options: vec![],
        }
    }

    #[test]
    fn rootless_is_read_from_the_security_options() {
        let mut f = facts("fedora", "localhost", "6.12", &[], &["Podman Engine"]);
        assert!(!f.rootless());
        f.security_options = vec!["name=seccomp,profile=default".into()];
        assert!(!f.rootless());
        f.security_options.push("name=rootless".into());
        assert!(f.rootless());
    }

    /// Each runtime's answers as its users paste them in `docker info` and
    /// `docker version` (the fields the runtimes document and set), found
    /// through a socket that says nothing (`DOCKER_HOST`), so that the
    /// answers alone must name it.
    #[test]
    fn each_runtime_is_named_from_its_own_answers() {
        let cases = [
            (
                facts(
                    "Docker Desktop",
                    "docker-desktop",
                    "6.10.14-linuxkit",
                    &["com.docker.desktop.address=unix:///Users/ann/Library/Containers/com.docker.docker/Data/docker-cli.sock"],
                    &["Engine", "containerd", "runc", "docker-init"],
                ),
                Runtime::DockerDesktop,
            ),
            (
                facts("OrbStack", "orbstack", "6.12.0-orbstack-00304-gb3d4b9a4c2b5", &[], &["Engine", "containerd"]),
                Runtime::OrbStack,
            ),
            (
                facts("Ubuntu 24.04.1 LTS", "colima", "6.8.0-50-generic", &[], &["Engine", "containerd"]),
                Runtime::Colima,
            ),
            (
                facts("Ubuntu 24.04.1 LTS", "colima-work", "6.8.0-50-generic", &[], &["Engine"]),
                Runtime::Colima,
            ),
            (
                facts("Alpine Linux v3.20", "lima-rancher-desktop", "6.6.63-0-virt", &[], &["Engine"]),
                Runtime::RancherDesktop,
            ),
            (
                facts("Ubuntu 24.10", "lima-docker", "6.11.0-9-generic", &[], &["Engine"]),
                Runtime::Lima,
            ),
            (
                facts("fedora", "localhost.localdomain", "6.12.7-200.fc41.aarch64", &[], &["Podman Engine", "Conmon", "OCI Runtime (crun)"]),
                Runtime::Podman,
            ),
            (
                facts("Debian GNU/Linux 12 (bookworm)", "ci-runner", "6.1.0-28-amd64", &[], &["Engine", "containerd", "runc"]),
                Runtime::Dockerd,
            ),
        ];
        // Fields besides the name that say it (Docker Desktop's platform,
        // Rancher Desktop's seccomp profile), when a user renamed the VM.
        let mut dd = facts("Ubuntu", "my-vm", "6.10", &[], &["Engine"]);
        dd.platform = "Docker Desktop 4.33.0 (160616)".into();
        let mut rd = facts("Alpine Linux v3.20", "my-vm", "6.6", &[], &["Engine"]);
        rd.security_options = vec!["name=seccomp,profile=/etc/rancher-desktop/seccomp.json".into()];
        let cases = cases
            .into_iter()
            .chain([(dd, Runtime::DockerDesktop), (rd, Runtime::RancherDesktop)]);
        for (f, want) in cases {
            assert_eq!(
                identify(&f, Source::Env, "unix:///tmp/any.sock", None),
                want,
                "{f:?}"
            );
        }
    }

    /// With answers that say nothing (a plain dockerd in a VM), where we
    /// found it decides; the answers beat the path when they do speak.
    #[test]
    fn the_socket_or_context_names_it_when_the_answers_do_not() {
        let plain = facts("Ubuntu 22.04.4 LTS", "vm", "5.15.0", &[], &["Engine"]);
        let cases = [
            (
                Source::Colima,
                "unix:///Users/ann/.colima/default/docker.sock",
                None,
                Runtime::Colima,
            ),
            (
                Source::RancherDesktop,
                "unix:///Users/ann/.rd/docker.sock",
                None,
                Runtime::RancherDesktop,
            ),
            (
                Source::Lima,
                "unix:///Users/ann/.lima/docker/sock/docker.sock",
                None,
                Runtime::Lima,
            ),
            (
                Source::Context,
                "unix:///Users/ann/.colima/work/docker.sock",
                Some("colima-work"),
                Runtime::Colima,
            ),
            (
                Source::Context,
                "unix:///Users/ann/.lima/dev/sock/docker.sock",
                Some("lima-dev"),
                Runtime::Lima,
            ),
            (
                Source::Env,
                "unix:///Users/ann/.orbstack/run/docker.sock",
                None,
                Runtime::OrbStack,
            ),
            (
                Source::Flag,
                "unix:///run/podman/podman.sock",
                None,
                Runtime::Podman,
            ),
            (
                Source::Default,
                "unix:///var/run/docker.sock",
                None,
                Runtime::Dockerd,
            ),
            (Source::Flag, "tcp://10.0.0.5:2375", None, Runtime::Dockerd),
        ];
        for (source, host, context, want) in cases {
            assert_eq!(identify(&plain, source, host, context), want, "{host}");
        }
        // Docker Desktop's answers through the default socket it links.
        let dd = facts(
            "Docker Desktop",
            "docker-desktop",
            "6.10.14-linuxkit",
            &[],
            &["Engine"],
        );
        assert_eq!(
            identify(&dd, Source::Default, "unix:///var/run/docker.sock", None),
            Runtime::DockerDesktop
        );
    }

    #[test]
    fn only_orbstack_routes_by_itself() {
        for r in [
            Runtime::DockerDesktop,
            Runtime::Colima,
            Runtime::RancherDesktop,
            Runtime::Podman,
            Runtime::Lima,
            Runtime::Dockerd,
        ] {
            assert!(!r.routes_containers_itself(), "{r:?}");
        }
        assert!(Runtime::OrbStack.routes_containers_itself());
        assert!(Runtime::Podman.advice().unwrap().contains("--rootful"));
    }
}

//! Finding the Docker engine: which socket or URL to try, in which order.
//!
//! Pure data in, an ordered candidate list out, so the rules are table tests
//! on any OS. An explicit choice (`--docker-host`, `DOCKER_HOST`) is the
//! only candidate: a user who named an engine wants that one or an error,
//! never a silent fallback to another.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a candidate is on the list; logged with the one that answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    Context,
    DockerDesktop,
    Colima,
    RancherDesktop,
    OrbStack,
    Podman,
    Lima,
    Default,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::Flag => "--docker-host",
            Source::Env => "DOCKER_HOST",
            Source::Context => "the current docker context",
            Source::DockerDesktop => "Docker Desktop's socket",
            Source::Colima => "Colima's socket",
            Source::RancherDesktop => "Rancher Desktop's socket",
            Source::OrbStack => "OrbStack's socket",
            Source::Podman => "Podman machine's socket",
            Source::Lima => "Lima's docker socket",
            Source::Default => "the default socket",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// A URL as Docker writes them: `unix:///path`, `tcp://host:port`.
    pub host: String,
    pub source: Source,
    /// For a socket that a user's files named (their context, their
    /// home): the uid that, besides root, may own it (see
    /// [`Inputs::owner`]).
    pub owner: Option<u32>,
    /// The docker context this came from, by name (it helps name the
    /// runtime: `colima-work`, `rancher-desktop`).
    pub context: Option<String>,
}

/// What discovery looks at, gathered by the caller (from the environment,
/// the invoking user's home and their Docker config).
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    pub flag: Option<String>,
    pub env_docker_host: Option<String>,
    /// `DOCKER_CONTEXT` of the invoking user, which overrides config.json.
    pub env_docker_context: Option<String>,
    /// The home of the user whose Docker we want (under sudo: `SUDO_USER`'s).
    pub home: Option<PathBuf>,
    /// `DOCKER_CONFIG` of that user, else `~/.docker`.
    pub docker_config: Option<PathBuf>,
    /// Run as root on another user's Docker files: that user's uid. Their
    /// files are their data, so a socket their context or home names must
    /// be theirs or root's: root does not talk to (and take routes from)
    /// an engine a third user put at a path the first one named.
    pub owner: Option<u32>,
}

/// Reads files under the user's Docker config; a trait so tests can hand in
/// a file tree as a map.
pub trait Files {
    fn read(&self, path: &Path) -> Option<String>;
    fn exists(&self, path: &Path) -> bool;
}

impl Inputs {
    /// Engine discovery looks at the invoking user's Docker, also under sudo
    /// and, as a launchd daemon, the console user's.
    pub fn from_env(flag: Option<String>) -> Inputs {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let invoker = Invoker::from_env(std::path::Path::new("/dev/console"));
        let home = user_home(&invoker, &RealUsers);
        // The user whose files those are is the home's owner.
        let owner = (invoker.euid == 0)
            .then(|| home.as_deref().and_then(|h| std::fs::metadata(h).ok()))
            .flatten()
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        Inputs {
            flag,
            env_docker_host: env("DOCKER_HOST"),
            env_docker_context: env("DOCKER_CONTEXT"),
            home,
            docker_config: env("DOCKER_CONFIG").map(std::path::PathBuf::from),
            owner,
        }
    }
}

pub struct RealFiles;

impl Files for RealFiles {
    /// The files are the user's: read as data (see `crate::files`).
    fn read(&self, path: &Path) -> Option<String> {
        crate::files::read_small_text(path).ok()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Who started us, as far as finding their Docker goes.
#[derive(Debug, Default, Clone)]
pub struct Invoker {
    /// `SUDO_USER`: under sudo, the user whose Docker we want.
    pub sudo_user: Option<String>,
    /// `HOME` of this process.
    pub home: Option<PathBuf>,
    pub euid: u32,
    /// Owner of `/dev/console`: the user logged in at the screen (root
    /// when nobody is).
    pub console_owner: Option<u32>,
}

/// Looks up home directories; a trait so tests can hand in a table.
pub trait Users {
    fn home_by_name(&self, name: &str) -> Option<PathBuf>;
    fn home_by_uid(&self, uid: u32) -> Option<PathBuf>;
}

pub struct RealUsers;

impl Users for RealUsers {
    fn home_by_name(&self, name: &str) -> Option<PathBuf> {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.dir)
    }
    fn home_by_uid(&self, uid: u32) -> Option<PathBuf> {
        nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.dir)
    }
}

impl Invoker {
    /// This process's view: environment, euid, the owner of `console`
    /// (`/dev/console` in production).
    pub fn from_env(console: &Path) -> Invoker {
        use std::os::unix::fs::MetadataExt as _;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Invoker {
            sudo_user: env("SUDO_USER"),
            home: env("HOME").map(PathBuf::from),
            euid: nix::unistd::geteuid().as_raw(),
            console_owner: std::fs::metadata(console).ok().map(|m| m.uid()),
        }
    }
}

/// The home of the user whose Docker we want. Under sudo, `SUDO_USER`'s;
/// a user running us directly, their own. A root daemon started by launchd
/// (`brew services`, `netconnect service`) has neither a `SUDO_USER` nor a
/// useful `HOME` (`/var/root`), but the person at the screen is who runs
/// Docker Desktop: the console user. Nobody logged in (console owned by
/// root): root's `HOME`, and after it the well-known sockets.
pub fn user_home(inv: &Invoker, users: &dyn Users) -> Option<PathBuf> {
    if let Some(h) = inv.sudo_user.as_deref().and_then(|u| users.home_by_name(u)) {
        return Some(h);
    }
    if inv.euid != 0 {
        return inv.home.clone();
    }
    inv.console_owner
        .filter(|&uid| uid != 0)
        .and_then(|uid| users.home_by_uid(uid))
        .or_else(|| inv.home.clone())
}

/// The ordered list of engines to try.
pub fn candidates(inputs: &Inputs, files: &dyn Files) -> Vec<Candidate> {
    if let Some(h) = inputs.flag.as_deref().filter(|h| !h.is_empty()) {
        return vec![Candidate {
            host: normalize(h),
            source: Source::Flag,
            owner: None,
            context: None,
        }];
    }
    if let Some(h) = inputs.env_docker_host.as_deref().filter(|h| !h.is_empty()) {
        return vec![Candidate {
            host: normalize(h),
            source: Source::Env,
            owner: None,
            context: None,
        }];
    }
    let mut out = Vec::new();
    let config_dir = inputs
        .docker_config
        .clone()
        .or_else(|| inputs.home.as_ref().map(|h| h.join(".docker")));
    if let Some(dir) = &config_dir {
        if let Some((name, host)) = context_host(dir, inputs.env_docker_context.as_deref(), files) {
            out.push(Candidate {
                host,
                source: Source::Context,
                owner: inputs.owner,
                context: Some(name),
            });
        }
    }
    if let Some(home) = &inputs.home {
        let sockets = [
            (".docker/run/docker.sock", Source::DockerDesktop),
            (".colima/default/docker.sock", Source::Colima),
            (".colima/docker.sock", Source::Colima),
            (".rd/docker.sock", Source::RancherDesktop),
            (".orbstack/run/docker.sock", Source::OrbStack),
            (
                ".local/share/containers/podman/machine/podman.sock",
                Source::Podman,
            ),
            // Lima's `docker` template (limactl start template://docker).
            (".lima/docker/sock/docker.sock", Source::Lima),
        ];
        for (rel, source) in sockets {
            let p = home.join(rel);
            if files.exists(&p) {
                out.push(Candidate {
                    host: format!("unix://{}", p.display()),
                    source,
                    owner: inputs.owner,
                    context: None,
                });
            }
        }
    }
    out.push(Candidate {
        host: "unix:///var/run/docker.sock".into(),
        source: Source::Default,
        owner: None,
        context: None,
    });
    // A context usually points at one of the well-known sockets: try each once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(c.host.clone()));
    out
}

/// A bare path means a Unix socket.
fn normalize(h: &str) -> String {
    if h.starts_with('/') {
        format!("unix://{h}")
    } else {
        h.to_owned()
    }
}

/// The name and endpoint of the current `docker context`, if it is not
/// `default`. Docker stores context `NAME` under
/// `contexts/meta/<sha256(NAME)>/meta.json`.
fn context_host(
    config_dir: &Path,
    env_context: Option<&str>,
    files: &dyn Files,
) -> Option<(String, String)> {
    let name = match env_context {
        Some(n) => n.to_owned(),
        None => {
            let config = files.read(&config_dir.join("config.json"))?;
            let v: serde_json::Value = serde_json::from_str(&config).ok()?;
            v.get("currentContext")?.as_str()?.to_owned()
        }
    };
    if name.is_empty() || name == "default" {
        return None;
    }
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    let meta = files.read(
        &config_dir
            .join("contexts/meta")
            .join(digest)
            .join("meta.json"),
    )?;
    let v: serde_json::Value = serde_json::from_str(&meta).ok()?;
    let host = v.get("Endpoints")?.get("docker")?.get("Host")?.as_str()?;
    Some((name, normalize(host)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A file tree as a map; a path with `None` content exists but is a socket.
    struct Tree(HashMap<PathBuf, Option<String>>);

    impl Tree {
        fn new(entries: &[(&str, Option<&str>)]) -> Self {
            Tree(
                entries
                    .iter()
                    .map(|(p, c)| (PathBuf::from(p), c.map(str::to_owned)))
                    .collect(),
            )
        }
    }

    impl Files for Tree {
        fn read(&self, path: &Path) -> Option<String> {
            self.0.get(path).cloned().flatten()
        }
        fn exists(&self, path: &Path) -> bool {
            self.0.contains_key(path)
        }
    }

    fn hosts(c: &[Candidate]) -> Vec<(&str, Source)> {
        c.iter().map(|c| (c.host.as_str(), c.source)).collect()
    }

    fn home(h: &str) -> Inputs {
        Inputs {
            home: Some(h.into()),
            ..Default::default()
        }
    }

    #[test]
    fn explicit_choice_is_the_only_candidate() {
        let tree = Tree::new(&[("/Users/ann/.docker/run/docker.sock", None)]);
        let mut i = home("/Users/ann");
        i.env_docker_host = Some("tcp://10.0.0.5:2375".into());
        assert_eq!(
            hosts(&candidates(&i, &tree)),
            vec![("tcp://10.0.0.5:2375", Source::Env)]
        );
        i.flag = Some("/run/other.sock".into());
        assert_eq!(
            hosts(&candidates(&i, &tree)),
            vec![("unix:///run/other.sock", Source::Flag)]
        );
    }

    #[test]
    fn docker_desktop_socket_before_the_default() {
        let tree = Tree::new(&[("/Users/ann/.docker/run/docker.sock", None)]);
        assert_eq!(
            hosts(&candidates(&home("/Users/ann"), &tree)),
            vec![
                (
                    "unix:///Users/ann/.docker/run/docker.sock",
                    Source::DockerDesktop
                ),
                ("unix:///var/run/docker.sock", Source::Default),
            ]
        );
    }

    #[test]
    fn current_context_comes_first_and_is_not_repeated() {
        // sha256("colima") = the directory docker uses for that context.
        let dir = hex::encode(Sha256::digest(b"colima"));
        let meta = format!("/Users/ann/.docker/contexts/meta/{dir}/meta.json");
        let tree = Tree::new(&[
            (
                "/Users/ann/.docker/config.json",
                Some(r#"{"auths":{},"currentContext":"colima"}"#),
            ),
            (
                meta.as_str(),
                Some(
                    r#"{"Name":"colima","Endpoints":{"docker":{"Host":"unix:///Users/ann/.colima/default/docker.sock","SkipTLSVerify":false}}}"#,
                ),
            ),
            ("/Users/ann/.colima/default/docker.sock", None),
            ("/Users/ann/.orbstack/run/docker.sock", None),
        ]);
        assert_eq!(
            hosts(&candidates(&home("/Users/ann"), &tree)),
            vec![
                (
                    "unix:///Users/ann/.colima/default/docker.sock",
                    Source::Context
                ),
                (
                    "unix:///Users/ann/.orbstack/run/docker.sock",
                    Source::OrbStack
                ),
                ("unix:///var/run/docker.sock", Source::Default),
            ]
        );
        // As root on ann's files: what her files name must be hers (or
        // root's); the system's default socket is not hers to name.
        let as_root = Inputs {
            owner: Some(501),
            ..home("/Users/ann")
        };
        let owners: Vec<Option<u32>> = candidates(&as_root, &tree)
            .iter()
            .map(|c| c.owner)
            .collect();
        assert_eq!(owners, [Some(501), Some(501), None]);
    }

    #[test]
    fn docker_context_env_and_docker_config_are_honoured() {
        let dir = hex::encode(Sha256::digest(b"rd"));
        let meta = format!("/cfg/contexts/meta/{dir}/meta.json");
        let tree = Tree::new(&[(
            meta.as_str(),
            Some(r#"{"Endpoints":{"docker":{"Host":"unix:///Users/bo/.rd/docker.sock"}}}"#),
        )]);
        let i = Inputs {
            env_docker_context: Some("rd".into()),
            docker_config: Some("/cfg".into()),
            home: Some("/Users/bo".into()),
            ..Default::default()
        };
        assert_eq!(
            hosts(&candidates(&i, &tree))[0],
            ("unix:///Users/bo/.rd/docker.sock", Source::Context)
        );
    }

    #[test]
    fn default_context_and_broken_files_fall_through() {
        let tree = Tree::new(&[(
            "/h/.docker/config.json",
            Some(r#"{"currentContext":"default"}"#),
        )]);
        assert_eq!(candidates(&home("/h"), &tree).len(), 1);
        let tree = Tree::new(&[("/h/.docker/config.json", Some("{not json"))]);
        assert_eq!(
            hosts(&candidates(&home("/h"), &tree)),
            vec![("unix:///var/run/docker.sock", Source::Default)]
        );
    }

    struct UserTable(Vec<(&'static str, u32, PathBuf)>);

    impl Users for UserTable {
        fn home_by_name(&self, name: &str) -> Option<PathBuf> {
            self.0.iter().find(|u| u.0 == name).map(|u| u.2.clone())
        }
        fn home_by_uid(&self, uid: u32) -> Option<PathBuf> {
            self.0.iter().find(|u| u.1 == uid).map(|u| u.2.clone())
        }
    }

    #[test]
    fn whose_home_sudo_user_console_user_or_own() {
        let users = UserTable(vec![
            ("ann", 501, "/Users/ann".into()),
            ("bo", 502, "/Users/bo".into()),
        ]);
        let root = |sudo: Option<&str>, console: Option<u32>| Invoker {
            sudo_user: sudo.map(Into::into),
            home: Some("/var/root".into()),
            euid: 0,
            console_owner: console,
        };
        // sudo wins over the console user.
        assert_eq!(
            user_home(&root(Some("bo"), Some(501)), &users),
            Some("/Users/bo".into())
        );
        // launchd: no SUDO_USER, the console user.
        assert_eq!(
            user_home(&root(None, Some(501)), &users),
            Some("/Users/ann".into())
        );
        // Login window (console owned by root) or unknown: root's HOME.
        assert_eq!(
            user_home(&root(None, Some(0)), &users),
            Some("/var/root".into())
        );
        assert_eq!(
            user_home(&root(None, Some(777)), &users),
            Some("/var/root".into())
        );
        // Not root: one's own HOME, whoever is at the console.
        let me = Invoker {
            home: Some("/Users/cy".into()),
            euid: 503,
            console_owner: Some(501),
            ..Default::default()
        };
        assert_eq!(user_home(&me, &users), Some("/Users/cy".into()));
    }

    /// A root daemon with no SUDO_USER, a console file owned by a user,
    /// that user's Docker Desktop socket in a real file tree: that socket
    /// comes first, the default one last.
    #[test]
    fn launchd_daemon_finds_the_console_users_docker_desktop() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = std::env::temp_dir().join(format!("nc-console-{}", std::process::id()));
        let home = dir.join("Users/ann");
        std::fs::create_dir_all(home.join(".docker/run")).unwrap();
        std::fs::write(home.join(".docker/run/docker.sock"), "").unwrap();
        let console = dir.join("console");
        std::fs::write(&console, "").unwrap();
        // Owned by a user, as /dev/console is while someone is logged in.
        let uid = if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&console, Some(501), None).unwrap();
            501
        } else {
            nix::unistd::geteuid().as_raw()
        };
        assert_eq!(std::fs::metadata(&console).unwrap().uid(), uid);

        // As launchd starts it: root, HOME=/var/root, no SUDO_USER.
        let inv = Invoker {
            sudo_user: None,
            euid: 0,
            home: Some("/var/root".into()),
            ..Invoker::from_env(&console)
        };
        let users = UserTable(vec![("ann", uid, home.clone())]);
        let inputs = Inputs {
            home: user_home(&inv, &users),
            ..Default::default()
        };
        let got = candidates(&inputs, &RealFiles);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            hosts(&got),
            vec![
                (
                    format!("unix://{}/.docker/run/docker.sock", home.display()).as_str(),
                    Source::DockerDesktop
                ),
                ("unix:///var/run/docker.sock", Source::Default),
            ]
        );
    }
}

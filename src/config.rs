//! The configuration file (`/etc/netconnect/config.toml` unless `--config`
//! says otherwise): what a service manager cannot say in flags without a
//! long command line, chiefly which Docker networks to route and extra
//! routes such as a KinD cluster's pod CIDR.
//!
//! Flags and their environment variables override the file. A file that
//! does not parse is refused whole, with its path, line and column; `up`
//! re-reads it on SIGHUP and keeps its last good state when that fails.

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

pub const DEFAULT_PATH: &str = "/etc/netconnect/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file (or its folder) is not one only root can change, and we
    /// run as root: as sshd's StrictModes, refuse rather than trust it.
    #[error("{}: {problem}; netconnect runs as root and reads only files only root can change: {fix}", path.display())]
    Untrusted {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    /// `file:line:column: message`, the way compilers say it.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The whole file. Every key is optional; unknown keys are errors, so a
/// typo does not silently do nothing.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub docker_host: Option<String>,
    pub helper_image: Option<String>,
    pub listen_port: Option<u16>,
    pub host_endpoint: Option<String>,
    pub interface: Option<String>,
    pub vm_interface: Option<String>,
    pub host_address: Option<IpAddr>,
    pub vm_address: Option<IpAddr>,
    pub host_address6: Option<Ipv6Addr>,
    pub vm_address6: Option<Ipv6Addr>,
    pub log: LogConfig,
    pub networks: NetworkFilter,
    pub routes: Vec<ExtraRoute>,
    pub dns: DnsConfig,
    pub kubernetes: crate::kube::Config,
}

/// Container names from the Mac (`crate::dns`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    pub enabled: bool,
    /// Names are `<container>.<domain>`; checked by [`Self::domain`].
    pub domain: Spanned<String>,
    /// The server's port on the tunnel's host address.
    pub port: Spanned<u16>,
    /// Where the resolver(5) file goes: `/etc/resolver` on macOS (the
    /// default there). Elsewhere only when set: a Linux host is pointed at
    /// the server through systemd-resolved instead.
    pub resolver_dir: Option<PathBuf>,
    /// Domains a container's `dev.netconnect.domains` label may name
    /// besides `.test`, `.localhost`, `.internal` and `.local`: a label is
    /// written by whoever starts a container, so a public name (and its
    /// resolver file, which sends the Mac's questions for it to us) needs
    /// the Mac's owner to say so here.
    pub extra_domains: Vec<Spanned<String>>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            domain: Spanned::new(0..0, crate::dns::DEFAULT_DOMAIN.to_owned()),
            port: Spanned::new(0..0, crate::dns::DEFAULT_PORT),
            resolver_dir: None,
            extra_domains: Vec::new(),
        }
    }
}

impl DnsConfig {
    /// The domain, valid: [`parse`] refused the file otherwise.
    pub fn domain(&self) -> crate::dns::names::Domain {
        self.domain
            .get_ref()
            .parse()
            .unwrap_or_else(|_| crate::dns::DEFAULT_DOMAIN.parse().expect("a valid domain"))
    }

    /// The extra domains, valid ([`parse`] refused the file otherwise).
    pub fn extra_domains(&self) -> Vec<crate::dns::names::Domain> {
        self.extra_domains
            .iter()
            .filter_map(|d| d.get_ref().parse().ok())
            .collect()
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `netconnect=debug,info`...
    pub level: Option<String>,
    pub format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines (colour on a terminal).
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Which Docker networks get a route, by name. Patterns are shell globs
/// (`*`, `?`, `[abc]`). With no `include`, every network is included;
/// `exclude` wins over `include`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkFilter {
    pub include: Vec<Spanned<String>>,
    pub exclude: Vec<Spanned<String>>,
    /// Public prefixes a Docker network may use and still be routed (see
    /// `routes::scope`); private ones need no entry.
    pub allow_public: Vec<Spanned<IpNet>>,
}

impl NetworkFilter {
    pub fn allows(&self, name: &str) -> bool {
        let hit = |ps: &[Spanned<String>]| {
            ps.iter().any(|p| {
                glob::Pattern::new(p.get_ref())
                    .map(|g| g.matches(name))
                    .unwrap_or(false)
            })
        };
        (self.include.is_empty() || hit(&self.include)) && !hit(&self.exclude)
    }

    pub fn allow_public(&self) -> Vec<IpNet> {
        self.allow_public
            .iter()
            .map(|n| n.get_ref().trunc())
            .collect()
    }
}

/// A subnet routed through the tunnel besides Docker's, e.g. a KinD pod
/// CIDR; `via` is the gateway inside the VM (the KinD node's address).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExtraRoute {
    pub subnet: Spanned<IpNet>,
    #[serde(default)]
    pub via: Option<Spanned<IpAddr>>,
}

impl ExtraRoute {
    pub fn subnet(&self) -> IpNet {
        self.subnet.get_ref().trunc()
    }
    pub fn via(&self) -> Option<IpAddr> {
        self.via.as_ref().map(|v| *v.get_ref())
    }
}

/// A file that was read, and where from.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// `None` when the default file does not exist.
    pub path: Option<PathBuf>,
    pub config: Config,
}

/// Read `path`. A missing file is an error only if the user named it.
/// Run as root, the file and its folder must be root's and writable by no
/// one else (see [`trust`]).
pub fn load(path: &Path, explicit: bool) -> Result<Loaded, ConfigError> {
    let text = match read_trusted(path, nix::unistd::geteuid().is_root()) {
        Ok(t) => t,
        Err(Read::Untrusted(problem, fix)) => {
            return Err(ConfigError::Untrusted {
                path: path.to_owned(),
                problem,
                fix,
            })
        }
        Err(Read::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Loaded::default())
        }
        Err(Read::Io(source)) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    load_text(path, text)
}

enum Read {
    Io(std::io::Error),
    Untrusted(String, String),
}

/// Read as `crate::files` reads (no blocking, a regular file, bounded),
/// checked on the open descriptor (no swap between check and read).
fn read_trusted(path: &Path, as_root: bool) -> Result<String, Read> {
    use std::os::unix::fs::MetadataExt as _;
    let (file, meta) = crate::files::open_regular(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            Read::Untrusted(
                e.to_string(),
                format!(
                    "put the configuration in a plain file at {}",
                    path.display()
                ),
            )
        } else {
            Read::Io(e)
        }
    })?;
    if as_root {
        trust(path, meta.uid(), meta.mode(), false).map_err(|(p, f)| Read::Untrusted(p, f))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let d = std::fs::metadata(dir).map_err(Read::Io)?;
            trust(dir, d.uid(), d.mode(), true).map_err(|(p, f)| Read::Untrusted(p, f))?;
        }
    }
    crate::files::read_text(file, &meta, crate::files::MAX_TEXT).map_err(|e| {
        Read::Untrusted(
            e.to_string(),
            format!("keep it under {} bytes", crate::files::MAX_TEXT),
        )
    })
}

/// Whether root may trust `path` with owner `uid` and `mode`: root's, and
/// writable by no group or other user (a folder with the sticky bit, like
/// /tmp, may be: nobody else can replace root's file in it). On refusal,
/// what is wrong and the command that fixes it.
pub fn trust(path: &Path, uid: u32, mode: u32, is_dir: bool) -> Result<(), (String, String)> {
    let what = if is_dir { "its folder " } else { "" };
    if uid != 0 {
        return Err((
            format!("{what}{} is owned by uid {uid}, not root", path.display()),
            format!("sudo chown root {}", path.display()),
        ));
    }
    let sticky = is_dir && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err((
            format!(
                "{what}{} is writable by group or others (mode {:04o})",
                path.display(),
                mode & 0o7777
            ),
            format!("sudo chmod go-w {}", path.display()),
        ));
    }
    Ok(())
}

fn load_text(path: &Path, text: String) -> Result<Loaded, ConfigError> {
    let config = parse(&text).map_err(|(span, message)| {
        let (line, column) = line_col(&text, span.start);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })?;
    Ok(Loaded {
        path: Some(path.to_owned()),
        config,
    })
}

/// Parse and check the file text; an error carries its byte span.
pub fn parse(text: &str) -> Result<Config, (std::ops::Range<usize>, String)> {
    let c: Config = toml::from_str(text).map_err(|e| {
        (
            e.span().unwrap_or(0..0),
            e.message().trim().replace('\n', " "),
        )
    })?;
    for p in c.networks.include.iter().chain(&c.networks.exclude) {
        if let Err(e) = glob::Pattern::new(p.get_ref()) {
            return Err((
                p.span(),
                format!("bad pattern {:?}: {}", p.get_ref(), e.msg),
            ));
        }
    }
    for r in &c.routes {
        if let Some(via) = &r.via {
            if via.get_ref().is_ipv4() != r.subnet.get_ref().addr().is_ipv4() {
                return Err((
                    via.span(),
                    format!(
                        "gateway {} is not of the same address family as {}",
                        via.get_ref(),
                        r.subnet.get_ref()
                    ),
                ));
            }
        }
        if r.subnet.get_ref().prefix_len() == 0 {
            return Err((
                r.subnet.span(),
                "a default route through the tunnel would capture all traffic; use a narrower subnet"
                    .into(),
            ));
        }
    }
    if let Err(e) = c.dns.domain.get_ref().parse::<crate::dns::names::Domain>() {
        return Err((c.dns.domain.span(), format!("dns.domain: {e}")));
    }
    for d in &c.dns.extra_domains {
        if let Err(e) = d.get_ref().parse::<crate::dns::names::Domain>() {
            return Err((d.span(), format!("dns.extra_domains: {e}")));
        }
    }
    if *c.dns.port.get_ref() == 0 {
        return Err((
            c.dns.port.span(),
            "dns.port: 0 is not a port a resolver can be pointed at".into(),
        ));
    }
    for (name, v) in [
        ("interface", &c.interface),
        ("vm_interface", &c.vm_interface),
    ] {
        if let Some(v) = v {
            if crate::platform::validate_interface_name(v).is_err() {
                let at = text.find(name).unwrap_or(0);
                return Err((
                    at..at,
                    format!("{name}: {v:?} is not a valid interface name"),
                ));
            }
        }
    }
    Ok(c)
}

/// 1-based line and column (in characters) of byte offset `at`.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit_once('\n')
        .map(|(_, l)| l)
        .unwrap_or(before)
        .chars()
        .count()
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn root_trusts_only_files_only_root_can_change() {
        let f = Path::new("/etc/netconnect/config.toml");
        let d = Path::new("/etc/netconnect");
        assert!(super::trust(f, 0, 0o100644, false).is_ok());
        assert!(super::trust(f, 0, 0o100600, false).is_ok());
        assert!(super::trust(d, 0, 0o40755, true).is_ok());
        // A sticky folder: nobody else can replace root's file in it.
        assert!(super::trust(Path::new("/tmp"), 0, 0o41777, true).is_ok());
        assert_eq!(
            super::trust(f, 501, 0o100644, false).unwrap_err(),
            (
                "/etc/netconnect/config.toml is owned by uid 501, not root".to_string(),
                "sudo chown root /etc/netconnect/config.toml".to_string()
            )
        );
        assert_eq!(
            super::trust(f, 0, 0o100664, false).unwrap_err(),
            (
                "/etc/netconnect/config.toml is writable by group or others (mode 0664)"
                    .to_string(),
                "sudo chmod go-w /etc/netconnect/config.toml".to_string()
            )
        );
        assert!(
            super::trust(f, 0, 0o101666, false).is_err(),
            "sticky means nothing on a file"
        );
        assert!(super::trust(d, 0, 0o40777, true)
            .unwrap_err()
            .0
            .starts_with("its folder /etc/netconnect is writable"));
    }

    use super::*;

    const EXAMPLE: &str = include_str!("../packaging/config.example.toml");

    #[test]
    fn the_shipped_example_parses() {
        let c = parse(EXAMPLE).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.routes.len(), 2);
        assert_eq!(
            c.routes[0].subnet(),
            "10.250.0.0/16".parse::<IpNet>().unwrap()
        );
        assert_eq!(c.routes[0].via(), Some("172.18.0.5".parse().unwrap()));
        assert_eq!(c.routes[1].via(), None);
        assert!(!c.networks.allows("kind-scratch"));
        assert_eq!(c.kubernetes, crate::kube::Config::default());
    }

    #[test]
    fn everything_set() {
        let c = parse(
            r#"
docker_host = "unix:///var/run/docker.sock"
listen_port = 51820
host_endpoint = "192.168.65.254"
host_address = "10.40.0.1"
vm_address = "10.40.0.2"
vm_address6 = "fd40::2"
interface = "nc0"
[log]
level = "debug"
format = "json"
[networks]
include = ["kind*", "app_?"]
exclude = ["kind-tmp"]
allow_public = ["198.51.100.0/24", "2001:db8::1/32"]
[[routes]]
subnet = "10.96.0.0/12"
"#,
        )
        .unwrap();
        assert_eq!(c.listen_port, Some(51820));
        assert_eq!(c.log.format, Some(LogFormat::Json));
        assert_eq!(c.vm_address6, Some("fd40::2".parse().unwrap()));
        assert!(c.networks.allows("kind"));
        assert!(c.networks.allows("app_1"));
        assert!(!c.networks.allows("app_12"));
        assert!(!c.networks.allows("kind-tmp"));
        assert!(!c.networks.allows("bridge"));
        assert_eq!(
            c.networks.allow_public(),
            [
                "198.51.100.0/24".parse::<IpNet>().unwrap(),
                "2001:db8::/32".parse().unwrap()
            ]
        );
        assert_eq!(c.routes[0].via(), None);
        // Not set: names on, under docker.internal, port 53.
        assert!(c.dns.enabled);
        assert_eq!(c.dns.domain().as_str(), "docker.internal");
        assert_eq!(*c.dns.port.get_ref(), 53);
        let c = parse("[dns]\nenabled = false\ndomain = \"Dev.Test.\"\nport = 5353\nresolver_dir = \"/run/r\"\n").unwrap();
        assert!(!c.dns.enabled);
        assert_eq!(c.dns.domain().as_str(), "dev.test");
        assert_eq!(*c.dns.port.get_ref(), 5353);
        assert_eq!(c.dns.resolver_dir.as_deref(), Some(Path::new("/run/r")));
        assert!(c.dns.extra_domains().is_empty());
        let c = parse("[dns]\nextra_domains = [\"Dev.Example.COM.\", \"corp.example\"]\n").unwrap();
        let d: Vec<String> = c
            .dns
            .extra_domains()
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(d, ["dev.example.com", "corp.example"]);
    }

    #[test]
    fn the_kubernetes_table() {
        let c = parse("").unwrap();
        assert!(c.kubernetes.enabled, "on unless turned off");
        assert!(c.kubernetes.exclude.is_empty());
        let c =
            parse("[kubernetes]\nenabled = false\nexclude = [\"ci\"]\ncluster_local = \"dev\"\n")
                .unwrap();
        assert!(!c.kubernetes.enabled);
        assert_eq!(c.kubernetes.exclude, ["ci"]);
        assert_eq!(c.kubernetes.cluster_local.as_deref(), Some("dev"));
        let (_, e) = parse("[kubernetes]\nenable = true\n").unwrap_err();
        assert!(e.contains("unknown field `enable`"), "{e}");
    }

    #[test]
    fn empty_file_allows_everything() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.networks.allows("bridge"));
    }

    fn err(text: &str) -> String {
        let dir =
            std::env::temp_dir().join(format!("nc-cfg-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.toml");
        std::fs::write(&p, text).unwrap();
        let e = load(&p, true).unwrap_err().to_string();
        std::fs::remove_dir_all(dir).unwrap();
        e.replace(&p.display().to_string(), "F")
    }

    #[test]
    fn errors_name_file_line_and_column() {
        assert!(
            err("listen_port = 51820\nlisten_prot = 1\n")
                .starts_with("F:2:1: unknown field `listen_prot`"),
            "{}",
            err("listen_port = 51820\nlisten_prot = 1\n")
        );
        let e = err("[[routes]]\nsubnet = \"10.244.0.0/33\"\n");
        assert!(e.starts_with("F:2:10: "), "{e}");
        let e = err("listen_port = 70000\n");
        assert!(e.starts_with("F:1:15: "), "{e}");
        let e = err("[[routes]]\nsubnet = \"10.244.0.0/16\"\nvia = \"fd00::1\"\n");
        assert!(e.starts_with("F:3:7: gateway fd00::1"), "{e}");
        let e = err("[networks]\nexclude = [\"ok\", \"[bad\"]\n");
        assert!(e.starts_with("F:2:18: bad pattern"), "{e}");
        let e = err("[log]\nformat = \"xml\"\n");
        assert!(e.starts_with("F:2:10: "), "{e}");
        let e = err("[dns]\ndomain = \"my_domain.internal\"\n");
        assert!(
            e.starts_with("F:2:10: dns.domain: \"my_domain.internal\" is not a DNS domain"),
            "{e}"
        );
        let e = err("[dns]\ndomain = \"internal\"\n");
        assert!(e.contains("top-level domain"), "{e}");
        let e = err("[dns]\nextra_domains = [\"ok.example\", \"com\"]\n");
        assert!(
            e.starts_with("F:2:32: dns.extra_domains: \"com\" is a top-level domain"),
            "{e}"
        );
        let e = err("[dns]\nport = 0\n");
        assert!(e.starts_with("F:2:8: dns.port: 0"), "{e}");
        let e = err("[dns]\nenable = false\n");
        assert!(e.starts_with("F:2:1: unknown field `enable`"), "{e}");
        let e = err("listen_port = \n");
        assert!(e.starts_with("F:1:"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn missing_default_file_is_fine_but_a_named_one_is_not() {
        let p = Path::new("/nonexistent/netconnect.toml");
        assert!(load(p, false).unwrap().path.is_none());
        let e = load(p, true).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/netconnect.toml"), "{e}");
    }
}

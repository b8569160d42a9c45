//! Where flags and the configuration file meet, once, in `main`: each
//! command gets a plain settings struct, and no clap type travels past it.
//! Precedence: a flag or its environment variable, then the file, then the
//! flag's default.
//!
//! The only module that knows both [`crate::cli`] and [`crate::config`]:
//! `config` reads files and knows nothing of flags.

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::ArgMatches;

use crate::cli::{TargetArgs, UpArgs};
use crate::config::Config;

/// The engine, the two interfaces and the helper image: what `up` uses, and
/// where `status`, `doctor` and `down` look when no daemon answers (a
/// running daemon says it itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub docker_host: Option<String>,
    pub interface: String,
    pub vm_interface: String,
    pub helper_image: String,
}

/// Everything `up` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Up {
    pub target: Target,
    pub listen_port: u16,
    /// `None`: the VM side finds the way (`helper::endpoint`).
    pub host_endpoint: Option<String>,
    pub helper_archive: Option<PathBuf>,
    pub force: bool,
    pub host_address: IpAddr,
    pub vm_address: IpAddr,
    pub host_address6: Ipv6Addr,
    pub vm_address6: Ipv6Addr,
}

/// Whether the user gave `id` on the command line or in its environment
/// variable, which beat the file.
pub fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.try_get_raw(id).ok().and(m.value_source(id)),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The flag's value unless the user left it to its default and the file
/// has one.
fn pick<T: Clone>(m: &ArgMatches, id: &str, flag: &T, file: &Option<T>) -> T {
    match file {
        Some(v) if !given(m, id) => v.clone(),
        _ => flag.clone(),
    }
}

pub fn target(args: &TargetArgs, m: &ArgMatches, c: &Config) -> Target {
    Target {
        docker_host: args.docker_host.clone().or_else(|| c.docker_host.clone()),
        interface: pick(m, "interface", &args.interface, &c.interface),
        vm_interface: pick(m, "vm_interface", &args.vm_interface, &c.vm_interface),
        helper_image: pick(m, "helper_image", &args.helper_image, &c.helper_image),
    }
}

pub fn up(args: &UpArgs, m: &ArgMatches, c: &Config) -> Up {
    Up {
        target: target(&args.target, m, c),
        listen_port: pick(m, "listen_port", &args.listen_port, &c.listen_port),
        // Empty means unset (`NETCONNECT_HOST_ENDPOINT=` in a service's
        // environment, `host_endpoint = ""` in the file): the VM finds it.
        host_endpoint: [&args.host_endpoint, &c.host_endpoint]
            .into_iter()
            .flatten()
            .map(|e| e.trim())
            .find(|e| !e.is_empty())
            .map(str::to_owned),
        helper_archive: args.helper_archive.clone(),
        force: args.force,
        host_address: pick(m, "host_address", &args.host_address, &c.host_address),
        vm_address: pick(m, "vm_address", &args.vm_address, &c.vm_address),
        host_address6: pick(m, "host_address6", &args.host_address6, &c.host_address6),
        vm_address6: pick(m, "vm_address6", &args.vm_address6, &c.vm_address6),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    fn up_from(argv: &[&str], file: &str) -> Up {
        let c = crate::config::parse(file).unwrap();
        let m = crate::cli::Cli::command()
            .try_get_matches_from(argv)
            .unwrap();
        let (_, sub) = m.subcommand().unwrap();
        let args = UpArgs::from_arg_matches(sub).unwrap();
        up(&args, sub, &c)
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let s = up_from(
            &["netconnect", "up", "--listen-port", "5000"],
            "listen_port = 4000\nhost_endpoint = \"10.9.9.9\"\ninterface = \"nc9\"\n\
             docker_host = \"unix:///from/file.sock\"\nvm_address = \"10.44.0.2\"\n",
        );
        assert_eq!(s.listen_port, 5000);
        assert_eq!(s.host_endpoint.as_deref(), Some("10.9.9.9"));
        assert_eq!(s.target.interface, "nc9");
        assert_eq!(s.target.vm_interface, "netconnect0");
        assert_eq!(
            s.target.docker_host.as_deref(),
            Some("unix:///from/file.sock")
        );
        assert_eq!(s.vm_address, "10.44.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(s.host_address, "10.33.33.1".parse::<IpAddr>().unwrap());
        let s = up_from(&["netconnect", "up"], "host_endpoint = \"\"\n");
        assert_eq!(s.host_endpoint, None, "empty in the file means unset");
        let s = up_from(
            &["netconnect", "up", "--host-endpoint", ""],
            "host_endpoint = \"10.9.9.9\"\n",
        );
        assert_eq!(s.host_endpoint.as_deref(), Some("10.9.9.9"));
    }

    #[test]
    fn a_flag_equal_to_its_default_still_beats_the_file() {
        let s = up_from(
            &["netconnect", "up", "--interface", "netconnect0"],
            "interface = \"nc9\"\n",
        );
        assert_eq!(s.target.interface, "netconnect0");
        let s = up_from(
            &["netconnect", "up", "--docker-host", "unix:///flag.sock"],
            "docker_host = \"unix:///file.sock\"\n",
        );
        assert_eq!(s.target.docker_host.as_deref(), Some("unix:///flag.sock"));
    }
}

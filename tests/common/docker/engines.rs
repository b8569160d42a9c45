//! Engines other than the machine's dockerd, standing in for the other
//! runtimes a Mac user runs:
//! - [`LimaVm`]: a second dockerd in a network namespace of its own, as
//!   Colima's or Rancher Desktop's engine in a Lima VM behaves: its
//!   `host-gateway` is an address of the VM itself (`--host-gateway-ip`),
//!   the Mac is `host.lima.internal` in the VM's `/etc/hosts` and the VM's
//!   default gateway;
//! - [`Podman`]: the real Podman (Debian's 4.3, netavark) serving its
//!   Docker-compatible API on a socket of its own.
//!
//! Both are removed on drop, with what the test made in them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::commands::{docker, host_ok};
use super::images::{helper_image, BUILD_TIMEOUT, BUSYBOX_IMAGE};
use super::mac::MacNs;
use super::DOCKER_TIMEOUT;
use crate::cargo::{repo_root, target_tmpdir};
use crate::names::{next_id, unique_ifname_stem, TempDir};
use crate::netns::Netns;
use crate::process::{die_with_parent, run_timeout, send_signal, wait_child_timeout, SIGTERM};

/// The helper image as a release ships it: `docker save | gzip`, made
/// once per test process from the image under test.
pub fn helper_archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            let image = helper_image();
            let path = target_tmpdir().join(format!(
                "helper-{}.tar.gz",
                image.rsplit(':').next().unwrap_or("x")
            ));
            if !path.exists() {
                let tmp = path.with_extension(format!("{}.part", std::process::id()));
                let cmd = format!("docker save '{image}' | gzip -1 > '{}'", tmp.display());
                let o = run_timeout(Command::new("sh").args(["-c", &cmd]), BUILD_TIMEOUT)
                    .unwrap_or_else(|e| panic!("{cmd}: {e}"));
                assert!(
                    o.status.success(),
                    "{cmd}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                fs::rename(&tmp, &path).unwrap();
            }
            path
        })
        .clone()
}

/// `docker save IMAGE` into a file (for another engine to load).
fn saved(image: &str, dir: &Path) -> PathBuf {
    let path = dir.join(format!("image-{}.tar", next_id()));
    docker(&["save", "-o", path.to_str().unwrap(), image]);
    path
}

/// A Lima-like VM: namespace `vm` joined to the Mac namespace by veth
/// (VM 10.216.N.1, Mac 10.216.N.2, the VM's default route via the Mac,
/// as with Lima's user-mode network where the gateway is the host), with
/// its own dockerd (socket, data root, exec root, bridge 10.217.N.0/24)
/// whose `host-gateway` is the VM's own 10.216.N.1. Its `/etc/hosts` is
/// `hosts`, as Lima writes it.
pub struct LimaVm {
    pub ns: Netns,
    pub dir: TempDir,
    pub sock: PathBuf,
    /// The VM's address on the link to the Mac: `host-gateway` here.
    pub addr: String,
    /// The Mac's address on that link: what the VM can reach it at.
    pub mac_addr: String,
    pub bridge_subnet: String,
    dockerd: Option<Child>,
}

impl LimaVm {
    /// `hosts`: the VM's `/etc/hosts` lines besides localhost, with
    /// `{mac}` standing for the Mac's address and `{net}` for 10.216.N.
    pub fn start(mac: &MacNs, n: u8, hosts: &str) -> LimaVm {
        let ns = Netns::new("vm");
        let dir = TempDir::new("lima");
        let net = format!("10.216.{n}");
        let addr = format!("{net}.1");
        let mac_addr = format!("{net}.2");
        let stem = unique_ifname_stem();
        let (vm_end, mac_end) = (format!("{stem}v"), format!("{stem}w"));
        host_ok(&[
            "ip", "link", "add", &vm_end, "type", "veth", "peer", "name", &mac_end,
        ]);
        host_ok(&["ip", "link", "set", &vm_end, "netns", ns.name()]);
        host_ok(&["ip", "link", "set", &mac_end, "netns", mac.ns.name()]);
        ns.ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &vm_end]);
        ns.ok(&["ip", "link", "set", &vm_end, "up"]);
        mac.ns.ok(&[
            "ip",
            "addr",
            "add",
            &format!("{mac_addr}/24"),
            "dev",
            &mac_end,
        ]);
        mac.ns.ok(&["ip", "link", "set", &mac_end, "up"]);
        ns.ok(&["ip", "route", "add", "default", "via", &mac_addr]);
        // A new namespace here forwards already, and then dockerd leaves
        // FORWARD's policy at ACCEPT; a VM starts with forwarding off, and
        // dockerd turns it on with the policy DROP, as on Colima.
        ns.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        crate::ping::wait_ping(&ns, &mac_addr, Duration::from_secs(10));

        let hosts_file = dir.join("hosts");
        fs::write(
            &hosts_file,
            format!(
                "127.0.0.1 localhost\n{}\n",
                hosts.replace("{mac}", &mac_addr).replace("{net}", &net)
            ),
        )
        .unwrap();
        fs::write(dir.join("daemon.json"), "{}\n").unwrap();
        let sock = dir.join("docker.sock");
        let bridge_subnet = format!("10.217.{n}.0/24");
        // Only the network namespace is entered (`ip netns exec` would
        // remount /sys, hiding the cgroups dockerd needs); a private mount
        // namespace gives dockerd the VM's /etc/hosts, and takes its mounts
        // with it when it ends.
        let script = format!(
            "mount --bind '{hosts}' /etc/hosts && exec dockerd --config-file '{d}/daemon.json' \
             -H 'unix://{sock}' --data-root '{d}/data' --exec-root '{d}/exec' --pidfile '{d}/docker.pid' \
             --bip 10.217.{n}.1/24 --host-gateway-ip {addr} --storage-driver vfs",
            hosts = hosts_file.display(),
            d = dir.path().display(),
            sock = sock.display(),
        );
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", ns.name()))
            .args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut c);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("start the VM's dockerd: {e}"));
        let vm = LimaVm {
            ns,
            dir,
            sock,
            addr,
            mac_addr,
            bridge_subnet,
            dockerd: Some(child),
        };
        let t0 = Instant::now();
        while vm
            .docker_try(&["version", "--format", "{{.Server.Version}}"])
            .is_err()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the VM's dockerd did not answer within 60 s: {}",
                fs::read_to_string(vm.dir.join("dockerd.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(200));
        }
        eprintln!("lima vm: dockerd answered after {:?}", t0.elapsed());
        let image = saved(BUSYBOX_IMAGE, vm.dir.path());
        vm.docker(&["load", "-q", "-i", image.to_str().unwrap()]);
        vm
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    pub fn docker_try(&self, args: &[&str]) -> Result<String, String> {
        let o = run_timeout(
            Command::new("docker").arg("-H").arg(self.host()).args(args),
            DOCKER_TIMEOUT,
        )?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!(
                "docker -H {} {args:?}: {}",
                self.host(),
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    }

    pub fn docker(&self, args: &[&str]) -> String {
        self.docker_try(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `docker logs NAME`, stdout then stderr.
    pub fn logs(&self, name: &str) -> String {
        match run_timeout(
            Command::new("docker")
                .arg("-H")
                .arg(self.host())
                .args(["logs", name]),
            DOCKER_TIMEOUT,
        ) {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => e,
        }
    }

    /// A busybox web server on the VM's default bridge answering its name.
    pub fn web(&self, tag: &str) -> (String, String) {
        let name = format!("nct-{}-{}-{tag}", std::process::id(), next_id());
        self.docker(&[
            "run",
            "-d",
            "--init",
            "--name",
            &name,
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            &format!(
                "mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www"
            ),
        ]);
        let ip = self
            .docker(&[
                "inspect",
                "--format",
                "{{.NetworkSettings.IPAddress}}",
                &name,
            ])
            .trim()
            .to_string();
        (name, ip)
    }
}

impl Drop for LimaVm {
    fn drop(&mut self) {
        // Containers first (their shims live in the namespace), then the
        // engine; the namespace's drop kills whatever is left in it.
        if let Ok(ids) = self.docker_try(&["ps", "-aq"]) {
            for id in ids.split_whitespace() {
                let _ = self.docker_try(&["rm", "-f", "-v", id]);
            }
        }
        if let Some(mut c) = self.dockerd.take() {
            if let Some(pid) = fs::read_to_string(self.dir.join("docker.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                send_signal(pid, SIGTERM);
            }
            if wait_child_timeout(&mut c, Duration::from_secs(20)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Where the Podman the tests use keeps its configuration: the files in
/// `tests/podman/` (runc, cgroupfs, netavark, limits this machine allows;
/// storage of its own), given to every podman process through
/// `CONTAINERS_CONF` and `CONTAINERS_STORAGE_CONF`.
pub fn podman_conf() -> [(&'static str, PathBuf); 2] {
    let d = repo_root().join("tests/podman");
    [
        ("CONTAINERS_CONF", d.join("containers.conf")),
        ("CONTAINERS_STORAGE_CONF", d.join("storage.conf")),
    ]
}

/// The socket `.ci/run` started Podman's service on
/// (`scripts/podman-service.sh`), if any.
pub const PODMAN_SOCK_ENV: &str = "NETCONNECT_TEST_PODMAN_SOCK";

/// Podman's Docker-compatible API: the service `.ci/run` started, or one
/// started here on a socket of its own (stopped on drop). Containers and
/// networks made through it are removed on drop.
pub struct Podman {
    pub sock: PathBuf,
    service: Option<Child>,
    _dir: Option<TempDir>,
    made: std::sync::Mutex<(Vec<String>, Vec<String>)>,
}

impl Podman {
    pub fn start() -> Podman {
        let have = run_timeout(Command::new("podman").arg("--version"), DOCKER_TIMEOUT);
        if !have.as_ref().is_ok_and(|o| o.status.success()) {
            panic!("podman is not installed ({have:?}): run scripts/setup.sh (podman, netavark, aardvark-dns)");
        }
        if let Ok(s) = std::env::var(PODMAN_SOCK_ENV) {
            let p = Podman {
                sock: PathBuf::from(s),
                service: None,
                _dir: None,
                made: Default::default(),
            };
            if let Err(e) = p.wait_answer(Duration::from_secs(30)) {
                panic!("{PODMAN_SOCK_ENV}={}: {e}", p.sock.display());
            }
            return p;
        }
        let dir = TempDir::new("podman");
        let sock = dir.join("podman.sock");
        let log = fs::File::create(dir.join("service.log")).unwrap();
        let mut c = Command::new("podman");
        c.current_dir("/")
            .args(["system", "service", "-t", "0"])
            .arg(format!("unix://{}", sock.display()))
            .envs(podman_conf())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut c);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("podman system service: {e}"));
        let p = Podman {
            sock,
            service: Some(child),
            _dir: Some(dir),
            made: Default::default(),
        };
        if let Err(e) = p.wait_answer(Duration::from_secs(30)) {
            panic!("podman system service: {e}");
        }
        p
    }

    fn wait_answer(&self, timeout: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            match self.try_cmd(&["version", "--format", "{{.Server.Version}}"]) {
                Ok(_) => return Ok(()),
                Err(e) if t0.elapsed() > timeout => {
                    return Err(format!("no answer within {timeout:?}: {e}"))
                }
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// `podman --url unix://SOCK ARGS...`: the remote client, as on a Mac.
    pub fn try_cmd(&self, args: &[&str]) -> Result<String, String> {
        let o = run_timeout(
            Command::new("podman")
                .arg("--url")
                .arg(self.host())
                .args(args)
                .envs(podman_conf()),
            DOCKER_TIMEOUT,
        )?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!(
                "podman {args:?}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    }

    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The busybox test image, loaded from Docker's when missing.
    pub fn ensure_busybox(&self) {
        if self.try_cmd(&["image", "exists", BUSYBOX_IMAGE]).is_ok() {
            return;
        }
        let dir = TempDir::new("podman-load");
        let tar = saved(BUSYBOX_IMAGE, dir.path());
        self.cmd(&["load", "-q", "-i", tar.to_str().unwrap()]);
    }

    pub fn network(&self, tag: &str, subnet: &str) -> String {
        let name = format!("nct-{}-{}-{tag}", std::process::id(), next_id());
        self.cmd(&["network", "create", "--subnet", subnet, &name]);
        self.made.lock().unwrap().1.push(name.clone());
        name
    }

    /// A busybox web server on `network` at `ip`, answering its name.
    pub fn web(&self, tag: &str, network: &str, ip: &str) -> String {
        let name = format!("nct-{}-{}-{tag}", std::process::id(), next_id());
        self.made.lock().unwrap().0.push(name.clone());
        self.cmd(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            network,
            "--ip",
            ip,
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            &format!(
                "mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www"
            ),
        ]);
        name
    }

    /// Names of every container Podman has, sorted.
    pub fn containers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .cmd(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let (containers, networks) = std::mem::take(&mut *self.made.lock().unwrap());
        for c in containers {
            let _ = self.try_cmd(&["rm", "-f", "-v", "-t", "0", &c]);
        }
        for n in networks {
            let _ = self.try_cmd(&["network", "rm", "-f", &n]);
        }
        if let Some(mut c) = self.service.take() {
            send_signal(c.id(), SIGTERM);
            if wait_child_timeout(&mut c, Duration::from_secs(10)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

//! End-to-end: a real Docker Compose v1 project (Debian's docker-compose
//! 1.29) by name from the Mac, against the real Docker engine, in the test
//! bed of `docker_e2e.rs`: the root namespace plays the Docker VM, a
//! namespace joined to it by veth plays the Mac and runs `netconnect up`
//! with a resolver folder of this test (`[dns] resolver_dir`, the macOS
//! code path). The Mac's resolver asks the tunnel's host address
//! (10.33.33.1:53), as `/etc/resolver/docker.internal` makes a Mac's do;
//! `dig` without a server and `getent hosts` ask through it.
//!
//! The project (`nct<pid><rand>`, letters and digits, so its names are
//! predictable), from a compose file this test writes:
//! - `web` on the project's default network, labelled
//!   `dev.netconnect.domains=PROJECT.test,api.PROJECT.localhost`;
//! - `db` on network `backend` with the alias `store`, then `cache` on
//!   network `front` with the alias `store` too.
//!
//! What is checked: Compose v1's container names (with `_` and `-`) and
//! `service.project`; a network alias, and on a clash per network
//! (`store.PROJECT_backend.docker.internal`); PTR answers and the reverse
//! zone's resolver file; the label's domains and their resolver files;
//! the wildcard below a name; everything forgotten within a second of the
//! container's removal (measured, one `MEASURE compose forget:` line); and
//! nothing left once `down` and `up` are done. Every check runs, and the
//! test fails at the end listing each one that did not hold.
//!
//! Root, a running dockerd, docker-compose v1 (scripts/setup.sh); never
//! skipped. Holds the Docker tests' lock. Subnets: Mac veth
//! 10.212.50.0/24; the project's networks 10.213.50.0/24 (default),
//! 10.213.51.0/24 (backend), 10.213.52.0/24 (front).

// The test bed is Linux network namespaces (setns, prctl, veth): on macOS
// this file builds to nothing, so `cargo test --no-run` links there too.
#![cfg(target_os = "linux")]

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;
use serde_json::Value;

/// The test's number: Mac veth 10.212.N.0/24, networks 10.213.N..N+2.
const N: u8 = 50;
/// The tunnel's host address, where `up` answers DNS.
const SERVER: &str = "10.33.33.1";
/// From spawning `up` to a first answer from a container.
const FIRST_CURL: Duration = Duration::from_secs(60);
/// Once a container answers by IP, its names have had this long.
const FIRST_NAME: Duration = Duration::from_secs(5);
/// Within this long of Docker's answer to a command, a name has followed
/// it (events, not polling).
const NAME_CHANGE: Duration = Duration::from_secs(1);
/// How long a forgotten name is watched for (to measure past the bound).
const FORGET_WATCH: Duration = Duration::from_secs(3);
/// `up` must exit this soon after SIGTERM.
const STOP: Duration = Duration::from_secs(5);

/// The compose file. Every service and network carries the harness's
/// test label (a killed run's leftovers are swept by the next). The image
/// is the local busybox test image: Compose v1 ignores `pull_policy` (it
/// pulls a missing image anyway), so the test checks that it exists first.
fn compose_file(project: &str) -> String {
    let label = ComposeProject::test_label();
    let service = |name: &str, extra: &str| {
        format!(
            r#"  {name}:
    image: {BUSYBOX_IMAGE}
    pull_policy: never
    init: true
    stop_grace_period: 1s
    command: ["sh", "-c", "mkdir -p /www && echo {project}_{name}_1 > /www/index.html && exec httpd -f -p 80 -h /www"]
{extra}"#
        )
    };
    let network = |name: &str, subnet: &str| {
        format!(
            r#"  {name}:
    labels:
      {label}
    ipam:
      config:
        - subnet: {subnet}
"#
        )
    };
    let n = N;
    format!(
        "version: \"2.4\"\nservices:\n{}{}{}networks:\n{}{}{}",
        service(
            "web",
            &format!(
                "    labels:\n      {label}\n      dev.netconnect.domains: \"{project}.test,api.{project}.localhost\"\n"
            ),
        ),
        service(
            "db",
            &format!(
                "    labels:\n      {label}\n    networks:\n      backend:\n        aliases: [store]\n"
            ),
        ),
        service(
            "cache",
            &format!(
                "    labels:\n      {label}\n    networks:\n      front:\n        aliases: [store]\n"
            ),
        ),
        network("default", &format!("10.213.{n}.0/24")),
        network("backend", &format!("10.213.{}.0/24", n + 1)),
        network("front", &format!("10.213.{}.0/24", n + 2)),
    )
}

/// One test's world. Fields drop in order: `up` (SIGTERM) first, then the
/// VM side (helper, interface, rules), the Compose project (`down`), the
/// Mac namespace, the folder of the configuration and resolver files, and
/// last the lock.
struct Fx {
    up: Option<UpProcess>,
    vm: VmSide,
    project: ComposeProject,
    mac: MacNs,
    dir: TempDir,
    _session: DockerSession,
}

impl Fx {
    fn resolver_dir(&self) -> PathBuf {
        self.dir.join("resolver")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn socket(&self) -> String {
        let args = up_args(&self.mac, &self.vm);
        args[args.iter().position(|a| a == "--control-socket").unwrap() + 1].clone()
    }

    fn up(&mut self) -> &mut UpProcess {
        self.up.as_mut().expect("up not started")
    }

    /// The files in the resolver folder, sorted (none if it is missing).
    fn resolver_files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.resolver_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn status_json(&self) -> Value {
        self.mac.status_json(&self.socket())
    }
}

/// Every check of the test runs; the failures are listed at the end, so
/// one missing behaviour does not hide the others.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn pass(&self, item: &str, what: &str) {
        eprintln!("ok   [{item}] {what}");
    }

    fn fail(&mut self, item: &str, what: String) {
        eprintln!("FAIL [{item}] {what}");
        self.failed.push(format!("[{item}] {what}"));
    }

    fn check(&mut self, item: &str, ok: bool, what: impl FnOnce() -> String) -> bool {
        let w = what();
        if ok {
            self.pass(item, w.lines().next().unwrap_or(""));
        } else {
            self.fail(item, w);
        }
        ok
    }

    /// `name` answers exactly `want` (type `qtype`) within `timeout`,
    /// asked through the Mac's resolver (`server` None) or of `server`.
    #[allow(clippy::too_many_arguments)]
    fn answers(
        &mut self,
        item: &str,
        ns: &Netns,
        server: Option<&str>,
        name: &str,
        qtype: &str,
        want: &[&str],
        timeout: Duration,
    ) -> bool {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        let via = server.map_or("the Mac's resolver".to_string(), |s| format!("@{s}"));
        match wait_dig(ns, server, name, qtype, timeout, |d| {
            d.status == "NOERROR" && d.answers == want
        }) {
            Ok(took) => {
                self.pass(
                    item,
                    &format!("{name} {qtype} -> {want:?} ({via}, {took:?})"),
                );
                true
            }
            Err(d) => {
                self.fail(
                    item,
                    format!(
                        "{name} {qtype} ({via}) should answer {want:?} within {timeout:?}; last: status {} answers {:?}; dig said:\n{}",
                        d.status,
                        d.answers,
                        d.raw.trim_end()
                    ),
                );
                false
            }
        }
    }

    /// `getent hosts NAME` in the Mac (glibc through its resolver) gives
    /// `want` first.
    fn getent(&mut self, item: &str, ns: &Netns, name: &str, want: &str) -> bool {
        let o = ns.exec(&["getent", "hosts", name]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let got = out.split_whitespace().next().unwrap_or("");
        self.check(item, o.status.success() && got == want, || {
            format!(
                "getent hosts {name} -> {want} (exit {}, printed {:?}{})",
                o.status,
                out.trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            )
        })
    }
}

/// `d.c.b.a.in-addr.arpa` for a.b.c.d.
fn reverse_name(ip: &str) -> String {
    let a: Ipv4Addr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
    let o = a.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

/// The reverse zone of an IPv4 subnet on an octet boundary:
/// a.b.0.0/16 -> `b.a.in-addr.arpa`, a.b.c.0/24 -> `c.b.a.in-addr.arpa`.
fn reverse_zone(subnet: &str) -> String {
    let (addr, len) = subnet
        .split_once('/')
        .unwrap_or_else(|| panic!("{subnet}: not a subnet"));
    let a: Ipv4Addr = addr.parse().unwrap_or_else(|e| panic!("{subnet}: {e}"));
    let len: usize = len.parse().unwrap_or_else(|e| panic!("{subnet}: {e}"));
    assert!(
        len.is_multiple_of(8) && (8..=24).contains(&len),
        "{subnet}: the test knows reverse zones of /8, /16 and /24 only"
    );
    let mut labels: Vec<String> = a.octets()[..len / 8]
        .iter()
        .map(|o| o.to_string())
        .collect();
    labels.reverse();
    format!("{}.in-addr.arpa", labels.join("."))
}

/// The (first) IPv4 subnet of Docker network `net`.
fn network_subnet(net: &str) -> String {
    docker(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        net,
    ])
    .split_whitespace()
    .find(|s| !s.contains(':'))
    .unwrap_or_else(|| panic!("network {net} has no IPv4 subnet"))
    .to_string()
}

/// `Aliases` of container `c` on each of its networks, for the log.
fn aliases(c: &str) -> String {
    let v = inspect(c);
    let nets = v["NetworkSettings"]["Networks"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    nets.iter()
        .map(|(n, s)| format!("{n}: {}", s["Aliases"]))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Polls `done` every 50 ms until it holds or `timeout` passes: how long
/// that took, or the last description of what was seen.
fn watch(
    timeout: Duration,
    t0: Instant,
    mut done: impl FnMut() -> Result<(), String>,
) -> Result<Duration, String> {
    loop {
        let e = match done() {
            Ok(()) => return Ok(t0.elapsed()),
            Err(e) => e,
        };
        if t0.elapsed() >= timeout {
            return Err(e);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn nxdomain(ns: &Netns, name: &str, qtype: &str) -> Result<(), String> {
    let d = dig(ns, Some(SERVER), name, qtype, false);
    if d.status == "NXDOMAIN" {
        Ok(())
    } else {
        Err(format!(
            "{name} {qtype}: status {}, answers {:?}; dig said:\n{}",
            d.status,
            d.answers,
            d.raw.trim_end()
        ))
    }
}

fn ms(r: &Result<Duration, String>) -> String {
    match r {
        Ok(d) => format!("{}ms", d.as_millis()),
        Err(_) => format!(">{}ms", FORGET_WATCH.as_millis()),
    }
}

#[test]
fn compose_v1_project_by_name_alias_reverse_and_label_domain() {
    // Compose first: a missing one fails before the lock and the images.
    let compose_version = require_compose();
    let session = DockerSession::start();
    let t_test = Instant::now();
    let mac = MacNs::new(N);
    mac.ns.set_resolver(SERVER);
    let mut fx = Fx {
        up: None,
        vm: VmSide::new(),
        project: ComposeProject::new(compose_file),
        mac,
        dir: TempDir::new("compose"),
        _session: session,
    };
    let mut checks = Checks::default();
    let p = fx.project.name.clone();
    let web = fx.project.container("web", 1);
    let db = fx.project.container("db", 1);
    let cache = fx.project.container("cache", 1);
    let (default_net, backend, front) = (
        fx.project.network("default"),
        fx.project.network("backend"),
        fx.project.network("front"),
    );
    eprintln!(
        "compose {compose_version}, project {p}, file {}",
        fx.project.file.display()
    );
    fs::write(
        fx.config_path(),
        format!(
            "[dns]\nresolver_dir = \"{}\"\n",
            fx.resolver_dir().display()
        ),
    )
    .unwrap();
    // No pull: the image is local (DockerSession built it).
    docker_try(&["image", "inspect", "--format", "{{.Id}}", BUSYBOX_IMAGE])
        .unwrap_or_else(|e| panic!("the local test image is missing, Compose would pull it: {e}"));

    let t0 = Instant::now();
    fx.project.up(&["web", "db"]);
    eprintln!("MEASURE compose up web db: {:?}", t0.elapsed());
    let web_ip = container_ip(&web, &default_net);
    let db_ip = container_ip(&db, &backend);
    assert!(
        !web_ip.is_empty() && !db_ip.is_empty(),
        "no addresses: web {web_ip:?} on {default_net}, db {db_ip:?} on {backend}"
    );
    eprintln!("aliases compose v1 set: {web}: {}", aliases(&web));
    eprintln!("aliases compose v1 set: {db}: {}", aliases(&db));

    let mut args = up_args(&fx.mac, &fx.vm);
    args.extend([
        "--config".to_string(),
        fx.config_path().to_str().unwrap().to_string(),
    ]);
    let t_up = Instant::now();
    fx.up = Some(UpProcess::spawn(&fx.mac, &args));
    if let Err(e) = wait_curl(&fx.mac.ns, &web_ip, &web, FIRST_CURL) {
        panic!("{e}\nMac routes: {:?}", fx.mac.routes());
    }
    eprintln!("MEASURE up -> web answers by IP: {:?}", t_up.elapsed());
    let ns = &fx.mac.ns;
    let name = |n: &str| format!("{n}.docker.internal");

    // 1. Compose v1's container name, as it is and with `-`, and
    //    service.project, through the Mac's resolver.
    checks.answers("1", ns, None, &name(&web), "A", &[&web_ip], FIRST_NAME);
    let dashed = name(&web.replace('_', "-"));
    checks.answers("1", ns, None, &dashed, "A", &[&web_ip], NAME_CHANGE);
    let service = format!("web.{p}.docker.internal");
    checks.answers("1", ns, None, &service, "A", &[&web_ip], NAME_CHANGE);
    checks.getent("1", ns, &dashed, &web_ip);
    checks.getent("1", ns, &service, &web_ip);
    // For information: what glibc makes of a name with `_` (not checked).
    let o = ns.exec(&["getent", "hosts", &name(&web)]);
    eprintln!(
        "info: getent hosts {} -> exit {}, {:?}",
        name(&web),
        o.status,
        String::from_utf8_lossy(&o.stdout).trim()
    );
    let curl = wait_curl(ns, &dashed, &web, Duration::from_secs(5));
    checks.check("1", curl.is_ok(), || {
        format!("curl http://{dashed}/ answers {web:?}: {curl:?}")
    });

    // 5. Any name below a container's or a service's.
    let below = format!("anything.{service}");
    checks.answers("5", ns, None, &below, "A", &[&web_ip], NAME_CHANGE);
    let below_ctr = format!("a.b.{}", name(&web));
    checks.answers("5", ns, None, &below_ctr, "A", &[&web_ip], NAME_CHANGE);

    // 2. A network alias: `store` is db's alias on backend, and no one
    //    else's yet.
    checks.answers(
        "2",
        ns,
        None,
        "store.docker.internal",
        "A",
        &[&db_ip],
        NAME_CHANGE,
    );
    // The same alias on a second network, for another service.
    let t0 = Instant::now();
    fx.project.up(&["cache"]);
    eprintln!("MEASURE compose up cache: {:?}", t0.elapsed());
    let cache_ip = container_ip(&cache, &front);
    eprintln!("aliases compose v1 set: {cache}: {}", aliases(&cache));
    // The event path itself (works without aliases): cache's own name.
    checks.answers(
        "2",
        ns,
        Some(SERVER),
        &name(&cache),
        "A",
        &[&cache_ip],
        NAME_CHANGE,
    );
    for (net, ip) in [(&backend, &db_ip), (&front, &cache_ip)] {
        for form in [net.clone(), net.replace('_', "-")] {
            let n = format!("store.{form}.docker.internal");
            checks.answers("2", ns, None, &n, "A", &[ip], NAME_CHANGE);
        }
    }
    // The bare alias, now two owners': both addresses, and a conflict.
    checks.answers(
        "2",
        ns,
        None,
        "store.docker.internal",
        "A",
        &[&db_ip, &cache_ip],
        NAME_CHANGE,
    );
    let st = fx.status_json();
    let conflicts = &st["dns"]["conflicts"];
    let listed = conflicts
        .as_array()
        .is_some_and(|a| a.iter().any(|c| c["name"] == "store.docker.internal"));
    checks.check("2", listed, || {
        format!("status --json lists store.docker.internal under dns.conflicts: {conflicts}")
    });
    // Every effect of `up` read back through the kernel's view (netlink:
    // the interface's addresses and MTU, each route) as asked.
    let os_view = &st["os_view"];
    checks.check(
        "os view",
        os_view.as_array().is_some_and(|a| a.is_empty()),
        || format!("status --json os_view is empty (the OS shows what up asked): {os_view}"),
    );

    // 3. PTR: web's address answers its container's name, and the
    //    routed subnet's reverse zone has its resolver file.
    let ptr = reverse_name(&web_ip);
    let ptr_want = format!("{}.", name(&web));
    let ptr_ok = checks.answers("3", ns, None, &ptr, "PTR", &[&ptr_want], NAME_CHANGE);
    let subnet = network_subnet(&default_net);
    let zone = reverse_zone(&subnet);
    let zone_file = fx.resolver_dir().join(&zone);
    checks.check("3", zone_file.is_file(), || {
        format!(
            "the resolver folder holds {zone} (the reverse zone of {subnet}); it has {:?}",
            fx.resolver_files()
        )
    });

    // 4. The label's domains: answered, and a resolver file each.
    let label_domains = [format!("{p}.test"), format!("api.{p}.localhost")];
    let mut label_files_ok = true;
    let mut label_name_ok = true;
    for d in &label_domains {
        label_name_ok &= checks.answers("4", ns, None, d, "A", &[&web_ip], NAME_CHANGE);
        let f = fx.resolver_dir().join(d);
        let text = fs::read_to_string(&f).unwrap_or_default();
        label_files_ok &= checks.check(
            "4",
            text.lines().any(|l| l == format!("nameserver {SERVER}")),
            || {
                format!(
                    "resolver file {} names nameserver {SERVER}: {:?}; folder has {:?}",
                    f.display(),
                    text,
                    fx.resolver_files()
                )
            },
        );
    }
    checks.getent("4", ns, &label_domains[0], &web_ip);

    // 6. web's container goes: every one of its names, its label's
    //    resolver files and its PTR forgotten within a second of the
    //    command's return, each asked of the server directly every 50 ms.
    eprintln!("resolver folder before rm: {:?}", fx.resolver_files());
    docker(&["rm", "-f", &web]);
    let t0 = Instant::now();
    let dir = fx.resolver_dir();
    let label_files: Vec<PathBuf> = label_domains.iter().map(|d| dir.join(d)).collect();
    let web_ip_ref = &web_ip;
    let (r_name, r_dashed, r_service, r_below, r_files, r_label_name, r_ptr) = thread::scope(|s| {
        let gone = |n: String, q: &'static str| {
            s.spawn(move || watch(FORGET_WATCH, t0, || nxdomain(ns, &n, q)))
        };
        let h_name = gone(name(&web), "A");
        let h_dashed = gone(dashed.clone(), "A");
        let h_service = gone(service.clone(), "A");
        let h_below = gone(below.clone(), "A");
        let h_ptr = gone(ptr.clone(), "PTR");
        let files = &label_files;
        let h_files = s.spawn(move || {
            watch(FORGET_WATCH, t0, || {
                let left: Vec<&Path> = files
                    .iter()
                    .filter(|f| f.exists())
                    .map(PathBuf::as_path)
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still there: {left:?}"))
                }
            })
        });
        let label_name = label_domains[0].clone();
        let h_label_name = s.spawn(move || {
            watch(FORGET_WATCH, t0, || {
                let d = dig(ns, Some(SERVER), &label_name, "A", false);
                if d.answers.contains(web_ip_ref) {
                    Err(format!(
                        "{label_name} still answers {:?}:\n{}",
                        d.answers, d.raw
                    ))
                } else {
                    Ok(())
                }
            })
        });
        (
            h_name.join().unwrap(),
            h_dashed.join().unwrap(),
            h_service.join().unwrap(),
            h_below.join().unwrap(),
            h_files.join().unwrap(),
            h_label_name.join().unwrap(),
            h_ptr.join().unwrap(),
        )
    });
    // (short label, what, how long, whether it was there before the rm)
    let forgotten = [
        ("name", name(&web), &r_name, true),
        ("dashed", dashed.clone(), &r_dashed, true),
        ("service", service.clone(), &r_service, true),
        ("wildcard", below.clone(), &r_below, true),
        (
            "label files",
            format!("the label's resolver files {label_domains:?}"),
            &r_files,
            label_files_ok,
        ),
        (
            "label name",
            format!("{} answering web's address", label_domains[0]),
            &r_label_name,
            label_name_ok,
        ),
        ("ptr", format!("PTR {ptr}"), &r_ptr, ptr_ok),
    ];
    let line: Vec<String> = forgotten
        .iter()
        .map(|(short, _, r, had)| {
            if *had {
                format!("{short} {}", ms(r))
            } else {
                format!("{short} n/a (never there)")
            }
        })
        .collect();
    eprintln!(
        "MEASURE compose forget: {} (docker rm -f returned -> gone)",
        line.join(", ")
    );
    for (_, what, r, had) in forgotten {
        let ok = had && matches!(r, Ok(d) if *d < NAME_CHANGE);
        checks.check("6", ok, || match r {
            _ if !had => format!("{what} forgotten: it was never there to forget"),
            Ok(d) => format!("{what} forgotten within {NAME_CHANGE:?} of docker rm -f: took {d:?}"),
            Err(e) => format!(
                "{what} forgotten within {NAME_CHANGE:?} of docker rm -f: not within {FORGET_WATCH:?}; {e}"
            ),
        });
    }

    // Down, then stop: nothing of the project, no resolver file left.
    let t0 = Instant::now();
    fx.project.down();
    eprintln!("MEASURE compose down: {:?}", t0.elapsed());
    let (containers, networks) = fx.project.leftovers();
    assert!(
        containers.is_empty() && networks.is_empty(),
        "docker-compose down left containers {containers:?} and networks {networks:?}"
    );
    let st = fx.up().terminate(STOP);
    let st = st.unwrap_or_else(|| panic!("up did not exit within {STOP:?} of SIGTERM"));
    assert!(st.success(), "up exited with {st} after SIGTERM");
    let left = fx.resolver_files();
    checks.check("3,4", left.is_empty(), || {
        format!(
            "the resolver folder {} is empty once up stopped (reverse zone {zone} included): it has {left:?}",
            fx.resolver_dir().display()
        )
    });
    eprintln!(
        "MEASURE compose test total (after the lock and images): {:?}",
        t_test.elapsed()
    );

    if !checks.failed.is_empty() {
        panic!(
            "{} check(s) failed:\n{}",
            checks.failed.len(),
            checks.failed.join("\n")
        );
    }
}

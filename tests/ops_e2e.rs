//! End-to-end tests of the operator commands (`status`, `down`, `doctor`,
//! the configuration file, JSON logs, completions and man page) against the
//! real Docker engine, in the same test bed as `docker_e2e.rs`: the root
//! namespace plays the Docker VM, a namespace plays the Mac and runs `up`.
//!
//! Tests that touch Docker hold the harness's file lock (one at a time);
//! each uses its own control socket (the namespaces share one filesystem).
//! Subnets: 10.212.N.0/24 for the Mac's veth, 10.213.N.0/24 (and
//! 10.214.N.0/24 for extra routes) with N = 40 + the test's number.

// The test bed is Linux network namespaces (setns, prctl, veth): on macOS
// this file builds to nothing, so `cargo test --no-run` links there too.
#![cfg(target_os = "linux")]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::docker::*;
use common::*;
use serde_json::Value;

const FIRST_CURL: Duration = Duration::from_secs(60);
const ROUTE_CHANGE: Duration = Duration::from_secs(5);
/// `down` stops the daemon (≤ 15 s) and runs one container in the VM.
const DOWN: Duration = Duration::from_secs(90);

/// One test's world; fields drop in order (see `docker_e2e.rs`).
struct Fx {
    up: Option<UpProcess>,
    vm: VmSide,
    things: DockerThings,
    mac: MacNs,
    dir: TempDir,
    _session: DockerSession,
}

impl Fx {
    fn new(n: u8) -> Fx {
        let session = DockerSession::start();
        let mac = MacNs::new(n);
        Fx {
            up: None,
            vm: VmSide::new(),
            things: DockerThings::new(),
            mac,
            dir: TempDir::new("ops"),
            _session: session,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("netconnect.sock")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// `up` with the harness defaults, this test's control socket and `extra`.
    fn start_up(&mut self, extra: &[&str]) -> &mut UpProcess {
        let mut args = up_args(&self.mac, &self.vm);
        set_arg(
            &mut args,
            "--control-socket",
            self.socket().to_str().unwrap(),
        );
        // A flag given in `extra` replaces the harness's value.
        let mut extra = extra.iter();
        while let Some(a) = extra.next() {
            match args.iter().position(|x| x == a) {
                Some(i) if a.starts_with("--") && i + 1 < args.len() => {
                    args[i + 1] = extra.next().expect("flag without value").to_string();
                }
                _ => args.push(a.to_string()),
            }
        }
        self.up = Some(UpProcess::spawn(&self.mac, &args));
        self.up.as_mut().unwrap()
    }

    fn up(&mut self) -> &mut UpProcess {
        self.up.as_mut().expect("up not started")
    }

    /// `netconnect ARGS --control-socket S --docker-host ... --vm-interface
    /// ... --interface ...` in the Mac namespace, bounded; a flag in ARGS
    /// replaces the default.
    fn nc(&self, args: &[&str], timeout: Duration) -> Output {
        let mut argv: Vec<String> = vec![netconnect_bin().to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let sock = self.socket();
        let docker_host = format!("unix://{DOCKER_SOCK}");
        let image = helper_image();
        for (flag, value) in [
            ("--control-socket", sock.to_str().unwrap()),
            ("--docker-host", docker_host.as_str()),
            ("--interface", MAC_TUN),
            ("--vm-interface", self.vm.vm_if.as_str()),
            ("--helper-image", image.as_str()),
        ] {
            if !args.contains(&flag) {
                argv.extend([flag.to_string(), value.to_string()]);
            }
        }
        let mut c = self.mac.ns.command(&argv);
        c.env_remove("DOCKER_HOST")
            .env_remove("NETCONNECT_LOG")
            .env("NO_COLOR", "1");
        run_timeout(&mut c, timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    fn status_json(&self) -> Value {
        let o = self.nc(&["status", "--json"], Duration::from_secs(30));
        let text = String::from_utf8_lossy(&o.stdout);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "status --json is not JSON ({e}): {text}\nstderr: {}",
                String::from_utf8_lossy(&o.stderr)
            )
        })
    }

    fn curl_ok(&self, addr: &str, expect: &str, timeout: Duration) {
        wait_curl(&self.mac.ns, addr, expect, timeout).unwrap_or_else(|e| {
            panic!(
                "{e}\nMac routes: {:?}\nup log:\n{}",
                self.mac.routes(),
                self.up.as_ref().map(|u| u.log()).unwrap_or_default()
            )
        });
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The VM public key the helper printed.
fn helper_public_key(vm: &VmSide) -> String {
    let (out, _) = vm.helper_logs();
    out.lines()
        .find_map(|l| l.strip_prefix("public_key="))
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|| panic!("no public_key= line in the helper's output: {out}"))
}

fn network_entry<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("network {name} not in status: {s:#}"))
}

// ---------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------

#[test]
fn docker_status_reports_the_live_tunnel() {
    let mut fx = Fx::new(40);
    let net = fx.things.network("net40", "10.213.40.0/24", &[]);
    let c = fx.things.web("web40", Some(&net), Some("10.213.40.2"), &[]);

    // No daemon yet: status says so, exit 3, and still lists the network.
    let o = fx.nc(&["status"], Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let t = text(&o);
    eprintln!("status without a daemon:\n{t}");
    assert!(t.starts_with("netconnect up: not running"), "{t}");
    assert!(t.contains("10.213.40.0/24  not-routed"), "{t}");

    let pid = fx.start_up(&[]).pid();
    fx.curl_ok("10.213.40.2", &c, FIRST_CURL);

    let s = fx.status_json();
    assert_eq!(s["schema"], 1);
    assert_eq!(s["running"], true);
    assert_eq!(s["pid"], pid);
    assert_eq!(s["control_socket"], fx.socket().to_str().unwrap());
    assert_eq!(s["engine"]["host"], format!("unix://{DOCKER_SOCK}"));
    assert_eq!(s["engine"]["api_version"], "1.41");
    let t = &s["tunnel"];
    assert_eq!(t["interface"], MAC_TUN);
    assert_eq!(t["host_address"], "10.33.33.1");
    assert_eq!(t["vm_public_key"], helper_public_key(&fx.vm).as_str());
    // The host key is the one the helper was given on its command line.
    let cmd = inspect(&fx.vm.helper_name())["Config"]["Cmd"].clone();
    let cmd: Vec<&str> = cmd
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let i = cmd.iter().position(|a| *a == "--host-public-key").unwrap();
    assert_eq!(t["host_public_key"], cmd[i + 1]);
    let age = t["last_handshake_age_s"]
        .as_u64()
        .expect("no handshake age");
    assert!(age < 120, "handshake {age} s ago");
    assert_eq!(s["helper"]["state"], "running");
    assert_eq!(
        s["helper"]["id"].as_str().map(String::from),
        fx.vm.helper_id()
    );
    let n = network_entry(&s, &net);
    assert_eq!(n["subnet"], "10.213.40.0/24");
    assert_eq!(n["route"], "installed");
    assert_eq!(network_entry(&s, "bridge")["route"], "installed");
    assert!(fx.mac.route_for("10.213.40.0/24").is_some());

    // The counters are live: traffic makes them grow.
    let (rx0, tx0) = (
        t["rx_bytes"].as_u64().unwrap(),
        t["tx_bytes"].as_u64().unwrap(),
    );
    for _ in 0..3 {
        fx.curl_ok("10.213.40.2", &c, Duration::from_secs(5));
    }
    let s2 = fx.status_json();
    eprintln!("status --json:\n{s2:#}");
    let (rx1, tx1) = (
        s2["tunnel"]["rx_bytes"].as_u64().unwrap(),
        s2["tunnel"]["tx_bytes"].as_u64().unwrap(),
    );
    assert!(
        rx1 > rx0 && tx1 > tx0,
        "bytes did not grow: rx {rx0}->{rx1} tx {tx0}->{tx1}"
    );

    // The text form says the same.
    let o = fx.nc(&["status"], Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    eprintln!("status:\n{t}");
    assert!(
        t.starts_with(&format!("netconnect up: running (pid {pid},")),
        "{t}"
    );
    assert!(
        t.contains(&format!("tunnel:     {MAC_TUN} 10.33.33.1 -> 10.33.33.2")),
        "{t}"
    );
    assert!(t.contains(" s ago"), "{t}");
    assert!(
        t.lines().any(|l| l.starts_with(&net)
            && l.contains("10.213.40.0/24")
            && l.ends_with("installed")),
        "{t}"
    );
    // Public keys only.
    assert!(t.contains(&helper_public_key(&fx.vm)));
    assert!(!t.to_lowercase().contains("private"), "{t}");

    // The Mac's TUN taken down: what the VM sends to it is refused by the
    // kernel, dropped and counted, and the tunnel goes on once it is up.
    let ping_mac = || {
        let o = Command::new("ping")
            .args(["-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "10.33.33.1"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).contains(" 0% packet loss")
    };
    assert!(
        ping_mac(),
        "the VM side cannot ping the Mac's tunnel address"
    );
    fx.mac.ns.ok(&["ip", "link", "set", MAC_TUN, "down"]);
    assert!(!ping_mac());
    fx.mac.ns.ok(&["ip", "link", "set", MAC_TUN, "up"]);
    assert!(ping_mac(), "no traffic after the TUN came back up");
    let refused = fx.status_json()["tunnel"]["tun_refused"].as_u64().unwrap();
    assert!(refused >= 3, "tun_refused = {refused}");
    let t = text(&fx.nc(&["status"], Duration::from_secs(30)));
    assert!(
        t.contains(&format!(
            "{refused} packet(s) refused by {MAC_TUN} and dropped"
        )),
        "{t}"
    );

    // The Mac's TUN deleted: nothing can flow, so up says why and exits 1.
    fx.mac.ns.ok(&["ip", "link", "del", MAC_TUN]);
    let up = fx.up.as_mut().unwrap();
    let status = up.wait_exit(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", up.log());
    assert!(
        up.log().contains("the tunnel device stopped"),
        "{}",
        up.log()
    );
}

// ---------------------------------------------------------------------------
// down
// ---------------------------------------------------------------------------

/// What `down` must leave as it was: links, routes and firewall rules of
/// both namespaces. Lines about other tests' interfaces (`nct...` not ours)
/// are left out: tests of other files may run meanwhile.
fn snapshot(fx: &Fx) -> Vec<String> {
    // IPv6 link-local addresses of Docker's veths and bridges appear when
    // their duplicate detection ends, seconds after creation, with or
    // without netconnect: only our interfaces' count.
    let ours = |l: &str| l.contains(&fx.vm.vm_if) || l.contains(MAC_TUN);
    let mine = |l: &str| {
        (!l.contains("nct") || ours(l) || l.contains(&fx.mac.root_veth))
            && (!l.contains("fe80::") || ours(l))
    };
    let norm_ipt = |s: String| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.find(" [") {
                Some(i) if l.starts_with(':') => l[..i].to_string(),
                _ => l.to_string(),
            })
            .collect()
    };
    let mut out = Vec::new();
    let root = |args: &[&str]| String::from_utf8_lossy(&host(args).stdout).into_owned();
    for (side, links, routes4, routes6, ipt4, ipt6) in [
        (
            "vm",
            root(&["ip", "-o", "link", "show"]),
            root(&["ip", "-4", "route", "show", "table", "all"]),
            root(&["ip", "-6", "route", "show", "table", "all"]),
            root(&["iptables-save"]),
            root(&["ip6tables-save"]),
        ),
        (
            "mac",
            fx.mac.ns.ok(&["ip", "-o", "link", "show"]),
            fx.mac.ns.ok(&["ip", "-4", "route", "show", "table", "all"]),
            fx.mac.ns.ok(&["ip", "-6", "route", "show", "table", "all"]),
            fx.mac.ns.ok(&["iptables-save"]),
            fx.mac.ns.ok(&["ip6tables-save"]),
        ),
    ] {
        for l in links.lines() {
            // Name and flags, not counters or the changing qdisc state.
            let name = l.split(':').nth(1).unwrap_or("").trim();
            let flags = l
                .split('<')
                .nth(1)
                .and_then(|r| r.split('>').next())
                .unwrap_or("");
            if mine(l) {
                out.push(format!("{side} link {name} <{flags}>"));
            }
        }
        for l in routes4.lines().chain(routes6.lines()).filter(|l| mine(l)) {
            out.push(format!("{side} route {}", l.trim()));
        }
        for l in norm_ipt(ipt4)
            .into_iter()
            .chain(norm_ipt(ipt6))
            .filter(|l| mine(l))
        {
            out.push(format!("{side} ipt {l}"));
        }
    }
    out.sort();
    out
}

/// The name of the VM-side veth of `container`'s eth0.
fn host_veth_of(container: &str) -> String {
    let index = docker(&["exec", container, "cat", "/sys/class/net/eth0/iflink"]);
    let links = host_ok(&["ip", "-o", "link", "show"]);
    links
        .lines()
        .find(|l| l.split(':').next() == Some(index.trim()))
        .and_then(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no VM link with index {index}"))
}

/// Issue 24, against a KinD cluster stood in for (`common::docker::kube`):
/// from the Mac, a pod behind the worker answers by its address, a
/// ClusterIP answers (kube-proxy's DNAT in the control plane), the DNS
/// Service answers for `sampleservice`, and so does netconnect, by name,
/// through the Mac's resolver, under `cluster.local` and the cluster's
/// alias zone; `status` shows the cluster; the worker's removal takes its
/// pod route with it within a second; the cluster's removal takes its
/// domain out of the resolver; `down` leaves both sides as they were.
#[test]
fn docker_kind_cluster_pods_and_services_from_the_mac() {
    let mut fx = Fx::new(46);
    let name = format!("nct{}", std::process::id());
    let kind = stand_in_kind(&fx.things, &name, "10.213.46");
    let before = snapshot(&fx);
    // The Mac's resolver: /etc/resolver (here a folder of the test's) for
    // what netconnect serves; the namespace's programs ask netconnect.
    let resolvers = fx.dir.join("resolver");
    fs::write(
        fx.config_path(),
        format!("[dns]\nresolver_dir = \"{}\"\n", resolvers.display()),
    )
    .unwrap();
    fx.mac.ns.set_resolver("10.33.33.1");
    let config = fx.config_path();
    fx.start_up(&["--config", config.to_str().unwrap()]);
    fx.curl_ok(POD_WEB, POD_WEB_ANSWER, FIRST_CURL);
    fx.curl_ok(SAMPLE_SERVICE, POD_WEB_ANSWER, Duration::from_secs(10));
    // The Service by name, through netconnect to the cluster's DNS.
    fx.curl_ok(SAMPLE_NAME, POD_WEB_ANSWER, Duration::from_secs(10));
    let alias = format!("sampleservice.default.svc.{name}.kube.docker.internal");
    let d = dig(&fx.mac.ns, Some("10.33.33.1"), &alias, "A", false);
    assert_eq!(
        (d.status.as_str(), d.answers.clone()),
        ("NOERROR", vec![SAMPLE_SERVICE.to_string()]),
        "{alias}: {d:?}"
    );
    let d = dig(
        &fx.mac.ns,
        Some("10.33.33.1"),
        "nothere.default.svc.cluster.local",
        "A",
        false,
    );
    assert_eq!(
        d.status, "NXDOMAIN",
        "the cluster's answer is relayed: {d:?}"
    );
    let o = fx.nc(&["doctor"], Duration::from_secs(60));
    let want = format!(
        "ok    cluster: cluster {name} (kind): 2 nodes, 3 range(s) routed, DNS {DNS_SERVICE} answers"
    );
    assert!(
        text(&o).contains(&want),
        "no {want:?} in doctor's:\n{}",
        text(&o)
    );
    eprintln!("doctor:\n{}", text(&o));
    let file = resolvers.join("cluster.local");
    let wired = fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the cluster domain's resolver file)",
            file.display()
        )
    });
    assert!(wired.contains("nameserver 10.33.33.1"), "{wired}");
    for range in POD_RANGES.iter().chain([&SERVICE_RANGE]) {
        let r = fx.mac.route_for(range);
        assert!(
            r.as_deref()
                .is_some_and(|r| r.contains(&format!("dev {MAC_TUN}"))),
            "Mac route for {range}: {r:?}"
        );
    }
    let vm_route = |range: &str| {
        String::from_utf8_lossy(&host(&["ip", "route", "show", range]).stdout)
            .trim()
            .to_string()
    };
    let r = vm_route(POD_RANGES[1]);
    assert!(
        r.contains(&format!("via {}", kind.worker_ip)) && r.contains("proto 78"),
        "VM route for the worker's pods: {r:?}"
    );
    let r = vm_route(SERVICE_RANGE);
    assert!(
        r.contains(&format!("via {}", kind.control_plane_ip)),
        "VM route for the services: {r:?}"
    );
    let s = fx.status_json();
    let c = &s["clusters"][0];
    assert_eq!(c["name"], name.as_str(), "{s:#}");
    assert_eq!(c["flavor"], "kind", "{s:#}");
    assert_eq!(c["state"], "ready", "{s:#}");
    assert_eq!(c["nodes"].as_array().map(Vec::len), Some(2), "{s:#}");
    assert_eq!(c["services"], serde_json::json!([SERVICE_RANGE]), "{s:#}");
    assert_eq!(c["dns"], serde_json::json!([DNS_SERVICE]), "{s:#}");
    let o = fx.nc(&["status"], Duration::from_secs(30));
    let line = format!(
        "cluster {name} (kind): 2 nodes, pods 10.244.0.0/16, services {SERVICE_RANGE}, dns {DNS_SERVICE}"
    );
    assert!(text(&o).contains(&line), "no {line:?} in:\n{}", text(&o));
    eprintln!("status:\n{}", text(&o));

    // The worker deleted: its pod range goes, on the Mac within a second.
    let worker_veth = host_veth_of(&kind.worker);
    let t0 = Instant::now();
    fx.things.remove_container(&kind.worker);
    let removed = t0.elapsed();
    let gone = fx
        .mac
        .wait_route(POD_RANGES[1], false, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("{e}\nup log:\n{}", fx.up().log()));
    eprintln!(
        "MEASURE: worker removed (docker rm -f: {removed:?}) -> its pod route gone from the Mac: {:?} after",
        gone
    );
    assert!(
        fx.mac.route_for(POD_RANGES[0]).is_some(),
        "the control plane's pods lost their route"
    );
    let t0 = Instant::now();
    while !vm_route(POD_RANGES[1]).is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        vm_route(POD_RANGES[1]),
        "",
        "VM route to a deleted node kept"
    );
    // The whole cluster deleted: its domain leaves the resolver.
    let cp_veth = host_veth_of(&kind.control_plane);
    let t0 = Instant::now();
    fx.things.remove_container(&kind.control_plane);
    while file.exists() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !file.exists(),
        "cluster.local's resolver file kept after the cluster went"
    );
    eprintln!(
        "MEASURE: docker rm -f of the control plane started -> cluster.local's resolver file gone: {:?}",
        t0.elapsed()
    );
    let d = dig(&fx.mac.ns, Some("10.33.33.1"), SAMPLE_NAME, "A", false);
    assert_eq!(
        d.status, "REFUSED",
        "a gone cluster's names still answered: {d:?}"
    );

    let o = fx.nc(&["down"], DOWN);
    assert!(o.status.success(), "down failed: {}", text(&o));
    fx.up()
        .wait_exit(Duration::from_secs(5))
        .expect("up still running after down");
    // The nodes' links went with them, and their bridge has no carrier
    // now: Docker's doing, not ours.
    let bridge = format!(
        "br-{}",
        &docker(&["network", "inspect", "--format", "{{.Id}}", &kind.network]).trim()[..12]
    );
    let ours =
        |l: &String| !l.contains(&worker_veth) && !l.contains(&cp_veth) && !l.contains(&bridge);
    let before: Vec<String> = before.into_iter().filter(ours).collect();
    assert!(
        !resolvers.join("docker.internal").exists(),
        "resolver file left after down"
    );
    let after: Vec<String> = snapshot(&fx).into_iter().filter(ours).collect();
    let missing: Vec<_> = before.iter().filter(|l| !after.contains(l)).collect();
    let left: Vec<_> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        missing.is_empty() && left.is_empty(),
        "state differs after down\nmissing: {missing:#?}\nleft over: {left:#?}"
    );
}

#[test]
fn docker_down_leaves_both_sides_as_they_were() {
    let mut fx = Fx::new(41);
    let net = fx.things.network("net41", "10.213.41.0/24", &[]);
    // A container that also answers on an extra route's address, reached
    // through the VM-side gateway of the configuration file.
    let c = fx.things.web(
        "web41",
        Some(&net),
        Some("10.213.41.2"),
        &["--cap-add", "NET_ADMIN"],
    );
    docker(&[
        "exec",
        &c,
        "ip",
        "addr",
        "add",
        "10.214.41.5/32",
        "dev",
        "lo",
    ]);
    fs::write(
        fx.config_path(),
        "[[routes]]\nsubnet = \"10.214.41.0/24\"\nvia = \"10.213.41.2\"\n",
    )
    .unwrap();
    // New veths and bridges get their IPv6 link-local addresses (and routes
    // in table local) a moment after creation: wait for a settled picture.
    let t0 = Instant::now();
    let mut before = snapshot(&fx);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let again = snapshot(&fx);
        if again == before {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the namespaces do not settle"
        );
        before = again;
    }

    let cfg = fx.config_path();
    // A VM route left by an earlier configuration (marked as netconnect's):
    // the helper removes it when it starts.
    host_ok(&[
        "ip",
        "route",
        "add",
        "10.215.41.0/24",
        "via",
        "10.213.41.2",
        "proto",
        "78",
    ]);
    fx.start_up(&["--config", cfg.to_str().unwrap()]);
    fx.curl_ok("10.213.41.2", &c, FIRST_CURL);
    let stale = String::from_utf8_lossy(&host(&["ip", "route", "show", "10.215.41.0/24"]).stdout)
        .trim()
        .to_string();
    assert_eq!(stale, "", "stale VM route kept");
    fx.curl_ok("10.214.41.5", &c, Duration::from_secs(10));
    assert!(fx.mac.route_for("10.214.41.0/24").is_some());
    let vm_route =
        String::from_utf8_lossy(&host(&["ip", "route", "show", "10.214.41.0/24"]).stdout)
            .trim()
            .to_string();
    assert!(
        vm_route.contains("via 10.213.41.2") && vm_route.contains("proto 78"),
        "VM route: {vm_route:?}"
    );
    assert!(!netconnect_rules(&fx.vm.vm_if).is_empty());
    let during = snapshot(&fx);
    assert_ne!(before, during, "up changed nothing the snapshot sees");

    let t0 = Instant::now();
    let o = fx.nc(&["down", "--config", cfg.to_str().unwrap()], DOWN);
    let took = t0.elapsed();
    let out = text(&o);
    eprintln!("MEASURE: down took {took:?}\n{out}");
    assert!(o.status.success(), "down failed: {out}");
    assert!(out.contains("stopped netconnect up"), "{out}");
    assert!(out.contains("netconnect down: done"), "{out}");
    let st = fx
        .up()
        .wait_exit(Duration::from_secs(5))
        .expect("up still running after down");
    assert!(st.success(), "up exited with {st}");
    assert!(!fx.socket().exists(), "control socket left behind");
    assert_eq!(fx.vm.helper_id(), None, "helper container left");
    assert!(!fx.vm.link_exists(), "VM interface left");

    let after = snapshot(&fx);
    let gone: Vec<_> = before.iter().filter(|l| !after.contains(l)).collect();
    let left: Vec<_> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        gone.is_empty() && left.is_empty(),
        "state differs after down\nmissing: {gone:#?}\nleft over: {left:#?}"
    );

    // A second down finds nothing to do and still succeeds.
    let o = fx.nc(&["down"], DOWN);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("not running"), "{out}");
    assert!(out.contains("rules=0"), "{out}");
}

// ---------------------------------------------------------------------------
// doctor
// ---------------------------------------------------------------------------

fn doctor(fx: &Fx, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["doctor"];
    args.extend(extra);
    let o = fx.nc(&args, Duration::from_secs(90));
    let t = text(&o);
    eprintln!("doctor {extra:?} -> {:?}\n{t}", o.status.code());
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "doctor exit {:?}",
        o.status
    );
    (o.status.success(), t)
}

/// Runs doctor once a second (at most 10 times) until it fails at `link`,
/// which `up` may take a moment to reach; no run may call `broken` healthy.
fn doctor_fails_at(fx: &Fx, link: &str, broken: &str) -> String {
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        let (ok, t) = doctor(fx, &[]);
        assert!(!ok, "doctor called {broken} healthy: {t}");
        if t.contains(&format!("FAIL  {link}:")) {
            return t;
        }
    }
    panic!("doctor never named {broken} at its {link} link");
}

#[test]
fn docker_doctor_names_the_first_broken_link() {
    let mut fx = Fx::new(42);
    let net = fx.things.network("net42", "10.213.42.0/24", &[]);
    let c = fx.things.web("web42", Some(&net), Some("10.213.42.2"), &[]);

    // No daemon.
    let (ok, t) = doctor(&fx, &[]);
    assert!(!ok);
    assert!(
        t.contains("ok    root") && t.contains("ok    engine"),
        "{t}"
    );
    assert!(
        t.contains("FAIL  daemon: netconnect up is not running"),
        "{t}"
    );
    assert!(t.contains("fix: sudo netconnect up"), "{t}");

    // No helper image (named before the daemon: it comes first).
    let (ok, t) = doctor(&fx, &["--helper-image", "netconnect-helper:nope"]);
    assert!(!ok);
    assert!(
        t.contains("FAIL  helper image: netconnect-helper:nope"),
        "{t}"
    );
    assert!(t.contains("helper-image/build.sh"), "{t}");
    assert!(
        !t.contains("daemon"),
        "went past the first broken link: {t}"
    );

    // No engine.
    let (ok, t) = doctor(&fx, &["--docker-host", "unix:///nonexistent.sock"]);
    assert!(!ok);
    assert!(t.contains("FAIL  engine: no Docker engine answered"), "{t}");
    assert!(t.contains("/nonexistent.sock"), "{t}");
    assert!(t.contains("fix: start Docker"), "{t}");

    // Not root: the first link.
    let bin_dir = TempDir::new("bin");
    fs::set_permissions(bin_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_dir.join("netconnect");
    fs::copy(netconnect_bin(), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let o = run_timeout(
        Command::new("setpriv").args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin.to_str().unwrap(),
            "doctor",
            "--control-socket",
            "/nonexistent/nc.sock",
        ]),
        Duration::from_secs(30),
    )
    .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.starts_with("FAIL  root: not running as root"), "{t}");
    assert!(t.contains("fix: sudo netconnect doctor"), "{t}");

    // Healthy.
    fx.start_up(&[]);
    fx.curl_ok("10.213.42.2", &c, FIRST_CURL);
    let (ok, t) = doctor(&fx, &[]);
    assert!(ok, "{t}");
    // The tunnel read back through netlink as up asked it, and nothing
    // up read back disagreed.
    assert!(t.contains("ok    os view: "), "{t}");
    assert!(t.contains("every effect read back as asked"), "{t}");
    assert!(t.contains("ok    vm firewall"), "{t}");
    assert!(t.contains("ok    probe: container "), "{t}");
    assert!(t.contains("answers through the tunnel"), "{t}");
    assert!(t.contains("healthy"), "{t}");

    // A route deleted by someone else (a VPN client, `ip route del`): `up`
    // sees the routing table change and puts it back within 2 s, with no
    // resync. (Doctor's verdict on a route that stays gone is unit-tested:
    // `up` no longer leaves one for an end-to-end test to find.)
    let added = |log: &str| log.matches("route added").count();
    let before = added(&fx.up().log());
    fx.mac.ns.ok(&["ip", "route", "del", "10.213.42.0/24"]);
    fx.mac
        .wait_route("10.213.42.0/24", true, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("a deleted route was not put back: {e}\n{}", fx.up().log()));
    let t0 = Instant::now();
    while added(&fx.up().log()) == before && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        added(&fx.up().log()),
        before + 1,
        "the route is there, but up did not add it again\n{}",
        fx.up().log()
    );
    let (ok, t) = doctor(&fx, &[]);
    assert!(ok, "{t}");
    // A reload resyncs too (doctor's fix when a route stays gone).
    let pid = fx.up().pid();
    send_signal(pid, 1);
    fx.mac
        .wait_route("10.213.42.0/24", true, ROUTE_CHANGE)
        .unwrap_or_else(|e| panic!("the route went after SIGHUP: {e}"));

    // A Docker network that overlaps a route of the Mac: skipped, and doctor
    // says which route and how to exclude it.
    fx.mac.ns.ok(&[
        "ip",
        "route",
        "add",
        "10.214.42.0/25",
        "via",
        &fx.mac.root_addr,
    ]);
    let clash = fx.things.network("clash", "10.214.42.0/24", &[]);
    let t0 = Instant::now();
    let t = loop {
        let (ok, t) = doctor(&fx, &[]);
        if !ok && t.contains("FAIL  conflicts") {
            break t;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "doctor did not name the conflict:\n{t}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        t.contains(&format!(
            "network {clash} (10.214.42.0/24) is not routed: it overlaps 10.214.42.0/25 via eth0"
        )),
        "{t}"
    );
    assert!(t.contains("exclude"), "{t}");
    fx.things.remove_network(&clash);
    fx.mac.ns.ok(&["ip", "route", "del", "10.214.42.0/25"]);

    // A VM firewall rule deleted by hand.
    let rule = netconnect_rules(&fx.vm.vm_if)
        .into_iter()
        .find(|r| r.binary == "iptables" && r.table == "filter" && r.has_token("-i"))
        .expect("no DOCKER-USER -i rule");
    assert!(rule.delete());
    let (ok, t) = doctor(&fx, &[]);
    assert!(!ok, "{t}");
    assert!(
        t.contains("FAIL  vm firewall: missing in the VM: rule -t filter DOCKER-USER -i"),
        "{t}"
    );
    let fix = t
        .lines()
        .find_map(|l| l.trim().strip_prefix("fix: "))
        .unwrap()
        .to_string();
    assert!(
        fix.starts_with(&format!("docker rm -f {}", fx.vm.helper_name())),
        "{fix}"
    );
    // The fix it names works: the new helper puts the rule back.
    docker(&["rm", "-f", &fx.vm.helper_name()]);
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let (ok, t) = doctor(&fx, &[]);
        if ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "doctor still unhealthy after the fix:\n{t}"
        );
    }
    fx.curl_ok("10.213.42.2", &c, Duration::from_secs(10));

    // The last link alone: the VM drops what the tunnel forwards to the
    // containers, in a rule above netconnect's own (as a user's DOCKER-USER
    // rule would). The handshake and the VM's rules still hold; only the
    // probe can tell. The rule goes when its guard drops.
    let block_tunnel = |matches: &[&str], target: &str| {
        let mut block = InsertedRules::default();
        let spec: Vec<String> = ["-i", fx.vm.vm_if.as_str()]
            .iter()
            .chain(matches)
            .chain(&["-m", "comment", "--comment"])
            .map(|s| s.to_string())
            .chain([test_rule_comment(), "-j".into(), target.into()])
            .collect();
        block.add("filter", &["-I", "DOCKER-USER", "1"], &spec);
        block
    };
    {
        let _drop = block_tunnel(&[], "DROP");
        let (ok, t) = doctor(&fx, &[]);
        assert!(
            !ok,
            "doctor called a tunnel that reaches no container healthy: {t}"
        );
        assert!(t.contains("ok    handshake"), "{t}");
        assert!(t.contains("ok    vm firewall"), "{t}");
        assert!(t.contains("FAIL  probe: container "), "{t}");
        assert!(t.contains("does not answer"), "{t}");
        assert!(
            t.contains("fix: the VM's DOCKER-USER chain drops tunnel traffic")
                && t.contains(&test_rule_comment()),
            "the fix does not name the rule that drops: {t}"
        );
    }
    // A REJECT answers in the container's place: "refused" is no answer
    // from the container when a rule above ours counted the probe.
    {
        let _reject = block_tunnel(&["-p", "tcp"], "REJECT");
        let (ok, t) = doctor(&fx, &[]);
        assert!(
            !ok,
            "doctor took the VM's REJECT for the container's answer: {t}"
        );
        assert!(
            t.contains("FAIL  probe: container ")
                && t.contains("refused by a rule in the VM, not by the container"),
            "{t}"
        );
        assert!(
            t.contains("-j REJECT"),
            "the fix does not name the REJECT rule: {t}"
        );
    }
    let (ok, t) = doctor(&fx, &[]);
    assert!(ok, "still broken once the rule is gone: {t}");
}

// ---------------------------------------------------------------------------
// The configuration file: exclude, SIGHUP reload, bad file; JSON logs
// ---------------------------------------------------------------------------

/// The two links `up` mends by itself, held broken: a helper that can
/// never start (the VM cannot resolve the host endpoint) and a helper that
/// runs but never completes a handshake (the endpoint is an address nobody
/// answers at). `up` keeps retrying in both cases; doctor names the link.
#[test]
fn docker_doctor_names_a_failing_helper_and_a_missing_handshake() {
    let mut fx = Fx::new(44);

    // The helper exits at once: it cannot resolve the endpoint.
    fx.start_up(&["--host-endpoint", "no-such-host.invalid"]);
    let t = doctor_fails_at(&fx, "helper", "a helper that cannot start");
    assert!(t.contains("ok    daemon"), "{t}");
    assert!(t.contains("is not running"), "{t}");
    assert!(t.contains("docker logs"), "{t}");
    assert!(
        !t.contains("handshake"),
        "went past the first broken link: {t}"
    );
    let st = fx.up().terminate(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "up did not stop cleanly");
    fx.up = None;

    // The helper runs, but the host endpoint it is given answers nothing.
    fx.start_up(&["--host-endpoint", "10.212.44.99"]);
    let t = doctor_fails_at(&fx, "handshake", "a tunnel without a handshake");
    assert!(t.contains("ok    helper"), "{t}");
    assert!(t.contains("no handshake with the VM side yet"), "{t}");
    assert!(t.contains("--host-endpoint"), "{t}");
}

#[test]
fn docker_config_exclude_and_sighup_reload() {
    let mut fx = Fx::new(43);
    let a = fx.things.network("neta", "10.213.43.0/25", &[]);
    let b = fx.things.network("netb", "10.213.43.128/25", &[]);
    let ca = fx.things.web("weba", Some(&a), Some("10.213.43.2"), &[]);
    let cb = fx.things.web("webb", Some(&b), Some("10.213.43.130"), &[]);
    // A public subnet (TEST-NET-2): routed only once the file allows it.
    let c = fx.things.network("netc", "198.51.100.0/24", &[]);
    let cc = fx.things.web("webc", Some(&c), Some("198.51.100.2"), &[]);
    let cfg = fx.config_path();
    fs::write(&cfg, "[networks]\nexclude = [\"*-netb\"]\n").unwrap();

    fx.start_up(&["--config", cfg.to_str().unwrap(), "--log-format", "json"]);
    fx.curl_ok("10.213.43.2", &ca, FIRST_CURL);
    assert_eq!(
        fx.mac.route_for("10.213.43.128/25"),
        None,
        "excluded network routed"
    );
    let s = fx.status_json();
    assert_eq!(network_entry(&s, &b)["route"], "excluded");
    assert_eq!(network_entry(&s, &a)["route"], "installed");
    assert_eq!(network_entry(&s, &c)["route"], "skipped");
    assert_eq!(network_entry(&s, &c)["skip_reason"], "public");
    assert_eq!(
        fx.mac.route_for("198.51.100.0/24"),
        None,
        "public subnet routed"
    );
    assert_eq!(s["config_file"], cfg.to_str().unwrap());
    let o = fx.nc(&["status"], Duration::from_secs(30));
    assert!(
        text(&o)
            .lines()
            .any(|l| l.starts_with(&b) && l.ends_with("excluded by config")),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).lines().any(|l| l.starts_with(&c)
            && l.ends_with(
                "skipped: public addresses (allow with networks.allow_public in the config file)"
            )),
        "{}",
        text(&o)
    );

    // Swap: exclude a instead, allow the public range, SIGHUP.
    fs::write(
        &cfg,
        "[networks]\nexclude = [\"*-neta\"]\nallow_public = [\"198.51.100.0/24\"]\n",
    )
    .unwrap();
    let pid = fx.up().pid();
    send_signal(pid, 1);
    fx.mac
        .wait_route("10.213.43.128/25", true, ROUTE_CHANGE)
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.up.as_ref().unwrap().log()));
    fx.mac
        .wait_route("10.213.43.0/25", false, ROUTE_CHANGE)
        .unwrap();
    fx.curl_ok("10.213.43.130", &cb, Duration::from_secs(10));
    fx.mac
        .wait_route("198.51.100.0/24", true, ROUTE_CHANGE)
        .unwrap_or_else(|e| panic!("allow_public did not route it: {e}"));
    fx.curl_ok("198.51.100.2", &cc, Duration::from_secs(10));

    // A bad file: logged with line and column, the last good state stays.
    fs::write(&cfg, "[networks]\nexclude = [\"*-neta\"\n").unwrap();
    let n = fx.up().count("configuration not reloaded");
    send_signal(pid, 1);
    fx.up()
        .wait_log("configuration not reloaded", n + 1, Duration::from_secs(5))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(fx.up().try_status().is_none(), "up exited on a bad reload");
    assert!(fx.mac.route_for("10.213.43.128/25").is_some());
    assert_eq!(fx.mac.route_for("10.213.43.0/25"), None);

    // Every log line is one JSON object; the bad file's line names its place.
    let log = fx.up().log();
    eprintln!("up's JSON log:\n{log}");
    let mut saw_ready = false;
    let mut saw_place = false;
    let mut public_lines = 0;
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
        let msg = v["fields"]["message"].as_str().unwrap_or("");
        saw_ready |= msg.starts_with("ready: traffic can flow");
        saw_place |= msg == "configuration not reloaded; keeping the last good one"
            && v["fields"]["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(&format!("{}:2:20:", cfg.display())));
        if msg == "not routing a Docker subnet that holds public addresses" {
            public_lines += 1;
            assert_eq!(v["fields"]["network"], c.as_str(), "{l}");
            assert_eq!(v["fields"]["subnet"], "198.51.100.0/24", "{l}");
            assert_eq!(v["fields"]["allow_with"], "networks.allow_public", "{l}");
        }
    }
    assert_eq!(
        public_lines, 1,
        "one line for the public network, not one a sync:\n{log}"
    );
    assert!(saw_ready, "no 'ready' line in:\n{log}");
    assert!(saw_place, "no reload error with file:line:col in:\n{log}");
}

// ---------------------------------------------------------------------------
// Command line: completions, man page, bad config (no Docker needed)
// ---------------------------------------------------------------------------

fn run_bin(args: &[&str]) -> Output {
    let mut c = Command::new(netconnect_bin());
    c.args(args).env_remove("NETCONNECT_LOG");
    run_timeout(&mut c, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn cli_completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run_bin(&["completions", shell]);
        assert!(o.status.success());
        let s = String::from_utf8_lossy(&o.stdout);
        for w in ["status", "doctor", "down", "--json"] {
            assert!(s.contains(w.trim_start_matches('-')), "{shell}: no {w}");
        }
    }
    let o = run_bin(&["completions", "tcsh"]);
    assert!(!o.status.success());
    let o = run_bin(&["man"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains(".SH NAME") && s.contains(".SH SYNOPSIS"), "{s}");
    // And it renders (groff is what man(1) uses).
    let o = run_timeout(
        Command::new("sh").args([
            "-c",
            &format!("{} man | groff -man -Tutf8 -P-cbou", netconnect_bin()),
        ]),
        Duration::from_secs(20),
    )
    .unwrap();
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "groff failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for w in ["NAME", "SYNOPSIS", "Reach Docker containers", "status"] {
        assert!(page.contains(w), "rendered page lacks {w:?}:\n{page}");
    }
}

#[test]
fn cli_bad_config_is_one_line_with_its_place() {
    let dir = TempDir::new("cfg");
    let p = dir.join("config.toml");
    fs::write(
        &p,
        "listen_port = 51820\n\n[networks]\nexclude = \"notalist\"\n",
    )
    .unwrap();
    let o = run_bin(&[
        "--config",
        p.to_str().unwrap(),
        "status",
        "--docker-host",
        "unix:///nonexistent",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(nonempty_lines(&err).len(), 1, "{err}");
    assert!(
        err.starts_with(&format!("netconnect: error: {}:4:11: ", p.display())),
        "{err}"
    );
    // A named file that does not exist is an error too; the default one is not.
    let o = run_bin(&["--config", "/nonexistent/nc.toml", "status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/nc.toml"));
}

/// A malformed `--host-endpoint` is refused by `up` itself, in one line,
/// before any tunnel exists (not minutes later by the helper in the VM).
#[test]
fn cli_up_refuses_a_malformed_host_endpoint_before_it_starts() {
    require_root();
    let ns = Netns::new("bad-ep");
    let sock = TempDir::new("bad-ep");
    let socket = sock.join("control.sock");
    for bad in ["10.1.2.3:0", "host:notaport", "a b"] {
        let o = ns.exec(&[
            netconnect_bin(),
            "up",
            "--control-socket",
            socket.to_str().unwrap(),
            "--interface",
            "ncbad0",
            "--docker-host",
            "unix:///nonexistent",
            "--host-endpoint",
            bad,
        ]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{bad}: {err}");
        assert_eq!(nonempty_lines(&err).len(), 1, "{bad}: {err}");
        assert!(
            err.contains(&format!("--host-endpoint {bad:?} is not HOST, HOST:PORT")),
            "{bad}: {err}"
        );
        assert!(!ns.link_exists("ncbad0"), "{bad}: a tunnel was left behind");
        assert!(
            !socket.exists(),
            "{bad}: the control socket was left behind"
        );
    }
}

/// `down` deletes a link only if netconnect could have made it (a TUN or
/// a WireGuard link): pointed at any other interface by name, it refuses in
/// one line, exits non-zero, and the interface stays. A leading '-' is no
/// interface name at all.
#[test]
fn cli_down_leaves_an_interface_it_did_not_make() {
    require_root();
    let ns = Netns::new("down-kind");
    ns.ok(&[
        "ip", "link", "add", "ncveth0", "type", "veth", "peer", "name", "ncveth1",
    ]);
    let sock = TempDir::new("down-kind");
    let socket = sock.join("control.sock");
    let o = ns.exec(&[
        netconnect_bin(),
        "down",
        "--control-socket",
        socket.to_str().unwrap(),
        "--interface",
        "ncveth0",
        "--docker-host",
        "unix:///nonexistent",
    ]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(nonempty_lines(&err).len(), 1, "{err}");
    assert!(
        err.contains("ncveth0 is a veth link, not a tunnel netconnect made"),
        "{err}"
    );
    assert!(ns.link_exists("ncveth0"), "down removed a veth link");

    let o = run_bin(&[
        "down",
        "--interface=-x",
        "--control-socket",
        socket.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\"-x\" is not a valid interface name"),
        "{err}"
    );
}

/// Run as root, netconnect reads a configuration file only if root alone
/// can change it (as sshd's StrictModes): one line naming the fix
/// otherwise; a FIFO in its place is refused at once, not waited on.
#[test]
fn cli_root_reads_only_a_config_file_only_root_can_change() {
    require_root();
    let dir = TempDir::new("cfg-trust");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.join("config.toml");
    let path = p.to_str().unwrap();
    fs::write(&p, "listen_port = 51820\n").unwrap();
    let status = |p: &str| {
        run_bin(&[
            "--config",
            p,
            "status",
            "--docker-host",
            "unix:///nonexistent",
            "--control-socket",
            "/nonexistent/nc.sock",
        ])
    };
    let one_line_error = |o: &Output| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(nonempty_lines(&err).len(), 1, "{err}");
        err
    };

    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let o = status(path);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains(path),
        "a root-owned 0644 file was refused: {}",
        text(&o)
    );

    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    let err = one_line_error(&status(path));
    assert!(
        err.contains(&format!(
            "{path} is writable by group or others (mode 0666)"
        )) && err.contains(&format!("sudo chmod go-w {path}")),
        "{err}"
    );

    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
    let err = one_line_error(&status(path));
    assert!(
        err.contains("is owned by uid 65534, not root")
            && err.contains(&format!("sudo chown root {path}")),
        "{err}"
    );

    let fifo = dir.join("fifo.toml");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let t0 = Instant::now();
    let err = one_line_error(&status(fifo.to_str().unwrap()));
    assert!(err.contains("not a regular file"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

// ---------------------------------------------------------------------------
// names: containers by name from the Mac
// ---------------------------------------------------------------------------

/// Within this long of Docker's answer to a command, a name's answer has
/// followed it (events, not polling).
const NAME_CHANGE: Duration = Duration::from_secs(1);

/// The Mac's resolver points at the tunnel's host address, as
/// /etc/resolver/docker.internal makes macOS do; `up` writes its resolver
/// file into a folder of this test (the macOS code path, another folder).
/// First with port 53 taken: one line naming the holder, the tunnel runs
/// on. Then names of a plain and a Compose container over UDP and TCP,
/// NXDOMAIN, REFUSED, curl by name, every change within a second, status,
/// doctor, and no resolver file left after a crash and `down`.
#[test]
fn docker_containers_answer_by_name() {
    let mut fx = Fx::new(45);
    let server = "10.33.33.1";
    fx.mac.ns.set_resolver(server);
    let resolver_dir = fx.dir.join("resolver");
    let resolver_file = resolver_dir.join("docker.internal");
    let cfg = fx.config_path();
    fs::write(
        &cfg,
        format!("[dns]\nresolver_dir = \"{}\"\n", resolver_dir.display()),
    )
    .unwrap();
    let net = fx.things.network("net45", "10.213.45.0/24", &[]);
    let web = fx.things.web("web", Some(&net), Some("10.213.45.2"), &[]);
    let project = format!("shop{}", std::process::id());
    let compose = |service: &str| {
        [
            "--label".to_string(),
            format!("com.docker.compose.service={service}"),
            "--label".to_string(),
            format!("com.docker.compose.project={project}"),
        ]
    };
    let api_labels = compose("api");
    let api_labels: Vec<&str> = api_labels.iter().map(String::as_str).collect();
    let api1 = fx
        .things
        .web("api1", Some(&net), Some("10.213.45.3"), &api_labels);
    let api2 = fx
        .things
        .web("api2", Some(&net), Some("10.213.45.4"), &api_labels);
    let name = |c: &str| format!("{c}.docker.internal");
    let api = format!("api.{project}.docker.internal");
    let ns = &fx.mac.ns;

    // 1. Port 53 held in the Mac by another program.
    let holder = ns.spawn_tracked(
        &[
            "python3",
            "-c",
            "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',53))\nprint('bound',flush=True)\ntime.sleep(600)",
        ],
        None,
    );
    let t0 = Instant::now();
    while !ns.ok(&["ss", "-lun"]).contains("0.0.0.0:53") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the holder never bound :53"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fx.start_up(&["--config", cfg.to_str().unwrap()]);
    fx.curl_ok("10.213.45.2", &web, FIRST_CURL);
    let log = fx.up().log();
    let line = log
        .lines()
        .find(|l| l.contains("names are off"))
        .unwrap_or_else(|| panic!("no 'names are off' line:\n{log}"));
    assert!(
        line.contains(&format!(
            "UDP port 53 on {server} is already in use by python3 (pid {holder})"
        )),
        "{line}"
    );
    let st = fx.status_json();
    assert_eq!(st["dns"]["state"], "failed", "{st:#}");
    let t = doctor_fails_at(&fx, "names", "a name server that could not listen");
    assert!(t.contains("already in use by python3"), "{t}");
    assert!(
        !resolver_file.exists(),
        "a resolver file for a server that is not there"
    );
    fx.up()
        .terminate(Duration::from_secs(15))
        .expect("up did not stop");
    fx.up = None;
    send_signal(holder, SIGKILL);

    // 2. Serving.
    fx.start_up(&["--config", cfg.to_str().unwrap()]);
    fx.curl_ok("10.213.45.2", &web, FIRST_CURL);
    let ns = &fx.mac.ns;
    let file = fs::read_to_string(&resolver_file).expect("no resolver file");
    assert!(
        file.lines().any(|l| l == format!("nameserver {server}"))
            && file.lines().any(|l| l == "port 53"),
        "{file}"
    );
    for tcp in [false, true] {
        let d = dig(ns, Some(server), &name(&web), "A", tcp);
        assert_eq!(
            (d.status.as_str(), d.answers.clone(), d.aa),
            ("NOERROR", vec!["10.213.45.2".to_string()], true),
            "tcp={tcp}: {}",
            d.raw
        );
        // Every replica of the Compose service.
        let d = dig(ns, Some(server), &api, "A", tcp);
        assert_eq!(
            d.answers,
            ["10.213.45.3", "10.213.45.4"],
            "tcp={tcp}: {}",
            d.raw
        );
        let d = dig(ns, Some(server), "nope.docker.internal", "A", tcp);
        assert_eq!(d.status, "NXDOMAIN", "tcp={tcp}: {}", d.raw);
        let d = dig(ns, Some(server), "example.com", "A", tcp);
        assert_eq!(d.status, "REFUSED", "tcp={tcp}: {}", d.raw);
    }
    let d = dig(
        ns,
        Some(server),
        &format!("{}.", name(&web).to_uppercase()),
        "A",
        false,
    );
    assert_eq!(d.answers, ["10.213.45.2"], "{}", d.raw);
    // Through the system's resolver, as any program asks.
    fx.curl_ok(&name(&web), &web, Duration::from_secs(10));

    // Renamed: the new name answers and the old one is gone.
    let renamed = format!("{web}-new");
    docker(&["rename", &web, &renamed]);
    let took = wait_dig(ns, Some(server), &name(&renamed), "A", NAME_CHANGE, |d| {
        d.answers == ["10.213.45.2"]
    })
    .unwrap_or_else(|d| panic!("the new name did not answer: {}", d.raw));
    eprintln!("MEASURE: docker rename -> new name answers: {took:?}");
    assert_eq!(
        dig(ns, Some(server), &name(&web), "A", false).status,
        "NXDOMAIN"
    );
    // Disconnected from its network, then connected again.
    docker(&["network", "disconnect", &net, &api1]);
    let took = wait_dig(ns, Some(server), &api, "A", NAME_CHANGE, |d| {
        d.answers == ["10.213.45.4"]
    })
    .unwrap_or_else(|d| panic!("a disconnected replica still answers: {}", d.raw));
    eprintln!("MEASURE: network disconnect -> answer without it: {took:?}");
    docker(&["network", "connect", "--ip", "10.213.45.3", &net, &api1]);
    let took = wait_dig(ns, Some(server), &api, "A", NAME_CHANGE, |d| {
        d.answers == ["10.213.45.3", "10.213.45.4"]
    })
    .unwrap_or_else(|d| panic!("a reconnected replica does not answer: {}", d.raw));
    eprintln!("MEASURE: network connect -> answer with it: {took:?}");
    // Stopped, then removed.
    docker(&["stop", "-t", "1", &api2]);
    let took = wait_dig(ns, Some(server), &api, "A", NAME_CHANGE, |d| {
        d.answers == ["10.213.45.3"]
    })
    .unwrap_or_else(|d| panic!("a stopped replica still answers: {}", d.raw));
    eprintln!("MEASURE: docker stop -> answer without it: {took:?}");
    fx.things.remove_container(&renamed);
    let took = wait_dig(ns, Some(server), &name(&renamed), "A", NAME_CHANGE, |d| {
        d.status == "NXDOMAIN"
    })
    .unwrap_or_else(|d| panic!("a removed container still answers: {}", d.raw));
    eprintln!("MEASURE: docker rm -> NXDOMAIN: {took:?}");
    // Started.
    let late = fx.things.web("late", Some(&net), Some("10.213.45.9"), &[]);
    let took = wait_dig(ns, Some(server), &name(&late), "A", NAME_CHANGE, |d| {
        d.answers == ["10.213.45.9"]
    })
    .unwrap_or_else(|d| panic!("a started container does not answer: {}", d.raw));
    eprintln!("MEASURE: docker run -> name answers: {took:?}");

    // status: the domain and its names.
    let st = fx.status_json();
    let dns = &st["dns"];
    assert_eq!(dns["state"], "serving", "{st:#}");
    assert_eq!(dns["domain"], "docker.internal");
    assert_eq!(dns["address"], format!("{server}:53"));
    assert_eq!(dns["resolver"], resolver_file.to_str().unwrap());
    let names: Vec<(String, Vec<String>)> = dns["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["addresses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    for (n, a) in [
        (&api, "10.213.45.3"),
        (&name(&late), "10.213.45.9"),
        (&name(&api1), "10.213.45.3"),
    ] {
        assert!(
            names
                .iter()
                .any(|(x, addrs)| x == n && addrs == &[a.to_string()]),
            "{n} -> {a} not in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|(x, _)| x.contains(&renamed)),
        "{names:?}"
    );
    let o = fx.nc(&["status"], Duration::from_secs(30));
    let t = text(&o);
    assert!(
        t.contains(&format!(
            "names:      *.docker.internal on {server}:53, {} names (resolver: {})",
            names.len(),
            resolver_file.display()
        )),
        "{t}"
    );

    // doctor: a container by name, then the resolver file gone.
    let (ok, t) = doctor(&fx, &[]);
    assert!(ok, "{t}");
    assert!(
        t.lines().any(
            |l| l.starts_with("ok    names: ") && l.contains("through this machine's resolver")
        ),
        "{t}"
    );
    let kept = fs::read_to_string(&resolver_file).unwrap();
    fs::remove_file(&resolver_file).unwrap();
    let t = doctor_fails_at(&fx, "names", "a missing resolver file");
    assert!(
        t.contains(&format!(
            "resolver file missing: {}",
            resolver_file.display()
        )),
        "{t}"
    );
    fs::write(&resolver_file, kept).unwrap();

    // A crash leaves the file; `down` removes it.
    fx.up()
        .stop_with(SIGKILL, Duration::from_secs(5))
        .expect("up survived SIGKILL");
    assert!(resolver_file.exists());
    let o = fx.nc(&["down", "--config", cfg.to_str().unwrap()], DOWN);
    let out = text(&o);
    assert!(o.status.success(), "down failed: {out}");
    assert!(
        out.contains(&format!(
            "removed resolver file {}",
            resolver_file.display()
        )),
        "{out}"
    );
    assert!(!resolver_file.exists(), "resolver file left after down");
}

/// Every file of the archive at `path`, unpacked into `into`, by name.
fn unpack(path: &str, into: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    fs::create_dir_all(into).unwrap();
    let o = Command::new("tar")
        .args(["-xzf", path, "-C"])
        .arg(into)
        .output()
        .unwrap();
    assert!(o.status.success(), "tar -xzf {path}: {}", text(&o));
    let mut out = Vec::new();
    let mut dirs = vec![into.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `netconnect bugreport` while `up` runs: one archive with every section,
/// the daemon's and the helper's private keys in none of them (in either
/// form), and as uid 65534 an archive still, naming what it could not read.
#[test]
fn docker_bugreport_holds_every_section_and_no_private_key() {
    use base64::Engine as _;
    const SECTIONS: [&str; 11] = [
        "doctor.txt",
        "engine.json",
        "helper.txt",
        "interface.txt",
        "log.txt",
        "missing.txt",
        "os.txt",
        "resolver.txt",
        "routes.txt",
        "status.json",
        "version.txt",
    ];
    let mut fx = Fx::new(47);
    let net = fx.things.network("net47", "10.213.47.0/24", &[]);
    let c = fx.things.web("web47", Some(&net), Some("10.213.47.2"), &[]);
    fx.start_up(&[]);
    fx.curl_ok("10.213.47.2", &c, FIRST_CURL);

    // The private keys there are: the daemon's never leaves its memory
    // (`up` serves no UAPI and writes no key file), so it is checked by
    // shape below; the helper's is in its key volume (base64).
    let b64 = base64::engine::general_purpose::STANDARD;
    let mounts = inspect(&fx.vm.helper_name())["Mounts"].clone();
    let source = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/var/lib/netconnect")
        .and_then(|m| m["Source"].as_str())
        .unwrap_or_else(|| panic!("no key volume in {mounts}"))
        .to_string();
    let helper_b64 = fs::read_to_string(PathBuf::from(source).join("vm.key"))
        .unwrap()
        .trim()
        .to_string();
    let helper_hex = hex::encode(b64.decode(&helper_b64).unwrap());
    let secrets = [helper_b64, helper_hex];
    let publics = [
        helper_public_key(&fx.vm),
        fx.status_json()["tunnel"]["host_public_key"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    // No helper key in either form, and no WireGuard key at all (44
    // characters of base64 that decode to 32 bytes) but the two public ones.
    let no_secret = |files: &[(String, Vec<u8>)]| {
        for (name, body) in files {
            let body = String::from_utf8_lossy(body);
            for s in &secrets {
                assert!(
                    !body.contains(s.as_str()),
                    "the helper's private key in {name}:\n{body}"
                );
            }
            for w in body.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c))) {
                let key = w.len() == 44 && b64.decode(w).is_ok_and(|k| k.len() == 32);
                assert!(
                    !key || publics.iter().any(|p| p == w),
                    "a key that is neither public key in {name}: {w}\n{body}"
                );
            }
        }
    };

    // As root: every section, each with what it is about.
    let out = fx.dir.join("report-root");
    fs::create_dir_all(&out).unwrap();
    let o = fx.nc(
        &["bugreport", "--output", out.to_str().unwrap()],
        Duration::from_secs(120),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let path = t
        .split_whitespace()
        .find(|w| w.ends_with(".tar.gz"))
        .unwrap_or_else(|| panic!("no archive path printed: {t}"))
        .to_string();
    let files = unpack(&path, &fx.dir.join("unpacked-root"));
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    // This `up` runs in the foreground, its log on the harness's pipe: no
    // journal unit, no service log file, so the log is the one section
    // that may be named missing instead (with where it looked).
    let want: Vec<&str> = SECTIONS
        .iter()
        .copied()
        .filter(|s| *s != "log.txt" || names.contains(s))
        .collect();
    assert_eq!(names, want, "{t}");
    let get = |n: &str| {
        String::from_utf8_lossy(&files.iter().find(|(f, _)| f == n).unwrap().1).into_owned()
    };
    let status: Value = serde_json::from_str(&get("status.json")).unwrap();
    assert_eq!(status["running"], true);
    let host_public = status["tunnel"]["host_public_key"].as_str().unwrap();
    assert_eq!(host_public.len(), 44, "the public key is kept");
    assert!(
        get("interface.txt").contains("10.33.33.1 --> 10.33.33.2"),
        "{}",
        get("interface.txt")
    );
    assert!(
        get("routes.txt").contains("10.213.47.0/24"),
        "{}",
        get("routes.txt")
    );
    assert!(
        get("engine.json").contains("ServerVersion"),
        "{}",
        get("engine.json")
    );
    assert!(
        get("helper.txt").contains(&helper_image()),
        "{}",
        get("helper.txt")
    );
    assert!(
        get("doctor.txt").contains("ok    root"),
        "{}",
        get("doctor.txt")
    );
    assert!(
        get("version.txt").starts_with("netconnect "),
        "{}",
        get("version.txt")
    );

    if !names.contains(&"log.txt") {
        let missing = get("missing.txt");
        assert!(missing.contains("log.txt: "), "{missing}");
    }
    no_secret(&files);

    // As nobody: an archive still, and each section it could not read named.
    let out = std::env::temp_dir().join(format!("nc-bugreport-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
    let sock = fx.socket();
    let docker_host = format!("unix://{DOCKER_SOCK}");
    let o = fx
        .mac
        .ns
        .command(&[
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            netconnect_bin(),
            "--control-socket",
            sock.to_str().unwrap(),
            "bugreport",
            "--docker-host",
            &docker_host,
            "--interface",
            MAC_TUN,
            "--output",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "as uid 65534: {t}");
    let path = t
        .split_whitespace()
        .find(|w| w.ends_with(".tar.gz"))
        .unwrap_or_else(|| panic!("no archive path printed as uid 65534: {t}"))
        .to_string();
    let files = unpack(&path, &out.join("unpacked"));
    let missing = String::from_utf8_lossy(
        &files
            .iter()
            .find(|(f, _)| f == "missing.txt")
            .expect("missing.txt")
            .1,
    )
    .into_owned();
    // The engine's socket is root's (and its group's): named, with why.
    assert!(missing.contains("engine.json"), "{missing}");
    for s in SECTIONS {
        assert!(
            files.iter().any(|(f, _)| f == s) || missing.contains(s),
            "{s} neither in the archive nor named missing: {missing}"
        );
    }
    no_secret(&files);
    let _ = fs::remove_dir_all(&out);
}

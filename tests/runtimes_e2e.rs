//! `netconnect up` against engines other than the machine's dockerd:
//! - a Lima-like VM (a second dockerd in a namespace of its own, whose
//!   `host-gateway` is an address of the VM itself, as Colima's and
//!   Rancher Desktop's engines map it): `up`, given no `--host-endpoint`,
//!   must find the way home by itself and never keep the VM's own address;
//! - the real Podman, through its Docker-compatible API: networks, names,
//!   a network made later, the helper image loaded from the gzipped
//!   archive, `down`.
//!
//! Root, dockerd, podman (scripts/setup.sh); never skipped. Holds the
//! Docker tests' lock: the Podman helper changes the root namespace.
//! Subnets: Mac veth 10.212.N.0/24, the VM's link 10.216.N.0/24, its bridge
//! 10.217.N.0/24, Podman networks 10.218.N.0/24 and 10.218.(N+1).0/24.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use common::docker::*;
use common::*;

const FIRST_CURL: Duration = Duration::from_secs(90);

/// Waits until `status --json` has `vm.state` other than `searching`.
fn wait_way_home(mac: &MacNs, socket: &str, timeout: Duration) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let s = mac.status_json(socket);
        let state = s["vm"]["state"].as_str().unwrap_or("").to_string();
        if state == "found" || state == "none" || t0.elapsed() > timeout {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Colima's engine as it behaves: `host-gateway` is the VM's own address
/// (10.216.N.1), the VM's /etc/hosts names the Mac `host.lima.internal`,
/// and a stale `host.docker.internal` points where nothing answers. With
/// no `--host-endpoint`, the helper leaves host-gateway out, tries
/// host.docker.internal (no handshake), then host.lima.internal, and keeps
/// that one; a container on the VM's bridge answers from the Mac.
#[test]
fn colima_like_engine_host_gateway_is_the_vm_and_up_finds_the_way_home() {
    let _session = DockerSession::start();
    let n = 61;
    let mac = MacNs::new(n);
    let vm = LimaVm::start(
        &mac,
        n,
        "{net}.99 host.docker.internal\n{mac} host.lima.internal lima-host",
    );
    let (web, ip) = vm.web("web");
    assert!(ip.starts_with(&format!("10.217.{n}.")), "web at {ip}");
    let vm_if = format!("{}v", unique_ifname_stem());
    let socket = format!("/tmp/netconnect-e2e-{vm_if}.sock");
    let args: Vec<String> = [
        "up",
        "--docker-host",
        &vm.host(),
        "--listen-port",
        "0",
        "--interface",
        MAC_TUN,
        "--vm-interface",
        &vm_if,
        "--helper-image",
        &helper_image(),
        "--helper-archive",
        helper_archive().to_str().unwrap(),
        "--control-socket",
        &socket,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut up = UpProcess::spawn(&mac, &args);
    let diag = |up: &UpProcess| {
        format!(
            "up log:\n{}\nhelper:\n{}",
            up.log(),
            vm.logs(&format!("netconnect-helper-{vm_if}"))
        )
    };
    if let Err(e) = wait_curl(&mac.ns, &ip, &web, FIRST_CURL) {
        panic!("{e}\n{}", diag(&up));
    }
    let s = wait_way_home(&mac, &socket, Duration::from_secs(20));
    let vm_state = &s["vm"];
    assert_eq!(vm_state["state"], "found", "{s:#}\n{}", diag(&up));
    assert_eq!(vm_state["endpoint_source"], "host.lima.internal", "{s:#}");
    let endpoint = vm_state["endpoint"].as_str().unwrap();
    assert!(
        endpoint.starts_with(&format!("{}:", vm.mac_addr)),
        "endpoint {endpoint}, the Mac is {}",
        vm.mac_addr
    );
    // The VM's own address was never a candidate, and the one that did
    // not answer was tried and left.
    assert_eq!(
        vm_state["rejected"],
        serde_json::json!([format!("{} (host-gateway)", vm.addr)]),
        "{s:#}"
    );
    let helper_err = vm.logs(&format!("netconnect-helper-{vm_if}"));
    assert!(
        helper_err.contains(&format!("10.216.{n}.99"))
            && helper_err.contains("no handshake through this address"),
        "host.docker.internal was not tried first:\n{helper_err}"
    );
    assert!(
        !helper_err.contains(&format!(
            "trying the way to the host side endpoint={}:",
            vm.addr
        )),
        "the VM's own address was tried:\n{helper_err}"
    );
    assert_eq!(s["engine"]["runtime"], "dockerd", "{s:#}");
    let text = mac
        .ns
        .ok(&[netconnect_bin(), "--control-socket", &socket, "status"]);
    assert!(
        text.contains(&format!(
            "way home:   the VM sends to {endpoint} (host.lima.internal)"
        )),
        "{text}"
    );
    let st = up.terminate(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "up did not stop cleanly\n{}",
        diag(&up)
    );
    assert_eq!(
        vm.docker(&["ps", "-a", "--format", "{{.Names}}"]).trim(),
        web,
        "the helper outlived up"
    );
}

/// Podman's Docker-compatible API, end to end: the helper image loaded
/// into Podman from the gzipped archive, a container on a Podman network
/// reached by IP and by name, a network made later followed (Podman 4.3
/// sends no network events: its first container's start is the cue), the
/// runtime named, and `down` leaving Podman and the VM as they were.
#[test]
fn podman_engine_reaches_containers_by_ip_and_name_and_down_leaves_it_clean() {
    let _session = DockerSession::start();
    let n = 62;
    let podman = Podman::start();
    podman.ensure_busybox();
    // The helper comes from the archive, as on a Mac with Homebrew's.
    let _ = podman.try_cmd(&["rmi", "-f", &helper_image()]);
    let mac = MacNs::new(n);
    let vm = VmSide::new();
    let before_containers = podman.containers();
    let rules_before = netconnect_rules(&vm.vm_if).len();
    assert_eq!(rules_before, 0);

    let net = podman.network("pnet1", &format!("10.218.{n}.0/24"));
    let web = podman.web("pweb1", &net, &format!("10.218.{n}.2"));
    let mut args = up_args(&mac, &vm);
    set_arg(&mut args, "--docker-host", &podman.host());
    args.extend([
        "--helper-archive".into(),
        helper_archive().to_str().unwrap().into(),
    ]);
    let socket = args[args.iter().position(|a| a == "--control-socket").unwrap() + 1].clone();
    let mut up = UpProcess::spawn(&mac, &args);
    let diag = |up: &UpProcess| {
        format!(
            "up log:\n{}\nhelper:\n{}",
            up.log(),
            podman
                .try_cmd(&["logs", &vm.helper_name()])
                .unwrap_or_else(|e| e)
        )
    };
    let ip = format!("10.218.{n}.2");
    if let Err(e) = wait_curl(&mac.ns, &ip, &web, FIRST_CURL) {
        panic!("{e}\n{}", diag(&up));
    }
    assert!(
        up.log()
            .contains("helper image missing; loading it from the archive"),
        "{}",
        diag(&up)
    );
    // By name, from up's name server.
    let name = format!("{web}.docker.internal");
    if let Err(d) = wait_dig(
        &mac.ns,
        Some("10.33.33.1"),
        &name,
        "A",
        Duration::from_secs(10),
        |d| d.answers == [ip.clone()],
    ) {
        panic!("{name}: {}\n{}", d.raw, diag(&up));
    }

    let s = wait_way_home(&mac, &socket, Duration::from_secs(20));
    assert_eq!(s["engine"]["runtime"], "podman", "{s:#}");
    assert_eq!(s["vm"]["endpoint_source"], "--host-endpoint", "{s:#}");

    // A network made later, and a container on it.
    let net2 = podman.network("pnet2", &format!("10.218.{}.0/24", n + 1));
    let web2 = podman.web("pweb2", &net2, &format!("10.218.{}.2", n + 1));
    let subnet2 = format!("10.218.{}.0/24", n + 1);
    if let Err(e) = mac.wait_route(&subnet2, true, Duration::from_secs(10)) {
        panic!("{e}\n{}", diag(&up));
    }
    if let Err(e) = wait_curl(
        &mac.ns,
        &format!("10.218.{}.2", n + 1),
        &web2,
        Duration::from_secs(20),
    ) {
        panic!("{e}\n{}", diag(&up));
    }

    // A container that stops loses its name: Podman 4.3's die events
    // arrive only when asked for by its own name, `died`.
    let name2 = format!("{web2}.docker.internal");
    if let Err(d) = wait_dig(
        &mac.ns,
        Some("10.33.33.1"),
        &name2,
        "A",
        Duration::from_secs(10),
        |d| d.answers == [format!("10.218.{}.2", n + 1)],
    ) {
        panic!("{name2}: {}\n{}", d.raw, diag(&up));
    }
    podman.cmd(&["stop", "-t", "0", &web2]);
    if let Err(d) = wait_dig(
        &mac.ns,
        Some("10.33.33.1"),
        &name2,
        "A",
        Duration::from_secs(10),
        |d| d.status == "NXDOMAIN",
    ) {
        panic!(
            "{name2} still answers after the container stopped: {}\n{}",
            d.raw,
            diag(&up)
        );
    }

    // The default network (Podman lists `podman` as `bridge`) is routed.
    let routes = &s["networks"];
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["subnet"] == "10.88.0.0/16" && r["route"] == "installed"),
        "Podman's default network is not routed: {routes:#}"
    );

    // doctor against Podman: every link, its one-shot helpers included.
    let o = mac
        .ns
        .exec_timeout(
            &[
                netconnect_bin(),
                "--control-socket",
                &socket,
                "doctor",
                "--docker-host",
                &podman.host(),
                "--interface",
                MAC_TUN,
                "--vm-interface",
                &vm.vm_if,
                "--helper-image",
                &helper_image(),
            ],
            Duration::from_secs(90),
        )
        .unwrap_or_else(|e| panic!("doctor: {e}"));
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "doctor against Podman failed:\n{t}\n{}",
        diag(&up)
    );
    assert!(t.contains("ok    runtime: podman"), "{t}");

    // `down` against Podman: up stops, and nothing of ours is left.
    let o = mac.ns.exec(&[
        netconnect_bin(),
        "--control-socket",
        &socket,
        "down",
        "--docker-host",
        &podman.host(),
        "--vm-interface",
        &vm.vm_if,
        "--helper-image",
        &helper_image(),
    ]);
    assert!(
        o.status.success(),
        "down failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let st = up.wait_exit(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "up did not stop after down\n{}",
        diag(&up)
    );
    let mut after = podman.containers();
    after.retain(|c| c != &web && c != &web2);
    assert_eq!(after, before_containers, "down left containers in Podman");
    assert!(!vm.link_exists(), "the VM interface {} is left", vm.vm_if);
    assert!(
        netconnect_rules(&vm.vm_if).is_empty(),
        "rules left: {:?}",
        netconnect_rules(&vm.vm_if)
    );
    for subnet in [format!("10.218.{n}.0/24"), subnet2] {
        assert_eq!(mac.route_for(&subnet), None, "route for {subnet} left");
    }
    assert!(!mac.links().iter().any(|l| l == MAC_TUN), "tunnel left");
}

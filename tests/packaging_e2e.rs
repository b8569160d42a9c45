//! End-to-end tests of what issue 5 adds to `netconnect up`, against the
//! real engine, with the harness of `docker_e2e.rs` (same lock, same
//! fixtures, same rules: root, a running dockerd, never a silent skip):
//!
//! - the helper image shipped as an archive (`packaging/build-helper-image.sh`)
//!   is loaded into an engine that lacks it, and traffic flows;
//! - on Linux, `up` next to the engine (root namespace, where dockerd's
//!   bridges are local) says in one line that there is nothing to do and
//!   exits 0 without creating anything. The other direction, the engine
//!   elsewhere, is every test in `docker_e2e.rs` (`up` in a Mac namespace).
//!
//! Subnets: 10.212.21.0/24 for the Mac namespace.

// The test bed is Linux network namespaces (setns, prctl, veth): on macOS
// this file builds to nothing, so `cargo test --no-run` links there too.
#![cfg(target_os = "linux")]

use std::process::{Command, Stdio};
use std::time::Duration;

use common::docker::*;
use common::*;

/// A static release build (usually cached), `docker build`, `docker save | gzip`.
const ARCHIVE_BUILD: Duration = Duration::from_secs(20 * 60);

/// Puts the helper image back from the archive if a test left it missing,
/// so the other Docker tests find it.
/// The tag `packaging/build-helper-image.sh` gives the image it archives:
/// what users' `up` looks for.
fn shipped_image() -> String {
    format!("netconnect-helper:{}", env!("CARGO_PKG_VERSION"))
}

struct RestoreImage(std::path::PathBuf);

impl Drop for RestoreImage {
    fn drop(&mut self) {
        if docker_try(&["image", "inspect", &shipped_image()]).is_err() {
            let _ = docker_try(&["load", "-i", self.0.to_str().unwrap()]);
        }
    }
}

#[test]
fn docker_up_loads_the_shipped_helper_archive_when_the_image_is_missing() {
    let _session = DockerSession::start();
    let dir = TempDir::new("archive");
    let archive = dir.join("netconnect-helper.tar.gz");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_timeout(
        Command::new("bash")
            .arg(root.join("packaging/build-helper-image.sh"))
            .arg(&archive)
            .current_dir(root),
        ARCHIVE_BUILD,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "packaging/build-helper-image.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        archive.to_str().unwrap(),
        "the script does not print the archive's path"
    );
    let gz = std::fs::read(&archive).unwrap();
    assert_eq!(&gz[..2], b"\x1f\x8b", "the archive is not gzip");

    // Fixtures drop before the image is restored (declared after it).
    let _restore = RestoreImage(archive.clone());
    let mac = MacNs::new(21);
    let vm = VmSide::new();
    let things = DockerThings::new();
    let web = things.web("web0", None, None, &[]);
    let ip = container_ip(&web, "bridge");

    docker(&["image", "rm", "-f", &shipped_image()]);
    assert!(docker_try(&["image", "inspect", &shipped_image()]).is_err());

    // The archive holds the product's tag, not the e2e harness's
    // per-source tag that up_args names.
    let mut args = up_args(&mac, &vm);
    let i = args.iter().position(|a| a == "--helper-image").unwrap();
    args[i + 1] = shipped_image();
    args.extend(["--helper-archive".into(), archive.to_str().unwrap().into()]);
    // By hand, at a terminal: the first start shows its progress.
    let mut up = UpProcess::spawn_on_terminal(&mac, &args);
    let t = wait_curl(&mac.ns, &ip, &web, Duration::from_secs(90)).unwrap_or_else(|e| {
        panic!(
            "{e}\nup's log:\n{}\nhelper logs: {:?}",
            up.log(),
            vm.helper_logs()
        )
    });
    eprintln!("MEASURE: spawn of `up` with the image missing -> first curl: {t:?}");
    up.wait_log("Ready: traffic can flow", 1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let log = up.log();
    eprintln!("up at a terminal wrote:\n{log:?}");
    // Each stage, in order, as a line of its own once done; the load as
    // a byte count while it runs.
    let stages = [
        "✔ dockerd engine ",
        &format!("✔ Tunnel {MAC_TUN} up: 10.33.33.1 to 10.33.33.2, UDP port "),
        &format!(
            "Loading the helper image {} from {}",
            shipped_image(),
            archive.display()
        ),
        &format!("✔ Helper image {} loaded (", shipped_image()),
        "✔ VM-side helper running (userspace WireGuard)",
        "✔ Handshake with the VM side (",
        "✔ Ready: traffic can flow; ",
    ];
    let mut at = 0;
    for stage in stages {
        match log[at..].find(stage) {
            Some(i) => at += i + stage.len(),
            None => panic!("no {stage:?} after the stages before it:\n{log}"),
        }
    }
    let load = &log[log.find("Loading the helper image").unwrap()..];
    let load = &load[..load.find("✔ Helper image").unwrap()];
    assert!(
        load.contains("iB/") && load.contains("\x1b[2K"),
        "no byte count redrawn while the archive loaded:\n{load:?}"
    );
    assert_eq!(log.matches("Ready: traffic can flow").count(), 1, "{log}");
    // NO_COLOR (set by the harness) holds on a terminal too.
    assert!(
        !log.contains("\x1b[32m"),
        "coloured despite NO_COLOR:\n{log:?}"
    );
    // What progress shows is not logged a second time.
    assert!(
        !log.contains("netconnect::progress")
            && !log.contains("connected to Docker")
            && !log.contains("listening")
            && !log.contains("helper image missing; loading it from the archive")
            && !log.contains("ready: traffic can flow"),
        "progress and log both tell the story:\n{log}"
    );
    assert!(
        docker_try(&["image", "inspect", &shipped_image()]).is_ok(),
        "the image is still missing after up loaded it"
    );
    // After the ready line the log is the log again: a helper started
    // anew is a log line, not a progress line.
    docker(&["rm", "-f", &vm.helper_name()]);
    up.wait_log(
        "netconnect::progress: VM-side helper running",
        1,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let st = up.terminate(Duration::from_secs(5));
    assert!(st.is_some_and(|s| s.success()), "up did not stop cleanly");
    // The copy from the terminal may trail the exit a little.
    let t0 = std::time::Instant::now();
    while !up.log().contains("tunnel removed") && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = up.log();
    let after = &log[log.find("✔ Ready").unwrap()..];
    assert!(
        after.contains("shutting down") && after.contains("tunnel removed"),
        "no log after the ready line:\n{after}"
    );
}

#[test]
fn docker_up_next_to_the_engine_does_nothing_and_exits_0() {
    // The lock: if the check failed, this `up` would change the root namespace.
    let _session = DockerSession::start();
    let vm = VmSide::new();
    let tun = format!("{}h", unique_ifname_stem());
    let mut c = Command::new(netconnect_bin());
    c.args([
        "up",
        "--docker-host",
        &format!("unix://{DOCKER_SOCK}"),
        "--interface",
        &tun,
        "--vm-interface",
        &vm.vm_if,
        "--helper-image",
        &helper_image(),
    ])
    .env_remove("DOCKER_HOST")
    .env_remove("NETCONNECT_LOG")
    .env("NO_COLOR", "1")
    .stdin(Stdio::null());
    let out = run_timeout(&mut c, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("exit {}; stderr:\n{err}", out.status);
    assert!(
        out.status.success(),
        "exit {} next to the engine",
        out.status
    );
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("already reachable"))
        .collect();
    assert_eq!(said.len(), 1, "not said in one line: {err}");
    assert!(
        said[0].contains("nothing to do") && said[0].contains("--force"),
        "{}",
        said[0]
    );
    assert_eq!(
        nonempty_lines(&err).last().copied(),
        Some(said[0]),
        "something happened after the decision: {err}"
    );
    assert!(
        !host(&["ip", "link", "show", "dev", &tun]).status.success(),
        "interface {tun} was created"
    );
    assert!(vm.helper_id().is_none(), "a helper container was created");
    assert!(!vm.link_exists(), "a VM-side interface was created");
}

/// What the demo may leave: nothing of its names (`ncdemo*` interfaces and
/// rules, the `nc-demo-mac` namespace, its containers and network).
fn demo_traces() -> Vec<String> {
    let mut out = Vec::new();
    let named = |text: String, out: &mut Vec<String>, what: &str| {
        out.extend(
            text.lines()
                .filter(|l| l.contains("ncdemo") || l.contains("nc-demo"))
                .map(|l| format!("{what}: {l}")),
        )
    };
    named(host_ok(&["ip", "-o", "link"]), &mut out, "link");
    named(host_ok(&["ip", "netns", "list"]), &mut out, "netns");
    named(host_ok(&["iptables-save"]), &mut out, "rule");
    named(host_ok(&["ip6tables-save"]), &mut out, "rule6");
    named(host_ok(&["ip", "route"]), &mut out, "route");
    named(
        docker(&["ps", "-a", "--format", "{{.Names}}"]),
        &mut out,
        "container",
    );
    named(
        docker(&["network", "ls", "--format", "{{.Name}}"]),
        &mut out,
        "network",
    );
    out
}

/// README's main job, as written: `scripts/demo-up.sh` reaches a
/// container by IP from the "Mac", shows status and doctor, tears down
/// with `netconnect down`, and leaves nothing of its own behind (it also
/// clears what an interrupted earlier run left, before it starts).
#[test]
fn docker_demo_up_script_works_as_the_readme_says() {
    let _session = DockerSession::start();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_timeout(
        Command::new("bash")
            .arg(root.join("scripts/demo-up.sh"))
            .current_dir(root)
            .env_remove("NETCONNECT_LOG_FORMAT")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null()),
        ARCHIVE_BUILD,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "demo-up.sh failed ({})", out.status);
    for said in [
        "curl http://10.213.250.2/ -> no route, as on a Mac",
        "ready: traffic can flow",
        "reached by IP",
        "10.213.250.0/24 dev ncdemo proto static",
        "nc-demo-net  10.213.250.0/24  installed",
        "ok    probe: container nc-demo-web (10.213.250.2) answers through the tunnel",
        "healthy: every link from here to the containers works",
        // 4 rules on this engine; 6 where the VM has IPv6 DOCKER-USER too.
        "vm: total: rules=",
        "netconnect down: done",
    ] {
        assert!(text.contains(said), "the demo did not show {said:?}");
    }
    assert_eq!(
        demo_traces(),
        Vec::<String>::new(),
        "the demo left these behind"
    );
}

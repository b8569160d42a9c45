//! A KinD cluster stood in for, since no Kubernetes can run here: node
//! containers labelled as KinD labels them on a kind-like network, each
//! holding its pod range's addresses on an interface of its own as a node holds
//! its pods' (the VM must route the range to the node, or nothing
//! answers); a control plane whose `kubectl` prints what a real cluster
//! printed (`tests/kube/kind-objects.json`, the article's two-node
//! cluster) and whose apiserver manifest is kubeadm's
//! (`tests/kube/kind-flags.txt`), with the node addresses of this network
//! put in; kube-proxy's DNAT and masquerade for two ClusterIPs in the
//! control plane (real iptables); and dnsmasq on CoreDNS's pod address
//! behind the DNS ClusterIP (real DNS on the wire).
//!
//! The recorded cluster's ranges stay as recorded: pods 10.244.0.0/24
//! (control plane) and 10.244.1.0/24 (worker), services 10.96.0.0/16,
//! DNS 10.96.0.10, `sampleservice` 10.96.28.96.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::commands::docker_try;
use super::images::{ensure_node_image, NODE_IMAGE};
use super::things::{container_running, DockerThings};
use crate::cargo::repo_root;
use crate::names::TempDir;

/// The recorded cluster's addresses, and what stands behind them.
pub const POD_WEB: &str = "10.244.1.7";
pub const COREDNS_POD: &str = "10.244.0.2";
pub const DNS_SERVICE: &str = "10.96.0.10";
pub const SAMPLE_SERVICE: &str = "10.96.28.96";
pub const SAMPLE_NAME: &str = "sampleservice.default.svc.cluster.local";
pub const POD_RANGES: [&str; 2] = ["10.244.0.0/24", "10.244.1.0/24"];
pub const SERVICE_RANGE: &str = "10.96.0.0/16";
/// What the pod behind the worker answers.
pub const POD_WEB_ANSWER: &str = "pod-web-on-the-worker";

/// The recorded node addresses, replaced by this network's.
const RECORDED_CONTROL_PLANE: &str = "172.18.0.3";
const RECORDED_WORKER: &str = "172.18.0.2";

pub struct StandInCluster {
    /// The cluster's name (the label's value).
    pub name: String,
    pub network: String,
    pub control_plane: String,
    pub worker: String,
    pub control_plane_ip: String,
    pub worker_ip: String,
    _files: TempDir,
}

/// Node containers (NET_ADMIN for their interfaces and rules, forwarding
/// on as in every node; not privileged) on a new network `PREFIX.0/24`,
/// control plane at `.3`, worker at `.2`, as in the article.
pub fn stand_in_kind(things: &DockerThings, name: &str, prefix: &str) -> StandInCluster {
    ensure_node_image();
    let network = things.network("kind", &format!("{prefix}.0/24"), &[]);
    let (cp_ip, worker_ip) = (format!("{prefix}.3"), format!("{prefix}.2"));
    let files = TempDir::new("kind-files");
    let put = |from: &str| {
        fs::read_to_string(repo_root().join("tests/kube").join(from))
            .unwrap_or_else(|e| panic!("tests/kube/{from}: {e}"))
            .replace(RECORDED_CONTROL_PLANE, &cp_ip)
            .replace(RECORDED_WORKER, &worker_ip)
    };
    fs::write(files.join("objects.json"), put("kind-objects.json")).unwrap();
    fs::write(files.join("kube-apiserver.yaml"), put("kind-flags.txt")).unwrap();
    fs::write(files.join("admin.conf"), "apiVersion: v1\nkind: Config\n").unwrap();
    let kubectl = files.join("kubectl");
    fs::write(
        &kubectl,
        "#!/bin/sh\n# kubectl as the recorded cluster answered it.\n\
         [ \"$1\" = --kubeconfig ] && [ -r \"$2\" ] || { echo 'error: no kubeconfig' >&2; exit 1; }\n\
         exec cat /kube/objects.json\n",
    )
    .unwrap();
    fs::set_permissions(&kubectl, fs::Permissions::from_mode(0o755)).unwrap();
    let mount = |from: &Path, to: &str| format!("{}:{to}:ro", from.display());
    let labels = |role: &str| {
        vec![
            "--label".to_string(),
            format!("io.x-k8s.kind.cluster={name}"),
            "--label".to_string(),
            format!("io.x-k8s.kind.role={role}"),
        ]
    };
    let node = |role: &str, ip: &str, extra: Vec<String>, script: String| {
        let mut args: Vec<String> = vec![
            "--init".into(),
            "--network".into(),
            network.clone(),
            "--ip".into(),
            ip.into(),
            "--cap-add".into(),
            "NET_ADMIN".into(),
            "--sysctl".into(),
            "net.ipv4.ip_forward=1".into(),
        ];
        args.extend(labels(role));
        args.extend(extra);
        args.extend([NODE_IMAGE.into(), "sh".into(), "-c".into(), script]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        things.run(role, &args)
    };
    // On the node's loopback: this kernel has no dummy links, and what
    // counts is that the address lives in the node and nowhere else.
    let pod = |addr: &str| format!("ip addr add {addr}/32 dev lo");
    // Kindnet's route to the worker's pods; kube-proxy's rules: the DNS
    // Service to CoreDNS here, sampleservice to the pod on the worker,
    // masqueraded when the client is not a pod (`--cluster-cidr`).
    let cp_script = [
        pod(COREDNS_POD),
        format!("ip route add {} via {worker_ip}", POD_RANGES[1]),
        format!("iptables -t nat -A PREROUTING -d {DNS_SERVICE}/32 -p udp --dport 53 -j DNAT --to-destination {COREDNS_POD}:53"),
        format!("iptables -t nat -A PREROUTING -d {SAMPLE_SERVICE}/32 -p tcp --dport 80 -j DNAT --to-destination {POD_WEB}:80"),
        format!("iptables -t nat -A POSTROUTING -d {} ! -s 10.244.0.0/16 -j MASQUERADE", POD_RANGES[1]),
        format!(
            "exec dnsmasq --keep-in-foreground --no-resolv --no-hosts --pid-file= --user=root \
             --bind-interfaces --listen-address={COREDNS_POD} --local=/cluster.local/ \
             --address=/{SAMPLE_NAME}/{SAMPLE_SERVICE}"
        ),
    ]
    .join(" && ");
    let cp_mounts = vec![
        "-v".to_string(),
        mount(&kubectl, "/usr/local/bin/kubectl"),
        "-v".into(),
        mount(&files.join("objects.json"), "/kube/objects.json"),
        "-v".into(),
        mount(
            &files.join("kube-apiserver.yaml"),
            "/etc/kubernetes/manifests/kube-apiserver.yaml",
        ),
        "-v".into(),
        mount(&files.join("admin.conf"), "/etc/kubernetes/admin.conf"),
    ];
    let control_plane = node("control-plane", &cp_ip, cp_mounts, cp_script);
    let worker_script = [
        pod(POD_WEB),
        "mkdir -p /www".to_string(),
        format!("echo {POD_WEB_ANSWER} > /www/index.html"),
        format!("exec httpd -f -p {POD_WEB}:80 -h /www"),
    ]
    .join(" && ");
    let worker = node("worker", &worker_ip, vec![], worker_script);
    // Their scripts ran to their servers, or the test would wait for
    // nothing.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for n in [&control_plane, &worker] {
        assert!(
            container_running(n),
            "stand-in node {n} stopped: {}",
            docker_try(&["logs", n]).unwrap_or_default()
        );
    }
    StandInCluster {
        name: name.to_owned(),
        network,
        control_plane,
        worker,
        control_plane_ip: cp_ip,
        worker_ip,
        _files: files,
    }
}

//! The parsers against output in the real formats: `kubectl get
//! nodes,services --all-namespaces -o json` of the article's two-node KinD
//! cluster (v1.29.2; long fields such as managedFields, images and
//! conditions cut, every field read here kept as kubectl prints it), the
//! static pod manifests and kubelet config kubeadm writes in a KinD node,
//! and k3s's PID 1 arguments in a k3d node.

use super::*;

pub const KIND_OBJECTS: &str = include_str!("../../tests/kube/kind-objects.json");

/// `cat` of the two manifests and the kubelet config in a KinD node
/// (kubeadm v1.29; the flags' order and indentation are kubeadm's).
pub const KIND_FLAGS: &str = include_str!("../../tests/kube/kind-flags.txt");

fn container(name: &str, labels: &[(&str, &str)], address: &str) -> ContainerInfo {
    ContainerInfo {
        id: format!("id-{name}"),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        addresses: vec![address.parse().unwrap()],
        ..Default::default()
    }
}

fn kind_node(name: &str, role: &str, address: &str) -> ContainerInfo {
    container(
        name,
        &[
            ("io.x-k8s.kind.cluster", "kind"),
            ("io.x-k8s.kind.role", role),
        ],
        address,
    )
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn kind_id() -> ClusterId {
    ClusterId {
        flavor: Flavor::Kind,
        name: "kind".into(),
    }
}

#[test]
fn kubectls_json_gives_nodes_their_pod_ranges_and_the_services_we_need() {
    let o = parse_objects(KIND_OBJECTS).unwrap();
    assert_eq!(
        o.nodes,
        vec![
            Node {
                name: "kind-control-plane".into(),
                internal_ips: vec![ip("172.18.0.3")],
                pod_cidrs: vec![net("10.244.0.0/24")],
            },
            Node {
                name: "kind-worker".into(),
                internal_ips: vec![ip("172.18.0.2")],
                pod_cidrs: vec![net("10.244.1.0/24")],
            },
        ]
    );
    assert_eq!(o.kubernetes, vec![ip("10.96.0.1")]);
    assert_eq!(o.dns, vec![ip("10.96.0.10")]);
}

#[test]
fn a_node_without_a_pod_range_and_a_headless_service_are_left_out_not_errors() {
    let json = r#"{"apiVersion":"v1","kind":"List","items":[
        {"kind":"Node","metadata":{"name":"kind-worker2"},"spec":{"providerID":"kind://docker/kind/kind-worker2"},
         "status":{"addresses":[{"address":"172.18.0.4","type":"InternalIP"},{"address":"kind-worker2","type":"Hostname"}]}},
        {"kind":"Node","metadata":{"name":"old"},"spec":{"podCIDR":"10.244.9.0/24"},"status":{}},
        {"kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system"},"spec":{"clusterIP":"None"}}
    ]}"#;
    let o = parse_objects(json).unwrap();
    assert_eq!(o.nodes[0].name, "kind-worker2");
    assert!(o.nodes[0].pod_cidrs.is_empty());
    assert_eq!(o.nodes[0].internal_ips, vec![ip("172.18.0.4")]);
    // podCIDR alone (before podCIDRs existed) still counts.
    assert_eq!(o.nodes[1].pod_cidrs, vec![net("10.244.9.0/24")]);
    assert!(o.dns.is_empty());
}

#[test]
fn what_is_not_a_list_is_an_error_that_says_so() {
    assert!(matches!(parse_objects(""), Err(ParseError::Json(_))));
    assert!(matches!(
        parse_objects("The connection to the server 127.0.0.1:6443 was refused"),
        Err(ParseError::Json(_))
    ));
    assert_eq!(
        parse_objects(r#"{"kind":"Status","apiVersion":"v1"}"#),
        Err(ParseError::NotAList("Status".into()))
    );
}

#[test]
fn kubeadms_manifests_and_the_kubelet_config_give_the_ranges_and_the_domain() {
    assert_eq!(
        parse_flags(KIND_FLAGS),
        Flags {
            services: vec![net("10.96.0.0/16")],
            pods: vec![net("10.244.0.0/16")],
            domain: Some("cluster.local".into()),
        }
    );
}

#[test]
fn k3s_arguments_and_config_file_give_them_too_dual_stack_included() {
    // /proc/1/cmdline of a k3d server node made with
    // `--k3s-arg --cluster-cidr=...@server:*`, then its config file.
    let cmdline = "/bin/k3s\0server\0--tls-san\x000.0.0.0\0--tls-san\0k3d-dev-serverlb\0\
                   --cluster-cidr=10.42.0.0/16,fd00:42::/56\0--cluster-domain\0dev.local\0";
    let config = "cluster-init: true\nservice-cidr: \"10.43.0.0/16,fd00:43::/112\"\n";
    let f = parse_flags(&format!("{cmdline}{config}"));
    assert_eq!(f.pods, vec![net("10.42.0.0/16"), net("fd00:42::/56")]);
    assert_eq!(f.services, vec![net("10.43.0.0/16"), net("fd00:43::/112")]);
    assert_eq!(f.domain.as_deref(), Some("dev.local"));
    // Nothing said: nothing made up.
    assert_eq!(parse_flags("/bin/k3s\0server\0"), Flags::default());
    // A domain that is not one is not taken.
    assert_eq!(parse_flags("clusterDomain: bad_domain\n").domain, None);
}

#[test]
fn without_the_flag_the_service_range_comes_from_the_kubernetes_service() {
    assert_eq!(
        Flavor::K3d.default_services(ip("10.43.0.1")),
        net("10.43.0.0/16")
    );
    assert_eq!(
        Flavor::Kind.default_services(ip("10.96.0.1")),
        net("10.96.0.0/16")
    );
    assert_eq!(
        Flavor::Kind.default_services(ip("10.100.0.1")),
        net("10.100.0.0/16")
    );
    assert_eq!(
        Flavor::K3d.default_services(ip("fd00:43::1")),
        net("fd00:43::/112")
    );
    let o = Objects {
        kubernetes: vec![ip("10.43.0.1")],
        ..Default::default()
    };
    let c = Cluster::new(
        ClusterId {
            flavor: Flavor::K3d,
            name: "dev".into(),
        },
        o,
        Flags::default(),
    );
    assert_eq!(c.services, vec![net("10.43.0.0/16")]);
    assert_eq!(c.domain, "cluster.local");
}

#[test]
fn node_containers_are_found_by_label_and_the_load_balancer_is_not_a_node() {
    let cs = vec![
        kind_node("kind-worker", "worker", "172.18.0.2"),
        kind_node("kind-control-plane", "control-plane", "172.18.0.3"),
        kind_node(
            "kind-external-load-balancer",
            "external-load-balancer",
            "172.18.0.9",
        ),
        container(
            "k3d-dev-server-0",
            &[("k3d.cluster", "dev"), ("k3d.role", "server")],
            "172.19.0.2",
        ),
        container(
            "k3d-dev-serverlb",
            &[("k3d.cluster", "dev"), ("k3d.role", "loadbalancer")],
            "172.19.0.3",
        ),
        container(
            "web",
            &[("com.docker.compose.project", "shop")],
            "172.17.0.2",
        ),
        container(
            "other-control-plane",
            &[
                ("io.x-k8s.kind.cluster", "other"),
                ("io.x-k8s.kind.role", "control-plane"),
            ],
            "172.18.0.7",
        ),
    ];
    let found = nodes(&cs, &["other".to_owned()]);
    let ids: Vec<String> = found
        .keys()
        .map(|k| format!("{}/{}", k.flavor.as_str(), k.name))
        .collect();
    assert_eq!(ids, vec!["kind/kind", "k3d/dev"]);
    let kind = &found[&kind_id()];
    let names: Vec<&str> = kind.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["kind-control-plane", "kind-worker"]);
    assert_eq!(control_plane(kind).unwrap().name, "kind-control-plane");
    assert_eq!(kind[1].role, Role::Worker);
}

#[test]
fn each_pod_range_goes_via_its_node_and_the_services_via_the_control_plane() {
    let cluster = Cluster::new(
        kind_id(),
        parse_objects(KIND_OBJECTS).unwrap(),
        parse_flags(KIND_FLAGS),
    );
    let cs = vec![
        kind_node("kind-control-plane", "control-plane", "172.18.0.3"),
        kind_node("kind-worker", "worker", "172.18.0.2"),
    ];
    let containers = nodes(&cs, &[]).remove(&kind_id()).unwrap();
    assert!(cluster.complete(&containers));
    let p = plan(&cluster, &containers);
    assert_eq!(
        p.mac,
        [
            net("10.244.0.0/24"),
            net("10.244.1.0/24"),
            net("10.96.0.0/16")
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(
        p.vm,
        vec![
            (net("10.96.0.0/16"), ip("172.18.0.3")),
            (net("10.244.0.0/24"), ip("172.18.0.3")),
            (net("10.244.1.0/24"), ip("172.18.0.2")),
        ]
    );

    // The worker's container removed: its range goes, though the API
    // server still lists the node.
    let p = plan(&cluster, &containers[..1]);
    assert!(!p.mac.contains(&net("10.244.1.0/24")));
    assert_eq!(p.vm.len(), 2);

    // A worker that has not joined yet: the cluster is read again later.
    let mut more = containers.clone();
    more.push(NodeContainer {
        id: "id-kind-worker2".into(),
        name: "kind-worker2".into(),
        role: Role::Worker,
        addresses: vec![ip("172.18.0.4")],
    });
    assert!(!cluster.complete(&more));
    assert_eq!(plan(&cluster, &more), plan(&cluster, &containers));
}

#[test]
fn a_node_renamed_is_matched_by_its_address_and_routed_by_its_family() {
    let cluster = Cluster {
        id: kind_id(),
        nodes: vec![Node {
            name: "node-a".into(),
            internal_ips: vec![ip("172.18.0.5"), ip("fc00:f853:ccd:e793::5")],
            pod_cidrs: vec![net("10.244.2.0/24"), net("fd00:10:244:2::/64")],
        }],
        services: vec![net("10.96.0.0/16"), net("fd00:10:96::/112")],
        pods: vec![],
        dns: vec![],
        domain: DEFAULT_DOMAIN.into(),
    };
    let c = NodeContainer {
        id: "x".into(),
        name: "kind-control-plane".into(),
        role: Role::ControlPlane,
        addresses: vec![ip("172.18.0.5"), ip("fc00:f853:ccd:e793::5")],
    };
    let p = plan(&cluster, &[c]);
    assert_eq!(
        p.vm,
        vec![
            (net("10.96.0.0/16"), ip("172.18.0.5")),
            (net("10.244.2.0/24"), ip("172.18.0.5")),
            (net("fd00:10:96::/112"), ip("fc00:f853:ccd:e793::5")),
            (net("fd00:10:244:2::/64"), ip("fc00:f853:ccd:e793::5")),
        ]
    );
}

#[test]
fn the_commands_are_what_a_user_would_type() {
    let k = Flavor::Kind.commands();
    assert_eq!(
        k.objects.join(" "),
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes,services --all-namespaces --output json"
    );
    assert_eq!(
        k.flags.join(" "),
        "cat /etc/kubernetes/manifests/kube-apiserver.yaml /etc/kubernetes/manifests/kube-controller-manager.yaml /var/lib/kubelet/config.yaml"
    );
    let k = Flavor::K3d.commands();
    assert_eq!(
        k.objects.join(" "),
        "kubectl --kubeconfig /etc/rancher/k3s/k3s.yaml get nodes,services --all-namespaces --output json"
    );
    assert_eq!(
        k.flags.join(" "),
        "cat /proc/1/cmdline /etc/rancher/k3s/config.yaml"
    );
}

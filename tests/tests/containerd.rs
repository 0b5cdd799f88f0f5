//! The path of a Kubernetes pod through containerd 1.6's CRI (Debian's containerd 1.6.20,
//! go-cni 1.1.7): the plugin chain gets exactly what go-cni sends for `RunPodSandbox` of a pod
//! with a `hostPort` and bandwidth annotations. go-cni's `PortMapping` and `BandWidth` are Go
//! structs without json tags, so the capability arguments arrive with capitalised keys
//! (`{"HostPort":…}`, `{"IngressRate":…}`); CNI_ARGS carry the pod's labels.
//!
//! There is no CRI client (crictl) in Debian 12 to drive a real containerd here, so the
//! request is the recorded one, run through our libcni-equivalent invoker (which, like
//! libcni, injects a capability only into plugins that declare it) and our real binaries.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::SocketAddr;
use std::process::Command;

use berth_cni::invoke::{CniConfig, RuntimeConf};
use berth_cni::{CniArgs, ContainerId, IfName, NetConfList};
use netns_fixtures::{
    EchoServer, HostAndContainer, bin, require_root, tcp_get, test_subnet_v4, unique_name,
};
use serde_json::json;

/// containerd's default network (its `10-containerd-net.conflist`) with the test's bridge
/// name and subnet, plus the `bandwidth` plugin Kubernetes distributions chain (k3s does).
fn containerd_conflist(bridge: &str, subnet: &str, data_dir: &std::path::Path) -> NetConfList {
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "containerd-net",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
             "promiscMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data_dir}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}}
        ]
    });
    NetConfList::from_bytes(&serde_json::to_vec(&list).unwrap()).unwrap()
}

/// What go-cni 1.1.7 passes for the pod: labels as CNI_ARGS, and the capability arguments
/// with the field names of its untagged Go structs.
fn go_cni_request(env: &HostAndContainer, sandbox_id: &str) -> RuntimeConf {
    let mut rt = RuntimeConf::new(
        ContainerId::try_from(sandbox_id).unwrap(),
        Some(env.ctr.path().to_owned()),
        IfName::try_from("eth0").unwrap(),
    );
    rt.args = CniArgs::parse(&format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
         K8S_POD_INFRA_CONTAINER_ID={sandbox_id};K8S_POD_UID=6f3c4a1e-0d5b-4c1a-9d2e-7b8f0a1c2d3e"
    ))
    .unwrap();
    rt.capability_args.insert(
        "portMappings".into(),
        json!([{"HostPort": 18082, "ContainerPort": 8082, "Protocol": "tcp", "HostIP": ""}]),
    );
    // kubernetes.io/ingress-bandwidth: 10M, egress-bandwidth: 20M, in bits per second;
    // containerd sets each burst to math.MaxUint32.
    rt.capability_args.insert(
        "bandwidth".into(),
        json!({"IngressRate": 10_000_000, "IngressBurst": 4_294_967_295_u64,
               "EgressRate": 20_000_000, "EgressBurst": 4_294_967_295_u64}),
    );
    rt.capability_args.insert(
        "io.kubernetes.cri.pod-annotations".into(),
        json!({"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "20M"}),
    );
    rt
}

fn qdiscs(env: &HostAndContainer) -> String {
    let out = env
        .host
        .output(Command::new("tc").args(["qdisc", "show"]))
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_pod_sandbox_with_a_host_port_and_bandwidth_limits() {
    require_root();
    let env = HostAndContainer::new().unwrap();
    let subnet = test_subnet_v4();
    let list = containerd_conflist(&unique_name("cd"), &subnet.to_string(), &env.data_dir());
    let plugins = bin("bridge").parent().unwrap().to_owned();
    let cni = CniConfig::new(vec![plugins], env.cache_dir());
    let rt = go_cni_request(&env, "3c1f0e5a9b7d");

    let result = env
        .host
        .run(|| cni.add_network_list(&list, &rt))
        .unwrap()
        .unwrap();
    let pod_ip = result.ips[0].address.ip();
    let gateway = result.ips[0].gateway.unwrap();
    let _server = EchoServer::start(&env.ctr, SocketAddr::new(pod_ip, 8082), "pod").unwrap();
    assert_eq!(
        tcp_get(&env.host, SocketAddr::new(gateway, 18082)).as_deref(),
        Some("pod"),
        "hostPort 18082 (capitalised HostPort) does not reach the pod"
    );
    let shaped = qdiscs(&env);
    assert!(
        shaped.contains("tbf") && shaped.contains("ingress"),
        "bandwidth (capitalised IngressRate/EgressRate) set no qdiscs:\n{shaped}"
    );
    env.host
        .run(|| cni.check_network_list(&list, &rt))
        .unwrap()
        .unwrap();

    env.host
        .run(|| cni.del_network_list(&list, &rt))
        .unwrap()
        .unwrap();
    assert_eq!(tcp_get(&env.host, SocketAddr::new(gateway, 18082)), None);
    let left = qdiscs(&env);
    assert!(!left.contains("tbf"), "shaping left after DEL:\n{left}");
}

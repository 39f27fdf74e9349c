//! The mesh file turned into what `weft up` creates: namespace names, pod
//! and service addresses, argv and env of every process, the hosts file of
//! each pod and the ServiceEntries weftd gets. Pure: nothing here touches
//! the machine, so the whole layout is decided (and checked) up front.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use weft_kube::inject::annotations::Options;

use super::meshfile::{self, Expose, MeshFile, host};

/// The port sidecars reach weftd at, on the bridge address: Istio's
/// istiod TLS port for discovery and certificates (weftd's `--xds`,
/// relayed from the host). There is no plaintext discovery in `weft up`.
pub const DISCOVERY_PORT: u16 = 15012;
/// The sidecar's UID and GID: excluded from interception.
pub use super::meshfile::PROXY_UID;
/// Each mesh's runtime directory is `/run/weft/NAME`: the pods' own
/// directories, and inside a pod's view its binaries and mesh directory.
pub const RUNTIME_ROOT: &str = "/run/weft";

pub struct Plan {
    pub name: String,
    /// Absolute.
    pub dir: PathBuf,
    pub pod_cidr: Ipv4Net,
    pub bridge: Ipv4Addr,
    pub node_netns: String,
    pub pods: Vec<Pod>,
    pub services: Vec<ServicePlan>,
    /// Where `weft`, `weftd` and `weft-proxy` are (host path).
    pub bin_dir: PathBuf,
    /// `/run/weft/NAME`.
    pub runtime_dir: PathBuf,
    /// The mesh file's `dnsCapture` (or MeshConfig's `defaultConfig`
    /// `proxyMetadata.ISTIO_META_DNS_CAPTURE`): workload pods capture DNS
    /// to their sidecar.
    pub dns_capture: bool,
    /// MeshConfig `defaultConfig` as injection reads it (`concurrency`,
    /// `terminationDrainDuration`): every sidecar and gateway starts with it.
    pub proxy_defaults: Options,
}

pub struct Pod {
    /// `<workload>-<index>`.
    pub name: String,
    pub netns: String,
    /// The host end of the pod's veth, inside the node namespace.
    pub veth: String,
    pub ip: Ipv4Addr,
    pub workload: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub role: Role,
}

pub enum Role {
    /// An app behind an intercepting sidecar.
    Workload {
        /// (port, sidecar protocol if known)
        ports: Vec<(u16, Option<&'static str>)>,
        command: Vec<String>,
        env: Vec<(String, String)>,
        /// `PORT/PATH` of the app's metrics, for the sidecar's 15020.
        metrics: Option<String>,
        /// (UID, GID) the app runs as: never root, never the sidecar's.
        run_as: (u32, u32),
    },
    /// weft-proxy in router mode; `expose` maps host addresses to its ports.
    Gateway { expose: Vec<Expose> },
}

pub struct ServicePlan {
    pub name: String,
    pub namespace: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<PortPlan>,
    pub selector: BTreeMap<String, String>,
}

pub struct PortPlan {
    pub name: String,
    pub port: u16,
    /// Upper case, as in Istio resources; `None` leaves it to detection.
    pub protocol: Option<String>,
    pub target_port: Option<u16>,
}

impl ServicePlan {
    pub fn hostname(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// Every name a pod may use for this service (as Kubernetes DNS
    /// search paths allow).
    pub fn names(&self) -> [String; 4] {
        let (name, ns) = (&self.name, &self.namespace);
        [
            name.clone(),
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
            self.hostname(),
        ]
    }

    fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace == namespace
            && self
                .selector
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
    }
}

impl Plan {
    /// `dir` must be absolute; `bin_dir` is where the binaries are (a pod
    /// sees it, and `${WEFT_BIN_DIR}` expands, at `/run/weft/NAME/bin`).
    pub fn new(mesh: &MeshFile, name: &str, dir: &Path, bin_dir: &Path) -> Self {
        let spec = &mesh.spec;
        // Checked by meshfile::check; the defaults always parse.
        let parse = |given: &Option<String>, default| {
            meshfile::parse_range(given.as_deref().unwrap_or(default))
                .unwrap_or(meshfile::FALLBACK_POD_RANGE)
        };
        let pod_cidr = parse(&spec.pod_cidr, meshfile::DEFAULT_POD_CIDR);
        let service_cidr = parse(&spec.service_cidr, meshfile::DEFAULT_SERVICE_CIDR);
        let services: Vec<ServicePlan> = spec
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| ServicePlan {
                name: service.name.clone(),
                namespace: meshfile::namespace_of(&service.namespace).to_string(),
                vip: host(&service_cidr, i as u32 + 1).unwrap_or(service_cidr.network()),
                ports: service
                    .ports
                    .iter()
                    .map(|port| {
                        let name = port
                            .name
                            .clone()
                            .unwrap_or_else(|| format!("port-{}", port.port));
                        let protocol = port
                            .protocol
                            .as_deref()
                            .and_then(meshfile::sidecar_protocol)
                            .or_else(|| meshfile::protocol_from_name(&name))
                            .map(str::to_ascii_uppercase);
                        PortPlan {
                            name,
                            port: port.port,
                            protocol,
                            target_port: port.target_port,
                        }
                    })
                    .collect(),
                selector: service.selector.clone(),
            })
            .collect();

        // Apps see both directories where their pod's view mounts them
        // (see pod.rs), whatever the permissions of their host parents.
        let runtime_dir = Path::new(RUNTIME_ROOT).join(name);
        let (view_bin, view_mesh) = (runtime_dir.join("bin"), runtime_dir.join("mesh"));
        let expand = |text: &str| {
            text.replace("${WEFT_BIN_DIR}", &view_bin.display().to_string())
                .replace("${MESH_DIR}", &view_mesh.display().to_string())
        };
        let mut pods = Vec::new();
        let mut next_ip = 2u32;
        let mut add = |pods: &mut Vec<Pod>,
                       workload: &str,
                       index: u32,
                       make: &dyn Fn(Ipv4Addr, &str) -> Pod| {
            let ip = host(&pod_cidr, next_ip).unwrap_or(pod_cidr.network());
            let veth = format!("wv{}", pods.len());
            next_ip += 1;
            let pod_name = format!("{workload}-{index}");
            let mut pod = make(ip, &pod_name);
            pod.veth = veth;
            pods.push(pod);
        };
        for (number, workload) in spec.workloads.iter().enumerate() {
            let run_as = workload.run_as(number);
            let namespace = meshfile::namespace_of(&workload.namespace).to_string();
            let ports: Vec<(u16, Option<&'static str>)> = workload
                .ports
                .iter()
                .map(|port| {
                    let protocol = port
                        .protocol
                        .as_deref()
                        .and_then(meshfile::sidecar_protocol)
                        .or_else(|| {
                            services
                                .iter()
                                .filter(|s| s.selects(&namespace, &workload.labels))
                                .flat_map(|s| &s.ports)
                                .find(|p| p.target_port.unwrap_or(p.port) == port.port)
                                .and_then(|p| p.protocol.as_deref())
                                .and_then(meshfile::sidecar_protocol)
                        })
                        .or_else(|| port.name.as_deref().and_then(meshfile::protocol_from_name));
                    (port.port, protocol)
                })
                .collect();
            let command: Vec<String> = workload.command.iter().map(|arg| expand(arg)).collect();
            let env: Vec<(String, String)> = workload
                .env
                .iter()
                .map(|(key, value)| {
                    (
                        key.clone(),
                        expand(&meshfile::env_text(value).unwrap_or_default()),
                    )
                })
                .collect();
            for index in 0..workload.replicas.unwrap_or(1) {
                add(&mut pods, &workload.name, index, &|ip, pod_name| Pod {
                    name: pod_name.to_string(),
                    netns: format!("weft-{name}-{pod_name}"),
                    veth: String::new(),
                    ip,
                    workload: workload.name.clone(),
                    namespace: namespace.clone(),
                    service_account: workload
                        .service_account
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    labels: workload.labels.clone(),
                    role: Role::Workload {
                        ports: ports.clone(),
                        command: command.clone(),
                        env: env.clone(),
                        metrics: workload.metrics.as_ref().map(|m| {
                            let path = m.path.as_deref().unwrap_or("/metrics");
                            format!("{}/{}", m.port, path.trim_start_matches('/'))
                        }),
                        run_as,
                    },
                });
            }
        }
        for gateway in &spec.gateways {
            add(&mut pods, &gateway.name, 0, &|ip, pod_name| Pod {
                name: pod_name.to_string(),
                netns: format!("weft-{name}-{pod_name}"),
                veth: String::new(),
                ip,
                workload: gateway.name.clone(),
                namespace: meshfile::namespace_of(&gateway.namespace).to_string(),
                // Istio's gateway charts name the account after the gateway.
                service_account: gateway
                    .service_account
                    .clone()
                    .unwrap_or_else(|| format!("{}-service-account", gateway.name)),
                labels: gateway.labels.clone(),
                role: Role::Gateway {
                    expose: gateway.expose.clone(),
                },
            });
        }
        Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            pod_cidr,
            bridge: host(&pod_cidr, 1).unwrap_or(pod_cidr.network()),
            node_netns: format!("weft-{name}-node"),
            pods,
            services,
            bin_dir: bin_dir.to_path_buf(),
            runtime_dir,
            dns_capture: spec.dns_capture,
            proxy_defaults: Options::default(),
        }
    }

    /// A pod's own directory (the same path on the host and in its view).
    pub fn pod_dir(&self, pod: &Pod) -> PathBuf {
        self.runtime_dir.join("pods").join(&pod.name)
    }

    /// The sidecar's bootstrap token: UID 1337, 0400, in the pod's directory.
    pub fn token_path(&self, pod: &Pod) -> PathBuf {
        self.pod_dir(pod).join("sidecar").join("token")
    }

    /// The mesh root the sidecar holds (`--ca-root`): 1337, 0400, beside
    /// its token.
    pub fn root_path(&self, pod: &Pod) -> PathBuf {
        self.pod_dir(pod).join("sidecar").join("root-cert.pem")
    }

    /// `${WEFT_BIN_DIR}` inside a pod: where `weft-proxy` is.
    pub fn view_bin_dir(&self) -> PathBuf {
        self.runtime_dir.join("bin")
    }

    /// `${MESH_DIR}` inside a pod, and its apps' working directory.
    pub fn view_mesh_dir(&self) -> PathBuf {
        self.runtime_dir.join("mesh")
    }

    pub fn discovery_address(&self) -> SocketAddr {
        SocketAddr::from((self.bridge, DISCOVERY_PORT))
    }

    /// `/etc/hosts` inside every pod: loopback, the pod itself, and each
    /// service's names at its VIP.
    pub fn hosts_file(&self, pod: &Pod) -> String {
        let mut text = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
            pod.ip, pod.name
        );
        for service in &self.services {
            // The bare name only within the service's own namespace, as
            // Kubernetes search paths resolve it.
            let names = service.names();
            let names = if service.namespace == pod.namespace {
                &names[..]
            } else {
                &names[1..]
            };
            text.push_str(&format!("{}\t{}\n", service.vip, names.join(" ")));
        }
        text
    }

    /// The mesh's services as ServiceEntries: a VIP each, endpoints
    /// selected from the connected sidecars by label.
    pub fn service_entries(&self) -> Value {
        let items: Vec<Value> = self
            .services
            .iter()
            .map(|service| {
                let ports: Vec<Value> = service
                    .ports
                    .iter()
                    .map(|port| {
                        let mut value = json!({"number": port.port, "name": port.name});
                        if let Some(protocol) = &port.protocol {
                            value["protocol"] = json!(protocol);
                        }
                        if let Some(target) = port.target_port {
                            value["targetPort"] = json!(target);
                        }
                        value
                    })
                    .collect();
                json!({
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "ServiceEntry",
                    "metadata": {"name": service.name, "namespace": service.namespace},
                    "spec": {
                        "hosts": [service.hostname()],
                        "addresses": [service.vip.to_string()],
                        "location": "MESH_INTERNAL",
                        "resolution": "STATIC",
                        "ports": ports,
                        "workloadSelector": {"labels": service.selector},
                    },
                })
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    /// One WorkloadGroup per workload and gateway (named after it): the
    /// labels, service account and ports weftd registers its pods with.
    /// A sidecar's token is bound to its group, and weftd refuses any claim
    /// beyond it (Istio's auto-registration). Port names carry the
    /// sidecar's protocol (`http-9080`), as Istio reads a port name's
    /// prefix; an unknown protocol is left to detection (`port-9080`).
    pub fn workload_groups(&self) -> Value {
        let mut seen = std::collections::BTreeSet::new();
        let items: Vec<Value> = self
            .pods
            .iter()
            .filter(|pod| seen.insert((pod.namespace.as_str(), pod.workload.as_str())))
            .map(|pod| {
                let ports: BTreeMap<String, u16> = match &pod.role {
                    Role::Workload { ports, .. } => ports
                        .iter()
                        .map(|(port, protocol)| {
                            (format!("{}-{port}", protocol.unwrap_or("port")), *port)
                        })
                        .collect(),
                    Role::Gateway { .. } => BTreeMap::new(),
                };
                json!({
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "WorkloadGroup",
                    "metadata": {"name": pod.workload, "namespace": pod.namespace},
                    "spec": {
                        "metadata": {"labels": pod.labels},
                        "template": {"serviceAccount": pod.service_account, "ports": ports},
                    },
                })
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    /// What `weft up` applies to weftd before any pod starts: the services
    /// and the workload groups, in one List.
    pub fn mesh_resources(&self) -> Value {
        let mut items = Vec::new();
        for list in [self.service_entries(), self.workload_groups()] {
            if let Value::Array(more) = &list["items"] {
                items.extend(more.iter().cloned());
            }
        }
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Mesh
spec:
  services:
  - {name: a, ports: [{name: http, port: 80, targetPort: 8000}], selector: {app: a}}
  - {name: b, namespace: shop, ports: [{name: web, port: 9080}], selector: {app: b}}
  workloads:
  - {name: a-v1, labels: {app: a}, replicas: 2, ports: [{port: 8000}], command: ["${WEFT_BIN_DIR}/a", "${MESH_DIR}/x"], env: {HOME_DIR: "${MESH_DIR}"}}
  - {name: b-v1, namespace: shop, labels: {app: b}, ports: [{name: grpc-api, port: 9080}], command: [b]}
  gateways:
  - {name: gw, labels: {istio: ingressgateway}, expose: [{hostAddress: "127.0.0.1:8080", port: 8080}]}
"#;

    fn plan() -> Plan {
        let mesh = meshfile::parse(MESH, "mesh.yaml").expect("mesh");
        Plan::new(&mesh, "demo", Path::new("/m"), Path::new("/bin/w"))
    }

    #[test]
    fn pods_and_services_get_addresses_in_declaration_order() {
        let plan = plan();
        let summary: Vec<_> = plan
            .pods
            .iter()
            .map(|p| (p.netns.as_str(), p.veth.as_str(), p.ip.to_string()))
            .collect();
        assert_eq!(
            summary,
            [
                ("weft-demo-a-v1-0", "wv0", "10.203.0.2".to_string()),
                ("weft-demo-a-v1-1", "wv1", "10.203.0.3".to_string()),
                ("weft-demo-b-v1-0", "wv2", "10.203.0.4".to_string()),
                ("weft-demo-gw-0", "wv3", "10.203.0.5".to_string()),
            ]
        );
        assert_eq!(plan.bridge, Ipv4Addr::new(10, 203, 0, 1));
        assert_eq!(plan.services[1].vip, Ipv4Addr::new(240, 240, 0, 2));
        assert_eq!(plan.pods[3].service_account, "gw-service-account");
    }

    #[test]
    fn commands_expand_and_ports_take_the_service_protocol() {
        let plan = plan();
        let Role::Workload {
            ports,
            command,
            env,
            ..
        } = &plan.pods[0].role
        else {
            panic!("a workload");
        };
        // As the pod sees them (pod.rs binds both directories there).
        assert_eq!(command, &["/run/weft/demo/bin/a", "/run/weft/demo/mesh/x"]);
        assert_eq!(
            env,
            &[("HOME_DIR".to_string(), "/run/weft/demo/mesh".to_string())]
        );
        // Both replicas of the first workload share its default UID; the
        // next workload gets the next one.
        let uids: Vec<_> = plan
            .pods
            .iter()
            .filter_map(|pod| match pod.role {
                Role::Workload { run_as, .. } => Some(run_as),
                Role::Gateway { .. } => None,
            })
            .collect();
        assert_eq!(uids, [(20000, 20000), (20000, 20000), (20001, 20001)]);
        // No protocol on the workload port: the selecting service's
        // targetPort says HTTP.
        assert_eq!(ports, &[(8000, Some("http"))]);
        let Role::Workload { ports, .. } = &plan.pods[2].role else {
            panic!("a workload");
        };
        assert_eq!(ports, &[(9080, Some("grpc"))]);
    }

    #[test]
    fn service_entries_decode_as_istio_resources() {
        let plan = plan();
        let decoded = weft_api::decode::decode_document(plan.service_entries(), "generated", 1);
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        assert_eq!(decoded.resources.len(), 2);
        // One group per workload (a-v1's two replicas share one), with the
        // protocol in each port's name.
        let all = weft_api::decode::decode_document(plan.mesh_resources(), "generated", 1);
        assert!(all.problems.is_empty(), "{:?}", all.problems);
        assert_eq!(all.resources.len(), 5);
        let groups = plan.workload_groups();
        let names: Vec<&str> = groups["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|g| g["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["a-v1", "b-v1", "gw"]);
        assert_eq!(
            groups["items"][0]["spec"]["template"]["ports"],
            json!({"http-8000": 8000})
        );
        assert_eq!(
            groups["items"][1]["spec"]["template"]["ports"],
            json!({"grpc-9080": 9080})
        );
        assert_eq!(
            groups["items"][2]["spec"]["template"]["serviceAccount"],
            "gw-service-account"
        );
        let hosts = plan.hosts_file(&plan.pods[0]);
        assert!(hosts.contains("240.240.0.1\ta a.default "), "{hosts}");
        assert!(
            hosts.contains("240.240.0.2\tb.shop b.shop.svc b.shop.svc.cluster.local\n"),
            "{hosts}"
        );
    }
}

//! The mesh file (`DIR/mesh.yaml`, kind `Mesh`): which services, workloads
//! and gateways `weft up` runs. Parsed with field paths in every error
//! (`mesh.yaml: spec.workloads[2].ports[0].port: ...`), then checked for
//! what serde cannot see (names, duplicates, address ranges).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

pub const API_VERSION: &str = "weft.dev/v1alpha1";
pub const KIND: &str = "Mesh";
pub const FILE_NAME: &str = "mesh.yaml";
pub const DEFAULT_POD_CIDR: &str = "10.203.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "240.240.0.0/16";
/// The sidecar's UID and GID: excluded from interception, so no app may
/// run as it (its traffic would bypass the sidecar).
pub const PROXY_UID: u32 = 1337;
/// Workload `i` (in mesh-file order) runs as UID and GID `APP_UID_BASE + i`
/// unless its `uid` says otherwise.
pub const APP_UID_BASE: u32 = 20000;

/// The longest mesh name: namespace and link names are derived from it.
pub const MESH_NAME_MAX: usize = 40;

/// The sidecar's own ports: a workload cannot serve on them.
pub const PROXY_PORTS: [u16; 6] = [15000, 15001, 15006, 15020, 15021, 15090];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshFile {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: MeshSpec,
}

/// Only the name is used; labels and annotations are accepted and ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    #[serde(default)]
    pub pod_cidr: Option<String>,
    #[serde(default)]
    pub service_cidr: Option<String>,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    #[serde(default)]
    pub gateways: Vec<Gateway>,
    /// DNS proxying in every workload pod (Istio's ISTIO_META_DNS_CAPTURE):
    /// the app's port-53 traffic goes to its sidecar, which answers mesh
    /// and ServiceEntry names. Default off: names resolve from the pod's
    /// hosts file only.
    #[serde(default)]
    pub dns_capture: bool,
}

/// A Kubernetes-style Service: a name, ports, and the pods it selects.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    /// Where the selected pods listen, when it is not `port`.
    #[serde(default)]
    pub target_port: Option<u16>,
}

/// A Deployment-like workload: `replicas` pods, each running `command`
/// beside its own sidecar.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub ports: Vec<WorkloadPort>,
    pub command: Vec<String>,
    /// Scalars only; numbers and booleans are taken as their text.
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    /// Where the app serves Prometheus metrics (as Istio's
    /// `prometheus.io/port` and `/path` annotations): merged into the
    /// sidecar's 15020 endpoint.
    #[serde(default)]
    pub metrics: Option<AppMetrics>,
    /// The UID the app runs as (Kubernetes' `runAsUser`); default
    /// `APP_UID_BASE` + the workload's index. Never 0 or the sidecar's.
    #[serde(default)]
    pub uid: Option<u32>,
    /// The app's GID (`runAsGroup`); default: its UID.
    #[serde(default)]
    pub gid: Option<u32>,
}

impl Workload {
    /// (UID, GID) the app of workload number `index` runs as.
    pub fn run_as(&self, index: usize) -> (u32, u32) {
        let default = APP_UID_BASE.saturating_add(u32::try_from(index).unwrap_or(u32::MAX));
        let uid = self.uid.unwrap_or(default);
        (uid, self.gid.unwrap_or(uid))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppMetrics {
    pub port: u16,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadPort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// An ingress gateway: weft-proxy in router mode, no interception.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub expose: Vec<Expose>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expose {
    pub host_address: SocketAddr,
    pub port: u16,
}

/// The pod range when the mesh file's cannot be used (only reached after
/// `check` refused the file; [`DEFAULT_POD_CIDR`] as a value).
pub const FALLBACK_POD_RANGE: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 203, 0, 0), 16);

/// `spec.podCidr` and `spec.serviceCidr`: IPv4 only (the pods share one
/// IPv4 bridge), /8 to /30, host bits cleared (`10.203.7.9/30` is
/// `10.203.7.8/30`, as the kernel reads it).
pub fn parse_range(text: &str) -> Result<Ipv4Net, String> {
    let range = match text.parse::<IpNet>() {
        Ok(IpNet::V4(range)) => range,
        Ok(IpNet::V6(_)) => {
            return Err(format!(
                "{text:?} is an IPv6 range; pods and services take an IPv4 range like 10.203.0.0/16"
            ));
        }
        Err(_) => return Err(format!("{text:?} is not an IPv4 range like 10.203.0.0/16")),
    };
    if !(8..=30).contains(&range.prefix_len()) {
        return Err(format!("prefix /{} must be 8..30", range.prefix_len()));
    }
    Ok(range.trunc())
}

/// The `index`-th address after the network address, if inside the range
/// and not its broadcast address.
pub fn host(range: &Ipv4Net, index: u32) -> Option<Ipv4Addr> {
    let after_network = usize::try_from(index.checked_sub(1)?).ok()?;
    range.hosts().nth(after_network)
}

/// Reads and checks `dir/mesh.yaml`. Every error is one line per problem,
/// each starting with the file and the field.
pub fn load(dir: &Path) -> Result<MeshFile, String> {
    let path = dir.join(FILE_NAME);
    let text = std::fs::read_to_string(&path)
        .map_err(|err| format!("{}: cannot read: {err}", path.display()))?;
    parse(&text, FILE_NAME)
}

pub fn parse(text: &str, file: &str) -> Result<MeshFile, String> {
    let value: Value =
        serde_saphyr::from_str(text).map_err(|err| format!("{file}: not valid YAML: {err}"))?;
    if value.is_null() {
        return Err(format!("{file}: empty; expected a `kind: Mesh` document"));
    }
    let mesh: MeshFile = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        format!("{file}: {field}{}", err.into_inner())
    })?;
    let problems = check(&mesh);
    if problems.is_empty() {
        Ok(mesh)
    } else {
        Err(problems
            .iter()
            .map(|(field, message)| format!("{file}: {field}: {message}"))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// What serde cannot check; (field path, message) pairs.
fn check(mesh: &MeshFile) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut problem = |field: String, message: String| problems.push((field, message));
    if mesh.api_version != API_VERSION {
        problem(
            "apiVersion".into(),
            format!("{:?} is not served; use {API_VERSION}", mesh.api_version),
        );
    }
    if mesh.kind != KIND {
        problem("kind".into(), format!("{:?}: expected {KIND}", mesh.kind));
    }
    if let Some(name) = &mesh.metadata.name
        && !is_name(name, MESH_NAME_MAX)
    {
        problem("metadata.name".into(), name_rule(MESH_NAME_MAX));
    }
    let spec = &mesh.spec;
    let pod_cidr = check_cidr(
        &spec.pod_cidr,
        DEFAULT_POD_CIDR,
        "spec.podCidr",
        &mut problem,
    );
    let service_cidr = check_cidr(
        &spec.service_cidr,
        DEFAULT_SERVICE_CIDR,
        "spec.serviceCidr",
        &mut problem,
    );
    if let (Some(pods), Some(services)) = (pod_cidr, service_cidr)
        // Aligned ranges overlap only when one holds the other.
        && (pods.contains(&services) || services.contains(&pods))
    {
        problem(
            "spec.serviceCidr".into(),
            format!("{services} overlaps the pod range {pods}"),
        );
    }

    let mut services = BTreeSet::new();
    for (i, service) in spec.services.iter().enumerate() {
        let at = format!("spec.services[{i}]");
        check_name(&service.name, &format!("{at}.name"), &mut problem);
        check_namespace(&service.namespace, &at, &mut problem);
        if !services.insert((namespace_of(&service.namespace), service.name.as_str())) {
            problem(
                format!("{at}.name"),
                format!("{:?} is declared twice in its namespace", service.name),
            );
        }
        if service.ports.is_empty() {
            problem(
                format!("{at}.ports"),
                "at least one port is required".into(),
            );
        }
        let mut numbers = BTreeSet::new();
        for (j, port) in service.ports.iter().enumerate() {
            let at = format!("{at}.ports[{j}]");
            check_port(port.port, &format!("{at}.port"), false, &mut problem);
            if !numbers.insert(port.port) {
                problem(
                    format!("{at}.port"),
                    format!("{} is listed twice", port.port),
                );
            }
            if let Some(target) = port.target_port {
                check_port(target, &format!("{at}.targetPort"), true, &mut problem);
            }
            check_protocol(&port.protocol, &format!("{at}.protocol"), &mut problem);
        }
        if service.selector.is_empty() {
            problem(
                format!("{at}.selector"),
                "required: the labels of the workloads that serve it".into(),
            );
        }
    }

    // Pod namespaces are named after workloads and gateways alone.
    let mut pods = BTreeSet::new();
    let mut instances = 0u32;
    // Each workload its own UID: apps sharing one could signal, trace or
    // read each other's processes (`/proc/PID/root` included).
    let mut uids = BTreeMap::new();
    for (i, workload) in spec.workloads.iter().enumerate() {
        let at = format!("spec.workloads[{i}]");
        let (uid, gid) = workload.run_as(i);
        for (field, id) in [("uid", uid), ("gid", gid)] {
            if id == 0 || id == PROXY_UID {
                problem(
                    format!("{at}.{field}"),
                    format!(
                        "{id} is not allowed: apps run neither as root (0) nor as the sidecar ({PROXY_UID}), whose traffic is not intercepted"
                    ),
                );
            }
        }
        if let Some(other) = uids.insert(uid, workload.name.as_str()) {
            problem(
                format!("{at}.uid"),
                format!(
                    "{uid} is also the UID of workload {other:?}; each workload needs its own (default {APP_UID_BASE} + its index)"
                ),
            );
        }
        check_name(&workload.name, &format!("{at}.name"), &mut problem);
        check_namespace(&workload.namespace, &at, &mut problem);
        if !pods.insert(workload.name.as_str()) {
            problem(
                format!("{at}.name"),
                format!(
                    "{:?} is used twice (workload and gateway names must be unique in a mesh)",
                    workload.name
                ),
            );
        }
        if let Some(account) = &workload.service_account {
            check_name(account, &format!("{at}.serviceAccount"), &mut problem);
        }
        let replicas = workload.replicas.unwrap_or(1);
        if replicas > 100 {
            problem(format!("{at}.replicas"), "at most 100".into());
        }
        instances = instances.saturating_add(replicas);
        let mut numbers = BTreeSet::new();
        for (j, port) in workload.ports.iter().enumerate() {
            check_port(
                port.port,
                &format!("{at}.ports[{j}].port"),
                true,
                &mut problem,
            );
            if !numbers.insert(port.port) {
                problem(
                    format!("{at}.ports[{j}].port"),
                    format!("{} is listed twice", port.port),
                );
            }
            check_protocol(
                &port.protocol,
                &format!("{at}.ports[{j}].protocol"),
                &mut problem,
            );
        }
        if workload.command.first().is_none_or(|c| c.is_empty()) {
            problem(
                format!("{at}.command"),
                "required: the program and its arguments".into(),
            );
        }
        for (key, value) in &workload.env {
            if env_text(value).is_none() {
                problem(
                    format!("{at}.env.{key}"),
                    "must be a string, number or boolean".into(),
                );
            }
        }
    }
    let mut exposed = BTreeSet::new();
    for (i, gateway) in spec.gateways.iter().enumerate() {
        let at = format!("spec.gateways[{i}]");
        check_name(&gateway.name, &format!("{at}.name"), &mut problem);
        check_namespace(&gateway.namespace, &at, &mut problem);
        if !pods.insert(gateway.name.as_str()) {
            problem(
                format!("{at}.name"),
                format!(
                    "{:?} is used twice (workload and gateway names must be unique in a mesh)",
                    gateway.name
                ),
            );
        }
        if gateway.labels.is_empty() {
            problem(
                format!("{at}.labels"),
                "required: Gateway resources select their proxy by these labels".into(),
            );
        }
        instances = instances.saturating_add(1);
        for (j, expose) in gateway.expose.iter().enumerate() {
            check_port(
                expose.port,
                &format!("{at}.expose[{j}].port"),
                false,
                &mut problem,
            );
            if !exposed.insert(expose.host_address) {
                problem(
                    format!("{at}.expose[{j}].hostAddress"),
                    format!("{} is exposed twice", expose.host_address),
                );
            }
        }
    }
    if let Some(pods) = pod_cidr
        && host(&pods, instances + 1).is_none()
    {
        problem(
            "spec.podCidr".into(),
            format!("{pods} has too few addresses for {instances} pods"),
        );
    }
    let service_count = u32::try_from(spec.services.len()).unwrap_or(u32::MAX);
    if let Some(range) = service_cidr
        && host(&range, service_count).is_none()
        && service_count > 0
    {
        problem(
            "spec.serviceCidr".into(),
            format!("{range} has too few addresses for {service_count} services"),
        );
    }
    problems
}

fn check_cidr(
    given: &Option<String>,
    default: &str,
    field: &str,
    problem: &mut impl FnMut(String, String),
) -> Option<Ipv4Net> {
    match parse_range(given.as_deref().unwrap_or(default)) {
        Ok(cidr) => Some(cidr),
        Err(message) => {
            problem(field.into(), message);
            None
        }
    }
}

fn check_name(name: &str, field: &str, problem: &mut impl FnMut(String, String)) {
    if !is_name(name, 63) {
        problem(field.into(), name_rule(63));
    }
}

fn check_namespace(namespace: &Option<String>, at: &str, problem: &mut impl FnMut(String, String)) {
    if let Some(namespace) = namespace {
        check_name(namespace, &format!("{at}.namespace"), problem);
    }
}

fn check_port(port: u16, field: &str, served: bool, problem: &mut impl FnMut(String, String)) {
    if port == 0 {
        problem(field.into(), "must be 1..65535".into());
    } else if served && PROXY_PORTS.contains(&port) {
        problem(
            field.into(),
            format!("{port} is one of the sidecar's own ports ({PROXY_PORTS:?})"),
        );
    }
}

fn check_protocol(
    protocol: &Option<String>,
    field: &str,
    problem: &mut impl FnMut(String, String),
) {
    if let Some(protocol) = protocol
        && sidecar_protocol(protocol).is_none()
    {
        problem(
            field.into(),
            format!("{protocol:?}: expected HTTP, HTTP2, GRPC, TCP or TLS"),
        );
    }
}

/// RFC 1123 label, at most `max` characters.
pub(super) fn is_name(name: &str, max: usize) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

pub(super) fn name_rule(max: usize) -> String {
    format!(
        "must be at most {max} lowercase letters, digits and '-', starting and ending with a letter or digit"
    )
}

pub fn namespace_of(namespace: &Option<String>) -> &str {
    namespace.as_deref().unwrap_or("default")
}

/// An env value as the text a process sees; `None` for lists and maps.
pub fn env_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(_) | Value::Number(_) => Some(value.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// The sidecar's `--port` protocol for an Istio protocol name (upper or
/// lower case); `None` if the sidecar has no such protocol.
pub fn sidecar_protocol(protocol: &str) -> Option<&'static str> {
    match protocol.to_ascii_lowercase().as_str() {
        "http" => Some("http"),
        "http2" => Some("http2"),
        "grpc" => Some("grpc"),
        "tcp" => Some("tcp"),
        "tls" => Some("tls"),
        _ => None,
    }
}

/// Istio's port-naming rule: `http`, `http-web`, `grpc-api`, ... name their
/// protocol; anything else leaves it to detection.
pub fn protocol_from_name(name: &str) -> Option<&'static str> {
    let prefix = name.split('-').next().unwrap_or(name);
    sidecar_protocol(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: shop}
spec:
  services:
  - name: reviews
    ports: [{name: http, port: 9080}]
    selector: {app: reviews}
  workloads:
  - name: reviews-v1
    labels: {app: reviews, version: v1}
    ports: [{name: http, port: 9080}]
    command: ["/usr/bin/python3", "app.py"]
    env: {STARS: 3, ENABLED: false, COLOR: ""}
  gateways:
  - name: ingress
    namespace: istio-system
    labels: {istio: ingressgateway}
    expose: [{hostAddress: "127.0.0.1:8080", port: 8080}]
"#;

    #[test]
    fn a_good_mesh_file_parses_with_defaults() {
        let mesh = parse(GOOD, "mesh.yaml").expect("valid");
        assert_eq!(mesh.metadata.name.as_deref(), Some("shop"));
        assert_eq!(mesh.spec.workloads[0].replicas, None);
        assert_eq!(
            env_text(&mesh.spec.workloads[0].env["STARS"]).as_deref(),
            Some("3")
        );
        assert_eq!(
            env_text(&mesh.spec.workloads[0].env["ENABLED"]).as_deref(),
            Some("false")
        );
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let bad = GOOD.replace(
            "ports: [{name: http, port: 9080}]\n    command",
            "ports: [{name: http, port: 99999}]\n    command",
        );
        let err = parse(&bad, "mesh.yaml").expect_err("port out of range");
        assert!(
            err.starts_with("mesh.yaml: spec.workloads[0].ports[0].port: "),
            "{err}"
        );

        let bad = GOOD.replace("port: 9080}]\n    command", "port: 15006}]\n    command");
        let err = parse(&bad, "mesh.yaml").expect_err("proxy port");
        assert!(
            err.contains(
                "spec.workloads[0].ports[0].port: 15006 is one of the sidecar's own ports"
            ),
            "{err}"
        );

        let bad = GOOD.replace("selector: {app: reviews}", "selektor: {app: reviews}");
        let err = parse(&bad, "mesh.yaml").expect_err("unknown field");
        assert!(
            err.starts_with("mesh.yaml: spec.services[0].selektor: unknown field `selektor`"),
            "{err}"
        );

        let bad = GOOD.replace("name: ingress", "name: reviews-v1");
        let err = parse(&bad, "mesh.yaml").expect_err("duplicate pod name");
        assert!(
            err.contains("spec.gateways[0].name: \"reviews-v1\" is used twice"),
            "{err}"
        );

        let bad = GOOD.replace(
            "    command: [\"/usr/bin/python3\", \"app.py\"]",
            "    command: [\"/usr/bin/python3\", \"app.py\"]\n    uid: 1337\n    gid: 0",
        );
        let err = parse(&bad, "mesh.yaml").expect_err("the sidecar's UID, root's GID");
        assert!(
            err.contains("spec.workloads[0].uid: 1337 is not allowed")
                && err.contains("spec.workloads[0].gid: 0 is not allowed"),
            "{err}"
        );

        // The second workload defaults to 20001, which the first one took.
        let twice = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nspec:\n  workloads:\n  - {name: one, command: [x], uid: 20001}\n  - {name: two, command: [x]}\n";
        let err = parse(twice, "mesh.yaml").expect_err("a UID twice");
        assert!(
            err.contains("spec.workloads[1].uid: 20001 is also the UID of workload \"one\""),
            "{err}"
        );

        let bad = GOOD.replace("spec:\n", "spec:\n  podCidr: 240.240.0.0/24\n");
        let err = parse(&bad, "mesh.yaml").expect_err("overlap");
        assert!(
            err.contains("spec.serviceCidr: 240.240.0.0/16 overlaps"),
            "{err}"
        );
    }

    #[test]
    fn ranges_hand_out_host_addresses_only() {
        let range = parse_range("10.203.7.9/30").expect("range");
        assert_eq!(range.to_string(), "10.203.7.8/30");
        assert_eq!(host(&range, 1), Some(Ipv4Addr::new(10, 203, 7, 9)));
        assert_eq!(host(&range, 2), Some(Ipv4Addr::new(10, 203, 7, 10)));
        assert_eq!(host(&range, 3), None);
        assert_eq!(host(&range, 0), None);
        assert_eq!(
            parse_range("10.0.0.0").expect_err("no prefix"),
            "\"10.0.0.0\" is not an IPv4 range like 10.203.0.0/16"
        );
        assert_eq!(
            parse_range("10.0.0.0/31").expect_err("too small"),
            "prefix /31 must be 8..30"
        );
        assert!(
            parse_range("fd00::/64")
                .expect_err("IPv6")
                .contains("is an IPv6 range")
        );
        assert_eq!(
            parse_range(DEFAULT_POD_CIDR).expect("the default"),
            FALLBACK_POD_RANGE
        );
        // A wide range: the look-up is arithmetic, not a walk.
        let wide = parse_range("10.0.0.0/8").expect("range");
        assert_eq!(
            host(&wide, 16_777_214),
            Some(Ipv4Addr::new(10, 255, 255, 254))
        );
        assert_eq!(host(&wide, 16_777_215), None);
    }

    #[test]
    fn port_names_carry_istio_protocols() {
        assert_eq!(protocol_from_name("http-web"), Some("http"));
        assert_eq!(protocol_from_name("grpc"), Some("grpc"));
        assert_eq!(protocol_from_name("metrics"), None);
    }
}

//! Mesh config several integration tests start from, as YAML for weftd.

use std::fmt::Write;

/// A MESH_INTERNAL ServiceEntry `name` (namespace default, one HTTP port
/// `port`, selecting `app: name`) and a WorkloadEntry `name-<version>` on
/// 127.0.0.1 for each `(version, workload port)`.
pub fn service_with_workloads(name: &str, port: u16, workloads: &[(&str, u16)]) -> String {
    let mut yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
"#
    );
    for (version, workload_port) in workloads {
        // Writing to a String cannot fail.
        let _ = write!(
            yaml,
            r#"---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}-{version}}}
spec:
  address: 127.0.0.1
  ports: {{http: {workload_port}}}
  labels: {{app: {name}, version: {version}}}
"#
        );
    }
    yaml
}

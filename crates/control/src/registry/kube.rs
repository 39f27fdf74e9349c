//! The Kubernetes source: a cluster's Services and their endpoints (as
//! weft-kube's [`ClusterSnapshot`] holds them) as registry services, and
//! its Pods as workloads a ServiceEntry's `workloadSelector` can select.
//!
//! How it combines with ServiceEntries, as Istio does (istio#32966): a
//! Kubernetes Service and a ServiceEntry for the same host in the same
//! namespace is one service, the Kubernetes one (added first, the entry is
//! reported as a duplicate), so nobody can squat a Service's name, while
//! the entry's endpoints join the Service's (Istio keeps one endpoint shard
//! per source for a host and namespace and serves them all); a
//! ServiceEntry with a `workloadSelector` selects Pods of its namespace
//! like WorkloadEntries.
//!
//! - ClusterIP Services: the cluster IPs are the VIPs; STATIC endpoints.
//! - Headless Services: no VIP of their own (the registry allocates one
//!   only so the host has an address); callers dial pod IPs, and the
//!   proxy forwards to the address dialled (resolution NONE, Istio's
//!   ORIGINAL_DST); endpoints are kept for auto-mTLS and inspection.
//! - A Service's selector also selects WorkloadEntries of its namespace and
//!   connected workloads that are not pods (VMs), as Istio does; pods are
//!   endpoints only as their EndpointSlices say (ready or not).
//! - ExternalName Services are aliases, as in Istio since 1.21: once every
//!   source is in, each is served as a copy of the service its target host
//!   names (ports, resolution, endpoints) under its own host; a target no
//!   source defines is reported and the alias not served (Istio routes an
//!   alias only when its target exists).

use std::collections::BTreeSet;
use std::net::IpAddr;

use weft_api::Resource;
use weft_api::networking::WorkloadEntry;
use weft_kube::convert::{ClusterSnapshot, KubeService, ServiceKind};

use super::{
    EndpointDef, Location, PortProtocol, Registry, Resolution, ServiceDef, ServiceId,
    ServicePortDef, Workload, labels_match, namespace_or_default,
};

/// Adds the cluster's Services with their endpoints: the EndpointSlices'
/// and the WorkloadEntries or non-pod workloads their selectors select.
pub(super) fn collect(
    cluster: &ClusterSnapshot,
    resources: &[Resource],
    workloads: &[Workload],
    registry: &mut Registry,
) {
    if cluster.services.is_empty() {
        return;
    }
    let pod_ips: BTreeSet<IpAddr> = cluster.pods.iter().map(|p| p.address).collect();
    let mut selectable: Vec<(&str, EndpointDef)> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::WorkloadEntry(entry) => Some((
                namespace_or_default(&entry.metadata.namespace),
                workload_entry(&entry.spec, &entry.metadata.name)?,
            )),
            _ => None,
        })
        .collect();
    selectable.extend(
        workloads
            .iter()
            .filter(|w| !pod_ips.contains(&w.address))
            .map(|w| (w.namespace.as_str(), EndpointDef::of_workload(w))),
    );
    for service in &cluster.services {
        let id = add_service(service, registry);
        let (Some(id), Some(selector)) = (id, &service.selector) else {
            continue;
        };
        for (_, endpoint) in selectable
            .iter()
            .filter(|(ns, e)| *ns == service.namespace && labels_match(selector, &e.labels))
        {
            registry.add_endpoint(id.clone(), endpoint.clone());
        }
    }
}

/// A WorkloadEntry with an IP address as an endpoint.
fn workload_entry(entry: &WorkloadEntry, name: &str) -> Option<EndpointDef> {
    Some(EndpointDef {
        address: entry.address.parse().ok()?,
        hostname: String::new(),
        ports: entry.ports.clone(),
        labels: entry.labels.clone(),
        weight: entry.weight.unwrap_or(0),
        workload: name.to_string(),
        service_account: entry.service_account.clone(),
        locality: super::locality_of(&entry.locality, &entry.labels),
    })
}

/// Adds the Service and its EndpointSlice endpoints; its id, `None` when
/// it is not served (ExternalName).
fn add_service(service: &KubeService, registry: &mut Registry) -> Option<ServiceId> {
    let source = format!("Kubernetes Service {}/{}", service.namespace, service.name);
    let (vips, resolution) = match &service.kind {
        ServiceKind::ClusterIp(vips) => (vips.clone(), Resolution::Static),
        ServiceKind::Headless => (Vec::new(), Resolution::None),
        // Served by `add_aliases`, once every source is in.
        ServiceKind::ExternalName(_) => return None,
    };
    let def = ServiceDef {
        auto_vip: false,
        cidrs: Vec::new(),
        hostname: service.hostname.clone(),
        namespace: service.namespace.clone(),
        vips,
        ports: service
            .ports
            .iter()
            .filter(|p| p.protocol != Some("UDP"))
            .map(|p| ServicePortDef {
                number: p.port,
                name: p.name.clone(),
                protocol: p
                    .protocol
                    .map_or(PortProtocol::Unknown, PortProtocol::parse),
                target_port: p.target_port,
            })
            .collect(),
        export_to: service.export_to.clone(),
        resolution,
        location: Location::MeshInternal,
    };
    let id = def.id();
    registry.add_service(def, &source);
    for endpoint in &service.endpoints {
        registry.add_endpoint(
            id.clone(),
            EndpointDef {
                address: endpoint.address,
                hostname: String::new(),
                ports: endpoint.ports.clone(),
                labels: endpoint.labels.clone(),
                weight: 0,
                workload: endpoint.pod.clone(),
                service_account: endpoint.service_account.clone(),
                locality: endpoint.locality.clone(),
            },
        );
    }
    Some(id)
}

/// Each ExternalName Service as an alias of the service its target host
/// names (the one in the alias's namespace first); call after every other
/// source added its services.
pub(super) fn add_aliases(cluster: &ClusterSnapshot, registry: &mut Registry) {
    for service in &cluster.services {
        let ServiceKind::ExternalName(target) = &service.kind else {
            continue;
        };
        let source = format!(
            "Kubernetes ExternalName Service {}/{}",
            service.namespace, service.name
        );
        let found = registry
            .services
            .iter()
            .filter(|s| s.hostname == *target)
            .min_by_key(|s| s.namespace != service.namespace)
            .cloned();
        let Some(aliased) = found else {
            registry.warnings.push(format!(
                "{source}: its target {target:?} is defined by no Service or ServiceEntry; \
                 not served until it is"
            ));
            continue;
        };
        let endpoints = registry.endpoints(&aliased.id()).to_vec();
        let alias = ServiceDef {
            cidrs: Vec::new(),
            hostname: service.hostname.clone(),
            namespace: service.namespace.clone(),
            // Callers resolve the name to the target's address (a DNS
            // CNAME); the alias only needs its own host.
            vips: Vec::new(),
            auto_vip: false,
            export_to: service.export_to.clone(),
            ..aliased
        };
        let id = alias.id();
        registry.add_service(alias, &source);
        for endpoint in endpoints {
            registry.add_endpoint(id.clone(), endpoint);
        }
    }
}

/// The cluster's ready Pods as workloads (for `workloadSelector`s).
pub(super) fn pod_workloads(cluster: &ClusterSnapshot) -> impl Iterator<Item = Workload> + '_ {
    cluster
        .pods
        .iter()
        .filter(|pod| pod.ready && !pod.terminating)
        .map(|pod| Workload {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            service_account: pod.service_account.clone(),
            address: pod.address,
            ports: Vec::new(),
            locality: pod.locality.clone(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weft_kube::convert::{KubeEndpoint, KubePort, PodInfo};

    use super::*;

    fn service(name: &str, kind: ServiceKind) -> KubeService {
        KubeService {
            name: name.into(),
            namespace: "shop".into(),
            hostname: format!("{name}.shop.svc.cluster.local"),
            kind,
            ports: vec![
                KubePort {
                    name: "http-web".into(),
                    port: 9080,
                    protocol: Some("HTTP"),
                    target_port: Some(8080),
                },
                KubePort {
                    name: "dns".into(),
                    port: 53,
                    protocol: Some("UDP"),
                    target_port: None,
                },
            ],
            export_to: Vec::new(),
            selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            endpoints: vec![KubeEndpoint {
                address: "10.1.0.1".parse().expect("ip"),
                ports: BTreeMap::from([("http-web".to_string(), 8080)]),
                labels: BTreeMap::from([("app".to_string(), name.to_string())]),
                pod: format!("{name}-1"),
                service_account: "sa".into(),
                locality: "us/east".into(),
                draining: false,
            }],
        }
    }

    const SERVICE_ENTRY: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: squat, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  addresses: [10.200.0.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.9.9.9}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: by-pods, namespace: shop}
spec:
  hosts: [pods.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: cart}}
";

    fn build(cluster: &ClusterSnapshot) -> Registry {
        let resources = weft_api::decode_str(SERVICE_ENTRY, "se.yaml").resources;
        Registry::build_with_cluster(&resources, cluster, &[])
    }

    #[test]
    fn a_kubernetes_service_wins_over_a_service_entry_for_its_host() {
        let cluster = ClusterSnapshot {
            credentials: Default::default(),
            services: vec![service(
                "reviews",
                ServiceKind::ClusterIp(vec!["10.96.0.20".parse().expect("ip")]),
            )],
            pods: Vec::new(),
        };
        let registry = build(&cluster);
        let reviews = registry
            .services()
            .iter()
            .find(|s| s.hostname == "reviews.shop.svc.cluster.local")
            .expect("reviews");
        assert_eq!(
            reviews.vips,
            vec!["10.96.0.20".parse::<std::net::IpAddr>().expect("ip")]
        );
        assert_eq!(reviews.ports.len(), 1, "UDP is not proxied");
        assert_eq!(reviews.ports[0].protocol, PortProtocol::Http);
        assert_eq!(reviews.location, Location::MeshInternal);
        // Endpoints combine, as Istio's endpoint shards do (one per
        // source for the same host and namespace).
        let endpoints = registry.endpoints(&reviews.id());
        let addresses: Vec<String> = endpoints.iter().map(|e| e.address.to_string()).collect();
        assert_eq!(addresses, vec!["10.1.0.1", "10.9.9.9"]);
        assert_eq!(endpoints[0].port_for(&reviews.ports[0]), 8080);
        assert_eq!(endpoints[0].locality, "us/east");
        assert!(
            registry
                .warnings()
                .iter()
                .any(|w| w.contains("ServiceEntry shop/squat") && w.contains("already defined")),
            "{:?}",
            registry.warnings()
        );
    }

    #[test]
    fn a_services_selector_picks_workload_entries_and_vms_but_not_pods() {
        let entries = "
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: shop}
spec: {address: 10.5.0.1, labels: {app: reviews}, serviceAccount: reviews-vm, ports: {http-web: 7070}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: elsewhere, namespace: other}
spec: {address: 10.5.0.2, labels: {app: reviews}}
";
        let resources = weft_api::decode_str(entries, "we.yaml").resources;
        let vm = Workload {
            name: "vm-2".into(),
            namespace: "shop".into(),
            labels: BTreeMap::from([("app".to_string(), "reviews".to_string())]),
            service_account: "reviews-vm".into(),
            address: "10.5.0.3".parse().expect("ip"),
            ports: Vec::new(),
            locality: String::new(),
        };
        // A connected sidecar in a (not ready) pod of the Service.
        let pod_sidecar = Workload {
            name: "pod/reviews-9".into(),
            address: "10.1.0.9".parse().expect("ip"),
            ..vm.clone()
        };
        let pod = PodInfo {
            name: "reviews-9".into(),
            namespace: "shop".into(),
            uid: "u".into(),
            labels: vm.labels.clone(),
            service_account: "reviews".into(),
            address: "10.1.0.9".parse().expect("ip"),
            node: String::new(),
            locality: String::new(),
            terminating: false,
            ready: true,
        };
        let cluster = ClusterSnapshot {
            credentials: Default::default(),
            services: vec![service(
                "reviews",
                ServiceKind::ClusterIp(vec!["10.96.0.20".parse().expect("ip")]),
            )],
            pods: vec![pod],
        };
        let registry = Registry::build_with_cluster(&resources, &cluster, &[vm, pod_sidecar]);
        let id = ServiceId {
            hostname: "reviews.shop.svc.cluster.local".into(),
            namespace: "shop".into(),
        };
        let endpoints = registry.endpoints(&id);
        let addresses: Vec<String> = endpoints.iter().map(|e| e.address.to_string()).collect();
        assert_eq!(addresses, vec!["10.1.0.1", "10.5.0.1", "10.5.0.3"]);
        let service = &registry.services()[0];
        assert_eq!(
            endpoints[1].port_for(&service.ports[0]),
            7070,
            "the entry's port"
        );
    }

    #[test]
    fn an_external_name_service_is_an_alias_of_its_target() {
        let cluster = ClusterSnapshot {
            credentials: Default::default(),
            services: vec![
                service(
                    "reviews",
                    ServiceKind::ClusterIp(vec!["10.96.0.20".parse().expect("ip")]),
                ),
                service(
                    "ext",
                    ServiceKind::ExternalName("reviews.shop.svc.cluster.local".into()),
                ),
            ],
            pods: Vec::new(),
        };
        let registry = Registry::build_with_cluster(&[], &cluster, &[]);
        let alias = registry
            .services()
            .iter()
            .find(|s| s.hostname == "ext.shop.svc.cluster.local")
            .expect("the alias is served");
        assert_eq!(alias.ports[0].number, 9080, "the target's ports");
        assert!(
            !alias.vips.contains(&"10.96.0.20".parse().expect("ip")),
            "not the target's VIP"
        );
        let endpoints = registry.endpoints(&alias.id());
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].address.to_string(), "10.1.0.1");
    }

    #[test]
    fn service_entries_select_pods_and_external_names_are_reported() {
        let cart = PodInfo {
            name: "cart-1".into(),
            namespace: "shop".into(),
            uid: "u".into(),
            labels: BTreeMap::from([("app".to_string(), "cart".to_string())]),
            service_account: "cart".into(),
            address: "10.1.0.7".parse().expect("ip"),
            node: "n".into(),
            locality: String::new(),
            terminating: false,
            ready: true,
        };
        let starting = PodInfo {
            name: "cart-2".into(),
            address: "10.1.0.8".parse().expect("ip"),
            ready: false,
            ..cart.clone()
        };
        let cluster = ClusterSnapshot {
            credentials: Default::default(),
            services: vec![
                service("ext", ServiceKind::ExternalName("api.example.com".into())),
                service("db", ServiceKind::Headless),
            ],
            pods: vec![cart, starting],
        };
        let registry = build(&cluster);
        let selected = registry.endpoints(&ServiceId {
            hostname: "pods.example".into(),
            namespace: "shop".into(),
        });
        assert_eq!(
            selected.len(),
            1,
            "the pod that is not ready is not selected"
        );
        assert_eq!(selected[0].address.to_string(), "10.1.0.7");
        assert!(
            registry
                .services()
                .iter()
                .all(|s| !s.hostname.starts_with("ext.")),
            "ExternalName is not served"
        );
        assert!(
            registry
                .warnings()
                .iter()
                .any(|w| w.contains("Service shop/ext") && w.contains("ExternalName"))
        );
        let db = registry
            .services()
            .iter()
            .find(|s| s.hostname.starts_with("db."))
            .expect("headless");
        assert_eq!(db.resolution, Resolution::None);
    }
}

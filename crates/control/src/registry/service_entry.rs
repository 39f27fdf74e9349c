//! The ServiceEntry source: services from ServiceEntries, endpoints from
//! their inline `endpoints` or, with a `workloadSelector`, from the
//! WorkloadEntries and connected workloads of the same namespace.

use std::collections::HashMap;
use std::net::IpAddr;

use weft_api::networking::{self as api, ServiceEntry, WorkloadEntry};
use weft_api::{Object, Resource};

use super::{
    EndpointDef, Location, PortProtocol, Registry, Resolution, ServiceDef, ServicePortDef,
    Workload, WorkloadGroupDef, labels_match, namespace_or_default,
};

/// A workload a `workloadSelector` may pick, with its namespace.
struct Candidate {
    namespace: String,
    endpoint: EndpointDef,
}

pub(super) fn collect(resources: &[Resource], workloads: &[Workload], registry: &mut Registry) {
    let mut candidates = Vec::new();
    let mut entries = Vec::new();
    for resource in resources {
        match resource {
            Resource::WorkloadEntry(object) => {
                let namespace = namespace_or_default(&object.metadata.namespace);
                let source = resource.label();
                if let Some(endpoint) = endpoint_of(
                    &object.spec,
                    &object.metadata.name,
                    &source,
                    false,
                    registry,
                ) {
                    candidates.push(Candidate {
                        namespace: namespace.to_string(),
                        endpoint,
                    });
                }
            }
            Resource::WorkloadGroup(object) => registry.workload_groups.push(WorkloadGroupDef {
                name: object.metadata.name.clone(),
                namespace: namespace_or_default(&object.metadata.namespace).to_string(),
                labels: object.spec.template.labels.clone(),
                service_account: object.spec.template.service_account.clone(),
            }),
            Resource::ServiceEntry(object) => entries.push(object),
            _ => {}
        }
    }
    candidates.extend(workloads.iter().map(|w| Candidate {
        namespace: namespace_or_default(&w.namespace).to_string(),
        endpoint: EndpointDef::of_workload(w),
    }));
    // Sorted so that "first definition wins" does not depend on input order.
    entries.sort_by(|a, b| {
        let key =
            |o: &Object<ServiceEntry>| (o.metadata.namespace.clone(), o.metadata.name.clone());
        key(a).cmp(&key(b))
    });
    let selectable = Selectable::new(&candidates);
    for object in entries {
        add_service_entry(object, &selectable, registry);
    }
}

/// The candidates indexed by namespace and by each label, so a selector
/// looks at the workloads carrying one of its labels rather than at every
/// workload of the mesh (10,000 ServiceEntries × 100,000 workloads would
/// otherwise be a billion comparisons per build).
struct Selectable<'a> {
    candidates: &'a [Candidate],
    /// Namespace → candidate indexes, ascending.
    by_namespace: HashMap<&'a str, Vec<usize>>,
    /// (namespace, label, value) → candidate indexes, ascending.
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
}

impl<'a> Selectable<'a> {
    fn new(candidates: &'a [Candidate]) -> Self {
        let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        for (index, candidate) in candidates.iter().enumerate() {
            let namespace = candidate.namespace.as_str();
            by_namespace.entry(namespace).or_default().push(index);
            for (key, value) in &candidate.endpoint.labels {
                by_label
                    .entry((namespace, key, value))
                    .or_default()
                    .push(index);
            }
        }
        Self {
            candidates,
            by_namespace,
            by_label,
        }
    }

    /// The candidates of `namespace` whose labels `selector` matches, in
    /// candidate order.
    fn select(
        &self,
        namespace: &str,
        selector: &std::collections::BTreeMap<String, String>,
    ) -> Vec<EndpointDef> {
        let none = Vec::new();
        // The selector's rarest label narrows the search; no label at all
        // selects the whole namespace.
        let narrowest = selector
            .iter()
            .map(|(key, value)| {
                self.by_label
                    .get(&(namespace, key.as_str(), value.as_str()))
                    .unwrap_or(&none)
            })
            .min_by_key(|indexes| indexes.len());
        let indexes = match narrowest {
            Some(indexes) => indexes,
            None => self.by_namespace.get(namespace).unwrap_or(&none),
        };
        indexes
            .iter()
            .map(|&index| &self.candidates[index])
            .filter(|c| labels_match(selector, &c.endpoint.labels))
            .map(|c| c.endpoint.clone())
            .collect()
    }
}

fn add_service_entry(
    object: &Object<ServiceEntry>,
    candidates: &Selectable<'_>,
    registry: &mut Registry,
) {
    let spec = &object.spec;
    let namespace = namespace_or_default(&object.metadata.namespace);
    let source = format!("ServiceEntry {namespace}/{}", object.metadata.name);
    let resolution = match spec.resolution {
        Some(api::Resolution::Static) => Resolution::Static,
        Some(api::Resolution::Dns | api::Resolution::DynamicDns) => Resolution::Dns,
        Some(api::Resolution::DnsRoundRobin) => Resolution::DnsRoundRobin,
        Some(api::Resolution::None) | None => Resolution::None,
    };
    let dns = matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin);
    let endpoints: Vec<EndpointDef> = match (&spec.endpoints, &spec.workload_selector) {
        (Some(inline), _) => inline
            .iter()
            .filter_map(|entry| endpoint_of(entry, &object.metadata.name, &source, dns, registry))
            .collect(),
        (None, Some(selector)) => {
            let ids = spec
                .hosts
                .iter()
                .map(|host| super::ServiceId {
                    hostname: host.clone(),
                    namespace: namespace.to_string(),
                })
                .collect();
            std::sync::Arc::make_mut(&mut registry.selectors).push(super::patch::Selector {
                namespace: namespace.to_string(),
                labels: selector.labels.clone(),
                ids,
            });
            candidates.select(namespace, &selector.labels)
        }
        (None, None) => Vec::new(),
    };
    if dns {
        // Istio refuses these too: a wildcard cannot be looked up, and
        // without endpoints the proxy resolves the host itself.
        for host in spec.hosts.iter().filter(|h| h.starts_with('*')) {
            if spec.endpoints.is_none() {
                registry.warnings.push(format!(
                    "{source}: host {host:?} is a wildcard: resolution DNS needs endpoints to resolve (requests to it fail)"
                ));
            }
        }
    }
    let location = match spec.location {
        Some(api::Location::MeshInternal) => Location::MeshInternal,
        Some(api::Location::MeshExternal) | None => Location::MeshExternal,
    };
    // A single address is a VIP; a range (CIDR) captures every address in
    // it ("10.0.0.1/32" is a VIP too).
    let mut vips: Vec<IpAddr> = Vec::new();
    let mut cidrs: Vec<ipnet::IpNet> = Vec::new();
    for address in &spec.addresses {
        match (address.parse::<IpAddr>(), address.parse::<ipnet::IpNet>()) {
            (Ok(ip), _) => vips.push(ip),
            (_, Ok(net)) if net.prefix_len() == net.max_prefix_len() => vips.push(net.addr()),
            (_, Ok(net)) => cidrs.push(net.trunc()),
            (Err(_), Err(_)) => registry.warnings.push(format!(
                "{source}: addresses: {address:?} is neither an IP address nor a CIDR; ignored"
            )),
        }
    }
    let ports: Vec<ServicePortDef> = spec
        .ports
        .iter()
        .map(|p| ServicePortDef {
            number: p.number,
            name: p.name.clone(),
            protocol: PortProtocol::parse(&p.protocol),
            target_port: p.target_port,
        })
        .collect();
    for host in &spec.hosts {
        let service = ServiceDef {
            hostname: host.clone(),
            namespace: namespace.to_string(),
            vips: vips.clone(),
            cidrs: cidrs.clone(),
            ports: ports.clone(),
            export_to: spec.export_to.clone(),
            resolution,
            location,
            auto_vip: false,
        };
        let id = service.id();
        registry.add_service(service, &source);
        for endpoint in &endpoints {
            registry.add_endpoint(id.clone(), endpoint.clone());
        }
    }
}

/// An endpoint from a WorkloadEntry (standalone or inline); `None` when its
/// address is neither an IP nor, in a `DNS` entry (`dns`), a DNS name the
/// proxy resolves. `unix://` sockets cannot be reached from another proxy.
pub(super) fn endpoint_of(
    entry: &WorkloadEntry,
    name: &str,
    source: &str,
    dns: bool,
    registry: &mut Registry,
) -> Option<EndpointDef> {
    let (address, hostname) = match entry.address.parse::<IpAddr>() {
        Ok(address) => (address, String::new()),
        Err(_) if dns && is_dns_name(&entry.address) => (
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            entry.address.trim_end_matches('.').to_string(),
        ),
        Err(_) => {
            if !entry.address.is_empty() {
                let why = if dns {
                    "neither an IP address nor a DNS name"
                } else {
                    "not an IP address (DNS names need resolution: DNS; unix sockets are not supported)"
                };
                registry.warnings.push(format!(
                    "{source}: endpoint address {:?} is {why}; skipped",
                    entry.address
                ));
            }
            return None;
        }
    };
    Some(EndpointDef {
        address,
        hostname,
        ports: entry.ports.clone(),
        labels: entry.labels.clone(),
        weight: entry.weight.unwrap_or(0),
        workload: name.to_string(),
        service_account: entry.service_account.clone(),
        locality: super::locality_of(&entry.locality, &entry.labels),
    })
}

/// Letters, digits, '-' and '.', in labels of 1..63: what a resolver can
/// look up (a `unix://` path or a URL is not).
fn is_dns_name(text: &str) -> bool {
    let name = text.trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

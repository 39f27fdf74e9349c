//! A registry patched for WorkloadEntry changes instead of built again.
//!
//! At 100,000 endpoints, building the registry reads every resource and
//! selects every ServiceEntry's workloads; an edited WorkloadEntry changes
//! only the endpoints of the ServiceEntries whose `workloadSelector` picks
//! it (before or after the edit). [`Registry::patch_workload_entries`]
//! removes the entry's old endpoint from those services and inserts the
//! new one where [`Registry::finish`] would have sorted it, sharing every
//! other service's endpoints with the registry before.
//!
//! It gives `None` (build in full) whenever the result could differ from a
//! full build: a Kubernetes cluster's Services (they select entries too),
//! an entry whose address draws a warning, a service where two endpoints
//! share an address and ports (a full build keeps one of them, chosen
//! among all candidates), or anything but WorkloadEntries changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_api::Resource;

use super::{EndpointDef, Registry, ServiceId, labels_match, namespace_or_default};

/// A ServiceEntry's `workloadSelector`, and the services (one per host)
/// whose endpoints it picks.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Selector {
    pub(super) namespace: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) ids: Vec<ServiceId>,
}

/// A WorkloadEntry as an endpoint candidate: (namespace, endpoint); `None`
/// inside when it yields no endpoint. `Err` when it is not a WorkloadEntry
/// or draws a warning (the full build says it; the patch cannot).
fn candidate(resource: &Resource) -> Result<Option<(String, EndpointDef)>, ()> {
    let Resource::WorkloadEntry(object) = resource else {
        return Err(());
    };
    let mut scratch = Registry::default();
    let endpoint = super::service_entry::endpoint_of(
        &object.spec,
        &object.metadata.name,
        &resource.label(),
        false,
        &mut scratch,
    );
    if !scratch.warnings.is_empty() {
        return Err(());
    }
    let namespace = namespace_or_default(&object.metadata.namespace).to_string();
    Ok(endpoint.map(|endpoint| (namespace, endpoint)))
}

/// [`Registry::finish`]'s order of a service's endpoints.
fn order(endpoint: &EndpointDef) -> (std::net::IpAddr, &BTreeMap<String, u32>, &str) {
    (endpoint.address, &endpoint.ports, &endpoint.workload)
}

impl Registry {
    /// This registry after `changes` ((before, after) per changed resource,
    /// `None` for absent), exactly as a full build over the changed
    /// resources with the same workloads and cluster would give it; `None`
    /// when that cannot be had by patching (see the module notes).
    pub fn patch_workload_entries(
        &self,
        changes: &[(Option<&Resource>, Option<&Resource>)],
    ) -> Option<Registry> {
        if self.from_cluster {
            return None;
        }
        let mut patched = self.clone();
        for (before, after) in changes {
            let before = before.map(candidate).transpose().ok()?.flatten();
            let after = after.map(candidate).transpose().ok()?.flatten();
            if let Some((namespace, endpoint)) = &before {
                for id in self.selecting(namespace, endpoint) {
                    patched.remove_endpoint(id, endpoint)?;
                }
            }
            if let Some((namespace, endpoint)) = &after {
                for id in self.selecting(namespace, endpoint) {
                    patched.insert_endpoint(id, endpoint)?;
                }
            }
        }
        Some(patched)
    }

    /// The services whose selector picks `endpoint` in `namespace`.
    fn selecting<'a>(
        &'a self,
        namespace: &'a str,
        endpoint: &'a EndpointDef,
    ) -> impl Iterator<Item = &'a ServiceId> + 'a {
        self.selectors
            .iter()
            .filter(move |s| s.namespace == namespace && labels_match(&s.labels, &endpoint.labels))
            .flat_map(|s| &s.ids)
    }

    fn remove_endpoint(&mut self, id: &ServiceId, endpoint: &EndpointDef) -> Option<()> {
        if self.deduplicated.contains(id) {
            return None;
        }
        let list = self.endpoints.get_mut(id)?;
        let at = list
            .binary_search_by(|held| order(held).cmp(&order(endpoint)))
            .ok()?;
        if list[at] != *endpoint {
            return None;
        }
        Arc::make_mut(list).remove(at);
        if list.is_empty() {
            // A full build has no entry for a service nothing was added to.
            self.endpoints.remove(id);
        }
        Some(())
    }

    fn insert_endpoint(&mut self, id: &ServiceId, endpoint: &EndpointDef) -> Option<()> {
        if self.deduplicated.contains(id) {
            return None;
        }
        let list = Arc::make_mut(self.endpoints.entry(id.clone()).or_default());
        let at = list.partition_point(|held| order(held) < order(endpoint));
        // Sorted by address and ports first: an endpoint sharing both sits
        // next to `at`; a full build would keep only one of the two.
        let collides = |other: Option<&EndpointDef>| {
            other.is_some_and(|o| o.address == endpoint.address && o.ports == endpoint.ports)
        };
        if collides(at.checked_sub(1).and_then(|i| list.get(i))) || collides(list.get(at)) {
            return None;
        }
        list.insert(at, endpoint.clone());
        Some(())
    }
}

#[cfg(test)]
#[path = "patch_tests.rs"]
mod tests;

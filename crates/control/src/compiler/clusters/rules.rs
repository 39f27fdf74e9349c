//! Which DestinationRule a proxy uses for a service, decided as Istio
//! decides it (`PushContext.destinationRule` and
//! `SidecarScope.DestinationRule`, Istio 1.20+):
//!
//! 1. the rules of the caller's namespace (those visible there: `exportTo`
//!    empty, `*`, `.` or naming it); for a caller in the root namespace,
//!    only the root namespace's private rules;
//! 2. else the rules the service's namespace exports to the caller;
//! 3. else the rules the root namespace (`istio-system`) exports to it.
//!
//! In each place the most specific host wins (exact over wildcard, then
//! the longest wildcard), and a rule not exported to the caller is not
//! replaced by a less specific one. The rules of one namespace for one
//! host are merged as Istio merges them: later rules add the subsets the
//! first lacks and its top-level policy if it has none; rules with
//! different `workloadSelector`s stay apart. Among the merged rules for
//! the chosen host, one whose selector matches the proxy's labels wins if
//! it lives in the proxy's own namespace (selectors never reach across
//! namespaces), else the rule without a selector, else none.
//!
//! Rules of one namespace are merged in (name) order; Istio orders them by
//! creation time, which weftd does not record.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use weft_api::networking::DestinationRule;
use weft_api::{Object, Resource};

use crate::compiler::hosts::{HostIndex, fqdn};
use crate::registry::{labels_match, namespace_or_default};

/// Rules of one namespace for one host, merged.
#[derive(Debug, Clone)]
pub(in crate::compiler) struct Consolidated {
    pub namespace: String,
    /// `workloadSelector.matchLabels`, `None` without a selector.
    pub selector: Option<BTreeMap<String, String>>,
    pub spec: DestinationRule,
    /// `namespace/name` of every rule merged in, first one first.
    pub from: Vec<String>,
}

/// Where a host's rules are exported to (`exportTo`, `.` resolved).
#[derive(Debug, Clone, Default)]
struct Export {
    everyone: bool,
    namespaces: BTreeSet<String>,
}

impl Export {
    fn of(rule: &DestinationRule, namespace: &str) -> Self {
        let mut export = Self {
            everyone: rule.export_to.is_empty(),
            namespaces: BTreeSet::new(),
        };
        for entry in &rule.export_to {
            match entry.as_str() {
                "*" => export.everyone = true,
                "." => {
                    export.namespaces.insert(namespace.to_string());
                }
                other => {
                    export.namespaces.insert(other.to_string());
                }
            }
        }
        export
    }

    fn allows(&self, namespace: &str) -> bool {
        self.everyone || self.namespaces.contains(namespace)
    }

    fn private_to(&self, namespace: &str) -> bool {
        !self.everyone && self.namespaces.len() == 1 && self.namespaces.contains(namespace)
    }

    fn absorb(&mut self, other: &Self) {
        self.everyone |= other.everyone;
        self.namespaces.extend(other.namespaces.iter().cloned());
    }
}

/// One namespace's rules, as one of Istio's indexes holds them.
#[derive(Debug, Default)]
struct NamespaceRules {
    /// Host key (FQDN or wildcard, lower case) → merged rules (arena ids).
    by_host: BTreeMap<String, Vec<usize>>,
    exports: BTreeMap<String, Export>,
    /// Service index → its most specific host key here.
    best: HashMap<usize, String>,
}

/// Every DestinationRule, indexed for the per-proxy choice.
#[derive(Debug, Default)]
pub(in crate::compiler) struct DestinationRules {
    arena: Vec<Consolidated>,
    /// Rules visible inside their own namespace (step 1).
    local: BTreeMap<String, NamespaceRules>,
    /// Rules exported beyond their namespace (steps 2 and 3).
    exported: BTreeMap<String, NamespaceRules>,
    /// The root namespace's private rules (step 1 for root-namespace proxies).
    root_local: NamespaceRules,
    /// MeshConfig `rootNamespace`.
    root: String,
}

impl DestinationRules {
    /// Every rule, `root` being the root namespace (MeshConfig
    /// `rootNamespace`).
    pub(in crate::compiler) fn build(
        resources: &[Resource],
        hosts: &HostIndex,
        root: &str,
    ) -> Self {
        let mut objects: Vec<&Object<DestinationRule>> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::DestinationRule(object) => Some(object),
                _ => None,
            })
            .collect();
        objects.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let mut rules = Self {
            root: root.to_string(),
            ..Self::default()
        };
        for object in objects {
            let namespace = namespace_or_default(&object.metadata.namespace).to_string();
            let export = Export::of(&object.spec, &namespace);
            if export.everyone || export.namespaces.contains(&namespace) {
                let index = rules.local.entry(namespace.clone()).or_default();
                merge(&mut rules.arena, index, object, &namespace, &export);
            }
            if !export.private_to(&namespace) {
                let index = rules.exported.entry(namespace.clone()).or_default();
                merge(&mut rules.arena, index, object, &namespace, &export);
            } else if namespace == root {
                merge(
                    &mut rules.arena,
                    &mut rules.root_local,
                    object,
                    &namespace,
                    &export,
                );
            }
        }
        // A rule visible at home and exported is merged twice, usually
        // into the same result: one id for both, so its clusters are built
        // once.
        let canonical: Vec<usize> = (0..rules.arena.len())
            .map(|id| {
                let held = &rules.arena[id];
                (0..id)
                    .find(|&other| {
                        let other = &rules.arena[other];
                        other.namespace == held.namespace
                            && other.from == held.from
                            && other.selector == held.selector
                            && other.spec == held.spec
                    })
                    .unwrap_or(id)
            })
            .collect();
        let indexes = rules
            .local
            .values_mut()
            .chain(rules.exported.values_mut())
            .chain(std::iter::once(&mut rules.root_local));
        for index in indexes {
            for ids in index.by_host.values_mut() {
                for id in ids.iter_mut() {
                    *id = canonical[*id];
                }
            }
            index.best = most_specific(index, hosts);
        }
        rules
    }

    /// Whether some proxy gets no rule at all for `service`: a namespace
    /// whose most specific rules for it all carry selectors (they shadow the
    /// others and may select nothing), or no catch-all rule exported to
    /// everyone from the service's or the root namespace.
    pub(in crate::compiler) fn some_caller_gets_none(
        &self,
        service: usize,
        service_namespace: &str,
    ) -> bool {
        let catch_all = |ids: &Vec<usize>| ids.iter().any(|&id| self.arena[id].selector.is_none());
        let shadowing = self
            .local
            .values()
            .chain(std::iter::once(&self.root_local))
            .filter_map(|index| index.best.get(&service).map(|key| &index.by_host[key]))
            .any(|ids| !catch_all(ids));
        // Callers without rules of their own: the service's namespace's
        // rules where exported to them (they must have a catch-all), the
        // root's for everyone else (exported to all, with a catch-all).
        let exported = |owner: &str| {
            let index = self.exported.get(owner)?;
            let key = index.best.get(&service)?;
            let everyone = index.exports.get(key).is_some_and(|e| e.everyone);
            Some((everyone, catch_all(&index.by_host[key])))
        };
        let root_covers = matches!(exported(&self.root), Some((true, true)));
        let fallback = match exported(service_namespace) {
            Some((_, false)) => false,
            Some((true, true)) => true,
            Some((false, true)) | None => root_covers,
        };
        shadowing || !fallback
    }

    pub(in crate::compiler) fn rule(&self, id: usize) -> &Consolidated {
        &self.arena[id]
    }

    /// Every rule some proxy may get for `service`.
    pub(in crate::compiler) fn candidates(&self, service: usize) -> BTreeSet<usize> {
        let indexes = self
            .local
            .values()
            .chain(self.exported.values())
            .chain(std::iter::once(&self.root_local));
        indexes
            .filter_map(|index| index.best.get(&service).map(|key| &index.by_host[key]))
            .flatten()
            .copied()
            .collect()
    }

    /// The rule a proxy in `caller` with `labels` uses for `service` (of
    /// `service_namespace`), `None` for none.
    pub(in crate::compiler) fn choose(
        &self,
        service: usize,
        service_namespace: &str,
        caller: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<usize> {
        let first = if caller == self.root {
            Some(&self.root_local)
        } else {
            self.local.get(caller)
        };
        let list = first
            .and_then(|index| index.best.get(&service).map(|key| &index.by_host[key]))
            .or_else(|| self.exported_to(service_namespace, service, caller))
            .or_else(|| self.exported_to(&self.root, service, caller))?;
        let mut catch_all = None;
        for &id in list {
            let rule = &self.arena[id];
            match &rule.selector {
                None => catch_all = Some(id),
                Some(selector) if rule.namespace == caller && labels_match(selector, labels) => {
                    return Some(id);
                }
                Some(_) => {}
            }
        }
        catch_all
    }

    /// Step 2/3: the rules `owner` exports for `service`, if its most
    /// specific host there is exported to `caller`.
    fn exported_to(&self, owner: &str, service: usize, caller: &str) -> Option<&Vec<usize>> {
        let index = self.exported.get(owner)?;
        let key = index.best.get(&service)?;
        index
            .exports
            .get(key)
            .is_some_and(|export| export.allows(caller))
            .then(|| &index.by_host[key])
    }
}

/// Istio's `mergeDestinationRule`, into one index.
fn merge(
    arena: &mut Vec<Consolidated>,
    index: &mut NamespaceRules,
    object: &Object<DestinationRule>,
    namespace: &str,
    export: &Export,
) {
    let rule = &object.spec;
    let key = fqdn(&rule.host, namespace).to_ascii_lowercase();
    let incoming = rule
        .workload_selector
        .as_ref()
        .map(|s| s.match_labels.clone());
    let name = format!("{namespace}/{}", object.metadata.name);
    let ids = index.by_host.entry(key.clone()).or_default();
    let mut append = true;
    for &id in ids.iter() {
        let held = &mut arena[id];
        let empty = BTreeMap::new();
        let same_selector =
            held.selector.as_ref().unwrap_or(&empty) == incoming.as_ref().unwrap_or(&empty);
        match (&held.selector, &incoming) {
            (Some(_), Some(_)) if !same_selector => continue,
            (None, None) | (Some(_), Some(_)) => append = false,
            _ => {}
        }
        // Only subsets and a missing top-level policy are taken; the first
        // rule's everything else (exportTo included) stays.
        for subset in &rule.subsets {
            if !held.spec.subsets.iter().any(|s| s.name == subset.name) {
                held.spec.subsets.push(subset.clone());
            }
        }
        if held.spec.traffic_policy.is_none() {
            held.spec.traffic_policy.clone_from(&rule.traffic_policy);
        }
        held.from.push(name.clone());
    }
    if append {
        ids.push(arena.len());
        arena.push(Consolidated {
            namespace: namespace.to_string(),
            selector: incoming,
            spec: rule.clone(),
            from: vec![name],
        });
    }
    index.exports.entry(key).or_default().absorb(export);
}

/// Per service, the index's most specific host matching it: exact over
/// wildcard, then the longer wildcard. Keys are already qualified in their
/// rule's namespace, so no namespace is needed to resolve them again.
fn most_specific(index: &NamespaceRules, hosts: &HostIndex) -> HashMap<usize, String> {
    let mut best: HashMap<usize, ((bool, usize), &String)> = HashMap::new();
    for key in index.by_host.keys() {
        for (service, wildcard) in hosts.matching(key, "") {
            let rank = (!wildcard, key.len());
            if best.get(&service).is_none_or(|(held, _)| rank > *held) {
                best.insert(service, (rank, key));
            }
        }
    }
    best.into_iter()
        .map(|(service, (_, key))| (service, key.clone()))
        .collect()
}

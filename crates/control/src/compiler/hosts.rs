//! Host names as Istio resolves them: short names relative to a namespace,
//! Kubernetes-style aliases, `*.suffix` wildcards, and `exportTo`.

use std::collections::{BTreeMap, BTreeSet};

use crate::registry::ServiceDef;

/// The suffix a short name gets: `reviews` in `default` is
/// `reviews.default.svc.cluster.local`.
pub(super) const KUBE_SUFFIX: &str = "svc.cluster.local";

/// `host` as written in a resource of namespace `namespace`: a name without
/// dots is short for the Kubernetes FQDN; anything else is already whole.
pub(super) fn fqdn(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.{KUBE_SUFFIX}")
    }
}

/// `x.ns.svc.cluster.local` → `("x", "ns")`.
pub(super) fn kube_parts(host: &str) -> Option<(&str, &str)> {
    let rest = host.strip_suffix(KUBE_SUFFIX)?.strip_suffix('.')?;
    let (name, namespace) = rest.split_once('.')?;
    (!name.is_empty() && !namespace.is_empty() && !namespace.contains('.'))
        .then_some((name, namespace))
}

/// Who may see a resource (`exportTo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Visibility {
    Everyone,
    Namespaces(BTreeSet<String>),
}

impl Visibility {
    /// Empty or `*`: everyone; `.`: the resource's own namespace; `~`: no
    /// one; anything else: that namespace.
    pub(super) fn from_export_to(export_to: &[String], own_namespace: &str) -> Self {
        if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
            return Self::Everyone;
        }
        let namespaces = export_to
            .iter()
            .filter(|e| *e != "~")
            .map(|e| if e == "." { own_namespace } else { e.as_str() })
            .map(str::to_string)
            .collect();
        Self::Namespaces(namespaces)
    }

    pub(super) fn allows(&self, namespace: &str) -> bool {
        match self {
            Self::Everyone => true,
            Self::Namespaces(namespaces) => namespaces.contains(namespace),
        }
    }
}

/// `*` matches everything, `*.suffix` the names under it, else equality.
pub(super) fn wildcard_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" || pattern.eq_ignore_ascii_case(name) {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            name.len() > suffix.len()
                && name
                    .to_ascii_lowercase()
                    .ends_with(&suffix.to_ascii_lowercase())
        }
        None => false,
    }
}

/// Finds services by the names resources use for them.
pub(super) struct HostIndex {
    /// Lower-cased hostname → service indexes (one per namespace).
    names: BTreeMap<String, Vec<usize>>,
    /// `x.ns.svc` and `x.ns` → indexes, for Kubernetes-style services.
    aliases: BTreeMap<String, Vec<usize>>,
    lower: Vec<String>,
}

impl HostIndex {
    pub(super) fn new(services: &[ServiceDef]) -> Self {
        let mut names: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut aliases: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut lower = Vec::with_capacity(services.len());
        for (index, service) in services.iter().enumerate() {
            let name = service.hostname.to_ascii_lowercase();
            names.entry(name.clone()).or_default().push(index);
            for alias in kube_aliases(&name) {
                aliases.entry(alias).or_default().push(index);
            }
            lower.push(name);
        }
        Self {
            names,
            aliases,
            lower,
        }
    }

    /// The services a concrete (non-wildcard) `host` names, written in
    /// `namespace`: every namespace's service of that hostname.
    pub(super) fn exact(&self, host: &str, namespace: &str) -> &[usize] {
        let host = host.to_ascii_lowercase();
        let full = fqdn(&host, namespace);
        self.names
            .get(&full)
            .or_else(|| self.names.get(&host))
            .or_else(|| self.aliases.get(&host))
            .map_or(&[], Vec::as_slice)
    }

    /// The services a VirtualService or DestinationRule `host` applies to,
    /// each with whether it matched through a wildcard (exact matches win).
    pub(super) fn matching(&self, host: &str, namespace: &str) -> Vec<(usize, bool)> {
        if host.starts_with('*') {
            return self
                .lower
                .iter()
                .enumerate()
                .filter(|(_, name)| wildcard_matches(host, name))
                .map(|(index, name)| (index, !host.eq_ignore_ascii_case(name)))
                .collect();
        }
        self.exact(host, namespace)
            .iter()
            .map(|index| (*index, false))
            .collect()
    }
}

/// The other names of a Kubernetes-style FQDN, short name excluded (that one
/// only works from inside the service's namespace).
pub(super) fn kube_aliases(name: &str) -> Vec<String> {
    match kube_parts(name) {
        Some((short, namespace)) => vec![
            format!("{short}.{namespace}.svc"),
            format!("{short}.{namespace}"),
        ],
        None => Vec::new(),
    }
}

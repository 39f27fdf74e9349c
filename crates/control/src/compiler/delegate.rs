//! `delegate`: a root VirtualService's `http[]` entry hands its traffic to
//! the `http` routes of another (host-less) VirtualService. One level, as in
//! Istio: each delegate route is inlined under the root entry, its match
//! blocks AND-ed with the root's. A delegate block that contradicts every
//! root block (its path outside the root's prefix, another header value,
//! ...) drops that delegate route, as Istio does: never a wider match.

use std::collections::BTreeMap;

use weft_api::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};
use weft_api::{Object, Resource};

use super::hosts::Visibility;
use crate::registry::namespace_or_default;

/// Every VirtualService by (namespace, name), for delegate lookups.
pub(super) struct Delegates<'a> {
    by_name: BTreeMap<(&'a str, &'a str), &'a Object<VirtualService>>,
}

impl<'a> Delegates<'a> {
    pub(super) fn new(resources: &'a [Resource]) -> Self {
        let by_name = resources
            .iter()
            .filter_map(|r| match r {
                Resource::VirtualService(object) => Some((
                    (
                        namespace_or_default(&object.metadata.namespace),
                        object.metadata.name.as_str(),
                    ),
                    object,
                )),
                _ => None,
            })
            .collect();
        Self { by_name }
    }

    /// The routes `root` (of a VirtualService in `namespace`) stands for,
    /// each with its index in the delegate and how warnings name it; empty
    /// (with a warning) when the delegate is missing or not usable.
    pub(super) fn expand(
        &self,
        root: &HttpRoute,
        namespace: &str,
        at: &str,
        warnings: &mut Vec<String>,
    ) -> Vec<(usize, String, HttpRoute)> {
        let Some(delegate) = &root.delegate else {
            return Vec::new();
        };
        let delegate_ns = if delegate.namespace.is_empty() {
            namespace
        } else {
            delegate.namespace.as_str()
        };
        let key = format!("{delegate_ns}/{}", delegate.name);
        let vs = match self.by_name.get(&(delegate_ns, delegate.name.as_str())) {
            None => Err("is not defined"),
            Some(vs) if !vs.spec.hosts.is_empty() => Err("has hosts, so it is not a delegate"),
            Some(vs)
                if !Visibility::from_export_to(&vs.spec.export_to, delegate_ns)
                    .allows(namespace) =>
            {
                Err("is not exported to this namespace")
            }
            Some(vs) => Ok(vs),
        };
        let vs = match vs {
            Ok(vs) => vs,
            Err(problem) => {
                warnings.push(format!(
                    "{at} skipped: delegate VirtualService {key} {problem}"
                ));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (index, leaf) in vs.spec.http.iter().enumerate() {
            let leaf_at = format!("{at} (delegate {key} http[{index}])");
            if leaf.delegate.is_some() {
                warnings.push(format!(
                    "{leaf_at} skipped: only one level of delegation is supported"
                ));
                continue;
            }
            match merge_route(root, leaf) {
                Some(merged) => out.push((index, leaf_at, merged)),
                None => warnings.push(format!(
                    "{leaf_at} skipped: a match block is not within any of the root's"
                )),
            }
        }
        out
    }
}

/// Istio's `mergeHTTPRoute`: the delegate's route, with the root's matches
/// AND-ed in and the root's settings where the delegate has none. `None`
/// when a delegate block fits no root block.
fn merge_route(root: &HttpRoute, leaf: &HttpRoute) -> Option<HttpRoute> {
    let mut out = leaf.clone();
    out.matches = merge_matches(&root.matches, &leaf.matches)?;
    out.name = joined_name(&root.name, &leaf.name);
    if out.rewrite.is_none() {
        out.rewrite = root.rewrite.clone();
    }
    if out.timeout.is_empty() {
        out.timeout = root.timeout.clone();
    }
    if out.retries.is_none() {
        out.retries = root.retries.clone();
    }
    if out.fault.is_none() {
        out.fault = root.fault.clone();
    }
    if out.mirror.is_none() && out.mirrors.is_empty() {
        out.mirror = root.mirror.clone();
        out.mirrors = root.mirrors.clone();
    }
    if out.cors_policy.is_none() {
        out.cors_policy = root.cors_policy.clone();
    }
    if out.headers.is_none() {
        out.headers = root.headers.clone();
    }
    Some(out)
}

fn joined_name(root: &str, leaf: &str) -> String {
    match (root.is_empty(), leaf.is_empty()) {
        (_, true) => root.to_string(),
        (true, false) => leaf.to_string(),
        (false, false) => format!("{root}-{leaf}"),
    }
}

fn merge_matches(
    root: &[HttpMatchRequest],
    leaf: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for sub in leaf {
        let before = out.len();
        out.extend(
            root.iter()
                .filter(|r| !conflicts(r, sub))
                .map(|r| merge_match(r, sub)),
        );
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = joined_name(&root.name, &leaf.name);
    for (mine, theirs) in [
        (&mut out.uri, &root.uri),
        (&mut out.scheme, &root.scheme),
        (&mut out.method, &root.method),
        (&mut out.authority, &root.authority),
    ] {
        if mine.is_none() {
            mine.clone_from(theirs);
        }
    }
    for (mine, theirs) in [
        (&mut out.headers, &root.headers),
        (&mut out.without_headers, &root.without_headers),
        (&mut out.query_params, &root.query_params),
    ] {
        for (key, value) in theirs {
            mine.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    for (key, value) in &root.source_labels {
        out.source_labels
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    if out.ignore_uri_case.is_none() {
        out.ignore_uri_case = root.ignore_uri_case;
    }
    if out.port.is_none() {
        out.port = root.port;
    }
    if out.source_namespace.is_empty() {
        out.source_namespace.clone_from(&root.source_namespace);
    }
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    out
}

/// Istio's `hasConflict`: whether `leaf` can match anything outside `root`
/// in a way merging cannot narrow.
fn conflicts(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let strings = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if strings
        .iter()
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    for (roots, leaves) in [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ] {
        if leaves
            .iter()
            .any(|(key, l)| string_conflict(roots.get(key), Some(l)))
        {
            return true;
        }
    }
    let ports_differ =
        matches!((root.port, leaf.port), (Some(r), Some(l)) if r > 0 && l > 0 && r != l);
    let gateways_wider = !root.gateways.is_empty()
        && !leaf.gateways.is_empty()
        && !leaf.gateways.iter().all(|g| root.gateways.contains(g));
    root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false)
        || ports_differ
        || (!root.source_namespace.is_empty() && leaf.source_namespace != root.source_namespace)
        || leaf
            .source_labels
            .iter()
            .any(|(k, v)| root.source_labels.get(k).is_some_and(|r| r != v))
        || gateways_wider
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Istio's `stringMatchConflict`: a leaf regex only under no root
/// condition, and a leaf exact/prefix must lie within the root's.
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let (r_exact, r_prefix, r_regex) = (
        non_empty(&root.exact),
        non_empty(&root.prefix),
        non_empty(&root.regex),
    );
    let (l_exact, l_prefix, l_regex) = (
        non_empty(&leaf.exact),
        non_empty(&leaf.prefix),
        non_empty(&leaf.regex),
    );
    let root_any = r_exact.is_some() || r_prefix.is_some() || r_regex.is_some();
    let leaf_any = l_exact.is_some() || l_prefix.is_some() || l_regex.is_some();
    if (r_regex.is_some() && leaf_any) || (l_regex.is_some() && root_any) {
        return true;
    }
    if let Some(exact) = r_exact
        && (l_prefix.is_some() || l_exact != Some(exact))
    {
        return true;
    }
    if let Some(prefix) = r_prefix {
        let outside = |s: Option<&str>| s.is_some_and(|s| !s.starts_with(prefix));
        if outside(l_prefix) || outside(l_exact) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>) -> StringMatch {
        StringMatch {
            exact: exact.map(Into::into),
            prefix: prefix.map(Into::into),
            regex: regex.map(Into::into),
        }
    }

    #[test]
    fn delegate_strings_must_lie_within_the_root() {
        let conflict = |r: StringMatch, l: StringMatch| string_conflict(Some(&r), Some(&l));
        let any = m(None, None, None);
        assert!(!conflict(
            m(None, Some("/a"), None),
            m(Some("/a/b"), None, None)
        ));
        assert!(!conflict(
            m(None, Some("/a"), None),
            m(None, Some("/a/"), None)
        ));
        assert!(conflict(
            m(None, Some("/a"), None),
            m(None, Some("/b"), None)
        ));
        assert!(!conflict(any.clone(), m(Some("x"), None, None)));
        assert!(conflict(m(Some("x"), None, None), any.clone()));
        assert!(!conflict(
            m(Some("x"), None, None),
            m(Some("x"), None, None)
        ));
        assert!(conflict(
            m(None, None, Some("a.*")),
            m(None, Some("a"), None)
        ));
        assert!(conflict(
            m(None, Some("/"), None),
            m(None, None, Some("/.*"))
        ));
        assert!(!conflict(any, m(None, None, Some("/.*"))));
        assert!(!string_conflict(None, Some(&m(None, Some("/"), None))));
    }

    #[test]
    fn merged_match_keeps_the_leaf_and_adds_the_root() {
        let root = HttpMatchRequest {
            name: "r".into(),
            uri: Some(m(None, Some("/api"), None)),
            headers: [("x-team".to_string(), m(Some("a"), None, None))].into(),
            port: Some(8080),
            ..Default::default()
        };
        let leaf = HttpMatchRequest {
            name: "l".into(),
            uri: Some(m(None, Some("/api/v2"), None)),
            headers: [("x-user".to_string(), m(None, None, None))].into(),
            ..Default::default()
        };
        assert!(!conflicts(&root, &leaf));
        let merged = merge_match(&root, &leaf);
        assert_eq!(merged.name, "r-l");
        assert_eq!(merged.uri, leaf.uri);
        assert_eq!(merged.headers.len(), 2);
        assert_eq!(merged.port, Some(8080));
        let elsewhere = HttpMatchRequest {
            port: Some(9090),
            ..leaf
        };
        assert!(conflicts(&root, &elsewhere));
    }
}

//! Weft's `RateLimit` resources → each proxy's `rate_limits`
//! (`weft.proxy.v1.RateLimits`), plus the cluster of the global rate-limit
//! service, added to the proxy's clusters whatever its Sidecar scope says
//! (the proxy must reach the service to enforce the limit).
//!
//! A resource applies to the sidecars (inbound side) and gateways of its
//! namespace that its selector matches (every one without a selector). All
//! resources selecting a proxy apply, in (namespace, name) order, their
//! limits added together. A proxy asks one rate-limit service: when several
//! resources name different ones, the first wins and the other resources'
//! descriptors are left out, with a warning.

use std::collections::BTreeMap;

use weft_api::Resource;
use weft_api::ratelimit::{self as api, EntrySource, RateLimit};
use weft_proto::proxy::v1::{self as pb, rate_limit_entry::Value};

use super::hosts::fqdn;
use super::ports::cluster_name;
use crate::registry::{labels_match, namespace_or_default};

/// One resource, compiled.
#[derive(Debug)]
struct Entry {
    label: String,
    namespace: String,
    selector: Option<BTreeMap<String, String>>,
    /// (host FQDN, port, the rest of the service settings).
    service: Option<(String, u32, pb::RateLimitService)>,
    rules: Vec<pb::RateLimitRule>,
}

/// Every RateLimit resource, compiled once per mesh change.
#[derive(Debug, Default)]
pub(super) struct Policies {
    /// Sorted by (namespace, name).
    entries: Vec<Entry>,
}

/// What one proxy gets: its limits, and the cluster name of its service.
pub(super) struct ForNode {
    pub limits: pb::RateLimits,
    /// `outbound|port||host` of the service, to resolve and add.
    pub cluster: Option<String>,
}

impl Policies {
    /// No RateLimit resource at all.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn build(resources: &[Resource]) -> Self {
        let mut keyed: Vec<((String, String), Entry)> = resources
            .iter()
            .filter_map(|resource| match resource {
                Resource::RateLimit(object) => Some((resource.label(), object)),
                _ => None,
            })
            .map(|(label, object)| {
                let namespace = namespace_or_default(&object.metadata.namespace).to_string();
                let key = (namespace.clone(), object.metadata.name.clone());
                let entry = compile(&object.spec, label, namespace, &key.1);
                (key, entry)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            entries: keyed.into_iter().map(|(_, e)| e).collect(),
        }
    }

    /// The limits for a proxy of `namespace` with `labels`; `None` when no
    /// resource selects it.
    pub(super) fn for_node(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        warnings: &mut Vec<String>,
    ) -> Option<ForNode> {
        let selected = self.entries.iter().filter(|e| {
            e.namespace == namespace && e.selector.as_ref().is_none_or(|s| labels_match(s, labels))
        });
        let mut limits = pb::RateLimits::default();
        let mut chosen: Option<(String, u32)> = None;
        let mut any = false;
        for entry in selected {
            any = true;
            let mut rules = entry.rules.clone();
            if let Some((host, port, service)) = &entry.service {
                match &chosen {
                    None => {
                        chosen = Some((host.clone(), *port));
                        limits.service = Some(service.clone());
                    }
                    Some(first) if *first == (host.clone(), *port) => {}
                    Some((first_host, first_port)) => {
                        warnings.push(format!(
                            "{}: this proxy already asks the rate-limit service {first_host}:{first_port}; \
                             the descriptors of this resource are left out",
                            entry.label
                        ));
                        drop_descriptors(&mut rules);
                    }
                }
            }
            limits.rules.extend(rules);
        }
        if !any {
            return None;
        }
        let cluster = chosen.map(|(host, port)| cluster_name(port, "", &host));
        if let (Some(name), Some(service)) = (&cluster, limits.service.as_mut()) {
            service.cluster.clone_from(name);
        }
        Some(ForNode { limits, cluster })
    }
}

/// Keeps only the local buckets of `rules` (a rule with nothing else goes).
pub(super) fn drop_descriptors(rules: &mut Vec<pb::RateLimitRule>) {
    for rule in rules.iter_mut() {
        rule.descriptors.clear();
    }
    rules.retain(|r| r.local.is_some());
}

fn compile(spec: &RateLimit, label: String, namespace: String, name: &str) -> Entry {
    let service = spec.service.as_ref().map(|s| {
        let timeout = s.timeout.as_deref().and_then(api::duration).map(Into::into);
        (
            fqdn(&s.host, &namespace),
            s.port,
            pb::RateLimitService {
                cluster: String::new(),
                domain: s.domain.clone(),
                timeout,
                failure_mode_deny: s.failure_mode_deny,
            },
        )
    });
    let rules = spec
        .limits
        .iter()
        .enumerate()
        .map(|(index, limit)| rule(limit, format!("{namespace}/{name}[{index}]")))
        .collect();
    Entry {
        label,
        selector: spec
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .filter(|l| !l.is_empty()),
        namespace,
        service,
        rules,
    }
}

fn rule(limit: &api::Limit, name: String) -> pb::RateLimitRule {
    let r#match = limit.match_.as_ref().map(|m| pb::RateLimitMatch {
        routes: m.routes.clone(),
        hosts: m.hosts.clone(),
        path_prefixes: m.paths.iter().filter_map(|p| p.prefix.clone()).collect(),
        paths: m.paths.iter().filter_map(|p| p.exact.clone()).collect(),
        methods: m.methods.clone(),
        ports: m.ports.clone(),
    });
    let local = limit.local.as_ref().map(|l| pb::LocalRateLimit {
        max_tokens: l.max_tokens,
        tokens_per_fill: l.tokens_per_fill.unwrap_or(1),
        fill_interval: api::duration(&l.fill_interval).map(Into::into),
    });
    let descriptors = limit
        .descriptors
        .iter()
        .map(|d| pb::RateLimitDescriptor {
            entries: d
                .entries
                .iter()
                .flat_map(|e| e.sources())
                .map(|(key, source)| pb::RateLimitEntry {
                    key,
                    value: Some(match source {
                        EntrySource::Literal(v) => Value::Literal(v.to_string()),
                        EntrySource::Header(h) => Value::Header(h.to_string()),
                        EntrySource::Path => Value::Path(true),
                        EntrySource::Method => Value::Method(true),
                        EntrySource::SourceAddress => Value::SourceAddress(true),
                        EntrySource::SourcePrincipal => Value::SourcePrincipal(true),
                        EntrySource::DestinationService => Value::DestinationService(true),
                    }),
                })
                .collect(),
        })
        .collect();
    pb::RateLimitRule {
        name,
        r#match,
        local,
        descriptors,
    }
}

impl super::MeshIndex {
    /// Sets `output`'s rate limits for `node` and adds the cluster of their
    /// rate-limit service (resolved under the DestinationRule the proxy
    /// gets). A service that is not in the mesh leaves the descriptors out,
    /// with a warning; local buckets still apply.
    pub(super) fn attach_rate_limits(&self, node: &super::Node, output: &mut super::ProxyOutput) {
        let namespace = namespace_or_default(&node.namespace);
        let Some(found) = self
            .rate_limits
            .for_node(namespace, &node.labels, &mut output.warnings)
        else {
            return;
        };
        let mut limits = found.limits;
        if let Some(name) = found.cluster {
            let clusters = &mut output.config.clusters;
            if !clusters.iter().any(|c| c.name == name) {
                match self
                    .rule_clusters
                    .resolve(&name, &self.clusters, namespace, &node.labels)
                {
                    Some(mut cluster) => {
                        super::locality::apply(&mut cluster, node);
                        // Clusters stay in name order.
                        let at = clusters.partition_point(|c| c.name < name);
                        clusters.insert(at, cluster);
                    }
                    None => {
                        output.warnings.push(format!(
                            "RateLimit: the rate-limit service {name} is not a known service port; \
                             its descriptors are left out (local limits still apply)"
                        ));
                        limits.service = None;
                        drop_descriptors(&mut limits.rules);
                    }
                }
            }
        }
        if !limits.rules.is_empty() {
            output.config.rate_limits = Some(limits);
        }
    }
}

//! `extAuthzProviders` → the runtime [`Provider`]s CUSTOM policies ask,
//! by name. Every problem is reported with its field path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use weft_proto::proxy::v1 as pb;

use super::snapshot::{Cluster, Problems, duration};
use crate::policy::authz::Pattern;
use crate::policy::ext_authz::{BodyLimit, Protocol, Provider};

/// Istio's default when a provider sets no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) type Providers = HashMap<String, Arc<Provider>>;

pub(super) fn compile(
    config: &pb::ProxyConfig,
    clusters: &HashMap<String, Arc<Cluster>>,
    problems: &mut Problems,
) -> Providers {
    let mut out = Providers::new();
    for (index, provider) in config.ext_authz_providers.iter().enumerate() {
        let path = format!("extAuthzProviders[{index}]");
        if let Some(compiled) = compile_one(provider, &path, clusters, problems)
            && out
                .insert(provider.name.clone(), Arc::new(compiled))
                .is_some()
        {
            problems.push(
                format!("{path}.name"),
                format!("{:?} is listed twice", provider.name),
            );
        }
    }
    out
}

fn compile_one(
    provider: &pb::ExtAuthzProvider,
    path: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
    problems: &mut Problems,
) -> Option<Provider> {
    if provider.name.is_empty() {
        problems.push(format!("{path}.name"), "required");
        return None;
    }
    if !clusters.contains_key(&provider.cluster) {
        problems.push(
            format!("{path}.cluster"),
            format!("no cluster named {:?}", provider.cluster),
        );
        return None;
    };
    let timeout = duration(
        provider.timeout.as_ref(),
        &format!("{path}.timeout"),
        problems,
    )
    .filter(|t| !t.is_zero())
    .unwrap_or(DEFAULT_TIMEOUT);
    let status_on_error = match provider.status_on_error {
        0 => StatusCode::FORBIDDEN,
        code => match u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => status,
            None => {
                problems.push(
                    format!("{path}.statusOnError"),
                    format!("{code} is not an HTTP status"),
                );
                return None;
            }
        },
    };
    let patterns = |list: &[String]| -> Vec<Pattern> {
        list.iter().map(|h| Pattern::parse(h, true)).collect()
    };
    let mut additional_headers = Vec::new();
    for (name, value) in &provider.include_additional_headers_in_check {
        match (
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => additional_headers.push((name, value)),
            _ => problems.push(
                format!("{path}.includeAdditionalHeadersInCheck[{name:?}]"),
                "not a valid header",
            ),
        }
    }
    if !provider.authority.is_empty() && provider.authority.parse::<http::uri::Authority>().is_err()
    {
        problems.push(
            format!("{path}.authority"),
            format!("{:?} is not a host[:port]", provider.authority),
        );
        return None;
    }
    let prefix = &provider.path_prefix;
    if !prefix.is_empty()
        && (!prefix.starts_with('/') || format!("{prefix}/").parse::<http::Uri>().is_err())
    {
        problems.push(
            format!("{path}.pathPrefix"),
            format!("{prefix:?} is not a path starting with /"),
        );
        return None;
    }
    let body = match &provider.include_request_body {
        None => None,
        // Envoy requires a positive limit; an empty one cannot be honoured.
        Some(body) if body.max_request_bytes == 0 => {
            problems.push(
                format!("{path}.includeRequestBody.maxRequestBytes"),
                "must be greater than 0",
            );
            return None;
        }
        Some(body) => Some(BodyLimit {
            max_bytes: body.max_request_bytes as usize,
            allow_partial: body.allow_partial_message,
            pack_as_bytes: body.pack_as_bytes,
        }),
    };
    Some(Provider {
        name: Arc::from(provider.name.as_str()),
        protocol: if provider.grpc {
            Protocol::Grpc
        } else {
            Protocol::Http
        },
        cluster: Arc::from(provider.cluster.as_str()),
        authority: provider.authority.clone(),
        timeout,
        fail_open: provider.fail_open,
        status_on_error,
        include_headers: patterns(&provider.include_request_headers_in_check),
        additional_headers,
        upstream_on_allow: patterns(&provider.headers_to_upstream_on_allow),
        downstream_on_deny: patterns(&provider.headers_to_downstream_on_deny),
        downstream_on_allow: patterns(&provider.headers_to_downstream_on_allow),
        path_prefix: prefix.clone(),
        body,
    })
}

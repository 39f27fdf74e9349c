//! `weft describe svc <service>`: which routes, policies and endpoints
//! apply to a service, and why (istioctl's `x describe service`), as
//! weftd computes it (`GET /v1/describe`).
//!
//! `weft describe pod <pod> --kubeconfig K` (istioctl's `x describe pod`):
//! the pod as the API server has it (IP, service account, whether it is
//! injected), its sidecar's sync state in weftd (injected sidecars register
//! as `<pod>.<namespace>`), then the description of every Service in its
//! namespace whose selector picks it.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use weft_kube::k8s_openapi::api::core::v1::{Pod, Service};
use weft_kube::kube::api::{Api, ListParams};

use weft_api::wire::{
    DescribedDestinationRule, DescribedEndpoint, DescribedGateway, DescribedPolicy,
    DescribedVirtualService, PolicySummary, ProxiesReply, ServiceDescription,
};

use crate::client::Weftd;
use crate::get::Output;

/// `weft describe svc reviews -n shop`, `weft describe pod reviews-v1-x -n shop`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// `svc` (optional) or `pod`, then the name.
    #[arg(num_args = 1..=2, required = true)]
    target: Vec<String>,
    /// The caller's namespace: short names and DestinationRule choice; the
    /// pod's namespace for `pod`.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

pub fn describe(weftd: &Weftd, args: &Args) -> anyhow::Result<ExitCode> {
    let name = args.target.last().map_or("", String::as_str);
    if args.target.len() == 2 {
        match args.target[0].as_str() {
            "svc" | "service" => {}
            "pod" | "po" | "pods" => return describe_pod(weftd, name, args),
            other => bail!(
                "describe knows services and pods: `weft describe svc NAME` or `weft describe \
                 pod NAME --kubeconfig K` (not {other:?})"
            ),
        }
    }
    let Some(described) = service(weftd, name, &args.namespace)? else {
        return Ok(ExitCode::FAILURE);
    };
    print_as(args.output, &described, || service_text(&described))?;
    Ok(ExitCode::SUCCESS)
}

/// `described` as JSON, YAML, or the table `table` makes.
fn print_as(
    output: Output,
    described: &impl Serialize,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(described)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(described)?),
        Output::Table => print!("{}", table()),
    }
    Ok(())
}

/// weftd's description of `service` seen from `namespace`; `None` after
/// saying so when weftd knows no such service.
fn service(
    weftd: &Weftd,
    service: &str,
    namespace: &str,
) -> anyhow::Result<Option<ServiceDescription>> {
    let answer = weftd.get(&format!(
        "/v1/describe?service={service}&namespace={namespace}"
    ))?;
    match answer.status {
        StatusCode::OK => Ok(Some(answer.decode("weftd's service description")?)),
        StatusCode::NOT_FOUND => {
            eprintln!("weft describe: {}", answer.error());
            Ok(None)
        }
        _ => bail!("weftd: {}", answer.error()),
    }
}

/// What `weft describe pod` prints (`-o json` shows these keys).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodDescription {
    pod: String,
    namespace: String,
    ip: Option<String>,
    service_account: Option<String>,
    labels: BTreeMap<String, String>,
    injected: bool,
    /// Its sidecar in weftd, `None` when none registered.
    proxy: Option<PodProxy>,
    services: Vec<ServiceDescription>,
}

#[derive(Serialize)]
struct PodProxy {
    id: String,
    status: &'static str,
    version: String,
}

/// The pod from the API server, its sidecar in weftd, and its Services.
fn describe_pod(weftd: &Weftd, name: &str, args: &Args) -> anyhow::Result<ExitCode> {
    let Some(client) = weftd.kube_client() else {
        bail!(
            "`describe pod` reads the pod from a cluster: add --kubeconfig (outside Kubernetes, \
             `weft describe svc NAME`)"
        );
    };
    let namespace = &args.namespace;
    let (pod, services) = weftd.block_on(async {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let pod = pods
            .get_opt(name)
            .await
            .with_context(|| format!("reading pod {namespace}/{name}"))?;
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let services = services
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing the Services of namespace {namespace}"))?;
        anyhow::Ok((pod, services.items))
    })?;
    let Some(pod) = pod else {
        eprintln!("weft describe: there is no pod {namespace}/{name}");
        return Ok(ExitCode::FAILURE);
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let selecting: Vec<String> = services
        .iter()
        .filter(|service| selects(service, &labels))
        .filter_map(|service| service.metadata.name.clone())
        .collect();
    let proxies = weftd.get("/v1/proxies")?;
    if proxies.status != StatusCode::OK {
        bail!("weftd: {}", proxies.error());
    }
    let id = format!("{name}.{namespace}");
    let proxies: ProxiesReply = proxies.decode("weftd's proxy list")?;
    let proxy = proxies.proxies.iter().find(|proxy| proxy.id == id);
    let mut described = Vec::new();
    for service_name in &selecting {
        if let Some(service) = service(weftd, service_name, namespace)? {
            described.push(service);
        }
    }
    let status = pod.status.clone().unwrap_or_default();
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("sidecar.istio.io/status"));
    let summary = PodDescription {
        pod: name.to_string(),
        namespace: namespace.clone(),
        ip: status.pod_ip,
        service_account: pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.clone()),
        labels,
        injected,
        proxy: proxy.map(|proxy| PodProxy {
            id: id.clone(),
            status: proxy.sync().as_str(),
            version: proxy.acked_version.clone(),
        }),
        services: described,
    };
    print_as(args.output, &summary, || pod_text(&summary, &id))?;
    Ok(ExitCode::SUCCESS)
}

/// Whether `service`'s selector picks a pod with `labels` (an absent or
/// empty selector picks none: such a Service's endpoints are managed by hand).
fn selects(service: &Service, labels: &BTreeMap<String, String>) -> bool {
    let selector = service
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.as_ref());
    selector.is_some_and(|selector| {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    })
}

fn pod_text(summary: &PodDescription, id: &str) -> String {
    let mut out = format!("Pod: {} (namespace {})\n", summary.pod, summary.namespace);
    out.push_str(&format!(
        "   IP: {}\n",
        summary.ip.as_deref().unwrap_or_default()
    ));
    out.push_str(&format!(
        "   Service account: {}\n",
        summary.service_account.as_deref().unwrap_or_default()
    ));
    out.push_str(&format!("   Labels: {}\n", labels(&summary.labels)));
    let sidecar = if summary.injected {
        "injected"
    } else {
        "not injected (no sidecar.istio.io/status annotation)"
    };
    out.push_str(&format!("   Sidecar: {sidecar}\n"));
    match &summary.proxy {
        Some(proxy) => out.push_str(&format!(
            "   Proxy: {id} {} (version {})\n",
            proxy.status, proxy.version,
        )),
        None => out.push_str(&format!("   Proxy: {id} is not registered with weftd\n")),
    }
    if summary.services.is_empty() {
        out.push_str("\nNo Service in its namespace selects this pod.\n");
    }
    for service in &summary.services {
        out.push('\n');
        out.push_str(&service_text(service));
    }
    out
}

/// The description as indented text, one fact a line.
fn service_text(described: &ServiceDescription) -> String {
    let mut out = String::new();
    let mut line = |depth: usize, text: String| {
        out.push_str(&"   ".repeat(depth));
        out.push_str(&text);
        out.push('\n');
    };
    let service = &described.service;
    line(
        0,
        format!(
            "Service: {} (namespace {})",
            service.host, service.namespace
        ),
    );
    line(1, format!("VIPs: {}", service.vips.join(", ")));
    for port in &service.ports {
        line(
            1,
            format!("Port: {} {}/{}", port.name, port.number, port.protocol),
        );
    }
    line(0, "VirtualServices:".into());
    if described.virtual_services.is_empty() {
        line(
            1,
            "none: traffic goes to every endpoint by the default route".into(),
        );
    }
    for vs in &described.virtual_services {
        virtual_service_lines(vs, &mut line);
    }
    line(0, "DestinationRules:".into());
    if described.destination_rules.is_empty() {
        line(
            1,
            "none: round robin, no connection limits, no outlier detection".into(),
        );
    }
    for rule in &described.destination_rules {
        destination_rule_lines(rule, &mut line);
    }
    line(0, "Endpoints:".into());
    if described.endpoints.is_empty() {
        line(1, "none".into());
    }
    for endpoint in &described.endpoints {
        line(1, endpoint_line(endpoint));
    }
    line(0, "Gateways:".into());
    if described.gateways.is_empty() {
        line(1, "none: not exposed through a gateway".into());
    }
    for gateway in &described.gateways {
        gateway_lines(gateway, &mut line);
    }
    line(0, "Policies:".into());
    if described.policies.is_empty() {
        line(1, "none select this service's workloads".into());
    }
    for policy in &described.policies {
        line(1, policy_line(policy));
    }
    out
}

fn virtual_service_lines(vs: &DescribedVirtualService, line: &mut impl FnMut(usize, String)) {
    line(
        1,
        format!(
            "{}{}/{}: {}",
            mark(vs.applies),
            vs.namespace,
            vs.name,
            vs.why
        ),
    );
    for rule in &vs.rules {
        let matched = match_text(&rule.matches);
        line(
            2,
            format!("{} rule, match {matched}:", rule.protocol.to_uppercase()),
        );
        for route in &rule.routes {
            let mut to = route.host.clone();
            if let Some(subset) = &route.subset {
                to.push_str(&format!(" subset {subset}"));
            }
            if let Some(port) = route.port {
                to.push_str(&format!(" port {port}"));
            }
            if let Some(weight) = route.weight {
                to.push_str(&format!(" weight {weight}%"));
            }
            line(3, format!("-> {to}"));
        }
    }
}

fn destination_rule_lines(rule: &DescribedDestinationRule, line: &mut impl FnMut(usize, String)) {
    line(
        1,
        format!(
            "{}{}/{}: {}",
            mark(rule.applies),
            rule.namespace,
            rule.name,
            rule.why
        ),
    );
    policy_lines(&rule.policy, 2, line);
    for subset in &rule.subsets {
        line(
            2,
            format!("subset {} (labels {})", subset.name, labels(&subset.labels)),
        );
        policy_lines(&subset.policy, 3, line);
    }
}

fn endpoint_line(endpoint: &DescribedEndpoint) -> String {
    let locality = match endpoint.locality.as_str() {
        "" => String::new(),
        locality => format!(" locality {locality}"),
    };
    let subsets = match endpoint.subsets.as_slice() {
        [] => String::new(),
        subsets => format!(" subsets {}", subsets.join(", ")),
    };
    format!(
        "{} workload {} labels {}{locality}{subsets}",
        endpoint.addresses.join(", "),
        endpoint.workload,
        labels(&endpoint.labels),
    )
}

fn gateway_lines(gateway: &DescribedGateway, line: &mut impl FnMut(usize, String)) {
    let found = if gateway.found { "" } else { " (NOT FOUND)" };
    line(
        1,
        format!(
            "{}/{}{found} via {}",
            gateway.namespace, gateway.name, gateway.via
        ),
    );
    for server in &gateway.servers {
        line(2, format!("server {server}"));
    }
}

fn policy_line(policy: &DescribedPolicy) -> String {
    let mut detail = String::new();
    if let Some(action) = &policy.action {
        detail.push_str(&format!(" action {action}"));
    }
    if let Some(mode) = &policy.mtls {
        detail.push_str(&format!(" mtls {mode}"));
    }
    format!(
        "{} {}/{}{detail}: {}",
        policy.kind, policy.namespace, policy.name, policy.why
    )
}

/// `uri prefix /api, header end-user exact jason` or `any request`; the
/// alternatives of a rule's match list (as written) joined by ` OR `.
fn match_text(matches: &Value) -> String {
    let alternatives: Vec<String> = matches
        .as_array()
        .into_iter()
        .flatten()
        .map(|one| {
            let mut parts = Vec::new();
            for (key, value) in one.as_object().into_iter().flatten() {
                match key.as_str() {
                    "headers" | "queryParams" | "withoutHeaders" => {
                        let label = match key.as_str() {
                            "headers" => "header",
                            "queryParams" => "query",
                            _ => "without header",
                        };
                        for (name, condition) in value.as_object().into_iter().flatten() {
                            parts.push(format!("{label} {name} {}", condition_text(condition)));
                        }
                    }
                    _ => parts.push(format!("{key} {}", condition_text(value))),
                }
            }
            parts.join(", ")
        })
        .filter(|text| !text.is_empty())
        .collect();
    if alternatives.is_empty() {
        "any request".to_string()
    } else {
        alternatives.join(" OR ")
    }
}

/// `{exact: v}` → `exact v`; anything else as compact JSON.
fn condition_text(condition: &Value) -> String {
    match condition.as_object() {
        Some(map) if map.len() == 1 => {
            let (op, value) = map
                .iter()
                .next()
                .map_or(("", &Value::Null), |(k, v)| (k.as_str(), v));
            match value.as_str() {
                Some(text) => format!("{op} {text}"),
                None => format!("{op} {value}"),
            }
        }
        _ => match condition.as_str() {
            Some(text) => text.to_string(),
            None => condition.to_string(),
        },
    }
}

/// A traffic policy's sections, as written.
fn policy_lines(policy: &PolicySummary, depth: usize, line: &mut impl FnMut(usize, String)) {
    for (key, value) in policy {
        line(depth, format!("{key}: {value}"));
    }
}

/// `* ` before what applies, `  ` before what does not.
fn mark(applies: bool) -> &'static str {
    if applies { "* " } else { "  " }
}

fn labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none".to_string();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(selector: Option<&[(&str, &str)]>) -> Service {
        let selector = selector.map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        });
        Service {
            spec: Some(weft_kube::k8s_openapi::api::core::v1::ServiceSpec {
                selector,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_selects_a_pod_whose_labels_carry_its_whole_selector() {
        let labels: BTreeMap<String, String> = [("app", "reviews"), ("version", "v1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(selects(&service(Some(&[("app", "reviews")])), &labels));
        assert!(!selects(
            &service(Some(&[("app", "reviews"), ("version", "v2")])),
            &labels
        ));
        assert!(!selects(&service(Some(&[])), &labels));
        assert!(!selects(&service(None), &labels));
    }
}

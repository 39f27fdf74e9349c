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
use serde_json::{Value, json};
use weft_kube::k8s_openapi::api::core::v1::{Pod, Service};
use weft_kube::kube::api::{Api, ListParams};

use weft_api::wire::ProxiesReply;

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
    let output = args.output;
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
    let Some(body) = service(weftd, name, &args.namespace)? else {
        return Ok(ExitCode::FAILURE);
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&body)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&body)?),
        Output::Table => print!("{}", text(&body)),
    }
    Ok(ExitCode::SUCCESS)
}

/// weftd's description of `service` seen from `namespace`; `None` after
/// saying so when weftd knows no such service.
fn service(weftd: &Weftd, service: &str, namespace: &str) -> anyhow::Result<Option<Value>> {
    let answer = weftd.get(&format!(
        "/v1/describe?service={service}&namespace={namespace}"
    ))?;
    match answer.status {
        StatusCode::OK => Ok(Some(answer.body)),
        StatusCode::NOT_FOUND => {
            eprintln!("weft describe: {}", answer.error());
            Ok(None)
        }
        _ => bail!("weftd: {}", answer.error()),
    }
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
        if let Some(body) = service(weftd, service_name, namespace)? {
            described.push(body);
        }
    }
    let status = pod.status.clone().unwrap_or_default();
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("sidecar.istio.io/status"));
    let summary = json!({
        "pod": name,
        "namespace": namespace,
        "ip": status.pod_ip,
        "serviceAccount": pod.spec.as_ref().and_then(|spec| spec.service_account_name.clone()),
        "labels": labels,
        "injected": injected,
        "proxy": proxy.map(|proxy| json!({
            "id": id,
            "status": proxy.sync().as_str(),
            "version": proxy.acked_version,
        })),
        "services": described,
    });
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&summary)?),
        Output::Table => print!("{}", pod_text(&summary, &id)),
    }
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

fn pod_text(summary: &Value, id: &str) -> String {
    let mut out = format!(
        "Pod: {} (namespace {})\n",
        s(&summary["pod"]),
        s(&summary["namespace"])
    );
    out.push_str(&format!("   IP: {}\n", s(&summary["ip"])));
    out.push_str(&format!(
        "   Service account: {}\n",
        s(&summary["serviceAccount"])
    ));
    out.push_str(&format!("   Labels: {}\n", labels(&summary["labels"])));
    let sidecar = if summary["injected"] == true {
        "injected"
    } else {
        "not injected (no sidecar.istio.io/status annotation)"
    };
    out.push_str(&format!("   Sidecar: {sidecar}\n"));
    match summary["proxy"].as_object() {
        Some(proxy) => out.push_str(&format!(
            "   Proxy: {id} {} (version {})\n",
            proxy.get("status").map_or("", s),
            proxy.get("version").map_or("", s),
        )),
        None => out.push_str(&format!("   Proxy: {id} is not registered with weftd\n")),
    }
    let services = items(&summary["services"]);
    if services.is_empty() {
        out.push_str("\nNo Service in its namespace selects this pod.\n");
    }
    for service in services {
        out.push('\n');
        out.push_str(&text(service));
    }
    out
}

/// The description as indented text, one fact a line.
fn text(body: &Value) -> String {
    let mut out = String::new();
    let mut line = |depth: usize, text: String| {
        out.push_str(&"   ".repeat(depth));
        out.push_str(&text);
        out.push('\n');
    };
    let service = &body["service"];
    line(
        0,
        format!(
            "Service: {} (namespace {})",
            s(&service["host"]),
            s(&service["namespace"])
        ),
    );
    line(1, format!("VIPs: {}", join(&service["vips"])));
    for port in items(&service["ports"]) {
        line(
            1,
            format!(
                "Port: {} {}/{}",
                s(&port["name"]),
                port["number"],
                s(&port["protocol"])
            ),
        );
    }

    line(0, "VirtualServices:".into());
    if items(&body["virtualServices"]).is_empty() {
        line(
            1,
            "none: traffic goes to every endpoint by the default route".into(),
        );
    }
    for vs in items(&body["virtualServices"]) {
        line(
            1,
            format!(
                "{}{}/{}: {}",
                mark(vs),
                s(&vs["namespace"]),
                s(&vs["name"]),
                s(&vs["why"])
            ),
        );
        for rule in items(&vs["rules"]) {
            let matched = match_text(&rule["match"]);
            line(
                2,
                format!(
                    "{} rule, match {matched}:",
                    s(&rule["protocol"]).to_uppercase()
                ),
            );
            for route in items(&rule["routes"]) {
                let mut to = s(&route["host"]).to_string();
                if let Some(subset) = route["subset"].as_str() {
                    to.push_str(&format!(" subset {subset}"));
                }
                if !route["port"].is_null() {
                    to.push_str(&format!(" port {}", route["port"]));
                }
                if !route["weight"].is_null() {
                    to.push_str(&format!(" weight {}%", route["weight"]));
                }
                line(3, format!("-> {to}"));
            }
        }
    }

    line(0, "DestinationRules:".into());
    if items(&body["destinationRules"]).is_empty() {
        line(
            1,
            "none: round robin, no connection limits, no outlier detection".into(),
        );
    }
    for rule in items(&body["destinationRules"]) {
        line(
            1,
            format!(
                "{}{}/{}: {}",
                mark(rule),
                s(&rule["namespace"]),
                s(&rule["name"]),
                s(&rule["why"])
            ),
        );
        policy_lines(&rule["policy"], 2, &mut line);
        for subset in items(&rule["subsets"]) {
            line(
                2,
                format!(
                    "subset {} (labels {})",
                    s(&subset["name"]),
                    labels(&subset["labels"])
                ),
            );
            policy_lines(&subset["policy"], 3, &mut line);
        }
    }

    line(0, "Endpoints:".into());
    if items(&body["endpoints"]).is_empty() {
        line(1, "none".into());
    }
    for endpoint in items(&body["endpoints"]) {
        let subsets = join(&endpoint["subsets"]);
        line(
            1,
            format!(
                "{} workload {} labels {}{}{}",
                join(&endpoint["addresses"]),
                s(&endpoint["workload"]),
                labels(&endpoint["labels"]),
                match s(&endpoint["locality"]) {
                    "" => String::new(),
                    locality => format!(" locality {locality}"),
                },
                if subsets.is_empty() {
                    String::new()
                } else {
                    format!(" subsets {subsets}")
                },
            ),
        );
    }

    line(0, "Gateways:".into());
    if items(&body["gateways"]).is_empty() {
        line(1, "none: not exposed through a gateway".into());
    }
    for gateway in items(&body["gateways"]) {
        let found = if gateway["found"] == Value::Bool(true) {
            ""
        } else {
            " (NOT FOUND)"
        };
        line(
            1,
            format!(
                "{}/{}{found} via {}",
                s(&gateway["namespace"]),
                s(&gateway["name"]),
                s(&gateway["via"])
            ),
        );
        for server in items(&gateway["servers"]) {
            line(2, format!("server {}", s(server)));
        }
    }

    line(0, "Policies:".into());
    if items(&body["policies"]).is_empty() {
        line(1, "none select this service's workloads".into());
    }
    for policy in items(&body["policies"]) {
        let mut detail = String::new();
        if let Some(action) = policy["action"].as_str() {
            detail.push_str(&format!(" action {action}"));
        }
        if let Some(mode) = policy["mtls"].as_str() {
            detail.push_str(&format!(" mtls {mode}"));
        }
        line(
            1,
            format!(
                "{} {}/{}{detail}: {}",
                s(&policy["kind"]),
                s(&policy["namespace"]),
                s(&policy["name"]),
                s(&policy["why"])
            ),
        );
    }
    out
}

/// `uri prefix /api, header end-user exact jason` or `any request`; the
/// alternatives of a rule's match list joined by ` OR `.
fn match_text(matches: &Value) -> String {
    let alternatives: Vec<String> = items(matches)
        .iter()
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

fn policy_lines(policy: &Value, depth: usize, line: &mut impl FnMut(usize, String)) {
    if let Some(parts) = policy.as_object() {
        for (key, value) in parts {
            line(depth, format!("{key}: {value}"));
        }
    }
}

/// `* ` before what applies, `  ` before what does not.
fn mark(item: &Value) -> &'static str {
    if item["applies"] == Value::Bool(true) {
        "* "
    } else {
        "  "
    }
}

fn s(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn join(value: &Value) -> String {
    items(value)
        .iter()
        .map(|v| s(v).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn labels(value: &Value) -> String {
    let pairs: Vec<String> = value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect();
    if pairs.is_empty() {
        "none".to_string()
    } else {
        pairs.join(",")
    }
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

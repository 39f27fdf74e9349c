//! `weft describe svc <service>`: which routes, policies and endpoints
//! apply to a service, and why (istioctl's `x describe service`), as
//! weftd computes it (`GET /v1/describe`).

use std::process::ExitCode;

use anyhow::bail;
use http::StatusCode;
use serde_json::Value;

use crate::client::Weftd;
use crate::get::Output;

/// `weft describe svc reviews -n shop`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// `svc` (optional), then the service name.
    #[arg(num_args = 1..=2, required = true)]
    target: Vec<String>,
    /// The caller's namespace: short names and DestinationRule choice.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

pub fn describe(weftd: &Weftd, args: &Args) -> anyhow::Result<ExitCode> {
    let service = args.target.last().map_or("", String::as_str);
    let (namespace, output) = (&args.namespace, args.output);
    if args.target.len() == 2 && !matches!(args.target[0].as_str(), "svc" | "service") {
        bail!("describe knows services only: `weft describe svc NAME`");
    }
    let answer = weftd.get(&format!(
        "/v1/describe?service={service}&namespace={namespace}"
    ))?;
    match answer.status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            eprintln!("weft describe: {}", answer.error());
            return Ok(ExitCode::FAILURE);
        }
        _ => bail!("weftd: {}", answer.error()),
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer.body)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&answer.body)?),
        Output::Table => print!("{}", text(&answer.body)),
    }
    Ok(ExitCode::SUCCESS)
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

//! `weft proxy-config <proxy> [section]`: what one proxy holds now, read
//! from the proxy itself (its admin port), as istioctl's `proxy-config`
//! shows it.
//!
//! Source of truth is the proxy, not weftd: `/config_dump` is the config
//! the proxy serves (which may differ from what weftd last sent while a
//! push is NACKed), and only the proxy knows which endpoints outlier
//! detection has ejected (`/clusters`, `health_flags`). weftd does not
//! learn proxies' admin addresses, so the proxy is named by that address
//! (`weft proxy-config 127.0.0.1:15000`) or by its id with `--admin ADDR`.
//! A proxy id alone shows what weftd last pushed to it
//! (`GET /v1/proxies/<id>/config`), with endpoint health unknown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::ValueEnum;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use weft_api::wire::{self, PushedConfig};

use crate::client::Weftd;
use crate::get::Output;

/// An admin port answers from memory; slower means it is not one.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Section {
    All,
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    /// The workload certificate chain, its SPIFFE id and validity, and the
    /// roots the proxy trusts (from the proxy's `/certs`).
    #[value(alias = "secret")]
    Secrets,
}

/// `weft proxy-config 127.0.0.1:15000 endpoints`, or a proxy id with
/// `--admin ADDR`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The proxy's admin address; or its id, with `--admin`, or alone for
    /// the config weftd last gave it (endpoint health unknown). istioctl's
    /// order (`proxy-config routes PROXY`) works too.
    #[arg(value_name = "PROXY")]
    first: String,
    /// all, listeners, routes, clusters, endpoints or secrets.
    #[arg(value_name = "SECTION")]
    second: Option<String>,
    /// The proxy's admin address (its `--admin` flag).
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// With --kubeconfig: the pod's namespace; a pod's sidecar registers
    /// as `<pod>.<namespace>`, so `weft proxy-config routes reviews-v1-x -n
    /// shop` names it by the pod.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

pub fn run(weftd: &crate::client::Target, query: &Args) -> ExitCode {
    match positionals(&query.first, query.second.as_deref()).and_then(|(proxy, section)| {
        show(
            weftd,
            &Query {
                proxy,
                section,
                args: query,
            },
        )
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weft proxy-config: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// What to show: the proxy and section, sorted out of the positionals.
struct Query<'a> {
    proxy: String,
    section: Section,
    args: &'a Args,
}

/// (proxy, section) from `PROXY [SECTION]` or istioctl's `SECTION PROXY`.
fn positionals(first: &str, second: Option<&str>) -> anyhow::Result<(String, Section)> {
    let section = |text: &str| Section::from_str(text, true);
    match second {
        None => Ok((first.to_string(), Section::All)),
        Some(second) => match (section(first), section(second)) {
            (_, Ok(section)) => Ok((first.to_string(), section)),
            (Ok(section), Err(_)) => Ok((second.to_string(), section)),
            (Err(_), Err(_)) => bail!(
                "neither {first:?} nor {second:?} is a section (all, listeners, routes, \
                 clusters, endpoints, secrets)"
            ),
        },
    }
}

/// The ids to ask weftd for, in order: on a cluster (`namespace`) a pod
/// name is first `<pod>.<namespace>` (how injected sidecars register),
/// then the name as given.
fn proxy_ids(proxy: &str, namespace: Option<&str>) -> Vec<String> {
    match namespace {
        Some(namespace) if !proxy.contains('.') => {
            vec![format!("{proxy}.{namespace}"), proxy.to_string()]
        }
        _ => vec![proxy.to_string()],
    }
}

fn show(weftd: &crate::client::Target, query: &Query) -> anyhow::Result<()> {
    let wants_secrets = matches!(query.section, Section::All | Section::Secrets);
    let mut certs = None;
    let (dump, health) = match admin_address(query)? {
        Some(admin) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the I/O runtime")?;
            let dump = runtime.block_on(fetch(admin, "/config_dump"))?;
            let dump: Value = serde_json::from_str(&dump).map_err(|_| {
                anyhow!("{admin} is not a weft-proxy admin port (/config_dump is not JSON)")
            })?;
            // The proxy's dump has weftd's envelope (and `lastRejected`).
            let dump: PushedConfig = wire::decode(&format!("{admin}'s /config_dump"), &dump)?;
            let health = parse_clusters(&runtime.block_on(fetch(admin, "/clusters"))?);
            if wants_secrets {
                let text = runtime.block_on(fetch(admin, "/certs"))?;
                certs = Some(serde_json::from_str::<Value>(&text).map_err(|_| {
                    anyhow!("{admin} is not a weft-proxy admin port (/certs is not JSON)")
                })?);
            }
            (dump, Some(health))
        }
        None => {
            let client = Weftd::new(weftd)?;
            let mut answer = None;
            for id in proxy_ids(
                &query.proxy,
                weftd.cluster().map(|_| query.args.namespace.as_str()),
            ) {
                let got = client.get(&format!("/v1/proxies/{id}/config"))?;
                let found = got.status != StatusCode::NOT_FOUND;
                answer = Some((id, got));
                if found {
                    break;
                }
            }
            let Some((id, answer)) = answer else {
                bail!("no proxy named");
            };
            if answer.status != StatusCode::OK {
                bail!("weftd: {}", answer.error());
            }
            eprintln!(
                "(what weftd last pushed to {id}; endpoint health is known only to the proxy: pass --admin ADDR)"
            );
            (answer.decode("weftd's pushed config")?, None)
        }
    };
    let config = dump.config;
    let sections: Vec<(Section, Vec<Value>)> = [
        Section::Listeners,
        Section::Routes,
        Section::Clusters,
        Section::Endpoints,
        Section::Secrets,
    ]
    .into_iter()
    .filter(|s| query.section == Section::All || query.section == *s)
    .map(|s| match s {
        Section::Secrets => (s, certs.as_ref().map(secrets).unwrap_or_default()),
        _ => (s, rows(s, &config, health.as_ref())),
    })
    .collect();
    match query.args.output {
        Output::Json | Output::Yaml => {
            let document: serde_json::Map<String, Value> = sections
                .iter()
                .map(|(s, rows)| (name(*s).to_string(), Value::Array(rows.clone())))
                .collect();
            let document = Value::Object(document);
            if query.args.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&document)?);
            } else {
                print!("{}", serde_saphyr::to_string(&document)?);
            }
        }
        Output::Table => {
            let several = sections.len() > 1;
            for (index, (section, rows)) in sections.iter().enumerate() {
                if several {
                    if index > 0 {
                        println!();
                    }
                    println!("{}:", name(*section).to_uppercase());
                }
                if *section == Section::Secrets && rows.is_empty() {
                    println!("{}", no_secrets(certs.as_ref()));
                    continue;
                }
                print!("{}", render(columns(*section), rows));
            }
        }
    }
    Ok(())
}

/// The proxy's admin address: `--admin`, or the proxy named by it; `None`
/// for a proxy id, whose config weftd then tells.
fn admin_address(query: &Query) -> anyhow::Result<Option<SocketAddr>> {
    let parse = |text: &str| {
        text.trim_start_matches("http://")
            .trim_end_matches('/')
            .parse::<SocketAddr>()
    };
    match &query.args.admin {
        Some(admin) => parse(admin)
            .map(Some)
            .map_err(|_| anyhow!("--admin {admin:?} is not an address like 127.0.0.1:15000")),
        None => Ok(parse(&query.proxy).ok()),
    }
}

fn name(section: Section) -> &'static str {
    match section {
        Section::All => "all",
        Section::Listeners => "listeners",
        Section::Routes => "routes",
        Section::Clusters => "clusters",
        Section::Endpoints => "endpoints",
        Section::Secrets => "secrets",
    }
}

fn columns(section: Section) -> &'static [(&'static str, &'static str)] {
    match section {
        Section::All => &[],
        Section::Listeners => &[
            ("ADDRESS", "address"),
            ("KIND", "kind"),
            ("SERVICE", "service"),
            ("NAME", "name"),
        ],
        Section::Routes => &[
            ("SERVICE", "service"),
            ("PORT", "port"),
            ("ROUTE", "name"),
            ("MATCH", "match"),
            ("DESTINATION", "destination"),
        ],
        Section::Clusters => &[
            ("NAME", "name"),
            ("POLICY", "policy"),
            ("ENDPOINTS", "endpoints"),
            ("EJECTED", "ejected"),
            ("OUTLIER", "outlier"),
        ],
        Section::Endpoints => &[
            ("ENDPOINT", "address"),
            ("STATUS", "status"),
            ("OUTLIER CHECK", "outlierCheck"),
            ("CLUSTER", "cluster"),
            ("LOCALITY", "locality"),
            ("PRIORITY", "priority"),
            ("WEIGHT", "weight"),
        ],
        Section::Secrets => &[
            ("RESOURCE NAME", "name"),
            ("TYPE", "type"),
            ("STATUS", "status"),
            ("VALID CERT", "valid"),
            ("SERIAL NUMBER", "serialNumber"),
            ("NOT AFTER", "notAfter"),
            ("NOT BEFORE", "notBefore"),
            ("IDENTITY", "identity"),
        ],
    }
}

/// `(cluster, endpoint address)` → `health_flags` from `/clusters`.
type Health = BTreeMap<(String, String), String>;

fn parse_clusters(text: &str) -> Health {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split("::").collect();
            match parts.as_slice() {
                [cluster, address, "health_flags", flags] => Some((
                    (cluster.to_string(), address.to_string()),
                    flags.to_string(),
                )),
                _ => None,
            }
        })
        .collect()
}

/// `health` is `None` when the proxy was not asked (weftd's copy).
/// The dump is read field by field, not decoded into weft-proto's types:
/// their decoder refuses unknown fields (right for a config file, where an
/// unknown field is a typo), and a proxy newer than this CLI adds fields.
fn rows(section: Section, config: &Value, health: Option<&Health>) -> Vec<Value> {
    match section {
        Section::All => Vec::new(),
        Section::Listeners => list(config, "listeners")
            .iter()
            .map(|l| {
                let service = match (text(l, "service"), l.get("servicePort")) {
                    ("", _) => String::new(),
                    (service, Some(port)) => format!("{service}:{port}"),
                    (service, None) => service.to_string(),
                };
                json!({"name": text(l, "name"), "address": text(l, "address"),
                       "kind": text(l, "kind"), "service": service})
            })
            .collect(),
        Section::Routes => routes(config),
        Section::Clusters => list(config, "clusters")
            .iter()
            .map(|c| {
                let endpoints = list(c, "endpoints");
                let ejected = match health {
                    Some(health) => endpoints
                        .iter()
                        .filter(|e| is_ejected(health, text(c, "name"), text(e, "address")))
                        .count()
                        .into(),
                    None => Value::from("-"),
                };
                json!({"name": text(c, "name"), "service": text(c, "service"),
                       "subset": text(c, "subset"), "policy": policy(c),
                       "endpoints": endpoints.len(), "ejected": ejected,
                       "outlier": outlier(c)})
            })
            .collect(),
        Section::Endpoints => list(config, "clusters")
            .iter()
            .flat_map(|c| {
                list(c, "endpoints").iter().map(move |e| {
                    let ejected =
                        health.map(|h| is_ejected(h, text(c, "name"), text(e, "address")));
                    let (status, check) = match ejected {
                        Some(true) => ("UNHEALTHY", "EJECTED"),
                        Some(false) => ("HEALTHY", "OK"),
                        None => ("UNKNOWN", "-"),
                    };
                    json!({"address": text(e, "address"), "cluster": text(c, "name"),
                           "status": status, "outlierCheck": check,
                           "locality": text(e, "locality"),
                           "priority": e.get("priority").and_then(Value::as_u64).unwrap_or(0),
                           "weight": e.get("weight").and_then(Value::as_u64).unwrap_or(1),
                           "labels": e.get("labels").cloned().unwrap_or(json!({}))})
                })
            })
            .collect(),
        // From `/certs`, not the config ([`secrets`]).
        Section::Secrets => Vec::new(),
    }
}

/// Why there is no secret to list.
fn no_secrets(certs: Option<&Value>) -> String {
    match certs {
        None => "unknown (certificates are known only to the proxy: pass --admin ADDR)".into(),
        Some(certs) => match certs.get("note").and_then(Value::as_str) {
            Some(note) => format!("none (this proxy holds no certificate: {note})"),
            None => match certs.get("lastError").and_then(Value::as_str) {
                Some(error) => format!("none yet (the proxy has no certificate: {error})"),
                None => "none yet (the proxy has not received its certificate)".into(),
            },
        },
    }
}

/// The proxy's `/certs` as istioctl's `proxy-config secret` lists it: the
/// workload certificate chain (`default`) and each trusted root
/// (`ROOTCA`), each with its validity read from the certificate itself.
fn secrets(certs: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let identity = certs.get("identity").and_then(Value::as_str).unwrap_or("");
    if let Some(chain) = certs
        .pointer("/certificate/certChain")
        .and_then(Value::as_str)
    {
        for (index, cert) in parse_pem(chain).into_iter().enumerate() {
            let kind = if index == 0 {
                "Cert Chain"
            } else {
                "Intermediate"
            };
            let mut row = cert_row("default", kind, cert);
            if index == 0 && row["identity"].as_str().is_none_or(str::is_empty) {
                row["identity"] = Value::from(identity);
            }
            out.push(row);
        }
    }
    if let Some(roots) = certs.get("rootCertificates").and_then(Value::as_str) {
        out.extend(
            parse_pem(roots)
                .into_iter()
                .map(|cert| cert_row("ROOTCA", "CA", cert)),
        );
    }
    out
}

/// What one PEM certificate says, or why it could not be read.
struct CertFacts {
    serial: String,
    not_before: i64,
    not_after: i64,
    subject: String,
    issuer: String,
    spiffe: Vec<String>,
}

fn parse_pem(text: &str) -> Vec<CertFacts> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::pem::Pem;
    Pem::iter_from_buffer(text.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|pem| {
            let cert = pem.parse_x509().ok()?;
            let spiffe = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|name| match name {
                            GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                                Some(uri.to_string())
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(CertFacts {
                serial: cert.raw_serial_as_string().replace(':', ""),
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                spiffe,
            })
        })
        .collect()
}

fn cert_row(name: &str, kind: &str, cert: CertFacts) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let valid = cert.not_before <= now && now < cert.not_after;
    json!({
        "name": name,
        "type": kind,
        "status": "ACTIVE",
        "valid": valid,
        "serialNumber": cert.serial,
        "notAfter": rfc3339(cert.not_after),
        "notBefore": rfc3339(cert.not_before),
        "identity": cert.spiffe.join(","),
        "subject": cert.subject,
        "issuer": cert.issuer,
    })
}

fn rfc3339(seconds: i64) -> String {
    u64::try_from(seconds)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
        .map_or_else(
            || seconds.to_string(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        )
}

fn is_ejected(health: &Health, cluster: &str, address: &str) -> bool {
    health
        .get(&(cluster.to_string(), address.to_string()))
        .is_some_and(|flags| flags.contains("failed_outlier_check"))
}

fn routes(config: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for service in list(config, "services") {
        for port in list(service, "ports") {
            let number = port.get("port").and_then(Value::as_u64).unwrap_or(0);
            let row = |name: &str, matched: String, destination: String| {
                json!({"service": text(service, "name"), "port": number, "name": name,
                       "match": matched, "destination": destination})
            };
            for route in list(port, "routes") {
                out.push(row(
                    text(route, "name"),
                    http_match(route.get("match")),
                    target(route),
                ));
            }
            for route in list(port, "tcpRoutes") {
                out.push(row(text(route, "name"), "tcp".into(), weighted(route)));
            }
            for route in list(port, "tlsRoutes") {
                let sni = strings(route.get("sniHosts"));
                out.push(row(
                    text(route, "name"),
                    format!("sni {}", sni.join(",")),
                    weighted(route),
                ));
            }
            if list(port, "routes").is_empty()
                && list(port, "tcpRoutes").is_empty()
                && list(port, "tlsRoutes").is_empty()
                && !text(port, "cluster").is_empty()
            {
                out.push(row("", "tcp".into(), text(port, "cluster").to_string()));
            }
        }
    }
    out
}

/// `/api*`, `method=GET`, `header end-user=jason`: the route's match.
fn http_match(matched: Option<&Value>) -> String {
    let Some(matched) = matched else {
        return "/*".to_string();
    };
    let mut parts = Vec::new();
    if let Some(path) = matched.get("pathExact").and_then(Value::as_str) {
        parts.push(path.to_string());
    } else if let Some(prefix) = matched.get("pathPrefix").and_then(Value::as_str) {
        parts.push(format!("{prefix}*"));
    } else if let Some(regex) = matched.get("pathRegex").and_then(Value::as_str) {
        parts.push(format!("~{regex}"));
    } else {
        parts.push("/*".to_string());
    }
    if let Some(method) = matched.get("method") {
        parts.push(format!("method={}", string_match(method)));
    }
    for header in list(matched, "headers") {
        let op = if header.get("invert") == Some(&Value::Bool(true)) {
            "!="
        } else {
            "="
        };
        let value = header.get("value").map(string_match).unwrap_or_default();
        parts.push(format!("header {}{op}{value}", text(header, "name")));
    }
    for param in list(matched, "queryParams") {
        let value = param.get("value").map(string_match).unwrap_or_default();
        parts.push(format!("query {}={value}", text(param, "name")));
    }
    parts.join(" ")
}

fn string_match(value: &Value) -> String {
    if let Some(exact) = value.get("exact").and_then(Value::as_str) {
        exact.to_string()
    } else if let Some(prefix) = value.get("prefix").and_then(Value::as_str) {
        format!("{prefix}*")
    } else if let Some(regex) = value.get("regex").and_then(Value::as_str) {
        format!("~{regex}")
    } else {
        "*".to_string()
    }
}

/// Where a route sends: weighted clusters, or its redirect / response.
fn target(route: &Value) -> String {
    if let Some(redirect) = route.get("redirect") {
        return format!(
            "redirect {}{}",
            text(redirect, "authority"),
            text(redirect, "uri")
        );
    }
    if let Some(response) = route.get("directResponse") {
        return format!(
            "respond {}",
            response.get("status").and_then(Value::as_u64).unwrap_or(0)
        );
    }
    weighted(route)
}

fn weighted(route: &Value) -> String {
    let clusters = list(route, "clusters");
    if clusters.len() == 1 {
        return text(&clusters[0], "cluster").to_string();
    }
    clusters
        .iter()
        .map(|c| {
            format!(
                "{} {}%",
                text(c, "cluster"),
                c.get("weight").and_then(Value::as_u64).unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn policy(cluster: &Value) -> String {
    let Some(lb) = cluster.get("loadBalancer") else {
        return "ROUND_ROBIN".to_string();
    };
    if lb.get("consistentHash").is_some() {
        return "CONSISTENT_HASH".to_string();
    }
    match text(lb, "policy") {
        "" | "POLICY_UNSPECIFIED" => "ROUND_ROBIN".to_string(),
        other => other.to_string(),
    }
}

/// `5xx×2 every 1s, eject 30s, max 100%`, `-` without outlier detection.
fn outlier(cluster: &Value) -> String {
    let Some(detection) = cluster.get("outlierDetection") else {
        return "-".to_string();
    };
    let number = |key: &str| detection.get(key).and_then(Value::as_u64).unwrap_or(0);
    let mut parts = Vec::new();
    if number("consecutive5xxErrors") > 0 {
        parts.push(format!("5xx x{}", number("consecutive5xxErrors")));
    }
    if number("consecutiveGatewayErrors") > 0 {
        parts.push(format!("gateway x{}", number("consecutiveGatewayErrors")));
    }
    if let Some(interval) = detection.get("interval").and_then(Value::as_str) {
        parts.push(format!("every {interval}"));
    }
    if let Some(time) = detection.get("baseEjectionTime").and_then(Value::as_str) {
        parts.push(format!("eject {time}"));
    }
    if number("maxEjectionPercent") > 0 {
        parts.push(format!("max {}%", number("maxEjectionPercent")));
    }
    if parts.is_empty() {
        "on".to_string()
    } else {
        parts.join(", ")
    }
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Rows of JSON objects as a table: the named columns, left-aligned three
/// spaces apart (kubectl's layout); lists print comma-separated.
pub(crate) fn render(columns: &[(&str, &str)], rows: &[Value]) -> String {
    let cell = |row: &Value, key: &str| match row.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    };
    let mut table: Vec<Vec<String>> =
        vec![columns.iter().map(|(title, _)| title.to_string()).collect()];
    table.extend(
        rows.iter()
            .map(|row| columns.iter().map(|(_, key)| cell(row, key)).collect()),
    );
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if index + 1 < row.len() {
                line.push_str(&" ".repeat(widths[index] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One GET on the proxy's admin port, its body as text.
async fn fetch(admin: SocketAddr, path: &str) -> anyhow::Result<String> {
    let exchange = async {
        let stream = TcpStream::connect(admin).await?;
        let request = Request::get(path)
            .header(header::HOST, admin.to_string())
            .body(Full::new(Bytes::new()))?;
        Ok::<_, anyhow::Error>(crate::client::exchange(stream, request).await?)
    };
    let (status, body) = tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("the proxy's admin port {admin} did not answer within 5s"))?
        .with_context(|| format!("cannot reach the proxy's admin port {admin}; is the proxy running with --admin {admin}?"))?;
    if status != StatusCode::OK {
        bail!("the proxy's admin port {admin} answered {status} for {path}");
    }
    String::from_utf8(body.to_vec()).map_err(|_| anyhow!("{path} from {admin} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_comes_before_or_after_the_proxy() {
        let parsed = |first: &str, second: Option<&str>| {
            positionals(first, second).map_err(|err| err.to_string())
        };
        assert_eq!(
            parsed("sleep-1", Some("routes")),
            Ok(("sleep-1".to_string(), Section::Routes))
        );
        assert_eq!(
            parsed("routes", Some("sleep-1")),
            Ok(("sleep-1".to_string(), Section::Routes))
        );
        assert_eq!(
            parsed("127.0.0.1:15000", None),
            Ok(("127.0.0.1:15000".to_string(), Section::All))
        );
        assert_eq!(
            parsed("secret", Some("127.0.0.1:15000")),
            Ok(("127.0.0.1:15000".to_string(), Section::Secrets))
        );
        assert!(parsed("a", Some("b")).is_err_and(|e| e.contains("is a section")));
    }

    #[test]
    fn on_a_cluster_a_pod_name_is_its_sidecars_id() {
        assert_eq!(
            proxy_ids("reviews-v1-x", Some("shop")),
            ["reviews-v1-x.shop", "reviews-v1-x"]
        );
        assert_eq!(
            proxy_ids("reviews-v1-x.shop", Some("shop")),
            ["reviews-v1-x.shop"]
        );
        assert_eq!(proxy_ids("caller", None), ["caller"]);
    }
}

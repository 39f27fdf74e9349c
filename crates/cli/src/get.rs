//! `weft get KIND [NAME]` and `weft proxy-status`: reads from weftd,
//! printed the way kubectl and istioctl print them.

use std::process::ExitCode;

use anyhow::bail;
use clap::ValueEnum;
use http::StatusCode;
use serde_json::{Value, json};

use weft_api::wire::{ListReply, ProxiesReply, Sync};

use crate::client::Weftd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

pub struct Query<'a> {
    pub kind: &'a str,
    pub name: Option<&'a str>,
    /// `None` for all namespaces (`-A`).
    pub namespace: Option<&'a str>,
    pub output: Output,
}

pub fn get(weftd: &Weftd, query: &Query) -> anyhow::Result<ExitCode> {
    let kind = query.kind;
    if crate::meshconfig::is_kind(kind) {
        return crate::meshconfig::get(weftd, query.output);
    }
    let (answer, single) = match (query.name, query.namespace) {
        (Some(_), None) => {
            bail!("a resource cannot be retrieved by name across all namespaces")
        }
        (Some(name), Some(namespace)) => (
            weftd.get(&format!("/v1/resources/{kind}/{namespace}/{name}"))?,
            true,
        ),
        (None, Some(namespace)) => (
            weftd.get(&format!("/v1/resources?kind={kind}&namespace={namespace}"))?,
            false,
        ),
        (None, None) => (weftd.get(&format!("/v1/resources?kind={kind}"))?, false),
    };
    match answer.status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            eprintln!("weft get: {}", answer.error());
            return Ok(ExitCode::FAILURE);
        }
        _ => bail!("weftd: {}", answer.error()),
    }
    let items: Vec<Value> = if single {
        vec![answer.body.clone()]
    } else {
        answer.decode::<ListReply>("weftd's resource list")?.items
    };
    if items.is_empty() && query.output == Output::Table {
        match query.namespace {
            Some(namespace) => eprintln!("No resources found in {namespace} namespace."),
            None => eprintln!("No resources found"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    // One object prints as itself; several as a Kubernetes List, so the
    // output can be fed back to `weft apply -f -`.
    let document = if single {
        answer.body
    } else {
        json!({ "apiVersion": "v1", "kind": "List", "items": items })
    };
    match query.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&document)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&document)?),
        Output::Table => print!("{}", table(&items, query.namespace.is_none())),
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft proxy-status`: one row per proxy; a NACKing proxy gets its
/// reason on the line below, where it cannot be missed. Streams weftd
/// refused (a claim beyond the proxy's credential, a node id another
/// proxy holds) follow, newest last, each with its reason.
pub fn proxy_status(weftd: &Weftd) -> anyhow::Result<ExitCode> {
    let answer = weftd.get("/v1/proxies")?;
    if answer.status != StatusCode::OK {
        bail!("weftd: {}", answer.error());
    }
    let ProxiesReply { proxies, refused } = answer.decode("weftd's proxy list")?;
    if proxies.is_empty() {
        eprintln!("No proxies are registered with weftd.");
    } else {
        let mut rows = vec![row(&["NAME", "NAMESPACE", "STATUS", "VERSION"])];
        let mut reasons = vec![None];
        for proxy in &proxies {
            let status = proxy.sync();
            rows.push(row(&[
                &proxy.id,
                &proxy.namespace,
                status.as_str(),
                &proxy.acked_version,
            ]));
            reasons.push(proxy.error.as_deref().filter(|_| status == Sync::Nack));
        }
        let lines = format_rows(&rows);
        for (line, reason) in lines.iter().zip(reasons) {
            println!("{line}");
            if let Some(reason) = reason {
                println!("    NACK: {reason}");
            }
        }
    }
    if !refused.is_empty() {
        println!();
        println!("REFUSED (the last {}, newest last):", refused.len());
        let mut rows = vec![row(&["TIME", "PEER", "NODE", "CODE"])];
        for refusal in &refused {
            rows.push(row(&[
                &refusal.time,
                &refusal.peer,
                &refusal.id,
                &refusal.code,
            ]));
        }
        let lines = format_rows(&rows);
        if let Some(header) = lines.first() {
            println!("{header}");
        }
        for (line, refusal) in lines.iter().skip(1).zip(refused) {
            println!("{line}");
            println!("    {}", refusal.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn table(items: &[Value], all_namespaces: bool) -> String {
    let kind = items.first().map(|item| text(item, "kind")).unwrap_or("");
    let extra = extra_columns(kind);
    let mut header = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE".to_string());
    }
    header.push("NAME".to_string());
    header.extend(extra.iter().map(|(title, _)| title.to_string()));
    header.push("RESOURCE VERSION".to_string());
    let mut rows = vec![header];
    for item in items {
        let meta = item.get("metadata").unwrap_or(&Value::Null);
        let mut cells = Vec::new();
        if all_namespaces {
            cells.push(text(meta, "namespace").to_string());
        }
        cells.push(text(meta, "name").to_string());
        for (_, field) in &extra {
            cells.push(cell(item.pointer(field)));
        }
        cells.push(text(meta, "resourceVersion").to_string());
        rows.push(cells);
    }
    format_rows(&rows)
        .into_iter()
        .map(|line| line + "\n")
        .collect()
}

/// The columns Istio's CRDs print for a kind (`kubectl get vs`), minus AGE.
fn extra_columns(kind: &str) -> Vec<(&'static str, &'static str)> {
    match kind {
        "VirtualService" => vec![("GATEWAYS", "/spec/gateways"), ("HOSTS", "/spec/hosts")],
        "DestinationRule" => vec![("HOST", "/spec/host")],
        "ServiceEntry" => vec![
            ("HOSTS", "/spec/hosts"),
            ("LOCATION", "/spec/location"),
            ("RESOLUTION", "/spec/resolution"),
        ],
        _ => Vec::new(),
    }
}

/// Strings bare, lists as compact JSON (`["a","b"]`) as kubectl shows them.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|cell| cell.to_string()).collect()
}

/// Left-aligned columns three spaces apart, kubectl's layout.
pub(crate) fn format_rows(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                if index + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[index] - cell.chars().count() + 3;
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
            line
        })
        .collect()
}

/// A string field of a stored object (Kubernetes metadata), or "".
fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_adds_kind_columns() {
        let items = vec![
            json!({"kind": "DestinationRule", "metadata": {"name": "reviews", "namespace": "shop", "resourceVersion": "12"}, "spec": {"host": "reviews"}}),
            json!({"kind": "DestinationRule", "metadata": {"name": "db", "namespace": "default", "resourceVersion": "3"}, "spec": {"host": "db.data.svc"}}),
        ];
        assert_eq!(
            table(&items, true),
            "NAMESPACE   NAME      HOST          RESOURCE VERSION\n\
             shop        reviews   reviews       12\n\
             default     db        db.data.svc   3\n"
        );
    }
}

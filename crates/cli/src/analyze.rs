//! `weft analyze`: Istio's analyzers (`istioctl analyze`) over files
//! (offline, `-f`), over what weftd holds, or over both (`-f ... --use-weftd`,
//! "what if I applied these"). With `--kubeconfig`, over the cluster's
//! objects, listed through its API server as the user (istioctl's way: the
//! analyzers see the cluster's Services, Pods and Namespaces, which weftd's
//! store does not hold), with any `-f` files on top.
//!
//! Output is istioctl's: one line per message,
//! `Error [IST0101] (VirtualService default/reviews) Referenced ...`; exit
//! status 1 when any message is at or above `--failure-threshold` (Error).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::ValueEnum;
use http::StatusCode;
use serde_json::Value;
use weft_api::analyze::{self, Input, Level, Message};
use weft_api::wire::{self, AnalyzeMessage, AnalyzeObject, AnalyzeReply, AnalyzeRequest};

use crate::client::Weftd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Log,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Threshold {
    Error,
    Warning,
    Info,
}

impl Threshold {
    fn level(self) -> Level {
        match self {
            Self::Error => Level::Error,
            Self::Warning => Level::Warning,
            Self::Info => Level::Info,
        }
    }
}

/// Over files (`-f`, offline), over what weftd holds (no `-f`), or both
/// (`-f ... --use-weftd`).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    paths: Vec<PathBuf>,
    /// Analyze the files together with what weftd holds.
    #[arg(long)]
    use_weftd: bool,
    /// Report on this namespace (and give it to objects without one).
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Report on every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Run only these analyzers (`--list-analyzers` names them).
    #[arg(long = "analyzer")]
    analyzers: Vec<String>,
    #[arg(long)]
    list_analyzers: bool,
    #[arg(short, long, value_enum, default_value = "log")]
    output: Format,
    /// Exit 1 when a message is at least this severe.
    #[arg(long, value_enum, default_value = "error")]
    failure_threshold: Threshold,
}

pub fn run(address: &crate::client::Target, request: &Args) -> ExitCode {
    match analyze_and_print(address, request) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("weft analyze: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn analyze_and_print(address: &crate::client::Target, request: &Args) -> anyhow::Result<ExitCode> {
    if request.list_analyzers {
        for analyzer in analyze::ANALYZERS {
            let codes: Vec<&str> = analyzer.codes.iter().map(|c| c.code).collect();
            println!("{}\t{}", analyzer.name, codes.join(","));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let objects = read_objects(&request.paths, &request.namespace)?;
    let only: Vec<&str> = request.analyzers.iter().map(String::as_str).collect();
    let messages = if let Some(cluster) = address.cluster()
        && !request.use_weftd
    {
        // istioctl's way: the cluster's objects, listed as the user, with
        // the files on top ("what if I applied these").
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the I/O runtime")?;
        let listed = runtime.block_on(async {
            let client = cluster.client().await?;
            crate::cluster::objects(&client).await
        })?;
        let mut input = Input::default();
        for value in listed {
            input.add_document(value, "cluster", 0, "");
        }
        for (value, origin, document) in objects {
            input.add_document(value, &origin, document, &request.namespace);
        }
        analyze::analyze(&input, &only).map_err(anyhow::Error::msg)?
    } else if request.paths.is_empty() || request.use_weftd {
        remote(address, &objects, &only)?
    } else {
        let mut input = Input::default();
        for (value, origin, document) in objects {
            input.add_document(value, &origin, document, &request.namespace);
        }
        let mut messages = analyze::analyze(&input, &only).map_err(anyhow::Error::msg)?;
        if only.is_empty() {
            messages.extend(crate::meshconfig::offline_messages(&request.paths));
        }
        messages
    };
    let messages: Vec<Message> = messages
        .into_iter()
        .filter(|m| {
            request.all_namespaces || m.namespace.is_empty() || m.namespace == request.namespace
        })
        .collect();
    match request.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&messages)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(&messages)?),
        Format::Log if messages.is_empty() => {
            let scope = if request.all_namespaces {
                "all namespaces".to_string()
            } else {
                format!("namespace: {}", request.namespace)
            };
            println!("\u{2714} No validation issues found when analyzing {scope}.");
        }
        Format::Log => {
            for message in &messages {
                println!("{message}");
            }
        }
    }
    let threshold = request.failure_threshold.level();
    Ok(if messages.iter().any(|m| m.level <= threshold) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Every document in the files (directories recursively, `-` for stdin),
/// with its origin and position. Unparseable files are errors: analysis
/// of half the input would mislead.
fn read_objects(paths: &[PathBuf], namespace: &str) -> anyhow::Result<Vec<(Value, String, usize)>> {
    let texts = crate::validate::read_texts(paths).map_err(anyhow::Error::msg)?;
    let mut out = Vec::new();
    for (origin, text) in texts {
        let documents = weft_api::parse_documents(&text)
            .map_err(|err| anyhow::anyhow!("{origin}: not valid YAML or JSON: {err}"))?;
        for (index, mut document) in documents.into_iter().enumerate() {
            // weftd defaults a missing namespace to "default"; `-n` must win.
            if let Some(meta) = document.get_mut("metadata").and_then(Value::as_object_mut)
                && meta
                    .get("namespace")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                && !namespace.is_empty()
            {
                meta.insert("namespace".into(), Value::from(namespace));
            }
            if !document.is_null() {
                out.push((document, origin.clone(), index + 1));
            }
        }
    }
    Ok(out)
}

/// weftd analyzes its store plus `objects`.
fn remote(
    address: &crate::client::Target,
    objects: &[(Value, String, usize)],
    only: &[&str],
) -> anyhow::Result<Vec<Message>> {
    let weftd = Weftd::new(address)?;
    let body = wire::to_value(&AnalyzeRequest {
        objects: objects
            .iter()
            .map(|(object, origin, document)| AnalyzeObject {
                origin: origin.clone(),
                document: *document,
                object: object.clone(),
            })
            .collect(),
        analyzers: only.iter().map(|name| name.to_string()).collect(),
    });
    let answer = weftd.post("/v1/analyze", body.to_string(), "weft analyze")?;
    if answer.status != StatusCode::OK {
        bail!("weftd: {}", answer.error());
    }
    let reply: AnalyzeReply = answer.decode("weftd's analysis")?;
    reply.messages.into_iter().map(message_from_wire).collect()
}

/// A message as weftd sends it (codes are checked against Weft's own).
fn message_from_wire(message: AnalyzeMessage) -> anyhow::Result<Message> {
    let code = analyze::ANALYZERS
        .iter()
        .flat_map(|a| a.codes)
        .find(|c| c.code == message.code)
        .with_context(|| format!("weftd sent an unknown message code {:?}", message.code))?;
    Ok(Message {
        code: code.code,
        name: code.name,
        level: code.level,
        resource: message.resource,
        namespace: message.namespace,
        text: message.text,
        origin: message.origin,
    })
}

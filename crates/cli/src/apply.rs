//! `weft apply -f PATH...` and `weft delete (KIND NAME | -f PATH...)`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use http::StatusCode;
use serde_json::{Value, json};

use weft_api::FieldWarning;
use weft_api::wire::{
    AppliedObject, ApplyReply, DeleteReply, DeletedReply, MAX_REQUEST_BODY, ProblemsReply,
};

use crate::client::{Answer, Weftd};
use crate::validate::{decode_paths, read_texts};

/// Validates every file here first (same decoder as weftd), then sends
/// them as ONE request, so the apply is all or nothing across files.
pub fn apply(weftd: &Weftd, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let inputs = decode_paths(paths).map_err(anyhow::Error::msg)?;
    let decoded = inputs.decoded;
    if !inputs.unreadable.is_empty() || !decoded.problems.is_empty() {
        for line in &inputs.unreadable {
            println!("{line}");
        }
        for problem in &decoded.problems {
            println!("{problem}");
        }
        eprintln!(
            "weft apply: nothing applied; {} problem(s)",
            inputs.unreadable.len() + decoded.problems.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    if !decoded.notices.is_empty() {
        eprintln!(
            "weft apply: {} object(s) skipped (kinds Weft does not use; `weft validate -v` lists them)",
            decoded.notices.len()
        );
    }
    if decoded.resources.is_empty() {
        bail!("no Istio resources Weft uses in the files given; nothing applied");
    }
    // The resources as decoded, in one Kubernetes List: one document keeps
    // the request whole, and weftd decodes exactly what was checked here.
    let items: Vec<Value> = decoded.resources.iter().map(|r| r.to_value()).collect();
    let body =
        serde_json::to_string(&json!({ "apiVersion": "v1", "kind": "List", "items": items }))?;
    let source = match inputs.files.as_slice() {
        [only] => only.display().to_string(),
        _ => "weft apply".to_string(),
    };
    // weftd would refuse it (413) and close the connection mid-upload; say
    // so here, with the size, before anything is sent.
    if body.len() > MAX_REQUEST_BODY {
        bail!(
            "nothing applied: {} object(s) make a {} MiB request, over weftd's {} MiB limit; \
             apply them in several parts (each part is all or nothing)",
            decoded.resources.len(),
            body.len() >> 20,
            MAX_REQUEST_BODY >> 20
        );
    }
    let answer = weftd.post("/v1/apply", body, &source)?;
    match answer.status {
        StatusCode::OK => {
            let reply: ApplyReply = answer.decode("weftd's apply reply")?;
            for applied in &reply.applied {
                println!(
                    "{}/{} {}",
                    qualified(&applied.kind),
                    applied.name,
                    applied.change
                );
            }
            print_warnings(&decoded.warnings, &reply.warnings);
            Ok(ExitCode::SUCCESS)
        }
        StatusCode::UNPROCESSABLE_ENTITY => {
            print_problems(&answer)?;
            eprintln!("weft apply: weftd refused the request; nothing applied");
            Ok(ExitCode::FAILURE)
        }
        _ => bail!("weftd: {}", answer.error()),
    }
}

/// Every field weftd accepted without honouring it, on stderr as kubectl
/// prints warnings. The local decoding names the files (weftd only sees
/// one request) and is the only one to see fields Istio removed (they are
/// dropped before sending); weftd's own warnings are added when they say
/// something more (a weftd of another version).
fn print_warnings(local: &[FieldWarning], remote: &[FieldWarning]) {
    for warning in local {
        eprintln!("Warning: {warning}");
    }
    let said = |w: &FieldWarning| {
        local
            .iter()
            .any(|l| l.resource == w.resource && l.field == w.field)
    };
    for warning in remote.iter().filter(|w| !said(w)) {
        eprintln!("Warning: {warning}");
    }
}

/// `weft delete KIND NAME [-n NS]`.
pub fn delete_one(
    weftd: &Weftd,
    kind: &str,
    name: &str,
    namespace: &str,
) -> anyhow::Result<ExitCode> {
    let answer = weftd.delete(&format!("/v1/resources/{kind}/{namespace}/{name}"))?;
    match answer.status {
        StatusCode::OK => {
            let reply: DeletedReply = answer.decode("weftd's delete reply")?;
            print_deleted(&reply.deleted);
            Ok(ExitCode::SUCCESS)
        }
        StatusCode::NOT_FOUND => {
            eprintln!("weft delete: {}", answer.error());
            Ok(ExitCode::FAILURE)
        }
        _ => bail!("weftd: {}", answer.error()),
    }
}

/// `weft delete -f PATH...`: one request per file, so messages name it.
pub fn delete_files(weftd: &Weftd, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let texts = read_texts(paths).map_err(anyhow::Error::msg)?;
    let mut failed = false;
    for (source, document) in texts {
        let answer = weftd.post("/v1/delete", document, &source)?;
        match answer.status {
            StatusCode::OK => {
                let reply: DeleteReply = answer.decode("weftd's delete reply")?;
                for deleted in &reply.deleted {
                    print_deleted(deleted);
                }
                for missing in &reply.not_found {
                    eprintln!(
                        "weft delete: {} {}/{} not found",
                        missing.kind, missing.namespace, missing.name
                    );
                    failed = true;
                }
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                print_problems(&answer)?;
                failed = true;
            }
            _ => bail!("weftd: {}", answer.error()),
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// kubectl's line: `virtualservice.networking.istio.io "reviews" deleted`.
fn print_deleted(deleted: &AppliedObject) {
    println!("{} \"{}\" deleted", qualified(&deleted.kind), deleted.name);
}

fn print_problems(answer: &Answer) -> anyhow::Result<()> {
    let reply: ProblemsReply = answer.decode("weftd's refusal")?;
    for problem in &reply.problems {
        println!("{problem}");
    }
    Ok(())
}

/// `VirtualService` → `virtualservice.networking.istio.io`, as kubectl
/// names resources.
pub fn qualified(kind: &str) -> String {
    match weft_api::Resource::group_of(kind) {
        Some(group) => format!("{}.{}", kind.to_ascii_lowercase(), group.name()),
        None => kind.to_ascii_lowercase(),
    }
}

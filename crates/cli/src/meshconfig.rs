//! `weft get meshconfig`: the MeshConfig weftd has in force (Istio's
//! defaults filled in), where it came from, the fields it does not apply,
//! and the last change it refused.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use http::StatusCode;
use weft_api::analyze;
use weft_api::wire::MeshConfigReply;

use crate::client::Weftd;
use crate::get::Output;

/// The names `weft get` takes for it.
pub fn is_kind(kind: &str) -> bool {
    matches!(
        kind.to_ascii_lowercase().as_str(),
        "meshconfig" | "meshconfigs" | "mesh-config" | "mc"
    )
}

pub fn get(weftd: &Weftd, output: Output) -> anyhow::Result<ExitCode> {
    let answer = weftd.get("/v1/meshconfig")?;
    if answer.status != StatusCode::OK {
        bail!("weftd: {}", answer.error());
    }
    let reply: MeshConfigReply = answer.decode("weftd's MeshConfig")?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&reply)?),
        Output::Yaml | Output::Table => print!("{}", render(&reply)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft analyze -f DIR` offline: the MeshConfig file of each directory
/// given (`DIR/meshconfig.yaml`, as weftd reads it), its errors and the
/// fields Weft does not apply. Mesh-wide: no namespace.
pub fn offline_messages(paths: &[std::path::PathBuf]) -> Vec<analyze::Message> {
    let mut out = Vec::new();
    for dir in paths.iter().filter(|p| p.is_dir()) {
        let file = dir.join(weft_api::mesh::FILE_NAME);
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let origin = file.display().to_string();
        let (code, lines) = match weft_api::mesh::parse(&text) {
            Ok(loaded) => (analyze::NOT_IMPLEMENTED, loaded.warnings),
            Err(errors) => (analyze::SCHEMA_VALIDATION_ERROR, errors),
        };
        out.extend(lines.into_iter().map(|text| analyze::Message {
            code: code.code,
            name: code.name,
            level: code.level,
            resource: "MeshConfig".into(),
            namespace: String::new(),
            text,
            origin: origin.clone(),
        }));
    }
    out
}

/// YAML a user can edit and give back as the MeshConfig file, its source
/// and problems as comments above it.
fn render(reply: &MeshConfigReply) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(out, "# MeshConfig in force, from {}", reply.source)?;
    for warning in &reply.warnings {
        writeln!(out, "# warning: {warning}")?;
    }
    if let Some(refused) = &reply.refused {
        writeln!(
            out,
            "# last change REFUSED (the config below stays in force):"
        )?;
        for line in refused.lines() {
            writeln!(out, "#   {line}")?;
        }
    }
    out.push_str(&serde_saphyr::to_string(&reply.config)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_warnings_and_refusal_are_comments_over_plain_yaml() {
        let reply = MeshConfigReply {
            source: "file /m/meshconfig.yaml".into(),
            config: serde_json::json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
            written: serde_json::Value::Null,
            warnings: vec!["ingressClass: not implemented by Weft; ignored".into()],
            refused: Some("m: connectTimeout: bad\nm: rootNamespace: bad".into()),
        };
        let text = render(&reply).expect("renders");
        assert!(text.starts_with("# MeshConfig in force, from file /m/meshconfig.yaml\n"));
        assert!(text.contains("# warning: ingressClass"));
        assert!(text.contains("#   m: rootNamespace: bad\n"));
        let yaml: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
        assert_eq!(yaml["outboundTrafficPolicy"]["mode"], "REGISTRY_ONLY");
    }

    #[test]
    fn offline_analysis_reads_the_directorys_mesh_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("meshconfig.yaml");
        std::fs::write(&file, "dnsRefreshRate: 5s\n").expect("write");
        let messages = offline_messages(&[dir.path().to_path_buf()]);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(messages[0].code, "WEFT0001");
        assert!(messages[0].text.starts_with("dnsRefreshRate"));
        std::fs::write(&file, "connectTimeout: x\n").expect("write");
        let messages = offline_messages(&[dir.path().to_path_buf()]);
        assert_eq!(messages[0].code, "IST0106");
        assert!(
            messages[0].text.starts_with("connectTimeout: "),
            "{messages:?}"
        );
    }
}

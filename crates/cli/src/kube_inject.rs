//! `weft kube-inject -f FILE`: the injection the webhook does, offline, on
//! every Pod and workload template of a multi-document YAML (or JSON) file;
//! the result goes to stdout, what was skipped or warned to stderr. As
//! with `istioctl kube-inject`, naming the file is the request to inject:
//! namespace labels are not consulted, the pod's own opt-out is.

use std::path::PathBuf;
use std::process::ExitCode;

use weft_kube::inject::objects::{Note, inject_document};
use weft_kube::inject::{Settings, default_image, supports_native_sidecars};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The manifest (`-` reads stdin).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// The image holding `weft` and `weft-proxy`.
    #[arg(long, default_value_t = default_image())]
    proxy_image: String,
    /// Where injected proxies reach weftd's --xds.
    #[arg(long, default_value = "weftd.weft-system.svc:15012")]
    control_plane: String,
    /// The cluster's Kubernetes version (MAJOR.MINOR): native sidecars from
    /// 1.29 on, the classic way before. Default: native.
    #[arg(long, value_name = "MAJOR.MINOR")]
    kube_version: Option<String>,
    /// The `istio.io/rev` recorded in `sidecar.istio.io/status`.
    #[arg(long, default_value = "default")]
    revision: String,
    /// A MeshConfig file (as `istioctl kube-inject --meshConfigFile`): its
    /// `defaultConfig` is what each pod's `proxy.istio.io/config` starts from.
    #[arg(long, alias = "meshConfigFile", value_name = "FILE")]
    mesh_config: Option<PathBuf>,
}

pub fn run(args: &Args) -> ExitCode {
    let (name, text) = match read(&args.file) {
        Ok(read) => read,
        Err(err) => {
            eprintln!("weft kube-inject: {err}");
            return ExitCode::FAILURE;
        }
    };
    let documents = match weft_api::decode::parse_documents(&text) {
        Ok(documents) => documents,
        Err(err) => {
            eprintln!("weft kube-inject: {name}: not valid YAML or JSON: {err}");
            return ExitCode::FAILURE;
        }
    };
    let native = args.kube_version.as_deref().is_none_or(|version| {
        let (major, minor) = version.split_once('.').unwrap_or((version, ""));
        supports_native_sidecars(major, minor)
    });
    let proxy_defaults = match args.mesh_config.as_deref().map(mesh_defaults).transpose() {
        Ok(defaults) => defaults.unwrap_or_default(),
        Err(err) => {
            eprintln!("weft kube-inject: {err}");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings {
        image: args.proxy_image.clone(),
        control_plane: args.control_plane.clone(),
        native_sidecars: native,
        revision: args.revision.clone(),
        proxy_defaults,
        ..Settings::default()
    };
    let mut out = String::new();
    for (index, mut document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        match inject_document(&mut document, &settings) {
            Ok(notes) => {
                for note in notes {
                    match note {
                        Note::Injected { object, warnings } => {
                            for warning in warnings {
                                eprintln!("Warning: {name}: {object}: {warning}");
                            }
                        }
                        Note::Skipped { object, why } => {
                            eprintln!("{name}: {object}: not injected: {why}");
                        }
                    }
                }
            }
            Err(err) => {
                eprintln!("weft kube-inject: {name}: document {}: {err}", index + 1);
                return ExitCode::FAILURE;
            }
        }
        match serde_saphyr::to_string(&document) {
            Ok(yaml) => {
                if !out.is_empty() {
                    out.push_str("---\n");
                }
                out.push_str(&yaml);
            }
            Err(err) => {
                eprintln!("weft kube-inject: cannot write YAML: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{out}");
    ExitCode::SUCCESS
}

fn read(path: &PathBuf) -> Result<(String, String), String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|err| format!("cannot read stdin: {err}"))?;
        return Ok(("<stdin>".into(), text));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("{}: cannot read: {err}", path.display()))?;
    Ok((path.display().to_string(), text))
}

/// `--mesh-config FILE`'s `defaultConfig`; an invalid MeshConfig is refused
/// with its field paths, as weftd would refuse it.
fn mesh_defaults(path: &std::path::Path) -> Result<weft_api::mesh::ProxyDefaults, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("--mesh-config {}: {err}", path.display()))?;
    let loaded = weft_api::mesh::parse(&text).map_err(|errors| {
        format!(
            "--mesh-config {}: MeshConfig {}",
            path.display(),
            errors.join("; ")
        )
    })?;
    for warning in &loaded.warnings {
        eprintln!("Warning: {}: MeshConfig {warning}", path.display());
    }
    Ok(loaded.config.default_config.unwrap_or_default())
}

//! MeshConfig in weftd: where it comes from, how a change is taken, and
//! what is in force.
//!
//! Sources (one per weftd): a file (`--mesh-config PATH`, else
//! `meshconfig.yaml` in `--config-dir`), polled; or on Kubernetes the
//! `mesh` key of the `istio` ConfigMap in the root namespace. No source, an
//! absent file or ConfigMap: Istio's defaults.
//!
//! A change is validated whole: it takes effect whole (the build loop
//! rebuilds every proxy's config from it), or it is refused whole with
//! its errors logged and kept in [`InForce::refused`] (shown by `weft get
//! meshconfig`), and the MeshConfig before it keeps applying. The trust
//! domain is fixed at start (the CA issues in it, the xDS listener checks
//! it), so a change of `trustDomain` is refused until weftd restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use weft_api::mesh::{self, Loaded};

/// The MeshConfig file's name in the config directory.
pub const FILE_NAME: &str = mesh::FILE_NAME;

/// The MeshConfig in force, where it came from, and the last change refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InForce {
    pub loaded: Loaded,
    /// "file PATH", "ConfigMap NS/istio (key mesh)", or "defaults".
    pub source: String,
    /// The last change refused since this one took effect, with its errors.
    pub refused: Option<String>,
}

impl InForce {
    pub fn defaults() -> Self {
        Self {
            source: "defaults (no MeshConfig given)".into(),
            ..Self::default()
        }
    }
}

pub type Sender = watch::Sender<Arc<InForce>>;
pub type Receiver = watch::Receiver<Arc<InForce>>;

/// Reads and validates a MeshConfig file; `Ok(None)` when it does not
/// exist. Errors name the file and each field.
pub fn read_file(path: &Path) -> Result<Option<Loaded>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("{}: cannot read: {err}", path.display())),
    };
    parse(&text, &path.display().to_string()).map(Some)
}

fn parse(text: &str, origin: &str) -> Result<Loaded, String> {
    mesh::parse(text).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{origin}: MeshConfig {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// What a source offers: the text of the MeshConfig (`None`: gone, back to
/// the defaults) from `origin`.
pub struct Offer<'a> {
    pub origin: &'a str,
    pub source: String,
    pub text: Option<&'a str>,
}

/// Takes `offer` whole or refuses it whole. `trust_domain` is the one
/// weftd runs with. Returns the refusal, also logged and kept in force's
/// `refused`.
pub fn offer(held: &Sender, offer: Offer<'_>, trust_domain: &str) -> Result<(), String> {
    let taken = match offer.text {
        Some(text) => parse(text, offer.origin),
        None => Ok(Loaded::default()),
    }
    .and_then(|loaded| {
        let wanted = loaded.config.trust_domain();
        if wanted == trust_domain {
            Ok(loaded)
        } else {
            Err(format!(
                "{}: MeshConfig trustDomain: {wanted:?} differs from the trust domain weftd \
                 issues identities in ({trust_domain:?}); a new trust domain needs a weftd \
                 restart (and new certificates for every workload)",
                offer.origin
            ))
        }
    });
    match taken {
        Ok(loaded) => {
            if held.borrow().loaded == loaded && held.borrow().refused.is_none() {
                return Ok(());
            }
            tracing::info!("MeshConfig from {} in force", offer.source);
            for warning in &loaded.warnings {
                tracing::warn!("MeshConfig ({}): {warning}", offer.source);
            }
            held.send_replace(Arc::new(InForce {
                loaded,
                source: offer.source,
                refused: None,
            }));
            Ok(())
        }
        Err(errors) => {
            tracing::error!(
                "MeshConfig change refused; the previous one ({}) stays in force:\n{errors}",
                held.borrow().source
            );
            held.send_modify(|now| {
                let mut next = InForce::clone(now);
                next.refused = Some(errors.clone());
                *now = Arc::new(next);
            });
            Err(errors)
        }
    }
}

/// The MeshConfig weftd starts with from `path` (if any): an invalid file
/// stops weftd, so that it never starts under a config it would refuse.
pub fn initial(path: Option<&Path>) -> Result<InForce, String> {
    let Some(path) = path else {
        return Ok(InForce::defaults());
    };
    Ok(match read_file(path)? {
        Some(loaded) => InForce {
            loaded,
            source: file_source(path),
            refused: None,
        },
        None => InForce {
            source: format!("defaults ({} does not exist)", path.display()),
            ..InForce::default()
        },
    })
}

/// The MeshConfig weftd starts with from the `istio` ConfigMap's `mesh`
/// text (`None`: absent).
pub fn initial_config_map(namespace: &str, text: Option<&str>) -> Result<InForce, String> {
    let origin = config_map_origin(namespace);
    Ok(match text {
        Some(text) => InForce {
            loaded: parse(text, &origin)?,
            source: origin,
            refused: None,
        },
        None => InForce {
            source: format!("defaults ({origin} does not exist)"),
            ..InForce::default()
        },
    })
}

fn config_map_origin(namespace: &str) -> String {
    format!(
        "ConfigMap {namespace}/{} key {}",
        weft_kube::mesh_config::CONFIG_MAP,
        weft_kube::mesh_config::KEY
    )
}

fn file_source(path: &Path) -> String {
    format!("file {}", path.display())
}

/// Polls `path` every `interval` and offers each change (a removed file
/// brings the defaults back).
pub async fn watch_file(path: PathBuf, interval: Duration, held: Sender, trust_domain: String) {
    let mut seen: Option<Option<String>> = None;
    loop {
        let probe = path.clone();
        let read = tokio::task::spawn_blocking(move || match std::fs::read_to_string(&probe) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        })
        .await;
        match read {
            Ok(Ok(text)) if seen.as_ref() != Some(&text) => {
                let origin = path.display().to_string();
                let source = match text {
                    Some(_) => file_source(&path),
                    None => format!("defaults ({} does not exist)", path.display()),
                };
                let this = Offer {
                    origin: &origin,
                    source,
                    text: text.as_deref(),
                };
                // A refusal is logged and kept by `offer`.
                let _ = offer(&held, this, &trust_domain);
                seen = Some(text);
            }
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!("MeshConfig {}: cannot read: {err}", path.display()),
            Err(err) => tracing::warn!("MeshConfig {}: {err}", path.display()),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Offers each text the ConfigMap watch sends (`weft_kube::mesh_config`).
pub async fn follow_config_map(
    mut changes: mpsc::Receiver<Option<String>>,
    namespace: String,
    held: Sender,
    trust_domain: String,
) {
    let origin = config_map_origin(&namespace);
    while let Some(text) = changes.recv().await {
        let source = match text {
            Some(_) => origin.clone(),
            None => format!("defaults ({origin} does not exist)"),
        };
        let this = Offer {
            origin: &origin,
            source,
            text: text.as_deref(),
        };
        let _ = offer(&held, this, &trust_domain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_text(held: &Sender, text: &str) -> Result<(), String> {
        let this = Offer {
            origin: "m.yaml",
            source: "file m.yaml".into(),
            text: Some(text),
        };
        offer(held, this, "cluster.local")
    }

    #[test]
    fn a_bad_change_is_refused_whole_and_the_previous_stays() {
        let (held, seen) = watch::channel(Arc::new(InForce::defaults()));
        offer_text(&held, "outboundTrafficPolicy: {mode: REGISTRY_ONLY}").expect("valid");
        assert_eq!(
            seen.borrow().loaded.config.outbound_mode(),
            mesh::OutboundMode::RegistryOnly
        );
        let err = offer_text(
            &held,
            "outboundTrafficPolicy: {mode: ALLOW_ANY}\nconnectTimeout: later",
        )
        .expect_err("bad duration");
        assert!(err.contains("m.yaml: MeshConfig connectTimeout"), "{err}");
        let now = seen.borrow().clone();
        assert_eq!(
            now.loaded.config.outbound_mode(),
            mesh::OutboundMode::RegistryOnly,
            "nothing of the refused change applies"
        );
        assert_eq!(now.refused.as_deref(), Some(err.as_str()));
        let err = offer_text(&held, "trustDomain: other.org").expect_err("restart needed");
        assert!(err.contains("needs a weftd restart"), "{err}");
        offer_text(&held, "").expect("defaults");
        assert_eq!(seen.borrow().refused, None);
        assert_eq!(
            seen.borrow().loaded.config.outbound_mode(),
            mesh::OutboundMode::AllowAny
        );
    }
}

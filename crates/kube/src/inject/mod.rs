//! Sidecar injection, as pure functions on k8s-openapi types: the mutating
//! webhook ([`crate::webhook`]) and `weft kube-inject` both call
//! [`inject_pod`] / [`inject_template`]; neither talks to a cluster here.
//!
//! - [`policy`]: whether a pod is injected (Istio's precedence);
//! - [`annotations`]: what the pod's annotations ask for;
//! - [`capture`]: the interception the init container installs;
//! - [`template`]: the containers and volumes added;
//! - [`probes`]: app probes, rewritten to the sidecar's 15020 (`/app-health`);
//! - [`objects`]: whole manifests (workload kinds), for `weft kube-inject`.

pub mod annotations;
pub mod capture;
pub mod mesh_defaults;
pub mod objects;
pub mod policy;
pub mod probes;
pub mod proxy_metadata;
pub mod template;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

pub use policy::{Decision, Namespace};

/// The first Kubernetes minor with native sidecars on by default
/// (`SidecarContainers`, beta in 1.29).
pub const NATIVE_SIDECAR_MINOR: u32 = 29;

/// Cluster-wide injection settings (weftd's flags, `kube-inject`'s flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The image holding `weft` and `weft-proxy` (the repository's Dockerfile).
    pub image: String,
    pub pull_policy: String,
    /// weftd's discovery and CA address, as pods reach it.
    pub control_plane: String,
    /// Native sidecars unless a pod's `sidecar.istio.io/nativeSidecar` says
    /// otherwise: on when the API server is 1.29 or later.
    pub native_sidecars: bool,
    /// The `istio.io/rev` value this injector answers to.
    pub revision: String,
    pub cluster_id: String,
    /// The config map weftd keeps in every namespace (key `root-cert.pem`).
    pub root_config_map: String,
    /// MeshConfig `defaultConfig`: what a pod's `proxy.istio.io/config`
    /// starts from (see [`mesh_defaults`]).
    pub proxy_defaults: weft_api::mesh::ProxyDefaults,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            image: default_image(),
            pull_policy: "IfNotPresent".into(),
            control_plane: "weftd.weft-system.svc:15012".into(),
            native_sidecars: true,
            revision: "default".into(),
            cluster_id: "Kubernetes".into(),
            root_config_map: "weft-ca-root-cert".into(),
            proxy_defaults: Default::default(),
        }
    }
}

/// The image this build of Weft would run (see the Dockerfile).
pub fn default_image() -> String {
    format!("ghcr.io/weft-mesh/weft:{}", env!("CARGO_PKG_VERSION"))
}

/// Whether a server of this version (`v1.36.2`, or the `major`/`minor` of
/// `/version`, where GKE writes `29+`) runs native sidecars.
pub fn supports_native_sidecars(major: &str, minor: &str) -> bool {
    let number = |text: &str| -> Option<u32> {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    match (number(major.trim_start_matches('v')), number(minor)) {
        (Some(1), Some(minor)) => minor >= NATIVE_SIDECAR_MINOR,
        (Some(major), _) => major > 1,
        _ => false,
    }
}

/// What injection did to a pod.
#[derive(Debug, Clone)]
pub enum Outcome {
    Skipped(String),
    Injected {
        pod: Box<Pod>,
        warnings: Vec<String>,
    },
}

/// `sidecar.istio.io/status`: what was injected (Istio's shape), so a
/// second injection is refused and tools can tell what is Weft's.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    init_containers: Vec<&'a str>,
    containers: Vec<&'a str>,
    volumes: Vec<&'a str>,
    image_pull_secrets: Option<()>,
    revision: &'a str,
}

/// Injects a Pod (the webhook's object), after [`policy::decide`].
pub fn inject_pod(
    pod: &Pod,
    namespace: &str,
    known: Namespace<'_>,
    settings: &Settings,
) -> Result<Outcome, String> {
    let Some(spec) = &pod.spec else {
        return Ok(Outcome::Skipped("the pod has no spec".into()));
    };
    let host_network = spec.host_network.unwrap_or(false);
    match policy::decide(
        namespace,
        known,
        &pod.metadata,
        host_network,
        &settings.revision,
    ) {
        Decision::Skip(why) => Ok(Outcome::Skipped(why)),
        Decision::Inject => {
            let mut pod = pod.clone();
            let workload = workload_name(&pod.metadata);
            let mut spec = pod.spec.take().unwrap_or_default();
            let warnings = inject_template(&workload, &mut pod.metadata, &mut spec, settings)?;
            pod.spec = Some(spec);
            Ok(Outcome::Injected {
                pod: Box::new(pod),
                warnings,
            })
        }
    }
}

/// Injects a pod template (or a pod's metadata and spec) whose enabling
/// was decided already; returns the warnings for the client.
pub fn inject_template(
    workload: &str,
    meta: &mut ObjectMeta,
    spec: &mut PodSpec,
    settings: &Settings,
) -> Result<Vec<String>, String> {
    let taken = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == template::INIT_NAME || c.name == template::PROXY_NAME);
    if let Some(container) = taken {
        return Err(format!(
            "the pod already has a container named {} (injected without the {} annotation?)",
            container.name,
            policy::STATUS
        ));
    }
    let annotations = meta.annotations.clone().unwrap_or_default();
    let read = annotations::read_with_defaults(&annotations, &settings.proxy_defaults)?;
    let mut warnings = read.warnings;
    let options = read.options;
    let native = options.native_sidecar.unwrap_or(settings.native_sidecars);
    // holdApplicationUntilProxyStarts needs nothing more with a native
    // sidecar: the app containers wait for its startup probe.
    let labels = meta.labels.clone().unwrap_or_default();
    let app_ports = template::app_ports(spec);
    let workload = template::Workload {
        name: workload,
        labels: &labels,
    };
    // Before the sidecar joins spec.containers: only the app's probes move.
    let (probers, not_rewritten) = if options.keep_probes {
        let found = probes::network_probes(&spec.containers);
        let why = format!("{} is \"false\"", probes::REWRITE_ANNOTATION);
        (None, (!found.is_empty()).then_some((found, why)))
    } else {
        let done = probes::rewrite(&mut spec.containers)?;
        let why = "their named ports are not among the container's ports".to_string();
        let unresolved = (!done.unresolved.is_empty()).then_some((done.unresolved, why));
        (done.probers, unresolved)
    };
    let init = template::init_container(settings, &options);
    let mut proxy = template::proxy_container(
        settings,
        &options,
        &workload,
        &app_ports,
        template::Role::Sidecar { native },
    );
    if let Some(probers) = probers {
        proxy.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: probes::PROBERS_ENV.into(),
            value: Some(probers),
            ..EnvVar::default()
        });
    }
    let init_containers = spec.init_containers.get_or_insert_with(Vec::new);
    // weft-init first: nothing else in the pod (other init containers
    // included) talks to the network before capture is in place, and the
    // native sidecar right after it, so later init containers are meshed.
    init_containers.insert(0, init);
    if native {
        init_containers.insert(1, proxy);
    } else if options.hold_application {
        spec.containers.insert(0, proxy);
    } else {
        spec.containers.push(proxy);
    }
    let volumes = template::volumes(settings);
    let volume_names: Vec<String> = volumes.iter().map(|v| v.name.clone()).collect();
    spec.volumes.get_or_insert_with(Vec::new).extend(volumes);

    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert("security.istio.io/tlsMode".into(), "istio".into());
    let canonical_name = labels
        .get("app.kubernetes.io/name")
        .or_else(|| labels.get("app"))
        .cloned()
        .unwrap_or_else(|| workload.name.to_string());
    let canonical_revision = labels
        .get("app.kubernetes.io/version")
        .or_else(|| labels.get("version"))
        .cloned()
        .unwrap_or_else(|| "latest".into());
    labels
        .entry("service.istio.io/canonical-name".into())
        .or_insert(canonical_name);
    labels
        .entry("service.istio.io/canonical-revision".into())
        .or_insert(canonical_revision);

    let status = Status {
        init_containers: if native {
            vec![template::INIT_NAME, template::PROXY_NAME]
        } else {
            vec![template::INIT_NAME]
        },
        containers: if native {
            vec![]
        } else {
            vec![template::PROXY_NAME]
        },
        volumes: volume_names.iter().map(String::as_str).collect(),
        image_pull_secrets: None,
        revision: &settings.revision,
    };
    let status = serde_json::to_string(&status).map_err(|e| e.to_string())?;
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(policy::STATUS.into(), status);
    for (key, value) in [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "15020"),
        ("prometheus.io/path", "/stats/prometheus"),
    ] {
        annotations
            .entry(key.into())
            .or_insert_with(|| value.into());
    }
    if let Some((found, why)) = not_rewritten {
        annotations.insert(probes::NOTE.into(), found.join(", "));
        warnings.push(probes::warning(&found, &why));
    }
    Ok(warnings)
}

/// The workload a pod belongs to, as Istio names it: a ReplicaSet's pod
/// belongs to its Deployment (the ReplicaSet name less its hash), other
/// controllers by their name, a bare pod by its own (or generate) name.
pub fn workload_name(meta: &ObjectMeta) -> String {
    if let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        if owner.kind == "ReplicaSet"
            && let Some((deployment, _hash)) = owner.name.rsplit_once('-')
        {
            return deployment.to_string();
        }
        return owner.name.clone();
    }
    if let Some(name) = meta.name.as_ref().filter(|n| !n.is_empty()) {
        return name.clone();
    }
    meta.generate_name
        .as_deref()
        .map(|g| g.trim_end_matches('-').to_string())
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests;

//! The Helm chart in `charts/weft/`, generated from the same renderer as
//! `weft install`, so both carry the same objects. The install is rendered
//! with sentinel values, which become Helm expressions; the optional
//! pieces (plug-in CA, ingress gateway) are wrapped in `if` blocks. A test
//! checks the committed chart is what this produces (`WEFT_BLESS=1`
//! rewrites it) and that the chart, with its default values, is the
//! default install.
//!
//! Every substitution must find its text: a change in the renderer's
//! output that breaks one fails loudly instead of leaving a sentinel in
//! the chart.

use super::{GATEWAY, InstallOptions, render, to_yaml};

const IMAGE: &str = "\"@@IMAGE@@\"";
const TRUST_DOMAIN: &str = "\"@@TRUST_DOMAIN@@\"";
const KUBE: &str = "\"@@KUBE@@\"";
const REPLICAS: &str = "replicas: 4242";

/// `(path under charts/weft/, text)` of every generated file.
pub fn chart_files() -> Result<Vec<(String, String)>, String> {
    let options = InstallOptions {
        image: IMAGE.trim_matches('"').into(),
        kube_version: Some(KUBE.trim_matches('"').into()),
        trust_domain: TRUST_DOMAIN.trim_matches('"').into(),
        replicas: 4242,
        plugin_ca: true,
        ingress_gateway: true,
    };
    let objects = render(&options)?;
    let (gateway, core): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .partition(|o| o["metadata"]["name"] == GATEWAY);
    let core = templated(&to_yaml(&core)?, true)?;
    let gateway = format!(
        "{{{{- if .Values.ingressGateway.enabled }}}}\n{}{{{{- end }}}}\n",
        templated(&to_yaml(&gateway)?, false)?
    );
    let mut files = vec![
        ("Chart.yaml".to_string(), chart_yaml()),
        ("values.yaml".to_string(), values_yaml()),
        ("templates/weft.yaml".to_string(), format!("{HEADER}{core}")),
        (
            "templates/ingressgateway.yaml".to_string(),
            format!("{HEADER}{gateway}"),
        ),
    ];
    // Helm installs crds/ before templates and never deletes them.
    for (path, text) in super::CRDS {
        let name = path.rsplit('/').next().unwrap_or(path);
        files.push((format!("crds/{name}"), text.to_string()));
    }
    Ok(files)
}

const HEADER: &str = "# Generated from weft_kube::install (crates/kube/src/install/helm.rs);\n\
# regenerate with WEFT_BLESS=1 cargo test -p weft-kube --lib helm.\n";

const VALUES: &str = "# The image with weftd, weft-proxy and weft (the repository's Dockerfile).
image: ghcr.io/weft-mesh/weft:VERSION
# The SPIFFE trust domain of workload identities.
trustDomain: cluster.local
# weftd replicas; more than one needs pluginCA (one root for all).
replicas: 1
# weftd's CA from the `cacerts` Secret in weft-system (Istio's plug-in CA
# layout: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem).
pluginCA: false
ingressGateway:
  enabled: true
";

fn chart_yaml() -> String {
    format!(
        "apiVersion: v2\nname: weft\ndescription: Weft, a service mesh in Rust that runs Istio's \
         resources unchanged\ntype: application\nversion: {v}\nappVersion: \"{v}\"\n\
         kubeVersion: \">=1.26.0-0\"\n",
        v = env!("CARGO_PKG_VERSION")
    )
}

/// The default values, as `values.yaml` holds them (VERSION filled in).
pub fn values_yaml() -> String {
    VALUES.replace("VERSION", env!("CARGO_PKG_VERSION"))
}

fn replace(text: &str, from: &str, to: &str) -> Result<String, String> {
    if !text.contains(from) {
        return Err(format!(
            "helm chart: {from:?} not found in the rendered install"
        ));
    }
    Ok(text.replace(from, to))
}

fn templated(yaml: &str, core: bool) -> Result<String, String> {
    let mut text = replace(yaml, IMAGE, "{{ .Values.image | quote }}")?;
    if !core {
        return Ok(text);
    }
    text = replace(&text, TRUST_DOMAIN, "{{ .Values.trustDomain | quote }}")?;
    text = replace(&text, REPLICAS, "replicas: {{ .Values.replicas }}")?;
    text = replace(
        &text,
        KUBE,
        "{{ printf \"%s.%s\" .Capabilities.KubeVersion.Major (trimSuffix \"+\" .Capabilities.KubeVersion.Minor) | quote }}",
    )?;
    for block in [
        "        - --cacerts\n        - /etc/cacerts\n",
        "        - mountPath: /etc/cacerts\n          name: cacerts\n          readOnly: true\n",
        "      - name: cacerts\n        secret:\n          secretName: cacerts\n",
    ] {
        text = replace(
            &text,
            block,
            &format!("{{{{- if .Values.pluginCA }}}}\n{block}{{{{- end }}}}\n"),
        )?;
    }
    Ok(text)
}

/// The chart's templates with the default values put in by plain text
/// substitution (the few expressions this chart uses; not Helm), for the
/// test that the chart is the default install.
pub fn render_with_defaults(template: &str, kube: (&str, &str)) -> String {
    let image = crate::inject::default_image();
    let mut out = String::new();
    let mut skipping = false;
    for line in template.lines() {
        match line.trim() {
            "{{- if .Values.pluginCA }}" => skipping = true,
            "{{- if .Values.ingressGateway.enabled }}" => {}
            "{{- end }}" => skipping = false,
            _ if skipping || line.starts_with('#') => {}
            _ => {
                out.push_str(
                    &line
                        .replace("{{ .Values.image | quote }}", &format!("\"{image}\""))
                        .replace("{{ .Values.trustDomain | quote }}", "\"cluster.local\"")
                        .replace("{{ .Values.replicas }}", "1")
                        .replace(
                            "{{ printf \"%s.%s\" .Capabilities.KubeVersion.Major (trimSuffix \"+\" .Capabilities.KubeVersion.Minor) | quote }}",
                            &format!("\"{}.{}\"", kube.0, kube.1.trim_end_matches('+')),
                        ),
                );
                out.push('\n');
            }
        }
    }
    out
}

//! Who a workload is (name, namespace, app, version, canonical service and
//! revision, service account, cluster): built once from labels or node
//! flags, read by metrics labels and carried between proxies in
//! `x-weft-peer` (`telemetry/peer.rs`). Plain data, so the config model
//! can hold each endpoint's.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Who a workload is, as metrics labels need it. `None`: not known.
///
/// Hashing uses a fingerprint of the content computed once ([`Self::sealed`],
/// which every constructor here calls): metric label sets hash two
/// workloads per request, five times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub app: Option<String>,
    pub version: Option<String>,
    pub canonical_service: Option<String>,
    pub canonical_revision: Option<String>,
    pub service_account: Option<String>,
    pub cluster: Option<String>,
    fingerprint: u64,
}

impl Hash for Workload {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint);
    }
}

impl Workload {
    /// Nothing known.
    pub fn unknown() -> Self {
        Self::default().sealed()
    }

    /// Computes the fingerprint; call again after changing a field.
    pub fn sealed(mut self) -> Self {
        let mut hasher = DefaultHasher::new();
        for (key, value) in self.fields() {
            key.hash(&mut hasher);
            value.hash(&mut hasher);
        }
        self.fingerprint = hasher.finish();
        self
    }

    /// This proxy's own workload, from its node flags. The canonical service
    /// and revision follow Istio: the `service.istio.io/canonical-*` label,
    /// else `app.kubernetes.io/name`/`app` (resp. `-version`/`version`),
    /// else the workload name (resp. `latest`).
    pub fn local(
        name: &str,
        namespace: &str,
        labels: &[(String, String)],
        service_account: &str,
        cluster: &str,
    ) -> Self {
        let label = |keys: &[&str]| {
            keys.iter().find_map(|key| {
                labels
                    .iter()
                    .find(|(k, v)| k == key && !v.is_empty())
                    .map(|(_, v)| v.clone())
            })
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Self {
            name: some(name),
            namespace: some(namespace),
            app: label(&["app", "app.kubernetes.io/name"]),
            version: label(&["version", "app.kubernetes.io/version"]),
            canonical_service: label(&[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ])
            .or_else(|| some(name)),
            canonical_revision: label(&[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ])
            .or_else(|| Some("latest".to_string())),
            service_account: some(service_account),
            cluster: some(cluster),
            fingerprint: 0,
        }
        .sealed()
    }

    /// What endpoint labels alone say about a destination (TCP, or an HTTP
    /// answer from a proxy-less upstream).
    pub fn from_labels<'a>(labels: impl Iterator<Item = (&'a String, &'a String)>) -> Self {
        let mut out = Self::default();
        for (key, value) in labels {
            let slot = match key.as_str() {
                "app" => &mut out.app,
                "version" => &mut out.version,
                "service.istio.io/canonical-name" => &mut out.canonical_service,
                "service.istio.io/canonical-revision" => &mut out.canonical_revision,
                _ => continue,
            };
            *slot = Some(value.clone());
        }
        if out.canonical_service.is_none() {
            out.canonical_service.clone_from(&out.app);
        }
        if out.canonical_revision.is_none() {
            out.canonical_revision.clone_from(&out.version);
        }
        out.sealed()
    }

    fn fields(&self) -> [(&'static str, &Option<String>); 8] {
        [
            ("n", &self.name),
            ("ns", &self.namespace),
            ("app", &self.app),
            ("ver", &self.version),
            ("cs", &self.canonical_service),
            ("cr", &self.canonical_revision),
            ("sa", &self.service_account),
            ("c", &self.cluster),
        ]
    }

    /// The `x-weft-peer` value for this workload.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.fields() {
            let Some(value) = value else { continue };
            if !out.is_empty() {
                out.push(';');
            }
            out.push_str(key);
            out.push('=');
            escape_into(value, &mut out);
        }
        out
    }

    /// Reads an `x-weft-peer` value; unknown keys are skipped (a newer peer
    /// may send more), a malformed pair makes the whole value unknown.
    pub fn decode(text: &str) -> Option<Self> {
        let mut out = Self::default();
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=')?;
            let value = Some(unescape(value)?);
            match key {
                "n" => out.name = value,
                "ns" => out.namespace = value,
                "app" => out.app = value,
                "ver" => out.version = value,
                "cs" => out.canonical_service = value,
                "cr" => out.canonical_revision = value,
                "sa" => out.service_account = value,
                "c" => out.cluster = value,
                _ => {}
            }
        }
        Some(out.sealed())
    }
}

fn escape_into(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_graphic() && !matches!(byte, b';' | b'=' | b'%') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

fn unescape(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

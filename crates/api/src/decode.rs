//! Files → resources: multi-document YAML or JSON (a Kubernetes `List` too),
//! every problem reported with file, document, resource and field path.

use std::fmt;
use std::path::Path;

use serde_json::Value;

use crate::field::FieldError;
use crate::meta::ObjectMeta;
use crate::resource::Resource;
use crate::unimplemented::{self, FieldWarning};

/// Istio kinds that are real but outside what Weft uses: skipped quietly
/// with a notice rather than rejected.
const ISTIO_GROUPS: &[&str] = &[
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "extensions.istio.io",
    "install.istio.io",
];

/// One problem: `file: Kind ns/name: spec.path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based position of the document in the file.
    pub document: usize,
    /// `Kind namespace/name` when the object got that far.
    pub resource: Option<String>,
    pub error: FieldError,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.resource, self.document) {
            (Some(resource), _) => write!(f, "{}: {resource}: {}", self.file, self.error),
            // A whole-file problem (unreadable, not YAML).
            (None, 0) => write!(f, "{}: {}", self.file, self.error),
            (None, document) => write!(f, "{}: document {document}: {}", self.file, self.error),
        }
    }
}

/// A resource a document names, its spec unchecked (what a delete needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub kind: String,
    /// `default` when the document gives none.
    pub namespace: String,
    pub name: String,
}

/// Whether documents are decoded and validated, or only identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Decode,
    Identify,
}

#[derive(Debug, Default)]
pub struct Decoded {
    pub resources: Vec<Resource>,
    /// Filled instead of `resources` by [`identify_str`].
    pub named: Vec<Named>,
    /// Objects skipped because Weft does not use their kind.
    pub notices: Vec<String>,
    pub problems: Vec<Problem>,
    /// Fields accepted but not honoured (see [`crate::unimplemented`]).
    pub warnings: Vec<FieldWarning>,
}

impl Decoded {
    /// Adds another file's or document's results to these.
    pub fn absorb(&mut self, other: Decoded) {
        self.resources.extend(other.resources);
        self.named.extend(other.named);
        self.notices.extend(other.notices);
        self.problems.extend(other.problems);
        self.warnings.extend(other.warnings);
    }
}

/// Config files under `dir` (`.yaml`, `.yml`, `.json`), recursively, in
/// path order: what `weft validate -f DIR`, `weft apply -f DIR` and weftd's
/// `--config-dir` read.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    // The directory's MeshConfig is weftd's, not a resource file.
    let mesh_config = dir.join(crate::mesh::FILE_NAME);
    out.retain(|path| *path != mesh_config);
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let mut paths = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
        {
            out.push(path);
        }
    }
    Ok(())
}

pub fn decode_file(path: &Path) -> Decoded {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => decode_str(&text, &name),
        Err(err) => Decoded {
            problems: vec![problem(&name, 0, None, "", format!("cannot read: {err}"))],
            ..Decoded::default()
        },
    }
}

pub fn decode_str(text: &str, file: &str) -> Decoded {
    walk_str(text, file, Mode::Decode)
}

/// Names the Istio resources in `text` (kind, namespace, name) without
/// validating their specs: what `weft delete -f` needs.
pub fn identify_str(text: &str, file: &str) -> Decoded {
    walk_str(text, file, Mode::Identify)
}

/// The documents of a YAML or JSON text, parsed as weftd parses them (same
/// size limits), before any Istio decoding.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    serde_saphyr::from_multiple_with_options(text, yaml_options()).map_err(|err| err.to_string())
}

fn walk_str(text: &str, file: &str, mode: Mode) -> Decoded {
    let documents = match parse_documents(text) {
        Ok(documents) => documents,
        Err(err) => {
            return Decoded {
                problems: vec![problem(
                    file,
                    0,
                    None,
                    "",
                    format!("not valid YAML or JSON: {err}"),
                )],
                ..Decoded::default()
            };
        }
    };
    let mut decoded = Decoded::default();
    for (index, value) in documents.into_iter().enumerate() {
        decoded.absorb(walk_document(value, file, index + 1, mode));
    }
    decoded
}

/// The parser's default budget stops at 1,024 documents; a mesh's config
/// applied in one go (a thousand ServiceEntries and their WorkloadEntries)
/// is larger. Limits stay, only sized for that.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 50_000_000;
    budget.max_events = 100_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Decodes one parsed document (an object, a `List`, or nothing).
pub fn decode_document(value: Value, file: &str, document: usize) -> Decoded {
    walk_document(value, file, document, Mode::Decode)
}

/// Whether an EnvoyFilter patches in one of Envoy's rate-limit filters.
fn mentions_rate_limit(spec: &Value) -> bool {
    match spec {
        Value::String(text) => text.contains("ratelimit"),
        Value::Array(items) => items.iter().any(mentions_rate_limit),
        Value::Object(map) => map.values().any(mentions_rate_limit),
        _ => false,
    }
}

fn walk_document(mut value: Value, file: &str, document: usize, mode: Mode) -> Decoded {
    let mut decoded = Decoded::default();
    let Value::Object(map) = &value else {
        if !value.is_null() {
            decoded.problems.push(problem(
                file,
                document,
                None,
                "",
                "expected an object with apiVersion and kind",
            ));
        }
        return decoded;
    };
    let text = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if kind == "List"
        && let Some(Value::Array(items)) = map.get("items")
    {
        for item in items.clone() {
            decoded.absorb(walk_document(item, file, document, mode));
        }
        return decoded;
    }
    let meta: ObjectMeta = map
        .get("metadata")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    let label = format!(
        "{} {}",
        if kind.is_empty() { "object" } else { &kind },
        meta.key()
    );
    if api_version.is_empty() || kind.is_empty() {
        let field = if api_version.is_empty() {
            "apiVersion"
        } else {
            "kind"
        };
        decoded.problems.push(problem(
            file,
            document,
            Some(label),
            field,
            "Required value",
        ));
        return decoded;
    }
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    let Some(expected) = Resource::group_of(&kind).filter(|g| g.name() == group) else {
        let why = if kind == "EnvoyFilter" && map.get("spec").is_some_and(mentions_rate_limit) {
            // Istio's only way to rate-limit; Weft has a resource for it.
            "an Istio kind Weft does not use; for its rate limit, write a RateLimit \
             (weft.io/v1alpha1, see docs/rate-limiting.md)"
        } else if ISTIO_GROUPS.contains(&group) {
            "an Istio kind Weft does not use"
        } else {
            "not an Istio resource"
        };
        decoded
            .notices
            .push(format!("{file}: skipped {label} ({api_version}): {why}"));
        return decoded;
    };
    if !expected.versions().contains(&version) {
        decoded.problems.push(problem(
            file,
            document,
            Some(label),
            "apiVersion",
            format!(
                "{api_version:?} is not served; use {}",
                expected
                    .versions()
                    .iter()
                    .map(|v| format!("{group}/{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        return decoded;
    }
    if mode == Mode::Identify {
        if meta.name.is_empty() {
            decoded.problems.push(problem(
                file,
                document,
                Some(label),
                "metadata.name",
                "Required value",
            ));
        } else {
            let namespace = if meta.namespace.is_empty() {
                "default"
            } else {
                &meta.namespace
            };
            decoded.named.push(Named {
                kind,
                namespace: namespace.to_string(),
                name: meta.name,
            });
        }
        return decoded;
    }
    // Removed fields go before the typed decoding refuses them; ignored
    // ones stay (they are part of the object) but are said.
    let removed = unimplemented::strip_removed(&kind, &mut value);
    let ignored = unimplemented::scan(&kind, &value);
    decoded.warnings.extend(
        removed
            .into_iter()
            .chain(ignored)
            .map(|found| FieldWarning {
                file: file.to_string(),
                resource: label.clone(),
                field: found.path,
                message: found.row.message.to_string(),
            }),
    );
    match Resource::decode(&kind, value) {
        Some(Ok(resource)) => decoded.resources.push(resource),
        Some(Err(errors)) => decoded
            .problems
            .extend(errors.into_iter().map(|error| Problem {
                file: file.to_string(),
                document,
                resource: Some(label.clone()),
                error,
            })),
        // group_of and decode are generated from the same list.
        None => decoded
            .notices
            .push(format!("{file}: skipped {label}: unknown kind")),
    }
    decoded
}

fn problem(
    file: &str,
    document: usize,
    resource: Option<String>,
    path: &str,
    message: impl Into<String>,
) -> Problem {
    Problem {
        file: file.to_string(),
        document,
        resource,
        error: FieldError {
            path: path.to_string(),
            message: message.into(),
        },
    }
}

/// Test helper: `(path, message)` of every problem of one `S` object named
/// `t` in namespace `ns`, whose `spec` is given as YAML indented two spaces.
#[cfg(test)]
pub(crate) fn spec_problems<S: crate::resource::Spec>(spec: &str) -> Vec<(String, String)> {
    let yaml = format!(
        "apiVersion: {}/v1\nkind: {}\nmetadata:\n  name: t\n  namespace: ns\nspec:\n{spec}",
        S::GROUP.name(),
        S::KIND
    );
    decode_str(&yaml, "t.yaml")
        .problems
        .into_iter()
        .map(|p| (p.error.path, p.error.message))
        .collect()
}

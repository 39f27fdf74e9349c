//! TLS credentials that Gateway servers name with `credentialName`, as one
//! small interface ([`CredentialSource`]) so that any source can feed the
//! compiler: a directory weftd reads and, when weftd follows a Kubernetes
//! cluster, its Secrets ([`Layered`]: a Secret wins over a directory entry
//! of the same namespace and name).
//!
//! The directory source (`<state dir>/credentials`) holds one folder per
//! credential, by namespace (the gateway proxy's, as Istio looks Secrets
//! up in the gateway workload's namespace):
//!
//! ```text
//! credentials/<namespace>/<name>/tls.crt   server certificate chain (PEM)
//! credentials/<namespace>/<name>/tls.key   its private key (PEM)
//! credentials/<namespace>/<name>/ca.crt    optional: CA for client certificates
//! credentials/<namespace>/<name>-cacert/ca.crt   Istio's separate CA credential
//! ```
//!
//! weftd polls the directory's file metadata and rebuilds the mesh when it
//! changes, so a renewed credential reaches the gateways without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use weft_kube::convert::ClusterSnapshot;

/// The subdirectory of weftd's state directory holding credentials.
pub const CREDENTIALS_DIR: &str = "credentials";

/// One server credential, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub certificate: String,
    pub private_key: String,
    /// Empty when the credential carries no CA.
    pub ca_certificates: String,
}

/// Where `credentialName`s are looked up.
pub trait CredentialSource: Send + Sync + std::fmt::Debug {
    /// The credential `name` in `namespace`; a `<name>-cacert` credential
    /// may hold only `ca_certificates`. Err: what is missing or unreadable.
    fn lookup(&self, namespace: &str, name: &str) -> Result<Credential, String>;
}

/// A credential source held by the compiler; none by default.
#[derive(Debug, Clone)]
pub struct Credentials(pub Arc<dyn CredentialSource>);

impl Default for Credentials {
    fn default() -> Self {
        Self(Arc::new(NoCredentials))
    }
}

/// No credentials at all (weftd without a state directory, tests).
#[derive(Debug, Default)]
pub struct NoCredentials;

impl CredentialSource for NoCredentials {
    fn lookup(&self, namespace: &str, name: &str) -> Result<Credential, String> {
        Err(format!(
            "no credential source: {namespace}/{name} cannot be found"
        ))
    }
}

/// A cluster's Secrets first (weftd following Kubernetes: `kubernetes.io/tls`
/// and generic Secrets, `weft_kube::convert::secret`), then the directory.
#[derive(Debug)]
pub struct Layered {
    pub cluster: Arc<ClusterSnapshot>,
    pub dir: Option<CredentialDir>,
}

impl CredentialSource for Layered {
    fn lookup(&self, namespace: &str, name: &str) -> Result<Credential, String> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(found) = self.cluster.credentials.get(&key) {
            return Ok(Credential {
                certificate: found.certificate.clone(),
                private_key: found.private_key.clone(),
                ca_certificates: found.ca_certificates.clone(),
            });
        }
        // Both sources are named: under Kubernetes the Secret is what an
        // operator looks for, the directory is the fallback.
        match &self.dir {
            Some(dir) => dir
                .lookup(namespace, name)
                .map_err(|why| format!("no Secret {namespace}/{name} ({why})")),
            None => Err(format!("no Secret {namespace}/{name}")),
        }
    }
}

/// Credentials as files under one directory (see the module doc).
#[derive(Debug, Clone)]
pub struct CredentialDir {
    root: PathBuf,
}

impl CredentialDir {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join(CREDENTIALS_DIR),
        }
    }

    /// What every credential file looks like now (path, size, mtime), to
    /// notice a renewal by comparing two calls.
    pub fn fingerprint(&self) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
        let mut out = Vec::new();
        let Ok(namespaces) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for namespace in namespaces.flatten() {
            let Ok(names) = std::fs::read_dir(namespace.path()) else {
                continue;
            };
            for name in names.flatten() {
                let Ok(files) = std::fs::read_dir(name.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    if let Ok(meta) = file.metadata() {
                        out.push((file.path(), meta.len(), meta.modified().ok()));
                    }
                }
            }
        }
        out.sort();
        out
    }
}

impl CredentialSource for CredentialDir {
    fn lookup(&self, namespace: &str, name: &str) -> Result<Credential, String> {
        let safe =
            |part: &str| !part.is_empty() && !part.contains('/') && part != "." && part != "..";
        if !safe(namespace) || !safe(name) {
            return Err(format!("{namespace}/{name} is not a credential name"));
        }
        let dir = self.root.join(namespace).join(name);
        if !dir.is_dir() {
            return Err(format!("no directory {}", dir.display()));
        }
        let read = |file: &str, required: bool| match std::fs::read_to_string(dir.join(file)) {
            Ok(text) => Ok(text),
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
                Ok(String::new())
            }
            Err(err) => Err(format!("{}: {err}", dir.join(file).display())),
        };
        // A `-cacert` credential holds only the CA.
        let ca_only = name.ends_with("-cacert");
        Ok(Credential {
            certificate: read("tls.crt", !ca_only)?,
            private_key: read("tls.key", !ca_only)?,
            ca_certificates: read("ca.crt", ca_only)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_by_namespace_and_name() {
        let state = tempfile::tempdir().expect("tempdir");
        let source = CredentialDir::new(state.path());
        assert!(source.fingerprint().is_empty());
        let dir = state.path().join("credentials/istio-system/web");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("tls.crt"), "CERT").expect("write");
        std::fs::write(dir.join("tls.key"), "KEY").expect("write");
        let found = source.lookup("istio-system", "web").expect("found");
        assert_eq!(
            (found.certificate.as_str(), found.ca_certificates.as_str()),
            ("CERT", "")
        );
        let err = source
            .lookup("default", "web")
            .expect_err("other namespace");
        assert!(err.contains("default/web"), "{err}");
        assert!(source.lookup("istio-system", "..").is_err());
        let ca = state.path().join("credentials/istio-system/web-cacert");
        std::fs::create_dir_all(&ca).expect("mkdir");
        let err = source
            .lookup("istio-system", "web-cacert")
            .expect_err("no ca.crt");
        assert!(err.contains("ca.crt"), "{err}");
        std::fs::write(ca.join("ca.crt"), "CA").expect("write");
        assert_eq!(
            source
                .lookup("istio-system", "web-cacert")
                .expect("ca")
                .ca_certificates,
            "CA"
        );
        assert_eq!(source.fingerprint().len(), 3);

        // A cluster's Secret wins over the directory; the directory still
        // answers for names the cluster lacks.
        let mut cluster = ClusterSnapshot::default();
        cluster.credentials.insert(
            ("istio-system".into(), "web".into()),
            weft_kube::convert::secret::TlsCredential {
                certificate: "SECRET-CERT".into(),
                private_key: "SECRET-KEY".into(),
                ca_certificates: String::new(),
            },
        );
        let layered = Layered {
            cluster: Arc::new(cluster),
            dir: Some(source),
        };
        assert_eq!(
            layered
                .lookup("istio-system", "web")
                .expect("secret")
                .certificate,
            "SECRET-CERT"
        );
        assert_eq!(
            layered
                .lookup("istio-system", "web-cacert")
                .expect("directory")
                .ca_certificates,
            "CA"
        );
        let without_dir = Layered {
            cluster: Arc::new(ClusterSnapshot::default()),
            dir: None,
        };
        let err = layered
            .lookup("istio-system", "other")
            .expect_err("in neither source");
        assert!(
            err.contains("no Secret istio-system/other") && err.contains("no directory"),
            "{err}"
        );
        let err = without_dir.lookup("istio-system", "web").expect_err("none");
        assert!(err.contains("no Secret istio-system/web"), "{err}");
    }
}

//! Kubernetes Secrets as gateway TLS credentials (`credentialName`), in
//! the shapes Istio reads: `kubernetes.io/tls` Secrets (`tls.crt`,
//! `tls.key`, optional `ca.crt`) and generic ones (`cert`, `key`,
//! `cacert`); a `<name>-cacert` Secret may hold only the CA (`ca.crt` or
//! `cacert`). Anything else is not a credential and is not kept.

use k8s_openapi::api::core::v1::Secret;

/// One credential, PEM text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsCredential {
    pub certificate: String,
    pub private_key: String,
    /// Empty when the Secret carries no CA.
    pub ca_certificates: String,
}

/// `(namespace, name, credential)` when `secret` holds a certificate and
/// key, or a CA alone.
pub fn credential(secret: &Secret) -> Option<(String, String, TlsCredential)> {
    let namespace = secret.metadata.namespace.clone()?;
    let name = secret.metadata.name.clone()?;
    let data = secret.data.as_ref()?;
    let text = |keys: &[&str]| {
        keys.iter()
            .find_map(|key| data.get(*key))
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
            .unwrap_or_default()
    };
    let found = TlsCredential {
        certificate: text(&["tls.crt", "cert"]),
        private_key: text(&["tls.key", "key"]),
        ca_certificates: text(&["ca.crt", "cacert"]),
    };
    let pair = !found.certificate.is_empty() && !found.private_key.is_empty();
    (pair || !found.ca_certificates.is_empty()).then_some((namespace, name, found))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    use super::*;

    fn secret(name: &str, kind: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("istio-system".into()),
                ..Default::default()
            },
            type_: Some(kind.into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn tls_generic_and_ca_only_secrets_are_credentials() {
        let tls = secret(
            "web",
            "kubernetes.io/tls",
            &[("tls.crt", "C"), ("tls.key", "K"), ("ca.crt", "A")],
        );
        let (namespace, name, found) = credential(&tls).expect("tls secret");
        assert_eq!((namespace.as_str(), name.as_str()), ("istio-system", "web"));
        assert_eq!(
            found,
            TlsCredential {
                certificate: "C".into(),
                private_key: "K".into(),
                ca_certificates: "A".into()
            }
        );
        let generic = secret("api", "Opaque", &[("cert", "C"), ("key", "K")]);
        assert_eq!(credential(&generic).expect("generic").2.private_key, "K");
        let ca = secret("web-cacert", "Opaque", &[("cacert", "A")]);
        assert_eq!(credential(&ca).expect("ca only").2.ca_certificates, "A");
        let other = secret("db", "Opaque", &[("password", "hunter2")]);
        assert!(credential(&other).is_none(), "not a credential: not kept");
        let half = secret("half", "Opaque", &[("cert", "C")]);
        assert!(credential(&half).is_none());
    }
}

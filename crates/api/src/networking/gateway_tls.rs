//! What a gateway's terminated TLS can be: Weft serves with rustls, which
//! speaks TLS 1.2 and 1.3 only and a fixed set of AEAD suites. Settings
//! outside that are refused at apply, naming the field, rather than served
//! with something wider or different.

use super::gateway::{ServerTlsSettings, TlsProtocol};
use crate::field::FieldErrors;

/// Istio's `cipherSuites` names (Envoy's, i.e. OpenSSL's/BoringSSL's) and
/// rustls' own names → the rustls suite name.
const SUITES: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
    ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ),
];

/// The rustls suites one `cipherSuites` entry names: a name, or Envoy's
/// equal-preference group `[A|B]`. None: some name is not one rustls has.
pub fn rustls_cipher_suites(entry: &str) -> Option<Vec<&'static str>> {
    let inner = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    inner
        .split('|')
        .map(|name| {
            let name = name.trim();
            SUITES
                .iter()
                .find(|(envoy, rustls)| *envoy == name || *rustls == name)
                .map(|(_, rustls)| *rustls)
        })
        .collect()
}

/// `TLSV1_2`/`TLSV1_3` as the proxy writes them; `TLS_AUTO` is no bound.
pub fn rustls_version(version: Option<TlsProtocol>) -> &'static str {
    match version {
        Some(TlsProtocol::V1_3) => "TLSv1_3",
        Some(TlsProtocol::V1_2) => "TLSv1_2",
        // TLS 1.0/1.1 are refused at apply (below); never reached.
        _ => "",
    }
}

/// Versions and suites of a gateway server's `tls`, at `path`.
pub(crate) fn validate(tls: &ServerTlsSettings, path: &str, errors: &mut FieldErrors) {
    for (field, version) in [
        ("minProtocolVersion", tls.min_protocol_version),
        ("maxProtocolVersion", tls.max_protocol_version),
    ] {
        if let Some(old @ (TlsProtocol::V1_0 | TlsProtocol::V1_1)) = version {
            errors.push(
                format!("{path}.{field}"),
                format!(
                    "{} is not supported: Weft's gateways speak TLS 1.2 and 1.3 only; use TLSV1_2 or TLSV1_3",
                    if old == TlsProtocol::V1_0 { "TLSV1_0" } else { "TLSV1_1" }
                ),
            );
        }
    }
    let rank = |v: Option<TlsProtocol>| match v {
        Some(TlsProtocol::V1_3) => Some(3),
        Some(TlsProtocol::V1_2) => Some(2),
        _ => None,
    };
    if let (Some(min), Some(max)) = (
        rank(tls.min_protocol_version),
        rank(tls.max_protocol_version),
    ) && min > max
    {
        errors.push(
            format!("{path}.minProtocolVersion"),
            "is above maxProtocolVersion",
        );
    }
    for (index, entry) in tls.cipher_suites.iter().enumerate() {
        if rustls_cipher_suites(entry).is_none() {
            errors.push(
                format!("{path}.cipherSuites[{index}]"),
                format!(
                    "{entry:?} is not a cipher suite Weft's gateways offer (TLS 1.2: ECDHE with AES-GCM or CHACHA20-POLY1305, e.g. ECDHE-RSA-AES128-GCM-SHA256; TLS 1.3: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256)"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(tls: &str) -> Vec<(String, String)> {
        crate::decode::spec_problems::<super::super::Gateway>(&format!(
            "  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [\"*\"]\n    tls: {tls}\n"
        ))
    }

    #[test]
    fn old_tls_versions_and_unknown_suites_are_refused_by_field() {
        let found = problems(
            "{mode: SIMPLE, serverCertificate: /c, privateKey: /k, minProtocolVersion: TLSV1_0, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, DES-CBC3-SHA]}",
        );
        let fields: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.servers[0].tls.minProtocolVersion",
                "spec.servers[0].tls.cipherSuites[1]"
            ],
            "{found:?}"
        );
        assert!(found[0].1.contains("TLSV1_0 is not supported"), "{found:?}");
        assert!(found[1].1.contains("\"DES-CBC3-SHA\""), "{found:?}");
        assert!(
            problems("{mode: SIMPLE, serverCertificate: /c, privateKey: /k, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}")
                .iter()
                .any(|(f, _)| f == "spec.servers[0].tls.minProtocolVersion")
        );
    }

    #[test]
    fn envoy_names_and_groups_map_to_rustls_suites() {
        assert_eq!(
            rustls_cipher_suites("[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]"),
            Some(vec![
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            ])
        );
        assert_eq!(
            rustls_cipher_suites("TLS_AES_256_GCM_SHA384"),
            Some(vec!["TLS13_AES_256_GCM_SHA384"])
        );
        assert_eq!(rustls_cipher_suites("AES128-SHA"), None);
    }
}

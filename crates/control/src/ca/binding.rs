//! What a workload certificate proves, beyond its SPIFFE id: the binding
//! (WorkloadGroup and, when known, the instance address) weftd wrote into
//! it when it signed it, read back when the certificate is presented.
//!
//! The binding travels in a private, non-critical X.509 extension (OID
//! [`OID`], Weft's own arc), DER `SEQUENCE { workloadGroup UTF8String,
//! address OCTET STRING OPTIONAL }` (4 or 16 bytes). Non-critical so that
//! peers which do not know it (other sidecars, any TLS stack) still accept
//! the certificate; it is only ever read from a certificate that chains to
//! weftd's own roots (the TLS listener verified it first), so whoever holds
//! such a certificate got the binding from weftd and cannot change it.

use std::net::IpAddr;

use rcgen::CustomExtension;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::SpiffeId;
use super::caller::ProvenIdentity;

/// `1.3.6.1.4.1.59123.12.1`: Weft's workload binding.
pub const OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59123, 12, 1];

/// The extension weftd adds to a workload certificate it signs.
pub fn extension(workload_group: Option<&str>, address: Option<IpAddr>) -> CustomExtension {
    let content = yasna::construct_der(|writer| {
        writer.write_sequence(|seq| {
            seq.next().write_utf8_string(workload_group.unwrap_or(""));
            match address {
                Some(IpAddr::V4(v4)) => seq.next().write_bytes(&v4.octets()),
                Some(IpAddr::V6(v6)) => seq.next().write_bytes(&v6.octets()),
                None => {}
            }
        })
    });
    // rcgen makes custom extensions non-critical unless told otherwise.
    CustomExtension::from_oid_content(OID, content)
}

/// Decodes the extension's content.
fn decode(content: &[u8]) -> Result<(Option<String>, Option<IpAddr>), String> {
    let (group, address) = yasna::parse_der(content, |reader| {
        reader.read_sequence(|seq| {
            let group = seq.next().read_utf8string()?;
            let address = seq.read_optional(|r| r.read_bytes())?;
            Ok((group, address))
        })
    })
    .map_err(|err| format!("the workload binding extension is malformed: {err}"))?;
    let address = match address.as_deref() {
        None => None,
        Some(bytes) => Some(ip_from(bytes).ok_or_else(|| {
            format!(
                "the workload binding's address has {} bytes (4 or 16 expected)",
                bytes.len()
            )
        })?),
    };
    Ok(((!group.is_empty()).then_some(group), address))
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

impl SpiffeId {
    /// `spiffe://<td>/ns/<ns>/sa/<sa>`, nothing else.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (trust_domain, path) = rest.split_once('/')?;
        let mut parts = path.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None)
                if !trust_domain.is_empty() && !ns.is_empty() && !sa.is_empty() =>
            {
                Some(Self {
                    trust_domain: trust_domain.to_string(),
                    namespace: ns.to_string(),
                    service_account: sa.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// What a verified workload certificate (DER) proves in `trust_domain`:
/// its one SPIFFE id and the binding weftd wrote. A certificate without the
/// binding (issued before weftd wrote one) proves the identity alone.
pub fn proven_identity(der: &[u8], trust_domain: &str) -> Result<ProvenIdentity, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|err| format!("the client certificate cannot be read: {err}"))?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(err) => return Err(format!("the client certificate's SAN is malformed: {err}")),
    };
    let [uri] = uris.as_slice() else {
        return Err(format!(
            "a workload certificate has exactly one SPIFFE URI SAN, this one has {uris:?}"
        ));
    };
    let spiffe = SpiffeId::parse(uri)
        .ok_or_else(|| format!("{uri:?} is not spiffe://<td>/ns/<ns>/sa/<sa>"))?;
    if spiffe.trust_domain != trust_domain {
        return Err(format!(
            "{uri} is in trust domain {:?}, weftd serves {trust_domain:?}",
            spiffe.trust_domain
        ));
    }
    let binding = cert.extensions().iter().find(|ext| {
        ext.oid
            .iter()
            .is_some_and(|arcs| arcs.eq(OID.iter().copied()))
    });
    let (workload_group, address) = match binding {
        Some(ext) => decode(ext.value)?,
        None => (None, None),
    };
    Ok(ProvenIdentity {
        spiffe,
        workload_group,
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_parse_only_in_the_istio_form() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/sleep").expect("valid");
        assert_eq!(id.uri(), "spiffe://cluster.local/ns/default/sa/sleep");
        for bad in [
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns/default/sa/sleep/extra",
            "spiffe:///ns/a/sa/b",
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns//sa/b",
        ] {
            assert!(SpiffeId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn malformed_bindings_are_refused() {
        assert!(decode(b"\x04\x01x").is_err());
        let three_bytes = yasna::construct_der(|w| {
            w.write_sequence(|s| {
                s.next().write_utf8_string("g");
                s.next().write_bytes(&[1, 2, 3]);
            })
        });
        let err = decode(&three_bytes).expect_err("3-byte address");
        assert!(err.contains("3 bytes"), "{err}");
    }
}

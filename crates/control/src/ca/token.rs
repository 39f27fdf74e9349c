//! Bootstrap tokens: what a proxy outside Kubernetes shows to get a
//! certificate (Istio uses the pod's service-account JWT for this).
//!
//! A token is `weft1.<hex claims JSON>.<hex ECDSA P-256 signature>`, signed
//! with a key weftd keeps in `<state-dir>/ca/token-key.pem`: weftd checks
//! one without any lookup, and a restart keeps every issued token valid.
//! Deleting that file (then restarting weftd) revokes them all.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rcgen::{KeyPair, SigningKey};
use serde::{Deserialize, Serialize};

use super::SpiffeId;

const PREFIX: &str = "weft1";

/// What a token proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    #[serde(rename = "td")]
    pub trust_domain: String,
    #[serde(rename = "ns")]
    pub namespace: String,
    #[serde(rename = "sa")]
    pub service_account: String,
    /// The WorkloadGroup (in `namespace`) the token admits a proxy into:
    /// its labels and ports come from the group, never from the proxy.
    #[serde(rename = "wg", default)]
    pub workload_group: String,
    /// The one instance address the token is good for, when known.
    #[serde(rename = "addr", default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    /// Issued at, seconds since the epoch (for the operator's eyes).
    pub iat: u64,
}

impl TokenClaims {
    pub fn identity(&self) -> SpiffeId {
        SpiffeId {
            trust_domain: self.trust_domain.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
        }
    }
}

pub struct TokenSigner {
    key: KeyPair,
    trust_domain: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a Weft bootstrap token (expected weft1.<claims>.<signature>)")]
    Malformed,
    #[error("the token's signature does not verify: not minted by this weftd (or its key changed)")]
    BadSignature,
    #[error("the token is for trust domain {0:?}, this weftd serves {1:?}")]
    WrongTrustDomain(String, String),
}

impl TokenSigner {
    /// The signing key from `dir`, made on first use.
    pub fn open(dir: &Path, trust_domain: &str) -> anyhow::Result<Self> {
        let path = dir.join("token-key.pem");
        let key = if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            KeyPair::from_pem(&text)
                .with_context(|| format!("{}: not a usable private key", path.display()))?
        } else {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            super::write_private(&path, &key.serialize_pem())?;
            key
        };
        Ok(Self {
            key,
            trust_domain: trust_domain.to_string(),
        })
    }

    /// A token proving `namespace`/`service_account`.
    pub fn mint(&self, namespace: &str, service_account: &str) -> anyhow::Result<String> {
        let claims = TokenClaims {
            trust_domain: self.trust_domain.clone(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            workload_group: String::new(),
            address: None,
            iat: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let body = format!("{PREFIX}.{}", hex(&serde_json::to_vec(&claims)?));
        let signature = self
            .key
            .sign(body.as_bytes())
            .map_err(|err| anyhow::anyhow!("cannot sign the token: {err}"))?;
        Ok(format!("{body}.{}", hex(&signature)))
    }

    /// The claims of a token this weftd minted.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let token = token.trim();
        let (body, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let claims = body
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .ok_or(TokenError::Malformed)?;
        let signature = unhex(signature).ok_or(TokenError::Malformed)?;
        webpki::aws_lc_rs::ECDSA_P256_SHA256
            .verify_signature(self.key.public_key_raw(), body.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: TokenClaims = unhex(claims)
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.trust_domain != self.trust_domain {
            return Err(TokenError::WrongTrustDomain(
                claims.trust_domain,
                self.trust_domain.clone(),
            ));
        }
        Ok(claims)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

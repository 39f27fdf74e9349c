//! Bootstrap tokens: what a proxy outside Kubernetes shows to get its first
//! certificate (Istio uses the pod's projected service-account JWT).
//!
//! A token is a JWT (ES256) signed with `<state-dir>/ca/token-key.pem`:
//! `iss` "weftd", `aud` "weft-bootstrap", `sub` the SPIFFE identity, `ns`,
//! `sa`, `wg` (the WorkloadGroup it admits a proxy into), optionally `addr`
//! (the one instance address it is good for), `iat`, `exp`, `jti`.
//!
//! Contract:
//! - [`TokenSigner::verify`] accepts only a token this weftd signed, for
//!   the bootstrap audience, not expired (a few seconds of leeway), for
//!   this trust domain, and not revoked; each refusal is its own
//!   [`TokenError`] whose text says what was wrong.
//! - Every minted token is recorded (id, namespace, group, address,
//!   expiry, who minted it) in `<state-dir>/ca/tokens.json`, written through
//!   [`crate::durable`] (0600), with the revocation list beside it: revoking
//!   one token leaves every other valid, and a restart keeps both lists.
//!   Entries are pruned once their token has expired (a revocation is
//!   useless after that, `exp` refuses it anyway).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::KeyPair;
use serde::{Deserialize, Serialize};

use super::SpiffeId;
use crate::durable::{self, Mode};

/// The `iss` of every token: who signed it.
pub const ISSUER: &str = "weftd";
/// The `aud` of every token: what it is for (and nothing else).
pub const AUDIENCE: &str = "weft-bootstrap";
/// A token's lifetime unless the minter says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The longest lifetime a token may be given.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Tolerated clock difference on `exp`: weftd checks its own tokens with
/// its own clock, so a few seconds suffice (for a clock stepped by NTP).
const LEEWAY: Duration = Duration::from_secs(5);
/// The minted-token list beside the signing key.
const LEDGER_FILE: &str = "tokens.json";

/// What a verified token proves.
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
    pub address: Option<IpAddr>,
    /// Issued at, seconds since the epoch (for the operator's eyes).
    pub iat: u64,
    /// Expiry, seconds since the epoch.
    #[serde(default)]
    pub expires: u64,
    /// The token's id (`jti`): what `weft token revoke` names.
    #[serde(default)]
    pub id: String,
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

/// What a token is asked for (from `POST /v1/tokens`).
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub namespace: String,
    pub service_account: String,
    pub workload_group: String,
    pub address: Option<IpAddr>,
    /// `None`: [`DEFAULT_TTL`].
    pub ttl: Option<Duration>,
    /// Who asked (for the token list and the audit log).
    pub minted_by: String,
}

/// One minted token as `weft token list` shows it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MintedToken {
    pub id: String,
    pub namespace: String,
    pub service_account: String,
    pub workload_group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    pub issued: u64,
    pub expires: u64,
    pub minted_by: String,
    #[serde(default)]
    pub revoked: bool,
}

/// A fresh token and its record.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    pub record: MintedToken,
    pub identity: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a Weft bootstrap token ({0}); mint one with `weft token create`")]
    Malformed(String),
    #[error("the token's signature does not verify: not minted by this weftd (or its key changed)")]
    BadSignature,
    #[error(
        "the token expired {0} seconds after the epoch; mint a new one with `weft token create`"
    )]
    Expired(u64),
    #[error("the token is not a bootstrap token (its audience is not {AUDIENCE:?})")]
    WrongAudience,
    #[error("the token was not issued by weftd (its issuer is not {ISSUER:?})")]
    WrongIssuer,
    #[error("the token is for trust domain {0:?}, this weftd serves {1:?}")]
    WrongTrustDomain(String, String),
    #[error("the token {0} was revoked")]
    Revoked(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no token with id {0:?} (see `weft token list`)")]
    NotFound(String),
    #[error("cannot record the revocation: {0}")]
    Persist(std::io::Error),
}

/// The JWT's claims, in their wire names.
#[derive(Debug, Serialize, Deserialize)]
struct Jwt {
    iss: String,
    aud: String,
    sub: String,
    ns: String,
    sa: String,
    wg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    addr: Option<IpAddr>,
    iat: u64,
    exp: u64,
    jti: String,
}

/// What `tokens.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ledger {
    minted: Vec<MintedToken>,
    /// Revoked ids whose tokens have not expired yet.
    revoked: BTreeSet<String>,
}

pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    trust_domain: String,
    ledger_path: PathBuf,
    ledger: Mutex<Ledger>,
}

impl TokenSigner {
    /// The signing key and token list from `dir` (weftd's `<state>/ca`),
    /// the key made on first use.
    pub fn open(dir: &Path, trust_domain: &str) -> anyhow::Result<Self> {
        let path = dir.join("token-key.pem");
        let key = if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            KeyPair::from_pem(&text)
                .with_context(|| format!("{}: not a usable private key", path.display()))?
        } else {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            durable::write(&path, key.serialize_pem().as_bytes(), Mode::Private)
                .with_context(|| format!("cannot write {}", path.display()))?;
            key
        };
        let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())
            .with_context(|| format!("{}: not a P-256 key", path.display()))?;
        let decoding = DecodingKey::from_ec_pem(key.public_key_pem().as_bytes())
            .with_context(|| format!("{}: not a P-256 key", path.display()))?;
        let ledger_path = dir.join(LEDGER_FILE);
        let ledger = match std::fs::read(&ledger_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{}: not a token list (restore it from a backup, or delete it and \
                     token-key.pem to invalidate every token)",
                    ledger_path.display()
                )
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ledger::default(),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", ledger_path.display()));
            }
        };
        Ok(Self {
            encoding,
            decoding,
            trust_domain: trust_domain.to_string(),
            ledger_path,
            ledger: Mutex::new(ledger),
        })
    }

    /// Signs and records a token.
    pub fn mint(&self, request: &MintRequest) -> anyhow::Result<Minted> {
        let ttl = request.ttl.unwrap_or(DEFAULT_TTL);
        if ttl.is_zero() || ttl > MAX_TTL {
            anyhow::bail!("a token's ttl must be above zero and at most 30 days, not {ttl:?}");
        }
        let now = now();
        let identity = SpiffeId {
            trust_domain: self.trust_domain.clone(),
            namespace: request.namespace.clone(),
            service_account: request.service_account.clone(),
        }
        .uri();
        let id = random_id();
        let claims = Jwt {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: identity.clone(),
            ns: request.namespace.clone(),
            sa: request.service_account.clone(),
            wg: request.workload_group.clone(),
            addr: request.address,
            iat: now,
            exp: now + ttl.as_secs().max(1),
            jti: id.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .context("cannot sign the token")?;
        let record = MintedToken {
            id,
            namespace: claims.ns,
            service_account: claims.sa,
            workload_group: claims.wg,
            address: claims.addr,
            issued: now,
            expires: claims.exp,
            minted_by: request.minted_by.clone(),
            revoked: false,
        };
        self.update(|ledger| {
            ledger.minted.push(record.clone());
            Ok::<(), std::io::Error>(())
        })
        .context("cannot record the token")?;
        Ok(Minted {
            token,
            record,
            identity,
        })
    }

    /// Every recorded token that has not expired, oldest first.
    pub fn list(&self) -> Vec<MintedToken> {
        let now = now();
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        ledger
            .minted
            .iter()
            .filter(|token| token.expires + LEEWAY.as_secs() >= now)
            .map(|token| MintedToken {
                revoked: ledger.revoked.contains(&token.id),
                ..token.clone()
            })
            .collect()
    }

    /// Revokes one token by id; others stay valid. Revoking twice is fine.
    pub fn revoke(&self, id: &str) -> Result<MintedToken, RevokeError> {
        let mut found = None;
        self.update(|ledger| {
            let Some(token) = ledger.minted.iter_mut().find(|token| token.id == id) else {
                return Err(RevokeError::NotFound(id.to_string()));
            };
            token.revoked = true;
            found = Some(token.clone());
            ledger.revoked.insert(id.to_string());
            Ok(())
        })?;
        found.ok_or_else(|| RevokeError::NotFound(id.to_string()))
    }

    /// The claims of a valid token (see the module's contract).
    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = LEEWAY.as_secs();
        let data = jsonwebtoken::decode::<Jwt>(token.trim(), &self.decoding, &validation).map_err(
            |err| match err.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    TokenError::BadSignature
                }
                ErrorKind::ExpiredSignature => TokenError::Expired(expiry_of(token)),
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                _ => TokenError::Malformed(err.to_string()),
            },
        )?;
        let claims = data.claims;
        let subject = SpiffeId {
            trust_domain: self.trust_domain.clone(),
            namespace: claims.ns.clone(),
            service_account: claims.sa.clone(),
        };
        if claims.sub != subject.uri() {
            let trust_domain = claims
                .sub
                .strip_prefix("spiffe://")
                .and_then(|rest| rest.split('/').next())
                .unwrap_or(&claims.sub)
                .to_string();
            if trust_domain != self.trust_domain {
                return Err(TokenError::WrongTrustDomain(
                    trust_domain,
                    self.trust_domain.clone(),
                ));
            }
            return Err(TokenError::Malformed(format!(
                "its subject {} is not its namespace and service account",
                claims.sub
            )));
        }
        if claims.wg.is_empty() {
            return Err(TokenError::Malformed("it names no WorkloadGroup".into()));
        }
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if ledger.revoked.contains(&claims.jti) {
            return Err(TokenError::Revoked(claims.jti));
        }
        Ok(TokenClaims {
            trust_domain: self.trust_domain.clone(),
            namespace: claims.ns,
            service_account: claims.sa,
            workload_group: claims.wg,
            address: claims.addr,
            iat: claims.iat,
            expires: claims.exp,
            id: claims.jti,
        })
    }

    /// Changes the ledger, prunes expired entries and writes it durably;
    /// on a failed write the change is undone (memory follows the disk).
    fn update<E: From<std::io::Error>>(
        &self,
        change: impl FnOnce(&mut Ledger) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = ledger.clone();
        change(&mut next)?;
        let now = now();
        next.minted
            .retain(|token| token.expires + LEEWAY.as_secs() >= now);
        // A revocation matters only while its token could still verify.
        let live: BTreeSet<&String> = next.minted.iter().map(|token| &token.id).collect();
        next.revoked.retain(|id| live.contains(id));
        let bytes = serde_json::to_vec_pretty(&next).map_err(std::io::Error::other)?;
        durable::write(&self.ledger_path, &bytes, Mode::Private)?;
        *ledger = next;
        Ok(())
    }
}

impl From<std::io::Error> for RevokeError {
    fn from(err: std::io::Error) -> Self {
        RevokeError::Persist(err)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 128 random bits, hex: ids that cannot be guessed or collide.
fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `exp` of a token already known to be validly signed and expired,
/// for the error message (0 if it cannot be read).
fn expiry_of(token: &str) -> u64 {
    jsonwebtoken::dangerous::insecure_decode::<Jwt>(token.trim()).map_or(0, |data| data.claims.exp)
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;

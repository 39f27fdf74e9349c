//! JSON Web Key Sets: inline, or fetched from `jwksUri` and cached.
//!
//! A fetched set is shared by every rule and config snapshot naming the
//! same URI (so a config push does not refetch), kept for five minutes,
//! and fetched again early when a token names a key id the set lacks (a
//! rotated issuer key), at most once a second. A failed fetch keeps the
//! last good set. Only `http://` URIs are fetched for now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::Keys;

const CACHE_FOR: Duration = Duration::from_secs(300);
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(1);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Key sets are small; anything larger is not one.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// One usable key of a set.
pub struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// Parsed keys; keys the library cannot use are skipped.
pub struct KeySet(Vec<Key>);

impl KeySet {
    pub fn parse(json: &str) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|err| format!("not a JSON Web Key Set: {err}"))?;
        let keys: Vec<Key> = set.keys.iter().filter_map(Key::from_jwk).collect();
        if keys.len() < set.keys.len() {
            // Tokens signed by a skipped key fail verification (401): safe.
            tracing::warn!(
                "{} of {} keys in a JWKS are unusable and skipped",
                set.keys.len() - keys.len(),
                set.keys.len()
            );
        }
        Ok(Self(keys))
    }

    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
        self.0
            .iter()
            .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.alg.is_none_or(|a| a == alg) && k.key.family() == alg.family())
            .map(|k| k.key.clone())
            .collect()
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.0.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

impl Key {
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        let key = DecodingKey::from_jwk(jwk).ok()?;
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        Some(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        })
    }
}

/// Where a rule's keys come from.
pub enum KeySource {
    Inline(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
}

impl KeySource {
    /// The keys that may have signed a token with this `kid` and `alg`.
    pub async fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Keys, String> {
        match self {
            Self::Inline(set) => Ok(Arc::new(set.select(kid, alg))),
            Self::Remote(remote) => remote.keys_for(kid, alg).await,
        }
    }
}

pub struct RemoteJwks {
    uri: String,
    cached: Mutex<Cached>,
    /// One fetch at a time per URI.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cached {
    set: Option<(Arc<KeySet>, Instant)>,
    last_attempt: Option<Instant>,
}

impl RemoteJwks {
    /// The shared cache entry for `uri`.
    pub fn shared(uri: &str) -> Arc<Self> {
        static ALL: OnceLock<Mutex<HashMap<String, Weak<RemoteJwks>>>> = OnceLock::new();
        let mut all = ALL
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = all.get(uri).and_then(Weak::upgrade) {
            return existing;
        }
        all.retain(|_, weak| weak.strong_count() > 0);
        let created = Arc::new(Self {
            uri: uri.to_string(),
            cached: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        });
        all.insert(uri.to_string(), Arc::downgrade(&created));
        created
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Keys, String> {
        let current = self.cached().set.clone();
        let stale = current
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() > CACHE_FOR);
        let unknown_kid = match (&current, kid) {
            (Some((set, _)), Some(kid)) => !set.has_kid(kid),
            _ => false,
        };
        let set = if stale || unknown_kid {
            match self.refresh().await {
                Ok(set) => set,
                // The last good set still serves while the issuer is away.
                Err(err) => match current {
                    Some((set, _)) => {
                        tracing::warn!(uri = %self.uri, "JWKS refresh failed, keeping the last set: {err}");
                        set
                    }
                    None => return Err(err),
                },
            }
        } else {
            current
                .map(|(set, _)| set)
                .unwrap_or_else(|| Arc::new(KeySet(Vec::new())))
        };
        Ok(Arc::new(set.select(kid, alg)))
    }

    async fn refresh(&self) -> Result<Arc<KeySet>, String> {
        let _one = self.fetching.lock().await;
        {
            let cached = self.cached();
            // Another request refreshed while this one waited, or one just failed.
            if let Some(last) = cached.last_attempt
                && last.elapsed() < REFETCH_AT_MOST_EVERY
            {
                return cached
                    .set
                    .as_ref()
                    .map(|(set, _)| set.clone())
                    .ok_or_else(|| format!("fetching {} failed moments ago", self.uri));
            }
        }
        self.cached().last_attempt = Some(Instant::now());
        let body = tokio::time::timeout(FETCH_TIMEOUT, fetch(&self.uri))
            .await
            .map_err(|_| format!("fetching {} timed out after {FETCH_TIMEOUT:?}", self.uri))??;
        let set = Arc::new(KeySet::parse(&body).map_err(|err| format!("{}: {err}", self.uri))?);
        self.cached().set = Some((set.clone(), Instant::now()));
        tracing::info!(uri = %self.uri, keys = set.0.len(), "fetched JWKS");
        Ok(set)
    }
}

/// GET `uri` (http only) and return the body.
async fn fetch(uri: &str) -> Result<String, String> {
    let parsed: http::Uri = uri.parse().map_err(|err| format!("{uri:?}: {err}"))?;
    if parsed.scheme_str() != Some("http") {
        return Err(format!(
            "{uri}: only http:// key set URIs can be fetched by this proxy"
        ));
    }
    let authority = parsed
        .authority()
        .ok_or_else(|| format!("{uri}: no host"))?
        .clone();
    let address = match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None => format!("{}:80", authority.host()),
    };
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|err| format!("connecting to {address} for {uri}: {err}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("{uri}: {err}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let path = parsed
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let request = http::Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|err| format!("{uri}: {err}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("{uri}: {err}"))?;
    if !response.status().is_success() {
        return Err(format!("{uri} answered {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|err| format!("{uri}: reading the key set: {err}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("{uri}: the key set is not UTF-8"))
}

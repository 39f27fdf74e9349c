//! JSON Web Key Sets: inline, or fetched from `jwksUri` and cached.
//!
//! A fetched set is shared by every rule and config snapshot naming the
//! same URI (so a config push does not refetch), kept for five minutes,
//! and fetched again early when a token names a key id the set lacks (a
//! rotated issuer key), at most once a second. A failed fetch keeps the
//! last good set. A URI answering with an OpenID discovery document is
//! followed to its `jwks_uri`. `https://` servers are verified against the system's
//! trust store (`SSL_CERT_FILE` when set, else the usual bundle paths).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};

const CACHE_FOR: Duration = Duration::from_secs(300);
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// Istio's default JWKS fetch timeout.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Key sets are small; anything larger is not one.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Where Debian/Ubuntu, Fedora/RHEL and Alpine keep the system bundle.
const CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

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

    /// The keys that may have signed a token with this `kid` and `alg`,
    /// borrowed from the set (nothing is copied per token).
    pub fn matching<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        self.0
            .iter()
            .filter(move |k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
            .filter(move |k| k.alg.is_none_or(|a| a == alg) && k.key.family() == alg.family())
            .map(|k| &k.key)
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
    /// Fetched, each fetch bounded by the duration.
    Remote(Arc<RemoteJwks>, Duration),
}

impl KeySource {
    /// The key set to verify a token with this `kid` against (a remote
    /// set is refetched when stale or when it does not know the `kid`).
    pub async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, String> {
        match self {
            Self::Inline(set) => Ok(set.clone()),
            Self::Remote(remote, timeout) => remote.keys_for(kid, *timeout).await,
        }
    }
}

pub struct RemoteJwks {
    uri: String,
    /// None: no TLS client could be built; https fetches fail with a reason.
    tls: Option<Arc<ClientConfig>>,
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
        let created = Arc::new(Self::with_tls(uri, system_tls()));
        all.insert(uri.to_string(), Arc::downgrade(&created));
        created
    }

    /// An unshared entry verifying https servers with `tls` (tests).
    pub fn with_tls(uri: &str, tls: Option<Arc<ClientConfig>>) -> Self {
        Self {
            uri: uri.to_string(),
            tls,
            cached: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn keys_for(&self, kid: Option<&str>, timeout: Duration) -> Result<Arc<KeySet>, String> {
        let current = self.cached().set.clone();
        let stale = current
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() > CACHE_FOR);
        let unknown_kid = match (&current, kid) {
            (Some((set, _)), Some(kid)) => !set.has_kid(kid),
            _ => false,
        };
        let set = if stale || unknown_kid {
            match self.refresh(timeout).await {
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
        Ok(set)
    }

    async fn refresh(&self, timeout: Duration) -> Result<Arc<KeySet>, String> {
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
        let tls = self.tls.as_ref();
        let mut body = tokio::time::timeout(timeout, fetch(&self.uri, tls))
            .await
            .map_err(|_| format!("fetching {} timed out after {timeout:?}", self.uri))??;
        // An OpenID discovery document names the key set: follow it once.
        if let Some(jwks_uri) = discovered_jwks_uri(&body) {
            body = tokio::time::timeout(timeout, fetch(&jwks_uri, tls))
                .await
                .map_err(|_| format!("fetching {jwks_uri} timed out after {timeout:?}"))??;
        }
        let set = Arc::new(KeySet::parse(&body).map_err(|err| format!("{}: {err}", self.uri))?);
        self.cached().set = Some((set.clone(), Instant::now()));
        tracing::info!(uri = %self.uri, keys = set.0.len(), "fetched JWKS");
        Ok(set)
    }
}

/// `jwks_uri` of an OpenID provider's discovery document (a body without
/// `keys`).
fn discovered_jwks_uri(body: &str) -> Option<String> {
    let document: serde_json::Value = serde_json::from_str(body).ok()?;
    if document.get("keys").is_some() {
        return None;
    }
    document.get("jwks_uri")?.as_str().map(str::to_string)
}

/// A TLS client trusting the system's roots, built once.
fn system_tls() -> Option<Arc<ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let file = std::env::var("SSL_CERT_FILE")
                .ok()
                .into_iter()
                .chain(CA_BUNDLES.map(String::from))
                .find(|path| std::path::Path::new(path).is_file());
            if let Some(file) = &file
                && let Ok(certs) = CertificateDer::pem_file_iter(file)
            {
                let (added, _) = roots.add_parsable_certificates(certs.flatten());
                tracing::debug!("JWKS fetches trust {added} roots from {file}");
            } else {
                tracing::warn!("no CA bundle found: https key set URIs cannot be verified");
            }
            tls_client(roots)
        })
        .clone()
}

/// A TLS client (aws-lc-rs, HTTP/1.1) trusting `roots`.
pub fn tls_client(roots: RootCertStore) -> Option<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder =
        match ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
            Ok(builder) => builder,
            Err(err) => {
                tracing::warn!("no TLS client for JWKS fetches: {err}");
                return None;
            }
        };
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(Arc::new(config))
}

/// GET `uri` (http or https) and return the body.
async fn fetch(uri: &str, tls: Option<&Arc<ClientConfig>>) -> Result<String, String> {
    let parsed: http::Uri = uri.parse().map_err(|err| format!("{uri:?}: {err}"))?;
    let secure = match parsed.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("{uri}: not an http(s) URI")),
    };
    let authority = parsed
        .authority()
        .ok_or_else(|| format!("{uri}: no host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|err| format!("connecting to {authority} for {uri}: {err}"))?;
    let path = parsed
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if !secure {
        return get(stream, uri, authority.as_str(), &path).await;
    }
    let tls = tls.ok_or_else(|| format!("{uri}: no TLS client to fetch it with"))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|err| format!("{uri}: {host:?} is not a server name: {err}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, stream)
        .await
        .map_err(|err| format!("{uri}: TLS: {err}"))?;
    get(stream, uri, authority.as_str(), &path).await
}

async fn get<T>(io: T, uri: &str, authority: &str, path: &str) -> Result<String, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| format!("{uri}: {err}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
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

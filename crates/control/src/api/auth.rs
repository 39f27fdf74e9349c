//! Who may use weftd's API, checked before any route runs.
//!
//! Two doors, one owner:
//! - the unix socket (`<state-dir>/api.sock`, 0600): reaching it is the
//!   credential (file permissions), and the kernel tells who connected
//!   (`SO_PEERCRED`), for the audit log;
//! - TCP (`--api`): every request carries `Authorization: Bearer <admin
//!   token>`, the token weftd keeps in `<state-dir>/admin-token` (0600),
//!   compared in constant time.
//!
//! - through the Kubernetes API server's service proxy (`weft ...
//!   --kubeconfig`): the API server deletes the caller's `Authorization`
//!   header once it has authenticated them, so the token travels in
//!   `X-Weft-Admin-Token` instead (see `weft_kube::api_token`: weftd keeps
//!   the token in a Secret and RBAC decides who may read it). Such a
//!   request's Host is the API server's name, not this machine's, so the
//!   Host check below does not apply to it; the token is still compared
//!   here, and a page cannot set that header across origins without a CORS
//!   preflight, which weftd never allows.
//!
//! On all doors, a request is refused (with a JSON sentence) when it carries an
//! `Origin` header (a web page: browsers add one to cross-site requests,
//! command lines do not), when its Host is not this machine's loopback
//! (DNS rebinding: a page whose name resolves to 127.0.0.1 still sends its
//! own name), or when it has a body that is not `application/json` (the
//! only types a page may send without a CORS preflight are not JSON).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use http::{HeaderMap, StatusCode, header, request::Parts};
use subtle::ConstantTimeEq;

use super::Failure;
use crate::durable::{self, Mode};

/// The administrator's bearer token for the TCP API (and, on Kubernetes,
/// the one in weftd's Secret: either is accepted).
pub struct AdminToken(String, Option<String>);

impl AdminToken {
    /// The token in `path`, or a new random one written there (0600).
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    // Someone loosened it: tighten rather than serve a
                    // credential others can read, and say so.
                    tracing::warn!(
                        "{} was readable by others (mode {:o}): set back to 0600",
                        path.display(),
                        mode & 0o777
                    );
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(Self(text.trim().to_string(), None))
            }
            Ok(_) => Self::create(path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn create(path: &Path) -> anyhow::Result<Self> {
        // 256 random bits from the OS-seeded generator, hex.
        let bytes: [u8; 32] = rand::random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        durable::write(path, format!("{token}\n").as_bytes(), Mode::Private)
            .with_context(|| format!("cannot write the admin token to {}", path.display()))?;
        tracing::info!("API: new admin token in {}", path.display());
        Ok(Self(token, None))
    }

    /// A given token (tests, embedding).
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into(), None)
    }

    /// Also accepts `secret` (the token of weftd's Kubernetes Secret).
    pub fn also(self, secret: impl Into<String>) -> Self {
        Self(self.0, Some(secret.into()))
    }

    fn matches(&self, presented: &str) -> bool {
        // Lengths are not secret (every token is 64 hex digits).
        let equal = |token: &String| bool::from(token.as_bytes().ct_eq(presented.as_bytes()));
        equal(&self.0) | self.1.as_ref().is_some_and(equal)
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub enum Peer {
    /// The unix socket; uid and pid from `SO_PEERCRED` when known.
    Socket { uid: Option<u32>, pid: Option<i32> },
    /// TCP: `local` is the address the client reached (its IP is allowed
    /// as a Host, for an API bound to a non-loopback address).
    Tcp {
        remote: SocketAddr,
        local: Option<SocketAddr>,
    },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Socket { uid, pid } => {
                write!(f, "unix socket")?;
                if let Some(uid) = uid {
                    write!(f, " uid {uid}")?;
                }
                if let Some(pid) = pid {
                    write!(f, " pid {pid}")?;
                }
                Ok(())
            }
            Peer::Tcp { remote, .. } => write!(f, "bearer token from {remote}"),
        }
    }
}

/// Lets the request through, or says why not (403, 401 or 415).
pub(super) fn admit(parts: &Parts, peer: &Peer, token: &AdminToken) -> Result<(), Failure> {
    let headers = &parts.headers;
    if headers.contains_key(header::ORIGIN) {
        return Err(Failure(
            StatusCode::FORBIDDEN,
            "refused: the request has an Origin header (weftd's API is not for web pages; \
             command lines send none)"
                .into(),
        ));
    }
    if let Peer::Tcp { .. } = peer
        && let Some(value) = headers.get(weft_kube::api_token::HEADER)
    {
        // Through the Kubernetes API server: its Host, our token.
        let presented = value.to_str().map(str::trim).unwrap_or("");
        if !token.matches(presented) {
            return Err(Failure(
                StatusCode::UNAUTHORIZED,
                format!(
                    "refused: the {} is not this weftd's admin token (the Secret {} in \
                     weftd's namespace; restart weftd after changing it)",
                    weft_kube::api_token::HEADER,
                    weft_kube::api_token::SECRET
                ),
            ));
        }
        return json_only(headers);
    }
    let local = match peer {
        Peer::Tcp { local, .. } => local.map(|local| local.ip()),
        Peer::Socket { .. } => None,
    };
    match host_of(headers) {
        Err(why) => return Err(Failure(StatusCode::FORBIDDEN, why)),
        Ok(None) if matches!(peer, Peer::Tcp { .. }) => {
            return Err(Failure(
                StatusCode::FORBIDDEN,
                "refused: the request has no Host header".into(),
            ));
        }
        Ok(None) => {}
        Ok(Some(host)) if !is_local_host(&host, local) => {
            return Err(Failure(
                StatusCode::FORBIDDEN,
                format!(
                    "refused: Host {host:?} is not this machine (use localhost, 127.0.0.1 or \
                     [::1])"
                ),
            ));
        }
        Ok(Some(_)) => {}
    }
    if let Peer::Tcp { .. } = peer {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            None => {
                return Err(Failure(
                    StatusCode::UNAUTHORIZED,
                    "refused: no administrator credential (send `Authorization: Bearer <the \
                     token in weftd's <state-dir>/admin-token>`, or use the unix socket \
                     <state-dir>/api.sock)"
                        .into(),
                ));
            }
            Some(presented) if !token.matches(presented) => {
                return Err(Failure(
                    StatusCode::UNAUTHORIZED,
                    "refused: the bearer token is not this weftd's admin token (see \
                     <state-dir>/admin-token)"
                        .into(),
                ));
            }
            Some(_) => {}
        }
    }
    json_only(headers)
}

/// Refuses a body that is not JSON (415).
fn json_only(headers: &HeaderMap) -> Result<(), Failure> {
    if has_body(headers) && !is_json(headers) {
        let given = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("none");
        return Err(Failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("refused: the body's Content-Type is {given:?}; weftd takes application/json"),
        ));
    }
    Ok(())
}

/// The Host header's name (without its port), `None` if absent.
fn host_of(headers: &HeaderMap) -> Result<Option<String>, String> {
    let mut values = headers.get_all(header::HOST).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(header::HOST) {
            Err("refused: more than one Host header".into())
        } else {
            Ok(None)
        };
    };
    let text = value
        .to_str()
        .map_err(|_| "refused: the Host header is not text".to_string())?;
    let authority: http::uri::Authority = text
        .parse()
        .map_err(|_| format!("refused: Host {text:?} is not a host name"))?;
    Ok(Some(authority.host().to_ascii_lowercase()))
}

fn is_local_host(host: &str, local: Option<IpAddr>) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || Some(ip) == local,
        Err(_) => host == "localhost",
    }
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|length| length.trim() != "0")
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::post("/v1/apply");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    fn tcp() -> Peer {
        Peer::Tcp {
            remote: "127.0.0.1:5000".parse().expect("addr"),
            local: Some("10.1.2.3:15014".parse().expect("addr")),
        }
    }

    #[test]
    fn only_local_hosts_pass() {
        let token = AdminToken::new("secret");
        let status = |host: &str| {
            admit(
                &parts(&[("host", host), ("authorization", "Bearer secret")]),
                &tcp(),
                &token,
            )
            .err()
            .map(|failure| failure.0)
        };
        for good in [
            "localhost",
            "localhost:15014",
            "127.0.0.1:15014",
            "127.9.9.9",
            "[::1]:15014",
            "10.1.2.3:15014",
        ] {
            assert_eq!(status(good), None, "{good}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "10.1.2.4",
            "[::2]",
            "a b",
        ] {
            assert_eq!(status(bad), Some(StatusCode::FORBIDDEN), "{bad}");
        }
    }

    #[test]
    fn the_socket_needs_no_token_but_the_same_checks() {
        let token = AdminToken::new("secret");
        let socket = Peer::Socket {
            uid: Some(0),
            pid: None,
        };
        assert!(admit(&parts(&[]), &socket, &token).is_ok());
        let origin = admit(&parts(&[("origin", "null")]), &socket, &token);
        assert_eq!(origin.err().map(|f| f.0), Some(StatusCode::FORBIDDEN));
        let text = admit(
            &parts(&[("content-type", "text/plain"), ("content-length", "3")]),
            &socket,
            &token,
        );
        assert_eq!(
            text.err().map(|f| f.0),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        let json = admit(
            &parts(&[
                ("content-type", "application/json; charset=utf-8"),
                ("content-length", "3"),
            ]),
            &socket,
            &token,
        );
        assert!(json.is_ok());
    }

    #[test]
    fn bearer_tokens_must_match() {
        let token = AdminToken::new("secret");
        let with = |value: &str| {
            admit(
                &parts(&[("host", "localhost"), ("authorization", value)]),
                &tcp(),
                &token,
            )
            .err()
            .map(|failure| failure.0)
        };
        assert_eq!(with("Bearer secret"), None);
        for bad in ["Bearer secreT", "Bearer secret2", "Basic secret", "secret"] {
            assert_eq!(with(bad), Some(StatusCode::UNAUTHORIZED), "{bad}");
        }
    }

    #[test]
    fn the_api_servers_proxy_brings_the_token_in_its_own_header() {
        let token = AdminToken::new("local").also("cluster");
        let with = |headers: &[(&str, &str)]| {
            admit(&parts(headers), &tcp(), &token)
                .err()
                .map(|failure| failure.0)
        };
        // The API server's name as Host, the caller's Authorization gone.
        let host = ("host", "api.cluster.example:6443");
        assert_eq!(with(&[host, ("x-weft-admin-token", "cluster")]), None);
        assert_eq!(with(&[host, ("x-weft-admin-token", "local")]), None);
        assert_eq!(
            with(&[host, ("x-weft-admin-token", "guess")]),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            with(&[host, ("x-weft-admin-token", "cluster"), ("origin", "null")]),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            with(&[
                host,
                ("x-weft-admin-token", "cluster"),
                ("content-type", "text/plain"),
                ("content-length", "2")
            ]),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        // Without the header, a foreign Host is still refused.
        assert_eq!(
            with(&[host, ("authorization", "Bearer cluster")]),
            Some(StatusCode::FORBIDDEN)
        );
        // The socket ignores the header: file permissions are its credential.
        let socket = Peer::Socket {
            uid: None,
            pid: None,
        };
        let guessed = admit(&parts(&[("x-weft-admin-token", "guess")]), &socket, &token);
        assert!(guessed.is_ok());
    }

    #[test]
    fn a_made_token_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin-token");
        let made = AdminToken::load_or_create(&path).expect("make");
        assert_eq!(made.0.len(), 64);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = AdminToken::load_or_create(&path).expect("load");
        assert!(again.matches(&made.0));
    }
}

//! Route-level CORS (Istio's `corsPolicy`, Envoy's CORS filter).
//!
//! A request whose `Origin` matches one of the route's allowed origins is a
//! CORS request: a preflight (`OPTIONS` with
//! `access-control-request-method`) is answered here, 200 with the policy's
//! headers, without reaching the upstream; any other request is forwarded
//! and its response gets `access-control-allow-origin` (plus the exposed
//! headers and credentials). A request from any other origin is left alone,
//! preflights included: as Envoy does, they go upstream, which may answer
//! them itself.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use crate::body::ProxyBody;
use crate::config::Route;
use crate::reply;

pub use crate::config::cors::{Cors, Problem};

impl Cors {
    /// The local answer to a preflight from an allowed `origin`.
    pub fn preflight(&self, origin: HeaderValue) -> Response<ProxyBody> {
        let mut response = reply::answer(StatusCode::OK, Bytes::new());
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        for (name, value) in [
            (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
            (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
        ] {
            if let Some(value) = value {
                headers.insert(name, value.clone());
            }
        }
        self.credentials(headers);
        response
    }

    /// Adds the CORS headers to the upstream's response to an allowed
    /// `origin`, replacing any the upstream set (as Envoy does).
    pub fn decorate(&self, origin: HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if let Some(expose) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        self.credentials(headers);
    }

    fn credentials(&self, headers: &mut HeaderMap) {
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// A request from an origin the route's policy allows: phase 4 answers
/// its preflight, phase 9 decorates the upstream's response.
pub struct Allowed<'a> {
    policy: &'a Cors,
    origin: HeaderValue,
}

impl<'a> Allowed<'a> {
    /// The route's CORS policy, when it allows the request's `Origin`.
    pub fn check<B>(route: Option<&'a Route>, request: &Request<B>) -> Option<Self> {
        let policy = route?.cors.as_deref()?;
        let origin = policy.allowed_origin(request.headers())?;
        Some(Self { policy, origin })
    }

    /// The answer when `request` is a preflight, in the client's version.
    pub fn preflight<B>(&self, request: &Request<B>) -> Option<Response<ProxyBody>> {
        if !is_preflight(request.method(), request.headers()) {
            return None;
        }
        let mut response = self.policy.preflight(self.origin.clone());
        *response.version_mut() = request.version();
        Some(response)
    }

    /// The CORS headers on the upstream's response.
    pub fn decorate(self, headers: &mut HeaderMap) {
        self.policy.decorate(self.origin, headers);
    }
}

/// A CORS preflight: `OPTIONS` asking which method it may use.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::proxy::v1 as pb;

    fn policy(yaml: &str) -> Result<Cors, Vec<Problem>> {
        let policy: pb::CorsPolicy = serde_saphyr::from_str(yaml).expect("yaml");
        Cors::compile(&policy)
    }

    fn origin(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_str(value).expect("value"));
        headers
    }

    #[test]
    fn origins_match_exactly_by_prefix_or_whole_regex() {
        let cors = policy(
            "{allowOrigins: [{exact: 'https://a.example'}, {prefix: 'https://b.'}, \
             {regex: 'https://.*\\.c\\.example'}]}",
        )
        .expect("valid");
        for allowed in [
            "https://a.example",
            "https://b.example",
            "https://x.c.example",
        ] {
            assert!(cors.allowed_origin(&origin(allowed)).is_some(), "{allowed}");
        }
        for refused in [
            "https://a.example.evil",
            "http://b.",
            "https://x.c.example.evil",
        ] {
            assert!(cors.allowed_origin(&origin(refused)).is_none(), "{refused}");
        }
        assert!(cors.allowed_origin(&HeaderMap::new()).is_none());
    }

    #[test]
    fn preflight_and_normal_responses_carry_the_policy() {
        let cors = policy(
            "{allowOrigins: [{exact: 'https://a.example'}], allowMethods: [GET, POST], \
             allowHeaders: [x-a], exposeHeaders: [x-b, x-c], maxAge: 86400s, allowCredentials: true}",
        )
        .expect("valid");
        let allowed = HeaderValue::from_static("https://a.example");
        let response = cors.preflight(allowed.clone());
        let headers = response.headers();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(headers["access-control-allow-origin"], "https://a.example");
        assert_eq!(headers["access-control-allow-methods"], "GET,POST");
        assert_eq!(headers["access-control-allow-headers"], "x-a");
        assert_eq!(headers["access-control-max-age"], "86400");
        assert_eq!(headers["access-control-allow-credentials"], "true");
        let mut normal = HeaderMap::new();
        cors.decorate(allowed, &mut normal);
        assert_eq!(normal["access-control-expose-headers"], "x-b,x-c");
        assert!(!normal.contains_key("access-control-allow-methods"));
    }

    #[test]
    fn bad_fields_are_named() {
        let problems = policy("{allowOrigins: [{regex: '('}, {}], allowMethods: [\"a\\nb\"]}")
            .expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["allowOrigins[0].regex", "allowOrigins[1]", "allowMethods"]
        );
    }
}

//! A route's compiled CORS policy (Istio's `corsPolicy`): allowed origins
//! and the header values answered, built once per snapshot. What the proxy
//! does with it lives in `http::cors`.

use http::{HeaderMap, HeaderValue, header};
use regex::Regex;
use weft_proto::proxy::v1 as pb;

/// A compiled `CorsPolicy`. Header values are built once at load.
#[derive(Debug)]
pub struct Cors {
    pub(crate) origins: Vec<OriginMatch>,
    pub(crate) allow_methods: Option<HeaderValue>,
    pub(crate) allow_headers: Option<HeaderValue>,
    pub(crate) expose_headers: Option<HeaderValue>,
    /// Whole seconds, as the header carries them.
    pub(crate) max_age: Option<HeaderValue>,
    pub(crate) allow_credentials: bool,
}

/// Origins compare case-sensitively, as Istio's StringMatch does.
#[derive(Debug)]
pub(crate) enum OriginMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

/// A problem found at load: the field path below the policy, and what is
/// wrong with it.
pub type Problem = (String, String);

impl Cors {
    pub fn compile(policy: &pb::CorsPolicy) -> Result<Self, Vec<Problem>> {
        use pb::string_match::Kind;
        let mut problems = Vec::new();
        let mut origins = Vec::new();
        for (index, origin) in policy.allow_origins.iter().enumerate() {
            let path = format!("allowOrigins[{index}]");
            match &origin.kind {
                Some(Kind::Exact(value)) => origins.push(OriginMatch::Exact(value.clone())),
                Some(Kind::Prefix(value)) => origins.push(OriginMatch::Prefix(value.clone())),
                // Anchored like every other regex match: the whole origin.
                Some(Kind::Regex(pattern)) => match Regex::new(pattern)
                    .and_then(|_| Regex::new(&format!("^(?:{pattern})$")))
                {
                    Ok(regex) => origins.push(OriginMatch::Regex(regex)),
                    Err(err) => problems.push((
                        format!("{path}.regex"),
                        format!("{pattern:?} is not a valid RE2 regex: {err}"),
                    )),
                },
                None => problems.push((path, "needs exact, prefix or regex".to_string())),
            }
        }
        let mut list = |field: &str, values: &[String]| {
            if values.is_empty() {
                return None;
            }
            let joined = values.join(",");
            match HeaderValue::try_from(joined.as_str()) {
                Ok(value) => Some(value),
                Err(_) => {
                    problems.push((
                        field.to_string(),
                        format!("{joined:?} is not a valid header value"),
                    ));
                    None
                }
            }
        };
        let allow_methods = list("allowMethods", &policy.allow_methods);
        let allow_headers = list("allowHeaders", &policy.allow_headers);
        let expose_headers = list("exposeHeaders", &policy.expose_headers);
        let max_age = match &policy.max_age {
            Some(age) if age.seconds < 0 || age.nanos < 0 => {
                problems.push(("maxAge".to_string(), "must not be negative".to_string()));
                None
            }
            Some(age) => Some(HeaderValue::from(age.seconds)),
            None => None,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            origins,
            allow_methods,
            allow_headers,
            expose_headers,
            max_age,
            allow_credentials: policy.allow_credentials,
        })
    }

    /// The request's `Origin` when the policy allows it; `None` for a
    /// request without one (not a CORS request) or from another origin.
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|m| match m {
                OriginMatch::Exact(exact) => text == exact,
                OriginMatch::Prefix(prefix) => text.starts_with(prefix.as_str()),
                OriginMatch::Regex(regex) => regex.is_match(text),
            })
            .then(|| origin.clone())
    }
}

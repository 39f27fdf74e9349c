//! What weft-proxy would refuse in a route, checked before it gets there:
//! one bad VirtualService must cost its own rule (with a warning), never
//! every proxy's whole config. Mirrors the proxy's own validation
//! (`weft_proxy::config`) for what weft-api's validation lets through.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue};
use weft_proto::proxy::v1 as pb;

/// Header names a match may use besides ordinary ones.
const PSEUDO_HEADERS: [&str; 5] = [":authority", ":method", ":path", ":scheme", "host"];

/// Redirect statuses the proxy sends.
const REDIRECT_CODES: [u32; 5] = [301, 302, 303, 307, 308];

pub(super) fn route_match(m: &pb::RouteMatch) -> Result<(), String> {
    // A claim (`@request.auth.claims.*`) is read from the validated JWT,
    // not from a header.
    for header in m.headers.iter().filter(|h| h.claim.is_empty()) {
        let name = header.name.as_str();
        if !PSEUDO_HEADERS.contains(&name) && HeaderName::try_from(name).is_err() {
            return Err(format!("an invalid header name {name:?}"));
        }
    }
    if m.query_params.iter().any(|q| q.name.is_empty()) {
        return Err("a query parameter without a name".into());
    }
    Ok(())
}

pub(super) fn redirect(r: &pb::Redirect) -> Result<(), String> {
    if !REDIRECT_CODES.contains(&r.code) {
        return Err(format!(
            "redirectCode {} is not supported yet (only 301, 302, 303, 307, 308)",
            r.code
        ));
    }
    if !r.uri.is_empty() && !is_path(&r.uri) {
        return Err(format!(
            "redirect.uri {:?} is not a path starting with '/'",
            r.uri
        ));
    }
    if !r.authority.is_empty() && Authority::try_from(r.authority.as_str()).is_err() {
        return Err(format!("redirect.authority {:?} is not valid", r.authority));
    }
    if !r.scheme.is_empty() && Scheme::try_from(r.scheme.as_str()).is_err() {
        return Err(format!("redirect.scheme {:?} is not valid", r.scheme));
    }
    Ok(())
}

pub(super) fn rewrite(r: &pb::Rewrite) -> Result<(), String> {
    if !r.uri.is_empty() && (!is_path(&r.uri) || r.uri.contains('?')) {
        return Err(format!(
            "rewrite.uri {:?} is not a path starting with '/' (without a query)",
            r.uri
        ));
    }
    if !r.authority.is_empty() && Authority::try_from(r.authority.as_str()).is_err() {
        return Err(format!("rewrite authority {:?} is not valid", r.authority));
    }
    // Group references (`\1`) minus their backslash are path characters.
    let literal = r.uri_regex_substitution.replace('\\', "");
    if !literal.is_empty()
        && !PathAndQuery::try_from(format!("/{literal}")).is_ok_and(|p| p.query().is_none())
    {
        return Err(format!(
            "rewrite.uriRegexRewrite.rewrite {:?} has characters not allowed in a path",
            r.uri_regex_substitution
        ));
    }
    Ok(())
}

pub(super) fn header_ops(ops: &pb::HeaderOperations) -> Result<(), String> {
    let names = ops.set.keys().chain(ops.add.keys()).chain(&ops.remove);
    for name in names {
        match HeaderName::try_from(name.as_str()) {
            Ok(parsed) if parsed == http::header::HOST => {
                return Err("cannot edit Host except by setting it on requests".into());
            }
            Ok(_) => {}
            Err(_) => return Err(format!("{name:?} is not a header name the proxy can edit")),
        }
    }
    if let Some(value) = ops
        .set
        .values()
        .chain(ops.add.values())
        .find(|v| HeaderValue::try_from(v.as_str()).is_err())
    {
        return Err(format!("{value:?} is not a valid header value"));
    }
    Ok(())
}

fn is_path(uri: &str) -> bool {
    uri.starts_with('/') && PathAndQuery::try_from(uri).is_ok()
}

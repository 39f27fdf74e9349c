//! `virtualservice.JWTClaimRouteAnalyzer`: routing on JWT claims needs a
//! RequestAuthentication where the claims are read.

use serde_json::Value;

use super::{Input, JWT_CLAIM_ROUTE_WITHOUT_AUTHN, Message, string_map, strings};
use super::{ROOT_NAMESPACE, labels_match};

/// Header names that match on a validated JWT's claims.
const CLAIM_HEADER: &str = "@request.auth.claims.";

/// IST0149: a gateway-bound VirtualService matches on
/// `@request.auth.claims.*`, but no RequestAuthentication applies to the
/// gateway's workload (mesh-wide, namespace-wide, or selecting the labels
/// the Gateway selects): the claims are never there to match.
pub fn analyze(input: &Input, out: &mut Vec<Message>) {
    for vs in input.istio("VirtualService") {
        let uses_claims = vs
            .spec
            .get("http")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|rule| {
                rule.get("match")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|m| m.get("headers").and_then(Value::as_object))
            .any(|headers| headers.keys().any(|name| name.starts_with(CLAIM_HEADER)));
        if !uses_claims {
            continue;
        }
        for reference in strings(vs.spec.get("gateways"))
            .into_iter()
            .filter(|g| g != "mesh")
        {
            let (namespace, name) = reference
                .split_once('/')
                .map_or((vs.namespace.clone(), reference.clone()), |(n, g)| {
                    (n.to_string(), g.to_string())
                });
            let Some(gateway) = input
                .istio("Gateway")
                .find(|g| g.namespace == namespace && g.name == name)
            else {
                continue;
            };
            let workload = string_map(gateway.spec.get("selector"));
            let authenticated = input.istio("RequestAuthentication").any(|ra| {
                let selector = string_map(ra.spec.pointer("/selector/matchLabels"));
                (ra.namespace == ROOT_NAMESPACE || ra.namespace == gateway.namespace)
                    && labels_match(&selector, &workload)
            });
            if !authenticated {
                out.push(vs.message(
                    JWT_CLAIM_ROUTE_WITHOUT_AUTHN,
                    format!(
                        "This VirtualService uses JWT claim based routing, but no RequestAuthentication applies to the workload of Gateway {}",
                        gateway.resource()
                    ),
                ));
            }
        }
    }
}

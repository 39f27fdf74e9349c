//! Request → service → route → cluster.
//!
//! HTTP is routed by authority, as in Istio: the `Host`/`:authority` names
//! the service; its port comes from the authority or, failing that, the port
//! the client dialled. Within the service port, the first route whose match
//! accepts the request wins (path, headers, query, method, authority,
//! scheme: see `config::RouteMatch`); no match is a 404 with flag NR.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, StatusCode};
use weft_proto::proxy::v1::OutboundTrafficPolicy;

use super::rewrite;
use crate::body::ProxyBody;
use crate::config::{Cluster, Destination, RequestView, Route, RouteAction, Service, Snapshot};
use crate::flags::ResponseFlag;
use crate::policy::jwt::Verified;
use crate::reply::LocalReply;

/// Where a downstream connection's requests go; fixed when it is accepted.
#[derive(Debug, Clone)]
pub enum Target {
    /// Outbound (captured, or an explicit listener without a service):
    /// routed by authority. `port` is the port the client dialled.
    Outbound {
        port: u16,
        original_dst: Option<SocketAddr>,
    },
    /// An explicit listener bound to one service port.
    Service { name: String, port: u16 },
    /// Captured inbound traffic for a port of the local workload.
    Inbound { port: u16, original_dst: SocketAddr },
    /// An ingress gateway port: routed by the authority's host alone
    /// (wildcard virtual hosts allowed), on the listener's own port.
    Gateway { port: u16 },
}

/// What to do with one request.
pub enum Decision {
    Forward(Forwarding),
    /// The matched route answers by itself: a redirect or a direct response.
    Answer {
        service: String,
        response: Response<ProxyBody>,
    },
}

/// Where one request is forwarded.
pub struct Forwarding {
    /// The destination service's name, empty when unknown (passthrough).
    pub service: String,
    pub cluster: Arc<Cluster>,
    pub timeout: Option<Duration>,
    /// The route and destination picked, for rewrites and header edits;
    /// `None` for inbound and passthrough traffic.
    pub matched: Option<Matched>,
}

/// A forwarding route and the index of the destination picked from it.
pub struct Matched {
    pub route: Arc<Route>,
    destination: usize,
}

impl Matched {
    pub fn new(route: Arc<Route>, destination: usize) -> Self {
        Self { route, destination }
    }

    pub fn destination(&self) -> Option<&Destination> {
        self.route.forward()?.destinations.get(self.destination)
    }
}

impl Target {
    /// Where a captured client connected (PASSTHROUGH balancing goes
    /// there); none through explicit and gateway listeners.
    pub fn original_dst(&self) -> Option<SocketAddr> {
        match self {
            Target::Outbound { original_dst, .. } => *original_dst,
            Target::Inbound { original_dst, .. } => Some(*original_dst),
            Target::Service { .. } | Target::Gateway { .. } => None,
        }
    }
}

/// The phase: `request` (its authority already decided by entry and
/// rewrites not yet applied) resolved on `snapshot`.
pub fn decide<B>(
    snapshot: &Snapshot,
    target: &Target,
    authority: Option<&Authority>,
    request: &Request<B>,
) -> Result<Decision, LocalReply> {
    let view = RequestView {
        path: request.uri().path(),
        query: request.uri().query(),
        method: request.method(),
        authority: authority.map(Authority::as_str),
        // Downstream connections are plaintext until the proxy terminates
        // TLS itself.
        scheme: "http",
        headers: request.headers(),
        // Put there by the policy phase, only for a token it validated.
        claims: request
            .extensions()
            .get::<Arc<Verified>>()
            .map(|token| &**token),
    };
    resolve(snapshot, target, authority, &view)
}

pub fn resolve(
    snapshot: &Snapshot,
    target: &Target,
    authority: Option<&Authority>,
    request: &RequestView<'_>,
) -> Result<Decision, LocalReply> {
    match target {
        Target::Inbound { port, original_dst } => Ok(match snapshot.inbound_port(*port) {
            Some(inbound) => Decision::Forward(Forwarding {
                service: String::new(),
                cluster: inbound.cluster.clone(),
                timeout: None,
                matched: None,
            }),
            None => passthrough(*original_dst),
        }),
        Target::Gateway { port } => {
            let host = authority.map(Authority::host);
            let service = host
                .and_then(|host| snapshot.service_for_gateway_host(host))
                .ok_or_else(|| {
                    no_route(match host {
                        Some(host) => format!("no gateway route for host {host:?} on port {port}"),
                        None => "the request has no host".to_string(),
                    })
                })?;
            // A virtual host is not a service: telemetry names the
            // destination service the route sends to, as Istio's gateways do.
            let mut decision = route_in_service(service, *port, request)?;
            if let Decision::Forward(forwarding) = &mut decision
                && !forwarding.cluster.service.is_empty()
            {
                forwarding.service.clone_from(&forwarding.cluster.service);
            }
            Ok(decision)
        }
        Target::Service { name, port } => {
            let service = snapshot
                .service_by_host(name)
                .ok_or_else(|| no_route(format!("service {name:?} is no longer configured")))?;
            route_in_service(service, *port, request)
        }
        Target::Outbound { port, original_dst } => {
            let by_host = authority.and_then(|a| {
                let service = snapshot.service_for_host(a.host())?;
                let port = match (a.port_u16(), service.ports.as_slice()) {
                    (Some(explicit), _) => explicit,
                    // No port in the authority: the dialled port, or the
                    // service's only port (explicit listeners on other ports).
                    (None, [only]) if service.port(*port).is_none() => only.port,
                    (None, _) => *port,
                };
                service.port(port).map(|_| (service, port))
            });
            let by_vip = || {
                let dst = (*original_dst)?;
                let service = snapshot.service_by_vip(dst.ip())?;
                Some((service, dst.port()))
            };
            if let Some((service, port)) = by_host.or_else(by_vip) {
                return route_in_service(service, port, request);
            }
            match original_dst {
                Some(dst) if snapshot.outbound_policy == OutboundTrafficPolicy::AllowAny => {
                    Ok(match crate::config::egress_proxy::cluster(snapshot) {
                        Some(egress) => Decision::Forward(Forwarding {
                            service: String::new(),
                            cluster: egress.clone(),
                            timeout: None,
                            matched: None,
                        }),
                        None => passthrough(*dst),
                    })
                }
                // Istio sends what no ServiceEntry declares to its
                // BlackHoleCluster: 502.
                _ if snapshot.outbound_policy == OutboundTrafficPolicy::RegistryOnly => {
                    Err(LocalReply::new(
                        StatusCode::BAD_GATEWAY,
                        ResponseFlag::NoRoute,
                        format!(
                            "REGISTRY_ONLY: {} is not a declared service (BlackHoleCluster)",
                            authority.map_or("a request without host", Authority::as_str)
                        ),
                    ))
                }
                _ => Err(no_route(match authority {
                    Some(a) => format!("no service for host {:?} on port {port}", a.as_str()),
                    None => "the request has no host and matches no service".to_string(),
                })),
            }
        }
    }
}

fn route_in_service(
    service: &Service,
    port: u16,
    request: &RequestView<'_>,
) -> Result<Decision, LocalReply> {
    let service_port = service
        .port(port)
        .ok_or_else(|| no_route(format!("service {:?} has no port {port}", service.name)))?;
    let route = service_port
        .routes
        .iter()
        .find(|route| route.matcher.matches(request))
        .ok_or_else(|| {
            no_route(format!(
                "no route of {}:{port} matches {} {:?}",
                service.name, request.method, request.path
            ))
        })?;
    let forward = match &route.action {
        RouteAction::Forward(forward) => forward,
        RouteAction::Redirect(redirect) => {
            return Ok(Decision::Answer {
                service: service.name.clone(),
                response: rewrite::redirect(route, redirect, request),
            });
        }
        RouteAction::Direct(direct) => {
            return Ok(Decision::Answer {
                service: service.name.clone(),
                response: rewrite::direct(route, direct),
            });
        }
    };
    let destination = forward.pick();
    let Some(picked) = forward.destinations.get(destination) else {
        return Err(no_route(format!(
            "route {:?} of {}:{port} has no destination",
            route.name, service.name
        )));
    };
    Ok(Decision::Forward(Forwarding {
        service: service.name.clone(),
        cluster: picked.cluster.clone(),
        timeout: forward.timeout,
        matched: Some(Matched {
            route: route.clone(),
            destination,
        }),
    }))
}

fn passthrough(addr: SocketAddr) -> Decision {
    Decision::Forward(Forwarding {
        service: String::new(),
        cluster: Arc::new(Cluster::passthrough(addr)),
        timeout: None,
        matched: None,
    })
}

fn no_route(message: String) -> LocalReply {
    LocalReply::new(StatusCode::NOT_FOUND, ResponseFlag::NoRoute, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn snapshot(yaml: &str) -> Snapshot {
        Snapshot::compile(parse_config(yaml, "t.yaml").expect("parses"), "t.yaml").expect("valid")
    }

    const MESH: &str = r#"
services:
- name: reviews.default.svc.cluster.local
  hosts: [reviews]
  vips: [240.240.0.7]
  ports:
  - port: 9080
    protocol: HTTP
    routes:
    - name: v2-for-jason
      match: {headers: [{name: end-user, value: {exact: jason}}]}
      clusters: [{cluster: v2}]
    - name: default
      clusters: [{cluster: v1}]
clusters:
- {name: v1, endpoints: [{address: "127.0.0.1:9001"}]}
- {name: v2, endpoints: [{address: "127.0.0.1:9002"}]}
"#;

    fn decide_for(
        snapshot: &Snapshot,
        target: &Target,
        host: &str,
        user: Option<&str>,
    ) -> Result<Decision, LocalReply> {
        let mut request = Request::builder().uri("/reviews/1").header("host", host);
        if let Some(user) = user {
            request = request.header("end-user", user);
        }
        let request = request.body(()).expect("request");
        let authority: Option<Authority> = host.parse().ok();
        decide(snapshot, target, authority.as_ref(), &request)
    }

    fn cluster_of(decision: Result<Decision, LocalReply>) -> String {
        match decision {
            Ok(Decision::Forward(forwarding)) => forwarding.cluster.name.clone(),
            Ok(Decision::Answer { .. }) => "answered".into(),
            Err(reply) => format!("{} {}", reply.flag.code(), reply.message),
        }
    }

    #[test]
    fn the_first_matching_route_of_the_authoritys_service_wins() {
        let snapshot = snapshot(MESH);
        let target = Target::Outbound {
            port: 9080,
            original_dst: None,
        };
        assert_eq!(
            cluster_of(decide_for(&snapshot, &target, "reviews:9080", None)),
            "v1"
        );
        assert_eq!(
            cluster_of(decide_for(&snapshot, &target, "reviews", Some("jason"))),
            "v2"
        );
    }

    #[test]
    fn an_unknown_host_falls_back_to_the_dialled_vip_then_passthrough_or_nr() {
        let snapshot = snapshot(MESH);
        let vip = Target::Outbound {
            port: 9080,
            original_dst: Some("240.240.0.7:9080".parse().expect("addr")),
        };
        assert_eq!(
            cluster_of(decide_for(&snapshot, &vip, "elsewhere", None)),
            "v1"
        );
        let unknown = Target::Outbound {
            port: 80,
            original_dst: Some("10.1.2.3:80".parse().expect("addr")),
        };
        assert_eq!(
            cluster_of(decide_for(&snapshot, &unknown, "elsewhere", None)),
            crate::config::PASSTHROUGH_CLUSTER
        );
        let explicit = Target::Outbound {
            port: 80,
            original_dst: None,
        };
        let refused = cluster_of(decide_for(&snapshot, &explicit, "elsewhere", None));
        assert!(refused.starts_with("NR "), "{refused}");
        assert!(refused.contains("\"elsewhere\""), "{refused}");
    }
}

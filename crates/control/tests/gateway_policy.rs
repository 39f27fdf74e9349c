//! Policy at the ingress gateway: RequestAuthentication and
//! AuthorizationPolicy selecting a `weft-proxy --router` are enforced on its
//! listeners before routing, `remoteIpBlocks` sees the client the gateway
//! decided on, and VirtualServices bound to the gateway route on claims of
//! the validated JWT (`@request.auth.claims.*`), never on a client's header.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weft_proxy::jwt::jsonwebtoken::{self, Algorithm, EncodingKey, Header};
use weft_testkit::backend::HttpBackend;
use weft_testkit::free_wildcard_port;
use weft_testkit::proxy::ProxyProcess;
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
const JWKS: &str = include_str!("../../proxy/src/policy/jwt/testdata/jwks.json");
const RSA: &[u8] = include_bytes!("../../proxy/src/policy/jwt/testdata/rsa-1.pem");
const RSA_OTHER: &[u8] = include_bytes!("../../proxy/src/policy/jwt/testdata/rsa-other.pem");
const ISSUER: &str = "https://auth.weft.test";

fn token(claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let key = EncodingKey::from_rsa_pem(RSA).expect("rsa key");
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

/// A token of `issuer` for `sub`, with `extra` claims merged in.
fn token_for(issuer: &str, sub: &str, extra: serde_json::Value) -> String {
    let mut claims = json!({
        "iss": issuer,
        "sub": sub,
        "exp": jsonwebtoken::get_current_timestamp() + 600,
    });
    if let (Some(into), Some(from)) = (claims.as_object_mut(), extra.as_object()) {
        into.extend(from.clone());
    }
    token(claims)
}

/// ServiceEntry + WorkloadEntry for each backend, on port 9080.
fn registry(services: &[(&str, &HttpBackend)]) -> String {
    let mut yaml = String::new();
    for (name, backend) in services {
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}}}
spec:
  address: 127.0.0.1
  ports: {{http: {}}}
  labels: {{app: {name}}}
---
",
            backend.addr.port()
        ));
    }
    yaml
}

/// The Gateway on `port` and a VirtualService bound to it: claim
/// `group: beta` (nested `org.tier: gold`) goes to `beta`, the rest to
/// `stable`.
fn gateway(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: ['*']
  gateways: [istio-system/edge]
  http:
  - match: [{{headers: {{'@request.auth.claims.group': {{exact: beta}}}}}}]
    route: [{{destination: {{host: beta, port: {{number: 9080}}}}}}]
  - match: [{{headers: {{'@request.auth.claims.org.tier': {{exact: gold}}}}}}]
    route: [{{destination: {{host: beta, port: {{number: 9080}}}}}}]
  - route: [{{destination: {{host: stable, port: {{number: 9080}}}}}}]
---
"
    )
}

const GATEWAY_LABEL: &str = "istio=ingressgateway";

/// RequestAuthentication for the gateway (inline keys), and a policy: `/api/`
/// needs a token, `/admin/` a token with `group: admin`, the rest is open.
fn jwt_policy(port: u16) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: edge-jwt, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwks: '{}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: edge-authz, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{requestPrincipals: ['{ISSUER}/*']}}}}]
    to: [{{operation: {{paths: ['/api/*']}}}}]
  - to: [{{operation: {{paths: ['/admin/*']}}}}]
    when: [{{key: 'request.auth.claims[group]', values: [admin]}}]
  - to: [{{operation: {{paths: ['/open/*'], ports: ['{port}']}}}}]
---
",
        JWKS.trim()
    )
}

struct Edge {
    _state: tempfile::TempDir,
    weftd: WeftdProcess,
    gateway: ProxyProcess,
    port: u16,
    _backends: Vec<HttpBackend>,
}

/// weftd with `yaml` (plus the backends and the gateway) and a gateway
/// proxy serving it; `extra` are more weft-proxy flags.
async fn start(yaml: impl Fn(u16) -> String, extra: &[&str]) -> Edge {
    let stable = HttpBackend::start("stable").await;
    let beta = HttpBackend::start("beta").await;
    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    let port = free_wildcard_port();
    let all = registry(&[("stable", &stable), ("beta", &beta)]) + &gateway(port) + &yaml(port);
    let reply = weftd.apply(&all).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let gateway = weftd
        .ingress_gateway(GATEWAY_LABEL, extra)
        .await
        .expect("gateway ready");
    Edge {
        _state: state,
        weftd,
        gateway,
        port,
        _backends: vec![stable, beta],
    }
}

/// One answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn backend(&self) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix("x-backend: "))
            .map(str::trim)
    }
}

/// A GET to the gateway from `source` (any 127.0.0.0/8 address is local),
/// with `headers`, over a connection of its own.
async fn call_from(
    source: Ipv4Addr,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Answer> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let mut stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: shop.example\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    })
}

async fn call(port: u16, path: &str, headers: &[(&str, &str)]) -> Answer {
    call_from(Ipv4Addr::LOCALHOST, port, path, headers)
        .await
        .expect("call")
}

/// Waits until `path` answers `status` (the first push may come before
/// the policies' one).
async fn wait_for(port: u16, path: &str, headers: &[(&str, &str)], status: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(answer) = call_from(Ipv4Addr::LOCALHOST, port, path, headers).await
            && answer.status == status
        {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never answered {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_requires_jwt_and_authorizes_before_routing() {
    let edge = start(jwt_policy, &[]).await;
    let port = edge.port;
    wait_for(port, "/api/items", &[], 403).await;

    // No token where the policy needs a principal: 403 (as Istio; a token
    // is optional for RequestAuthentication, the policy asks for one).
    let missing = call(port, "/api/items", &[]).await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (403, "RBAC: access denied")
    );
    // With a valid token: routed.
    let alice = token_for(ISSUER, "alice", json!({}));
    let ok = call(port, "/api/items", &[("authorization", &bearer(&alice))]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.backend(), Some("stable"));
    // A token the gateway cannot validate (unknown issuer, bad signature):
    // 401 with a challenge, even where no policy asks for a principal.
    let stranger = token_for("https://elsewhere.test", "alice", json!({}));
    let refused = call(port, "/open/page", &[("authorization", &bearer(&stranger))]).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        refused.head.contains("www-authenticate: bearer"),
        "{refused:?}"
    );
    let forged = {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        let claims = json!({"iss": ISSUER, "sub": "alice", "exp": jsonwebtoken::get_current_timestamp() + 600});
        let key = EncodingKey::from_rsa_pem(RSA_OTHER).expect("rsa key");
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    };
    let refused = call(port, "/api/items", &[("authorization", &bearer(&forged))]).await;
    assert_eq!(refused.status, 401, "{refused:?}");

    // A claim the policy asks for: only `group: admin` reaches /admin/.
    let admin = token_for(ISSUER, "root", json!({"group": "admin"}));
    let ok = call(port, "/admin/users", &[("authorization", &bearer(&admin))]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let denied = call(port, "/admin/users", &[("authorization", &bearer(&alice))]).await;
    assert_eq!(denied.status, 403, "{denied:?}");
    // Paths are normalized before they are authorized.
    let sneaky = call(port, "/open/../admin/users", &[]).await;
    assert_eq!(sneaky.status, 403, "{sneaky:?}");
    // `ports` is the gateway server's port.
    let open = call(port, "/open/page", &[]).await;
    assert_eq!(open.status, 200, "{open:?}");
    // Nothing allows the rest: a request the policies do not allow never
    // reaches routing (no 404 NR for an unrouted path either).
    assert_eq!(call(port, "/elsewhere", &[]).await.status, 403);

    // Removing the policy opens the gateway again.
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: edge-authz, namespace: istio-system}\n";
    let reply = edge.weftd.delete(policy).await.expect("delete");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_for(port, "/api/items", &[], 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_on_validated_claims_never_on_client_headers() {
    let edge = start(jwt_policy, &[]).await;
    let port = edge.port;
    let beta = token_for(ISSUER, "bob", json!({"group": "beta"}));
    let auth = bearer(&beta);
    wait_for(port, "/open/x", &[("authorization", &auth)], 200).await;

    let routed = call(port, "/open/x", &[("authorization", &auth)]).await;
    assert_eq!(routed.backend(), Some("beta"), "{routed:?}");
    // Nested claim `org.tier`.
    let gold = token_for(ISSUER, "carol", json!({"org": {"tier": "gold"}}));
    let routed = call(port, "/open/x", &[("authorization", &bearer(&gold))]).await;
    assert_eq!(routed.backend(), Some("beta"), "{routed:?}");
    // A list claim matches when one item does.
    let listed = token_for(ISSUER, "dan", json!({"group": ["staff", "beta"]}));
    let routed = call(port, "/open/x", &[("authorization", &bearer(&listed))]).await;
    assert_eq!(routed.backend(), Some("beta"), "{routed:?}");
    // Another claim value, or no token: the default route.
    let alpha = token_for(ISSUER, "erin", json!({"group": "alpha"}));
    let routed = call(port, "/open/x", &[("authorization", &bearer(&alpha))]).await;
    assert_eq!(routed.backend(), Some("stable"), "{routed:?}");
    assert_eq!(call(port, "/open/x", &[]).await.backend(), Some("stable"));

    // A client naming a header like the claim routes nowhere special ('@'
    // cannot start an HTTP header name, so these are the closest a client
    // can send), with or without a token of its own.
    let spoofs = [
        ("request.auth.claims.group", "beta"),
        ("group", "beta"),
        ("x-jwt-claim-group", "beta"),
    ];
    let spoofed = call(port, "/open/x", &spoofs).await;
    assert_eq!(spoofed.backend(), Some("stable"), "{spoofed:?}");
    let alpha_auth = bearer(&alpha);
    let mut with_token = spoofs.to_vec();
    with_token.push(("authorization", &alpha_auth));
    let spoofed = call(port, "/open/x", &with_token).await;
    assert_eq!(spoofed.backend(), Some("stable"), "{spoofed:?}");
}

/// `remoteIpBlocks` allows 127.0.0.2 only; a DENY on `ipBlocks` (always the
/// direct peer) refuses 127.0.0.3 whatever it forwards for.
fn ip_policy(_port: u16) -> String {
    "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-allowlist, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - from: [{source: {remoteIpBlocks: [127.0.0.2/32]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-blocked-peer, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - from: [{source: {ipBlocks: [127.0.0.3]}}]
---
"
    .to_string()
}

async fn status_from(source: [u8; 4], port: u16, headers: &[(&str, &str)]) -> u16 {
    call_from(Ipv4Addr::from(source), port, "/open/x", headers)
        .await
        .expect("call")
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_ip_allowlist_uses_the_peer_without_trusted_proxies() {
    let edge = start(ip_policy, &[]).await;
    let port = edge.port;
    wait_for(port, "/open/x", &[], 403).await;
    assert_eq!(status_from([127, 0, 0, 2], port, &[]).await, 200);
    assert_eq!(status_from([127, 0, 0, 4], port, &[]).await, 403);
    // With no trusted proxy, a client's X-Forwarded-For is not believed.
    let claimed = [("x-forwarded-for", "127.0.0.2")];
    assert_eq!(status_from([127, 0, 0, 4], port, &claimed).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_ip_allowlist_behind_a_trusted_proxy_reads_x_forwarded_for() {
    let edge = start(ip_policy, &["--num-trusted-proxies", "1"]).await;
    let port = edge.port;
    wait_for(port, "/open/x", &[], 403).await;
    // The load balancer at 127.0.0.4 forwards for the client: the client's
    // address decides `remoteIpBlocks`.
    let allowed = [("x-forwarded-for", "127.0.0.2")];
    let refused = [("x-forwarded-for", "127.0.0.9")];
    assert_eq!(status_from([127, 0, 0, 4], port, &allowed).await, 200);
    assert_eq!(status_from([127, 0, 0, 4], port, &refused).await, 403);
    // Only one hop is trusted: an entry before the client's is not it.
    let spoofed = [("x-forwarded-for", "127.0.0.2, 127.0.0.9")];
    assert_eq!(status_from([127, 0, 0, 4], port, &spoofed).await, 403);
    // The load balancer calling for itself is not on the list.
    assert_eq!(status_from([127, 0, 0, 4], port, &[]).await, 403);
    // `ipBlocks` is the direct peer whatever X-Forwarded-For says.
    assert_eq!(status_from([127, 0, 0, 3], port, &allowed).await, 403);
    // And the config the gateway runs says so.
    let dump = weft_testkit::client::get(edge.gateway.admin, "admin", "/config_dump")
        .await
        .expect("config_dump")
        .text();
    assert!(dump.contains("numTrustedProxies"), "{dump}");
}

//! Tests of AuthorizationPolicy evaluation: patterns, Istio's order
//! (CUSTOM fails closed, DENY, ALLOW), AUDIT and dry-run, sources, headers,
//! hosts and remote IP, path templates, and HTTP-only conditions on TCP.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

fn text(values: &[&str]) -> Vec<ValueMatch> {
    values
        .iter()
        .map(|v| ValueMatch::Text(Pattern::parse(v, false)))
        .collect()
}

fn cond(attribute: Attribute, values: &[&str]) -> Condition {
    Condition {
        attribute,
        values: text(values),
        not_values: Vec::new(),
    }
}

fn policy(name: &str, action: Action, rules: Vec<Rule>) -> Policy {
    Policy {
        name: name.into(),
        action,
        dry_run: false,
        rules,
        provider: None,
    }
}

fn to(conditions: Vec<Condition>) -> Rule {
    Rule {
        to: vec![conditions],
        ..Rule::default()
    }
}

struct Req {
    method: &'static str,
    path: &'static str,
    headers: HeaderMap,
    peer: IpAddr,
    /// `remote.ip` as the entry phase decided it.
    remote: Option<IpAddr>,
    principal: Option<&'static str>,
}

impl Req {
    fn get(path: &'static str) -> Self {
        Self {
            method: "GET",
            path,
            headers: HeaderMap::new(),
            peer: "127.0.0.1".parse().expect("ip"),
            remote: None,
            principal: None,
        }
    }

    fn attrs(&self, http: bool) -> Attributes<'_> {
        Attributes {
            peer_ip: Some(self.peer),
            remote_ip: self.remote.or(Some(self.peer)),
            principal: self.principal,
            destination: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            sni: None,
            http: http.then_some(HttpAttributes {
                method: self.method,
                path: self.path,
                authority: Some("web.example:8080"),
                headers: &self.headers,
                auth: None,
            }),
        }
    }
}

fn decide(policies: Vec<Policy>, req: &Req) -> bool {
    Policies::new(policies)
        .evaluate(&req.attrs(true), false)
        .is_allow()
}

#[test]
fn patterns_are_exact_prefix_suffix_or_presence() {
    assert!(Pattern::parse("/api", false).matches("/api"));
    assert!(!Pattern::parse("/api", false).matches("/api/x"));
    assert!(Pattern::parse("/api/*", false).matches("/api/x"));
    assert!(Pattern::parse("*.png", false).matches("/a/b.png"));
    assert!(Pattern::parse("*", false).matches("x"));
    assert!(!Pattern::parse("*", false).matches(""));
}

#[test]
fn no_policy_allows_and_allow_policies_deny_what_they_do_not_match() {
    assert!(decide(vec![], &Req::get("/x")));
    let allow_get_api = || {
        policy(
            "ns/allow",
            Action::Allow,
            vec![to(vec![
                cond(Attribute::Method, &["GET"]),
                cond(Attribute::Path, &["/api/*"]),
            ])],
        )
    };
    assert!(decide(vec![allow_get_api()], &Req::get("/api/users")));
    assert!(!decide(vec![allow_get_api()], &Req::get("/admin")));
    let mut post = Req::get("/api/users");
    post.method = "POST";
    assert!(!decide(vec![allow_get_api()], &post));
}

#[test]
fn deny_wins_over_allow_and_empty_rules_mean_what_istio_says() {
    let allow_all = || policy("ns/all", Action::Allow, vec![Rule::default()]);
    let deny_admin = policy(
        "ns/deny",
        Action::Deny,
        vec![to(vec![cond(Attribute::Path, &["/admin*"])])],
    );
    assert!(decide(vec![allow_all()], &Req::get("/admin")));
    assert!(!decide(vec![allow_all(), deny_admin], &Req::get("/admin")));
    // `spec: {}`: an ALLOW policy without rules denies everything.
    assert!(!decide(
        vec![policy("ns/none", Action::Allow, vec![])],
        &Req::get("/")
    ));
}

#[test]
fn custom_fails_closed_and_audit_never_decides() {
    let policies = || {
        vec![
            policy(
                "ns/ext",
                Action::Custom,
                vec![to(vec![cond(Attribute::Path, &["/ext*"])])],
            ),
            policy("ns/audit", Action::Audit, vec![Rule::default()]),
        ]
    };
    assert!(!decide(policies(), &Req::get("/ext/a")));
    assert!(decide(policies(), &Req::get("/other")));
}

#[test]
fn dry_run_policies_are_not_enforced() {
    let mut deny_all = policy("ns/dry", Action::Deny, vec![Rule::default()]);
    deny_all.dry_run = true;
    assert!(decide(vec![deny_all], &Req::get("/x")));
    let mut allow_nothing = policy("ns/dry", Action::Allow, vec![]);
    allow_nothing.dry_run = true;
    assert!(decide(vec![allow_nothing], &Req::get("/x")));
}

#[test]
fn sources_by_ip_block_principal_and_namespace() {
    let allow_ip = |block: &str| {
        let (network, bits) = match block.split_once('/') {
            Some((ip, bits)) => (ip.parse().expect("ip"), bits.parse().expect("bits")),
            None => (block.parse().expect("ip"), 32),
        };
        policy(
            "ns/ip",
            Action::Allow,
            vec![Rule {
                from: vec![vec![Condition {
                    attribute: Attribute::SourceIp,
                    values: vec![ValueMatch::Cidr { network, bits }],
                    not_values: Vec::new(),
                }]],
                ..Rule::default()
            }],
        )
    };
    assert!(decide(vec![allow_ip("127.0.0.0/8")], &Req::get("/")));
    assert!(decide(vec![allow_ip("127.0.0.1")], &Req::get("/")));
    assert!(!decide(vec![allow_ip("10.0.0.0/8")], &Req::get("/")));

    let mut from_sleep = Req::get("/");
    from_sleep.principal = Some("cluster.local/ns/default/sa/sleep");
    let by = |attribute, values: &[&str]| {
        policy(
            "ns/p",
            Action::Allow,
            vec![Rule {
                from: vec![vec![cond(attribute, values)]],
                ..Rule::default()
            }],
        )
    };
    assert!(decide(
        vec![by(Attribute::SourceNamespace, &["default"])],
        &from_sleep
    ));
    assert!(!decide(
        vec![by(Attribute::SourceNamespace, &["other"])],
        &from_sleep
    ));
    assert!(decide(
        vec![by(Attribute::SourcePrincipal, &["*/sa/sleep"])],
        &from_sleep
    ));
    // Plaintext callers have no principal: `*` does not match them.
    assert!(!decide(
        vec![by(Attribute::SourcePrincipal, &["*"])],
        &Req::get("/")
    ));
    // notPrincipals: a plaintext caller is not the excluded one.
    let not_sleep = policy(
        "ns/p",
        Action::Allow,
        vec![Rule {
            from: vec![vec![Condition {
                attribute: Attribute::SourcePrincipal,
                values: Vec::new(),
                not_values: text(&["cluster.local/ns/default/sa/sleep"]),
            }]],
            ..Rule::default()
        }],
    );
    assert!(!decide(vec![not_sleep], &from_sleep));
}

#[test]
fn headers_hosts_and_remote_ip() {
    let mut req = Req::get("/");
    req.headers
        .insert("x-user", HeaderValue::from_static("alice"));
    // A client's X-Forwarded-For decides nothing: remote.ip is what the
    // entry phase decided (here, the peer).
    req.headers.insert(
        "x-forwarded-for",
        HeaderValue::from_static("192.0.2.1, 198.51.100.7"),
    );
    let when = |condition| {
        policy(
            "ns/w",
            Action::Allow,
            vec![Rule {
                when: vec![condition],
                ..Rule::default()
            }],
        )
    };
    let header = HeaderName::from_static("x-user");
    assert!(decide(
        vec![when(cond(
            Attribute::RequestHeader(header.clone()),
            &["ali*"]
        ))],
        &req
    ));
    assert!(!decide(
        vec![when(cond(Attribute::RequestHeader(header), &["bob"]))],
        &req
    ));
    let host = Condition {
        attribute: Attribute::Host,
        values: vec![ValueMatch::Text(Pattern::parse("WEB.example:*", true))],
        not_values: Vec::new(),
    };
    assert!(decide(vec![when(host)], &req));
    let remote = Condition {
        attribute: Attribute::RemoteIp,
        values: vec![ValueMatch::Cidr {
            network: "198.51.100.0".parse().expect("ip"),
            bits: 24,
        }],
        not_values: Vec::new(),
    };
    assert!(!decide(vec![when(remote.clone())], &req));
    req.remote = "198.51.100.7".parse().ok();
    assert!(decide(vec![when(remote)], &req));
}

#[test]
fn on_tcp_http_only_conditions_never_allow_and_always_deny() {
    let req = Req::get("/");
    let on_path = || to(vec![cond(Attribute::Path, &["/x"])]);
    let allow = Policies::new(vec![policy("ns/a", Action::Allow, vec![on_path()])]);
    assert!(!allow.evaluate(&req.attrs(false), false).is_allow());
    let deny = Policies::new(vec![policy("ns/d", Action::Deny, vec![on_path()])]);
    assert!(!deny.evaluate(&req.attrs(false), false).is_allow());
    // The same DENY on HTTP only catches its path.
    assert!(deny.evaluate(&req.attrs(true), false).is_allow());
    // Scoped by port, the DENY leaves other ports alone.
    let other_port = Condition {
        attribute: Attribute::DestinationPort,
        values: vec![ValueMatch::Port(9000)],
        not_values: Vec::new(),
    };
    let scoped = Policies::new(vec![policy(
        "ns/d",
        Action::Deny,
        vec![to(vec![other_port, cond(Attribute::Path, &["/x"])])],
    )]);
    assert!(scoped.evaluate(&req.attrs(false), false).is_allow());
}

/// Per-request cost of a 10-rule ALLOW policy whose last rule matches
/// (the worst case before a decision). Run with:
/// `cargo test -p weft-proxy --lib authz::tests::ten_rule_policy_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn ten_rule_policy_cost() {
    let rules = (0..10)
        .map(|i| {
            let path: &'static str = Box::leak(format!("/service{i}/*").into_boxed_str());
            Rule {
                from: vec![vec![cond(Attribute::SourceNamespace, &["default", "prod"])]],
                to: vec![vec![
                    cond(Attribute::Method, &["GET", "POST"]),
                    cond(Attribute::Path, &[path]),
                ]],
                when: vec![cond(
                    Attribute::RequestHeader(HeaderName::from_static("x-tenant")),
                    &["acme*"],
                )],
            }
        })
        .collect();
    let policies = Policies::new(vec![policy("ns/ten", Action::Allow, rules)]);
    let mut req = Req::get("/service9/items/42");
    req.principal = Some("cluster.local/ns/prod/sa/api");
    req.headers
        .insert("x-tenant", HeaderValue::from_static("acme-corp"));
    let attrs = req.attrs(true);
    let rounds = 200_000;
    let started = Instant::now();
    let mut allowed = 0;
    for _ in 0..rounds {
        allowed += usize::from(
            policies
                .evaluate(std::hint::black_box(&attrs), false)
                .is_allow(),
        );
    }
    let per = started.elapsed() / rounds;
    assert_eq!(allowed, rounds as usize);
    println!("10-rule ALLOW policy, last rule matching: {per:?} per request");
}

#[test]
fn path_templates_match_segments() {
    let one = ValueMatch::path_template("/api/{*}/items").expect("template");
    let any = ValueMatch::path_template("/files/{**}").expect("template");
    let allow = |matcher: ValueMatch| {
        Policies::new(vec![policy(
            "ns/t",
            Action::Allow,
            vec![to(vec![Condition {
                attribute: Attribute::Path,
                values: vec![matcher],
                not_values: Vec::new(),
            }])],
        )])
    };
    let check = |policies: &Policies, path: &'static str| {
        policies
            .evaluate(&Req::get(path).attrs(true), false)
            .is_allow()
    };
    let one = allow(one);
    assert!(check(&one, "/api/v1/items"));
    assert!(!check(&one, "/api/v1/v2/items"));
    assert!(!check(&one, "/api//items"));
    let any = allow(any);
    assert!(check(&any, "/files/a/b/c.txt"));
    assert!(!check(&any, "/other/a"));
    assert!(ValueMatch::path_template("/plain").is_none());
}

fn provider(protocol: crate::policy::ext_authz::Protocol) -> Arc<Provider> {
    Arc::new(Provider {
        name: "authz".into(),
        protocol,
        cluster: "outbound|9000||authz.default.svc.cluster.local".into(),
        authority: String::new(),
        timeout: std::time::Duration::from_secs(1),
        fail_open: false,
        status_on_error: http::StatusCode::FORBIDDEN,
        include_headers: Vec::new(),
        additional_headers: Vec::new(),
        upstream_on_allow: Vec::new(),
        downstream_on_deny: Vec::new(),
        downstream_on_allow: Vec::new(),
        path_prefix: String::new(),
        body: None,
    })
}

#[test]
fn on_tcp_custom_asks_a_grpc_provider_and_leaves_out_an_http_one() {
    use crate::policy::ext_authz::Protocol;
    let req = Req::get("/");
    // A path condition counts as matched on TCP (Istio builds CUSTOM's TCP
    // rules as DENY's), so the authorizer is asked.
    let custom = |protocol: Option<Protocol>| {
        let mut p = policy(
            "ns/ext",
            Action::Custom,
            vec![to(vec![cond(Attribute::Path, &["/x"])])],
        );
        p.provider = protocol.map(provider);
        Policies::new(vec![p])
    };
    let grpc = custom(Some(Protocol::Grpc));
    assert!(matches!(
        grpc.evaluate(&req.attrs(false), false),
        Decision::Ask { .. }
    ));
    // Once the authorizer allowed, DENY and ALLOW decide (none here).
    assert!(grpc.evaluate(&req.attrs(false), true).is_allow());
    // Istio puts no network filter for an HTTP provider: the policy does
    // nothing on TCP, while it still asks about HTTP requests it matches.
    let http = custom(Some(Protocol::Http));
    assert!(http.evaluate(&req.attrs(false), false).is_allow());
    assert!(matches!(
        http.evaluate(&Req::get("/x").attrs(true), false),
        Decision::Ask { .. }
    ));
    // Without a usable provider it fails closed on TCP too.
    let none = custom(None);
    assert!(!none.evaluate(&req.attrs(false), false).is_allow());
}

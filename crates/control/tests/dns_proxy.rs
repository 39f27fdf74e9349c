//! DNS proxying (Istio's `ISTIO_META_DNS_CAPTURE`) with real interception:
//! in a network namespace the test creates, the pod's interception rules
//! (the ones `weft intercept --capture-dns` installs) send the app's
//! port-53 traffic to its sidecar's DNS server on 15053. The app resolves
//! with the system resolver (glibc `getent`, reading a resolv.conf that
//! names 127.0.0.53 with Kubernetes' search path); a test DNS server on
//! that same address stands for the cluster's resolver.
//!
//! Shown: a mesh service by its short name gets weftd's VIP, and a
//! connection to that VIP reaches the service; a ServiceEntry host gets its
//! declared address; a name the mesh does not know is forwarded to the
//! upstream resolver and its answer returned; the sidecar's own queries
//! (UID 1337) are not captured, so forwarding does not loop; TCP queries
//! are captured too.
//!
//! Needs root, `ip` and `iptables`; under `CI=true` it fails rather than skip.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_kube::inject::capture::Capture;
use weft_testkit::backend::HttpBackend;
use weft_testkit::netns::{NetNs, privileged_or_skip};
use weft_testkit::proxy::{ProxyOptions, ProxyProcess};
use weft_testkit::weftd::WeftdProcess;

const WEFTD: &str = env!("CARGO_BIN_EXE_weftd");
const PROXY_UID: &str = "1337";
/// The pod's resolver, as its resolv.conf names it (captured for the app,
/// reached for real by the sidecar).
const RESOLVER: &str = "127.0.0.53";
/// Where the "reviews" service's one endpoint listens.
const REVIEWS_ENDPOINT: &str = "127.0.0.70:9080";
/// Where `web.outside.test` (a `resolution: DNS` entry) really is, as the
/// upstream resolver says.
const WEB_ENDPOINT: &str = "127.0.0.72:9080";

/// The cluster's resolver: answers A queries from a fixed table, NXDOMAIN
/// for everything else, and remembers every name it was asked.
struct UpstreamDns {
    queries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl UpstreamDns {
    async fn start(addr: SocketAddr, table: HashMap<String, Ipv4Addr>) -> Self {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .expect("bind the upstream DNS server");
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let task = tokio::spawn({
            let queries = queries.clone();
            async move {
                let mut buffer = vec![0u8; 4096];
                while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
                    let Ok(query) = Message::from_vec(&buffer[..len]) else {
                        continue;
                    };
                    let reply = answer(&query, &table, &queries);
                    if let Ok(bytes) = reply.to_vec() {
                        let _ = socket.send_to(&bytes, from).await;
                    }
                }
            }
        });
        Self { queries, task }
    }

    fn asked(&self, name: &str) -> usize {
        let queries = self.queries.lock().expect("queries");
        queries.iter().filter(|q| q.as_str() == name).count()
    }

    fn all(&self) -> Vec<String> {
        self.queries.lock().expect("queries").clone()
    }
}

impl Drop for UpstreamDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(
    query: &Message,
    table: &HashMap<String, Ipv4Addr>,
    queries: &Mutex<Vec<String>>,
) -> Message {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let Some(question) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    reply.add_query(question.clone());
    let name = question.name().to_ascii();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    queries.lock().expect("queries").push(name.clone());
    match table.get(&name) {
        Some(ip) if question.query_type() == RecordType::A => {
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(*ip)),
            ));
        }
        Some(_) => {}
        None => reply.metadata.response_code = ResponseCode::NXDomain,
    }
    reply
}

/// `/etc/netns/<ns>/resolv.conf`, which `ip netns exec` mounts over
/// `/etc/resolv.conf` for what it runs (the app and the sidecar); removed
/// on drop.
struct PodResolvConf(PathBuf);

impl PodResolvConf {
    fn write(netns: &NetNs) -> Self {
        let dir = PathBuf::from("/etc/netns").join(&netns.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<ns>");
        std::fs::write(
            dir.join("resolv.conf"),
            format!(
                "nameserver {RESOLVER}\n\
                 search default.svc.cluster.local svc.cluster.local cluster.local\n\
                 options ndots:5 timeout:2 attempts:2\n"
            ),
        )
        .expect("write resolv.conf");
        Self(dir)
    }
}

impl Drop for PodResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn app_lookups_through_captured_port_53_get_mesh_answers_and_the_rest_is_forwarded() {
    const NAME: &str =
        "app_lookups_through_captured_port_53_get_mesh_answers_and_the_rest_is_forwarded";
    if !privileged_or_skip(NAME) {
        return;
    }
    let netns = NetNs::create("dnsproxy").expect("create namespace");
    let _resolv = PodResolvConf::write(&netns);
    netns
        .run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(captured(&netns))
        })
        .expect("enter namespace");
}

/// The addresses `getent ahostsv4 NAME` prints, run as `uid` in the pod
/// (through `ip netns exec`, so with the pod's resolv.conf); empty when
/// the name does not resolve.
async fn lookup(netns: &NetNs, uid: Option<&str>, name: &str) -> Vec<IpAddr> {
    let mut argv = match uid {
        Some(uid) => netns.prefix_as(uid),
        None => netns.prefix(),
    };
    argv.extend(["getent".into(), "ahostsv4".into(), name.into()]);
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output(),
    )
    .await
    .expect("getent finished in time")
    .expect("run getent");
    let mut addresses: Vec<IpAddr> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect();
    addresses.dedup();
    addresses
}

/// The A answers to `name` asked over TCP at the pod's resolver address.
async fn tcp_lookup(name: &str) -> (ResponseCode, Vec<IpAddr>) {
    let mut query = Message::query();
    query.metadata.id = 7;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    let bytes = query.to_vec().expect("encode");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((RESOLVER, 53)).await?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await?;
        let mut reply = vec![0u8; usize::from(len)];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("TCP answer in time")
        .expect("TCP exchange");
    let reply = Message::from_vec(&reply).expect("decode");
    let addresses = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    (reply.metadata.response_code, addresses)
}

/// The `x-backend` of a GET for `host` to `to` (captured to the sidecar's
/// 15001), as an app that resolved `host` to `to` sends it.
async fn backend_at(to: SocketAddr, host: &str) -> Option<String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(to).await?;
        let request = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()?
        .ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-backend")
            .then(|| value.trim().to_string())
    })
}

async fn captured(netns: &NetNs) {
    // The pod's own rules, DNS capture on, as `weft intercept --capture-dns`.
    let rules = Capture {
        dns: true,
        ..Capture::default()
    }
    .rules();
    let mut restore = std::process::Command::new("ip")
        .args(["netns", "exec", &netns.name, "iptables-restore"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run iptables-restore");
    std::io::Write::write_all(restore.stdin.as_mut().expect("stdin"), rules.as_bytes())
        .expect("write rules");
    drop(restore.stdin.take());
    assert!(
        restore.wait().expect("iptables-restore").success(),
        "{rules}"
    );
    // A pod address besides loopback: getaddrinfo (AI_ADDRCONFIG) asks for
    // IPv4 names only when the host has a non-loopback IPv4 address.
    netns
        .exec(&["ip", "addr", "add", "10.203.53.2/32", "dev", "lo"])
        .expect("pod address");
    // VIPs are only reachable through the sidecar: a route so connect()
    // has somewhere to go before nat sends it to 15001.
    netns
        .exec(&[
            "ip",
            "route",
            "add",
            "240.240.0.0/16",
            "dev",
            "lo",
            "src",
            "127.0.0.1",
        ])
        .expect("route the VIP range");

    let upstream = UpstreamDns::start(
        format!("{RESOLVER}:53").parse().expect("addr"),
        HashMap::from([
            ("outside.test".to_string(), Ipv4Addr::new(198, 51, 100, 9)),
            ("web.outside.test".to_string(), Ipv4Addr::new(127, 0, 0, 72)),
        ]),
    )
    .await;
    let reviews = HttpBackend::start_on(REVIEWS_ENDPOINT.parse().expect("addr"), "reviews").await;
    let web = HttpBackend::start_on(WEB_ENDPOINT.parse().expect("addr"), "web").await;

    let state = tempfile::tempdir().expect("tempdir");
    let weftd = WeftdProcess::start_in(Path::new(WEFTD), state.path())
        .await
        .expect("weftd");
    let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{address: 127.0.0.70}]
  ports: [{number: 9080, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.external.test]
  addresses: [10.20.30.40]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 127.0.0.71}]
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.outside.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 9080, name: http, protocol: HTTP}]
";
    let reply = weftd.apply(yaml).await.expect("apply");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let binary: PathBuf = weft_testkit::cli::sibling(WEFTD, "weft-proxy");
    let flags = [
        "--node-id",
        "app",
        "--workload",
        "app",
        "--namespace",
        "default",
        "--capture",
        "--dns-capture",
    ];
    let options = ProxyOptions {
        prefix: netns.prefix_as(PROXY_UID),
        ..ProxyOptions::control_plane(&binary, weftd.grpc, &flags)
    };
    let proxy = ProxyProcess::spawn_ready(options, Duration::from_secs(20))
        .await
        .expect("ready");

    // A mesh service by its short name: weftd's VIP for it (allocated, the
    // entry declares none), answered by the sidecar.
    let vips = lookup(netns, None, "reviews").await;
    assert_eq!(vips.len(), 1, "reviews -> {vips:?}\n{}", proxy.logs());
    let vip = vips[0];
    assert!(
        matches!(vip, IpAddr::V4(v4) if v4.octets()[..2] == [240, 240]),
        "{vip}"
    );
    assert_eq!(lookup(netns, None, "reviews.default").await, [vip]);
    assert_eq!(
        upstream.asked("reviews.default.svc.cluster.local"),
        0,
        "a mesh name is answered by the sidecar, never forwarded: {:?}",
        upstream.all()
    );
    // ... and that VIP is routed: the app reaches the service through it.
    assert_eq!(
        backend_at(SocketAddr::new(vip, 9080), "reviews")
            .await
            .as_deref(),
        Some("reviews"),
        "{}",
        proxy.logs()
    );
    assert_eq!(reviews.requests(), 1);

    // A ServiceEntry host: its declared address. The search-path
    // expansion the resolver tries first is answered too (a CNAME to the
    // host), so nothing of it goes upstream.
    assert_eq!(
        lookup(netns, None, "api.external.test").await,
        [IpAddr::V4(Ipv4Addr::new(10, 20, 30, 40))]
    );
    assert_eq!(upstream.asked("api.external.test"), 0);
    assert_eq!(
        upstream.asked("api.external.test.default.svc.cluster.local"),
        0,
        "{:?}",
        upstream.all()
    );

    // A name the mesh does not know: forwarded (by the sidecar, whose own
    // query to the same resolver address is not captured again) and the
    // upstream's answer returned.
    assert_eq!(
        lookup(netns, None, "outside.test").await,
        [IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9))],
        "{}",
        proxy.logs()
    );
    assert!(upstream.asked("outside.test") > 0);
    assert!(lookup(netns, None, "nowhere.test").await.is_empty());

    // A `resolution: DNS` entry without addresses: the app gets weftd's VIP
    // for it from the sidecar, and the sidecar resolves the host itself
    // (its own lookup reaching the real resolver) to send the connection
    // there.
    let web_vips = lookup(netns, None, "web.outside.test").await;
    assert_eq!(web_vips.len(), 1, "{web_vips:?}");
    assert!(
        matches!(web_vips[0], IpAddr::V4(v4) if v4.octets()[..2] == [240, 240]),
        "{web_vips:?}"
    );
    let mut reached = None;
    for _ in 0..50 {
        reached = backend_at(SocketAddr::new(web_vips[0], 9080), "web.outside.test").await;
        if reached.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reached.as_deref(), Some("web"), "{}", proxy.logs());
    assert!(web.requests() >= 1);

    // The sidecar's UID is never captured: its lookups reach the real
    // resolver, which does not know the mesh's names.
    let before = upstream.asked("reviews.default.svc.cluster.local");
    assert!(lookup(netns, Some(PROXY_UID), "reviews").await.is_empty());
    assert!(upstream.asked("reviews.default.svc.cluster.local") > before);

    // TCP (what a resolver falls back to after a truncated answer) is
    // captured too.
    let (code, addresses) = tcp_lookup("reviews.default.svc.cluster.local.").await;
    assert_eq!((code, addresses), (ResponseCode::NoError, vec![vip]));
    assert!(
        !proxy.logs().contains("no upstream resolver answered"),
        "{}",
        proxy.logs()
    );

    // Counted under Istio's agent metric names.
    let metrics = proxy
        .admin_get("/stats/prometheus")
        .await
        .expect("metrics")
        .text();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    let (all, forwarded) = (
        value("istio_agent_dns_requests_total"),
        value("istio_agent_dns_upstream_requests_total"),
    );
    assert!(all > forwarded && forwarded >= 1.0, "{all} {forwarded}");
    assert_eq!(value("istio_agent_dns_upstream_failures_total"), 0.0);
}

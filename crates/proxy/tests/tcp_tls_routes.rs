//! VirtualService `tcp` and `tls` routes through a real weft-proxy process:
//! weighted TCP routes, and TLS passthrough chosen by the ClientHello's SNI.

use std::net::SocketAddr;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_testkit::free_addr;
use weft_testkit::proxy::ProxyProcess;

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

/// A backend that reads until the client's FIN, then answers with its name,
/// a colon and the bytes it received: which backend a connection reached,
/// and that the bytes arrived untouched.
async fn named_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                if stream.read_to_end(&mut received).await.is_err() {
                    return;
                }
                let mut answer = format!("{name}:").into_bytes();
                answer.extend_from_slice(&received);
                let _ = stream.write_all(&answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `payload`, half-closes, and returns the backend's answer split
/// into (backend name, echoed bytes).
async fn exchange(addr: SocketAddr, payload: &[u8]) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(payload).await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let colon = answer
        .iter()
        .position(|b| *b == b':')
        .unwrap_or_else(|| panic!("no answer from a backend: {answer:?}"));
    let echoed = answer.split_off(colon + 1);
    answer.pop();
    (String::from_utf8(answer).expect("name"), echoed)
}

/// A minimal TLS 1.2-framed ClientHello naming `sni`: record header,
/// handshake header, version, random, session id, one cipher suite, null
/// compression, and the server_name extension.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut server_name = Vec::new();
    server_name.extend_from_slice(&(name.len() as u16 + 3).to_be_bytes());
    server_name.push(0); // host_name
    server_name.extend_from_slice(&(name.len() as u16).to_be_bytes());
    server_name.extend_from_slice(name);
    let mut extensions = vec![0x00, 0x00];
    extensions.extend_from_slice(&(server_name.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&server_name);

    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0xc0, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);

    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn weighted_tcp_route_splits_connections() {
    let (a, b, fallback) = (
        named_backend("a").await,
        named_backend("b").await,
        named_backend("default").await,
    );
    let listen = free_addr();
    let config = format!(
        r#"
listeners: [{{name: db, address: "{listen}", kind: EXPLICIT, service: db}}]
services:
- name: db
  ports:
  - port: 5432
    protocol: TCP
    cluster: default
    tcpRoutes: [{{name: split, clusters: [{{cluster: a, weight: 50}}, {{cluster: b, weight: 50}}]}}]
clusters:
- {{name: a, endpoints: [{{address: "{a}"}}]}}
- {{name: b, endpoints: [{{address: "{b}"}}]}}
- {{name: default, endpoints: [{{address: "{fallback}"}}]}}
"#
    );
    let _proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .expect("proxy");
    let mut names = Vec::new();
    for _ in 0..10 {
        let (name, echoed) = exchange(listen, b"\x00\x01opaque").await;
        assert_eq!(echoed, b"\x00\x01opaque");
        names.push(name);
    }
    let to_a = names.iter().filter(|n| *n == "a").count();
    let to_b = names.iter().filter(|n| *n == "b").count();
    assert_eq!((to_a, to_b), (5, 5), "{names:?}");
}

#[tokio::test]
async fn tls_routes_pick_backend_by_sni() {
    let (a, b, fallback) = (
        named_backend("a").await,
        named_backend("b").await,
        named_backend("default").await,
    );
    // One port declared TLS, one undeclared (TLS found by detection).
    let (declared, detected) = (free_addr(), free_addr());
    let routes = "[{name: a, sniHosts: [a.example.com], clusters: [{cluster: a}]}, \
                  {name: b, sniHosts: ['*.b.example.com', b.example.com], clusters: [{cluster: b}]}]";
    let config = format!(
        r#"
listeners:
- {{name: tls, address: "{declared}", kind: EXPLICIT, service: web, servicePort: 443}}
- {{name: sniff, address: "{detected}", kind: EXPLICIT, service: web, servicePort: 8443}}
services:
- name: web
  ports:
  - {{port: 443, protocol: TLS, cluster: default, tlsRoutes: {routes}}}
  - {{port: 8443, cluster: default, tlsRoutes: {routes}}}
clusters:
- {{name: a, endpoints: [{{address: "{a}"}}]}}
- {{name: b, endpoints: [{{address: "{b}"}}]}}
- {{name: default, endpoints: [{{address: "{fallback}"}}]}}
"#
    );
    let _proxy = ProxyProcess::start(Path::new(BIN), &config)
        .await
        .expect("proxy");
    for listen in [declared, detected] {
        for (sni, expected) in [
            ("a.example.com", "a"),
            ("b.example.com", "b"),
            ("x.b.example.com", "b"),
            ("c.example.com", "default"),
        ] {
            let hello = client_hello(sni);
            let (name, echoed) = exchange(listen, &hello).await;
            assert_eq!(name, expected, "{sni} via {listen}");
            // Passthrough: the backend saw the ClientHello byte for byte.
            assert_eq!(echoed, hello, "{sni} via {listen}");
        }
        // Not TLS at all: the default cluster.
        let (name, _) = exchange(listen, b"\x00plain").await;
        assert_eq!(name, "default");
    }
}

//! The upstream side of the DNS server: a plain forwarder. A query the
//! proxy does not answer goes, bytes unchanged, to the resolvers the pod
//! would have used (`/etc/resolv.conf`, or `--dns-upstream`), tried in
//! order; the first reply is returned as it came, over the transport the
//! app used (UDP, or TCP for a client that retries a truncated answer).
//!
//! No loop: with capture on, these queries leave from the proxy's UID,
//! which the interception rules exempt; and a resolver that is the DNS
//! server itself is never used.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer before the next is tried (glibc
/// gives the whole lookup 5 s per server by default).
const PER_UPSTREAM: Duration = Duration::from_secs(2);

/// The resolvers queries are forwarded to.
#[derive(Debug, Clone)]
pub struct Upstreams {
    servers: Vec<SocketAddr>,
}

impl Upstreams {
    /// `servers` without `listen` (the DNS server's own address: forwarding
    /// there would loop).
    pub fn new(servers: Vec<SocketAddr>, listen: SocketAddr) -> Self {
        let servers = servers.into_iter().filter(|s| *s != listen).collect();
        Self { servers }
    }

    /// The nameservers of a resolv.conf text, on port 53.
    pub fn parse_resolv_conf(text: &str, listen: SocketAddr) -> Result<Self, String> {
        let (config, _) = hickory_resolver::system_conf::parse_resolv_conf(text)
            .map_err(|err| format!("resolv.conf: {err}"))?;
        let servers = config
            .name_servers()
            .iter()
            .map(|server| {
                let port = server.connections.first().map_or(53, |c| c.port);
                SocketAddr::new(server.ip, port)
            })
            .collect::<Vec<_>>();
        let mut unique = Vec::with_capacity(servers.len());
        for server in servers {
            if !unique.contains(&server) {
                unique.push(server);
            }
        }
        Ok(Self::new(unique, listen))
    }

    /// The system's resolvers, from `path` (normally /etc/resolv.conf).
    pub fn from_file(path: &str, listen: SocketAddr) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|err| format!("{path}: {err}"))?;
        Self::parse_resolv_conf(&text, listen).map_err(|err| format!("{path}: {err}"))
    }

    /// The search domains of a resolv.conf text, lower case without the
    /// root dot (none when it cannot be read).
    pub fn search_domains(text: &str) -> Vec<String> {
        hickory_resolver::system_conf::parse_resolv_conf(text)
            .map(|(config, _)| {
                config
                    .search()
                    .iter()
                    .map(|name| name.to_ascii().trim_end_matches('.').to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The first upstream reply to `query` over UDP; None when none
    /// answered in time (the caller answers SERVFAIL).
    pub async fn forward_udp(&self, query: &[u8]) -> Option<Vec<u8>> {
        for server in &self.servers {
            match tokio::time::timeout(PER_UPSTREAM, udp_exchange(*server, query)).await {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(err)) => tracing::debug!(%server, "DNS upstream failed: {err}"),
                Err(_) => tracing::debug!(%server, "DNS upstream did not answer in time"),
            }
        }
        None
    }

    /// The same over TCP (one connection per query).
    pub async fn forward_tcp(&self, query: &[u8]) -> Option<Vec<u8>> {
        for server in &self.servers {
            match tokio::time::timeout(PER_UPSTREAM, tcp_exchange(*server, query)).await {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(err)) => tracing::debug!(%server, "DNS upstream (TCP) failed: {err}"),
                Err(_) => tracing::debug!(%server, "DNS upstream (TCP) did not answer in time"),
            }
        }
        None
    }
}

/// One query on its own socket (a fresh random source port per query, as
/// a stub resolver does); replies whose id differs are ignored.
async fn udp_exchange(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buffer).await?;
        if len >= 2 && query.len() >= 2 && buffer[..2] == query[..2] {
            buffer.truncate(len);
            return Ok(buffer);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::other("query longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_become_upstreams_without_the_server_itself() {
        let listen: SocketAddr = "127.0.0.1:15053".parse().expect("addr");
        let upstreams = Upstreams::parse_resolv_conf(
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\n\
             nameserver 10.96.0.10\n\
             nameserver fd00::a\n\
             options ndots:5\n",
            listen,
        )
        .expect("parse");
        assert_eq!(
            upstreams.servers(),
            &[
                "10.96.0.10:53".parse::<SocketAddr>().expect("addr"),
                "[fd00::a]:53".parse().expect("addr"),
            ]
        );
        assert_eq!(
            Upstreams::search_domains(
                "nameserver 10.96.0.10\nsearch Default.svc.cluster.local. cluster.local\n"
            ),
            ["default.svc.cluster.local", "cluster.local"]
        );
        let itself = Upstreams::new(vec![listen], listen);
        assert!(itself.servers().is_empty());
    }
}

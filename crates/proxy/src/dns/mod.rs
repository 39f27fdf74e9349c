//! DNS proxying (Istio's `ISTIO_META_DNS_CAPTURE`): the proxy serves DNS on
//! 127.0.0.1:15053, UDP and TCP, and the interception rules send the app's
//! port-53 traffic there (not the proxy's own: its UID is exempt).
//!
//! Each query is read against the name table of the snapshot current when
//! it arrives ([`answer::decide`]): names of mesh services and ServiceEntry
//! hosts the proxy can see are answered here; everything else is forwarded
//! to the upstream resolvers ([`forward::Upstreams`]) and their reply
//! returned unchanged. A query no upstream answers gets SERVFAIL.
//!
//! One task per UDP query and per TCP connection; nothing here holds state
//! between queries but the sockets.

pub mod answer;
pub mod forward;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::config::dns::NameTable;
use crate::state::ProxyState;
use answer::Decision;
pub use forward::Upstreams;

/// Istio's DNS proxy address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:15053";
/// The pod's resolver configuration (as `ip netns exec` or the container
/// runtime arranges it).
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// How long a TCP client may stay silent between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Most UDP queries and TCP connections served at once: a flood (or a
/// resolver that stopped answering, each forward waiting out its timeout)
/// cannot grow tasks without bound. A UDP query beyond it is dropped (the
/// client retries); a TCP connection waits to be accepted.
const MAX_IN_FLIGHT: usize = 1024;

/// The bound sockets of the DNS server, and where it forwards.
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    upstreams: Arc<Upstreams>,
    /// The pod resolver's search domains (see [`answer::decide`]).
    search: Arc<[String]>,
}

impl DnsServer {
    /// The server `weft-proxy --dns-capture` runs: on `listen`, forwarding
    /// to `upstreams` or else the nameservers of /etc/resolv.conf, whose
    /// search domains it also reads. An error says what to give instead.
    pub async fn start(listen: SocketAddr, upstreams: &[SocketAddr]) -> Result<Self, String> {
        let upstreams = if upstreams.is_empty() {
            let found = Upstreams::from_file(RESOLV_CONF, listen)
                .map_err(|err| format!("{err}; give --dns-upstream ADDR"))?;
            if found.servers().is_empty() {
                return Err(format!(
                    "{RESOLV_CONF} names no resolver other than this proxy; \
                     give --dns-upstream ADDR"
                ));
            }
            found
        } else {
            Upstreams::new(upstreams.to_vec(), listen)
        };
        // The pod's search path, for answering its expansions of known
        // hosts (none when the file cannot be read).
        let search = std::fs::read_to_string(RESOLV_CONF)
            .map(|text| Upstreams::search_domains(&text))
            .unwrap_or_default();
        let servers = upstreams.servers().to_vec();
        let server = Self::bind(listen, upstreams, search)
            .await
            .map_err(|err| format!("cannot listen on {listen} for DNS: {err}"))?;
        tracing::info!(%listen, upstreams = ?servers, "DNS proxy serving");
        Ok(server)
    }

    /// Binds UDP and TCP on `listen` (call within the runtime that serves).
    pub async fn bind(
        listen: SocketAddr,
        upstreams: Upstreams,
        search: Vec<String>,
    ) -> std::io::Result<Self> {
        let udp = UdpSocket::bind(listen).await?;
        let tcp = TcpListener::bind(listen).await?;
        Ok(Self {
            udp: Arc::new(udp),
            tcp,
            upstreams: Arc::new(upstreams),
            search: search.into(),
        })
    }

    /// Serves until the process ends, reading names from `state`'s current
    /// snapshot.
    pub async fn serve(self, state: Arc<ProxyState>) {
        let search = self.search;
        let lookups = move || Lookups {
            table: state.snapshot().names.clone(),
            search: search.clone(),
            state: state.clone(),
        };
        let udp = serve_udp(
            self.udp,
            self.upstreams.clone(),
            lookups.clone(),
            Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        );
        let tcp = serve_tcp(
            self.tcp,
            self.upstreams,
            lookups,
            Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        );
        tokio::join!(udp, tcp);
    }
}

/// What one query is decided against: the table current when it arrived.
struct Lookups {
    table: Arc<NameTable>,
    search: Arc<[String]>,
    /// For the DNS metrics.
    state: Arc<ProxyState>,
}

impl Lookups {
    fn decide(&self, query: &[u8], udp: bool) -> Decision {
        answer::decide(query, &self.table, &self.search, udp)
    }

    fn count(&self, decision: &Decision, failed: bool) {
        let forwarded = matches!(decision, Decision::Forward);
        self.state.metrics.record_dns_query(forwarded, failed);
    }
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    upstreams: Arc<Upstreams>,
    lookups: impl Fn() -> Lookups,
    in_flight: Arc<Semaphore>,
) {
    // The largest UDP DNS message (EDNS allows up to 65535).
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let (len, client) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(err) => {
                // An ICMP error from an earlier send shows up here; the
                // socket still works.
                tracing::debug!("DNS UDP receive: {err}");
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            tracing::debug!(%client, "DNS: {MAX_IN_FLIGHT} queries in flight; query dropped");
            continue;
        };
        let query = buffer[..len].to_vec();
        let lookups = lookups();
        let socket = socket.clone();
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            let decision = lookups.decide(&query, true);
            let (reply, failed) = match &decision {
                Decision::Answer(reply) => (Some(reply.clone()), false),
                Decision::Drop => (None, false),
                Decision::Forward => match upstreams.forward_udp(&query).await {
                    Some(reply) => (Some(reply), false),
                    None => (no_upstream(&query, &upstreams), true),
                },
            };
            lookups.count(&decision, failed);
            drop(permit);
            if let Some(reply) = reply
                && let Err(err) = socket.send_to(&reply, client).await
            {
                tracing::debug!(%client, "DNS UDP reply: {err}");
            }
        });
    }
}

async fn serve_tcp(
    listener: TcpListener,
    upstreams: Arc<Upstreams>,
    lookups: impl Fn() -> Lookups + Clone + Send + 'static,
    in_flight: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!("DNS TCP accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let upstreams = upstreams.clone();
        let lookups = lookups.clone();
        tokio::spawn(async move {
            if let Err(err) = serve_connection(stream, &upstreams, lookups).await {
                tracing::debug!("DNS TCP connection: {err}");
            }
            drop(permit);
        });
    }
}

/// Length-prefixed queries (RFC 1035 §4.2.2) until the client closes or
/// stays idle.
async fn serve_connection(
    mut stream: TcpStream,
    upstreams: &Upstreams,
    lookups: impl Fn() -> Lookups,
) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len,
            // Closed or idle: done.
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        let mut query = vec![0u8; usize::from(len)];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
            .await
            .map_err(|_| std::io::Error::other("query not received in time"))??;
        let lookups = lookups();
        let decision = lookups.decide(&query, false);
        let (reply, failed) = match &decision {
            Decision::Answer(reply) => (Some(reply.clone()), false),
            Decision::Drop => (None, false),
            Decision::Forward => match upstreams.forward_tcp(&query).await {
                Some(reply) => (Some(reply), false),
                None => (no_upstream(&query, upstreams), true),
            },
        };
        lookups.count(&decision, failed);
        let Some(reply) = reply else {
            return Ok(());
        };
        let len = u16::try_from(reply.len())
            .map_err(|_| std::io::Error::other("reply longer than 65535 bytes"))?;
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
    }
}

/// SERVFAIL, with the resolvers named in the log so the operator knows
/// which one to check.
fn no_upstream(query: &[u8], upstreams: &Upstreams) -> Option<Vec<u8>> {
    tracing::warn!(
        upstreams = ?upstreams.servers(),
        "DNS: no upstream resolver answered a forwarded query; answering SERVFAIL \
         (are the resolvers reachable from the proxy's UID?)"
    );
    answer::server_failure(query)
}

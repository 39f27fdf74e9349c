//! DNS endpoints (ServiceEntry `resolution: DNS` / `DNS_ROUND_ROBIN`):
//! the proxy resolves the names itself, as Envoy's STRICT_DNS and
//! LOGICAL_DNS clusters do, and follows each answer's TTL.
//!
//! Contract: the pushed config names hosts (`Endpoint.hostname`); before a
//! config is compiled, [`Dns::substitute`] replaces each such endpoint by
//! the addresses last resolved for it (all of them, or the first for
//! `DNS_RESOLUTION_FIRST`). A name with no answer yet, or whose lookups
//! have only failed, stays a hostname endpoint: the compiled cluster lists
//! it as unresolved and requests to it fail with the name in the reply.
//! [`Dns::run`] re-resolves every name when its TTL expires (a failure
//! keeps the last good answer) and calls back when any answer changed, so
//! the caller re-applies its config.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::Notify;
use weft_proto::proxy::v1 as pb;

/// The shortest time an answer is kept: a TTL of 0 (or 1 s answers looked
/// up at the end of their life) must not turn the refresh into a busy loop.
const MIN_REFRESH: Duration = Duration::from_millis(500);
/// How soon a name that failed to resolve is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// The refresh of names whose answers never expire (an IP given as a name).
const MAX_REFRESH: Duration = Duration::from_secs(300);

/// What is known of one name.
#[derive(Debug, Clone, Default)]
struct Answer {
    /// The last good answer, in the server's order; empty before any.
    addresses: Vec<IpAddr>,
    /// When to look the name up again.
    refresh_at: Option<Instant>,
    /// Why the last lookup failed, cleared by a good one.
    error: Option<String>,
}

/// The proxy's resolver and the answers it holds.
pub struct Dns {
    resolver: Result<TokioResolver, String>,
    answers: Mutex<HashMap<String, Answer>>,
    /// The names the current config asks for.
    wanted: Mutex<BTreeSet<String>>,
    changed: Notify,
}

impl Dns {
    /// A resolver asking `servers` (ip:port), or the system's
    /// (`/etc/resolv.conf`) when none are given. A resolver that cannot be
    /// built is reported by every lookup rather than stopping the proxy:
    /// only DNS endpoints need it.
    pub fn new(servers: &[SocketAddr]) -> Self {
        let resolver = build_resolver(servers).map_err(|err| {
            tracing::warn!("DNS resolver unavailable: {err}; DNS endpoints will not resolve");
            err
        });
        Self {
            resolver,
            answers: Mutex::default(),
            wanted: Mutex::default(),
            changed: Notify::new(),
        }
    }

    /// Replaces the hostname endpoints of `config`'s clusters by the
    /// addresses resolved for them, and remembers the names it asks for
    /// (new ones are looked up by [`Self::run`] at once).
    pub fn substitute(&self, config: &mut pb::ProxyConfig) {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let mut names = BTreeSet::new();
        for cluster in &mut config.clusters {
            if !cluster.endpoints.iter().any(|e| !e.hostname.is_empty()) {
                continue;
            }
            let first_only = cluster.dns_resolution == pb::DnsResolution::First as i32;
            let mut endpoints = Vec::with_capacity(cluster.endpoints.len());
            for endpoint in cluster.endpoints.drain(..) {
                if endpoint.hostname.is_empty() {
                    endpoints.push(endpoint);
                    continue;
                }
                names.insert(endpoint.hostname.clone());
                let resolved = answers
                    .get(&endpoint.hostname)
                    .map_or(&[][..], |a| a.addresses.as_slice());
                if resolved.is_empty() {
                    endpoints.push(endpoint);
                    continue;
                }
                let take = if first_only { 1 } else { resolved.len() };
                let port = u16::try_from(endpoint.port).unwrap_or(0);
                for ip in resolved.iter().take(take) {
                    endpoints.push(pb::Endpoint {
                        address: SocketAddr::new(*ip, port).to_string(),
                        hostname: String::new(),
                        port: 0,
                        ..endpoint.clone()
                    });
                }
            }
            cluster.endpoints = endpoints;
        }
        drop(answers);
        let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        if *wanted != names {
            *wanted = names;
            self.changed.notify_one();
        }
    }

    /// Why `name` has no address, for replies and logs.
    pub fn failure(&self, name: &str) -> String {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        match answers.get(name).and_then(|a| a.error.clone()) {
            Some(error) => format!("DNS lookup of {name:?} failed: {error}"),
            None => format!("DNS name {name:?} is not resolved yet"),
        }
    }

    /// Resolves the wanted names as their answers expire, forever; calls
    /// `reapply` after any name's addresses changed and `looked_up` with
    /// each lookup's host and success (metrics).
    pub async fn run(&self, reapply: impl Fn(), looked_up: impl Fn(&str, bool)) {
        loop {
            let due = self.due(Instant::now());
            let mut changed = false;
            let lookups = due.iter().map(|name| self.lookup(name));
            for (name, result) in due
                .iter()
                .zip(futures_util::future::join_all(lookups).await)
            {
                looked_up(name, result.is_ok());
                changed |= self.record(name, result);
            }
            if changed {
                reapply();
            }
            let sleep = self.next_refresh().map_or(MAX_REFRESH, |at| {
                at.saturating_duration_since(Instant::now())
            });
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.changed.notified() => {}
            }
        }
    }

    /// The wanted names never looked up or whose answer expired.
    fn due(&self, now: Instant) -> Vec<String> {
        let wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        wanted
            .iter()
            .filter(|name| {
                answers
                    .get(*name)
                    .and_then(|a| a.refresh_at)
                    .is_none_or(|at| at <= now)
            })
            .cloned()
            .collect()
    }

    fn next_refresh(&self) -> Option<Instant> {
        let wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        wanted
            .iter()
            .filter_map(|name| answers.get(name)?.refresh_at)
            .min()
    }

    async fn lookup(&self, name: &str) -> Result<(Vec<IpAddr>, Instant), String> {
        let resolver = self.resolver.as_ref().map_err(Clone::clone)?;
        // A trailing dot: the name is absolute, as ServiceEntry hosts are,
        // so no search domain of resolv.conf is tried on it.
        let absolute = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let answer = resolver
            .lookup_ip(absolute.as_str())
            .await
            .map_err(|err| err.to_string())?;
        let addresses: Vec<IpAddr> = answer.iter().collect();
        if addresses.is_empty() {
            return Err("no A or AAAA records".to_string());
        }
        Ok((addresses, answer.valid_until()))
    }

    /// Stores a lookup's outcome; true when the addresses changed.
    fn record(&self, name: &str, result: Result<(Vec<IpAddr>, Instant), String>) -> bool {
        let now = Instant::now();
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let answer = answers.entry(name.to_string()).or_default();
        match result {
            Ok((addresses, valid_until)) => {
                let refresh = valid_until
                    .saturating_duration_since(now)
                    .clamp(MIN_REFRESH, MAX_REFRESH);
                answer.refresh_at = Some(now + refresh);
                answer.error = None;
                if answer.addresses == addresses {
                    return false;
                }
                tracing::info!(host = name, ?addresses, "DNS answer changed");
                answer.addresses = addresses;
                true
            }
            Err(error) => {
                // The last good answer keeps serving (Envoy does the same);
                // only a name never resolved has no endpoint.
                tracing::warn!(
                    host = name,
                    kept = answer.addresses.len(),
                    "DNS lookup of {name:?} failed: {error}"
                );
                answer.refresh_at = Some(now + RETRY_AFTER_FAILURE);
                answer.error = Some(error);
                false
            }
        }
    }
}

fn build_resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if servers.is_empty() {
        TokioResolver::builder(provider)
            .map_err(|err| format!("reading /etc/resolv.conf: {err}"))?
    } else {
        let name_servers = servers
            .iter()
            .map(|server| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut connection| {
                        connection.port = server.port();
                        connection
                    })
                    .collect();
                NameServerConfig::new(server.ip(), true, connections)
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            provider,
        )
    };
    // Answers are kept here, by their TTL; the resolver's own cache would
    // only hold them as long.
    builder.options_mut().cache_size = 0;
    builder.build().map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(hostname: &str, resolution: pb::DnsResolution) -> pb::ProxyConfig {
        pb::ProxyConfig {
            clusters: vec![pb::Cluster {
                name: "outbound|80||api.example.com".into(),
                dns_resolution: resolution as i32,
                endpoints: vec![pb::Endpoint {
                    hostname: hostname.into(),
                    port: 8080,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn resolved_names_become_addresses_and_failures_keep_the_last_answer() {
        let dns = Dns::new(&["127.0.0.1:9".parse().expect("addr")]);
        let mut config = config_with("api.example.com", pb::DnsResolution::All);
        dns.substitute(&mut config);
        assert_eq!(config.clusters[0].endpoints[0].hostname, "api.example.com");
        assert_eq!(dns.due(Instant::now()), vec!["api.example.com".to_string()]);

        let two: Vec<IpAddr> = vec![
            "127.0.0.2".parse().expect("ip"),
            "127.0.0.3".parse().expect("ip"),
        ];
        let later = Instant::now() + Duration::from_secs(30);
        assert!(dns.record("api.example.com", Ok((two.clone(), later))));
        assert!(
            !dns.record("api.example.com", Ok((two, later))),
            "same answer"
        );
        assert!(!dns.record("api.example.com", Err("SERVFAIL".into())));
        let mut config = config_with("api.example.com", pb::DnsResolution::All);
        dns.substitute(&mut config);
        let addresses: Vec<&str> = config.clusters[0]
            .endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect();
        assert_eq!(addresses, ["127.0.0.2:8080", "127.0.0.3:8080"]);
        assert!(dns.failure("api.example.com").contains("SERVFAIL"));

        let mut config = config_with("api.example.com", pb::DnsResolution::First);
        dns.substitute(&mut config);
        assert_eq!(
            config.clusters[0].endpoints.len(),
            1,
            "DNS_ROUND_ROBIN: first"
        );
    }
}

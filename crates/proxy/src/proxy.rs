//! The running proxy: its state (data, `state.rs`) and its listeners, and
//! the one operation that changes both, applying a config. Here, too, is
//! where a connection a listener accepted goes: the listener's kind picks
//! the side ([`crate::outbound`] for capture, explicit and gateway
//! listeners, [`crate::inbound`] for the workload's ports).
//!
//! The state never refers back to this: listeners are given the state,
//! connections are given the state, and only `main.rs`, `xds/` and this
//! file hold a `Proxy`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use weft_proto::proxy::v1::{ListenerKind, ProxyConfig};

use crate::balance::Clusters;
use crate::config::{ConfigError, Snapshot};
use crate::listener::drain::Drain;
use crate::listener::{Listeners, Serve};
use crate::state::ProxyState;
use crate::tls::MeshTls;
use crate::upstream::Dns;
use crate::{gateway, inbound, outbound};

pub struct Proxy {
    pub state: Arc<ProxyState>,
    /// Held while a config is applied: binding and reconciling happen for
    /// one config at a time.
    listeners: Mutex<Listeners>,
    /// Where accept loops (and so connections) run: the data runtime.
    data_runtime: Handle,
    /// The last config applied, as pushed (DNS names unresolved), and its
    /// source: re-applied when a DNS answer changes.
    pushed: Mutex<Option<(ProxyConfig, String)>>,
}

impl Proxy {
    /// A proxy with no config yet (not ready), securing connections with
    /// `tls`. Listeners run on `data_runtime`.
    pub fn new(data_runtime: Handle, tls: Arc<MeshTls>) -> Arc<Self> {
        Self::with_dns(data_runtime, tls, Dns::new(&[]))
    }

    /// As [`Self::new`], resolving DNS endpoints with `dns`.
    pub fn with_dns(data_runtime: Handle, tls: Arc<MeshTls>, dns: Dns) -> Arc<Self> {
        let proxy = Arc::new(Self {
            state: ProxyState::new(tls, Arc::new(dns)),
            listeners: Mutex::default(),
            data_runtime,
            pushed: Mutex::default(),
        });
        // The resolver's loop holds the proxy weakly: it ends with it.
        let weak = Arc::downgrade(&proxy);
        let state = Arc::downgrade(&proxy.state);
        let dns = proxy.state.dns.clone();
        proxy.data_runtime.spawn(async move {
            let looked_up = move |host: &str, ok: bool| {
                if let Some(state) = state.upgrade() {
                    state.metrics.record_dns_lookup(host, ok);
                }
            };
            dns.run(move || reapply(&weak), looked_up).await;
        });
        proxy
    }

    /// Validates, binds new listeners, then swaps the snapshot in. On any
    /// error nothing changes: the running config keeps serving.
    pub fn apply(&self, config: ProxyConfig, source: &str) -> Result<(), ConfigError> {
        // Held throughout: a DNS re-apply never installs an older config
        // over this one.
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.try_apply(config.clone(), source);
        if result.is_ok() {
            *pushed = Some((config, source.to_string()));
        }
        drop(pushed);
        self.state.record_outcome(source, &result);
        result
    }

    fn try_apply(&self, mut config: ProxyConfig, source: &str) -> Result<(), ConfigError> {
        self.state.dns.substitute(&mut config);
        let snapshot = Snapshot::compile(config, source)?;
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let bound = listeners
            .bind_new(&snapshot.listeners)
            .map_err(|message| ConfigError::new(source, message))?;
        let snapshot = Arc::new(snapshot);
        let clusters = Clusters::build(&snapshot, Some(&self.state.clusters()));
        self.state.install(snapshot.clone(), clusters);
        listeners.reconcile(bound, &snapshot.listeners, &self.state, &self.data_runtime);
        tracing::info!(version = snapshot.version(), "config applied from {source}");
        Ok(())
    }
}

/// Applies the last pushed config again with the DNS answers now held.
fn reapply(proxy: &Weak<Proxy>) {
    let Some(proxy) = proxy.upgrade() else {
        return;
    };
    let pushed = proxy.pushed.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((config, source)) = pushed.as_ref()
        && let Err(err) = proxy.try_apply(config.clone(), source)
    {
        tracing::warn!("re-applying the config after a DNS change failed: {err}");
    }
}

/// Every listener hands its connections to the state: the side is chosen
/// by the listener's kind in the snapshot current at accept.
impl Serve for ProxyState {
    fn connection(
        self: &Arc<Self>,
        stream: TcpStream,
        address: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        dispatch(self.clone(), stream, address)
    }

    fn connection_limit(&self) -> usize {
        self.snapshot().hardening.max_connections_per_listener
    }

    fn drain(&self) -> &Drain {
        &self.drain
    }
}

async fn dispatch(state: Arc<ProxyState>, stream: TcpStream, listen_addr: SocketAddr) {
    let _active = state.metrics.downstream_opened();
    let snapshot = state.snapshot_full();
    let Some(listener) = snapshot.listener(listen_addr) else {
        return;
    };
    match listener.kind {
        ListenerKind::OutboundCapture => {
            outbound::outbound(state.clone(), &snapshot, stream).await;
        }
        ListenerKind::InboundCapture => {
            let fixed_port = inbound::mtls::listener_port(&snapshot, listen_addr);
            inbound::inbound(state.clone(), &snapshot, stream, fixed_port, listen_addr).await;
        }
        ListenerKind::Explicit => {
            let service = listener.service.clone();
            outbound::explicit(state.clone(), &snapshot, stream, listen_addr, service).await;
        }
        ListenerKind::Gateway => {
            gateway::serve(state.clone(), &snapshot, stream, listener).await;
        }
        ListenerKind::Unspecified => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn config(yaml: &str) -> ProxyConfig {
        parse_config(yaml, "t.yaml").expect("parses")
    }

    #[tokio::test]
    async fn a_config_whose_listener_cannot_bind_changes_nothing() {
        let proxy = Proxy::new(Handle::current(), MeshTls::new(None));
        assert!(!proxy.state.is_ready(), "no config yet");
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let free_addr = free.local_addr().expect("addr");
        drop(free);
        let good = format!(
            "version: v1\nlisteners: [{{name: web, address: \"{free_addr}\", kind: EXPLICIT}}]\n"
        );
        proxy.apply(config(&good), "good.yaml").expect("applies");
        assert!(proxy.state.is_ready());
        assert_eq!(proxy.state.snapshot().version(), "v1");
        // The listener accepts: the state is given to it, not the other way.
        std::net::TcpStream::connect(free_addr).expect("the listener accepts");

        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_addr = taken.local_addr().expect("addr");
        let bad = format!(
            "version: v2\nlisteners: [{{name: other, address: \"{taken_addr}\", kind: EXPLICIT}}]\n"
        );
        let err = proxy
            .apply(config(&bad), "bad.yaml")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains(&format!("cannot listen on {taken_addr}")),
            "{err}"
        );
        assert_eq!(
            proxy.state.snapshot().version(),
            "v1",
            "the old config serves"
        );
        let status = proxy.state.status();
        assert_eq!(status.source, "bad.yaml");
        assert!(
            status
                .last_rejected
                .is_some_and(|why| why.contains("other"))
        );
        std::net::TcpStream::connect(free_addr).expect("the old listener still accepts");
    }
}

//! The control-plane client: one stream to weftd, reconnected with backoff.
//!
//! Contract: the proxy serves its last good config whatever weftd does. A
//! push is applied whole or refused (NACK with the reason); a lost stream
//! keeps the config and reconnects, announcing what it holds so weftd sends
//! only the difference. The stream runs over TLS verified with the held
//! root, presenting the workload certificate ([`connect`]), unless
//! `--plaintext-control-plane`. Draining (SIGTERM), it says goodbye so weftd
//! removes its endpoints at once, and does not reconnect.

// The channel to weftd, shared with the certificate fetch; named here too
// for weft-control's tests.
pub use crate::identity::control_plane as connect;
pub mod node;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::discovery::v1::discovery_client::DiscoveryClient;
use weft_proto::discovery::v1::{
    Ack, Goodbye, Hello, Node, ProxyMessage, Push, Resource, proxy_message,
};
use weft_proto::resources::{assemble, set_version};

use crate::identity::Identity;
use crate::proxy::Proxy;
use connect::ControlPlane;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a draining proxy waits for weftd to take its goodbye.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);
/// The largest push accepted from weftd (a large mesh's first push is
/// several MiB; tonic's default cap is 4 MiB).
const MAX_PUSH_BYTES: usize = 128 << 20;

/// Runs forever: connect, stream, apply, and on any loss wait and retry.
/// `identity` (None on the plaintext port) presents its certificate and
/// takes the trust bundles pushed.
pub async fn run(
    control_plane: ControlPlane,
    node: Node,
    proxy: Arc<Proxy>,
    identity: Option<Arc<Identity>>,
) {
    let address = control_plane.address.clone();
    let mut held: BTreeMap<String, Resource> = BTreeMap::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut got_push = false;
        let link = Link {
            control_plane: &control_plane,
            node: &node,
            proxy: &proxy,
            identity: identity.as_deref(),
        };
        let result = stream(link, &mut held, &mut got_push).await;
        if proxy.state.drain.is_draining() {
            // Said goodbye (or tried): a draining proxy does not come back.
            return;
        }
        match result {
            Ok(()) => {
                tracing::warn!("weftd at {address} closed the stream; keeping the last good config")
            }
            Err(err) => tracing::warn!(
                "weftd at {address}: {err}; keeping the last good config, retrying in {backoff:?}"
            ),
        }
        if got_push {
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// ±20% so proxies that lost weftd together do not come back in lockstep.
fn jittered(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.8 + f64::from(nanos % 1000) / 2500.0;
    delay.mul_f64(factor)
}

/// What one stream needs.
struct Link<'a> {
    control_plane: &'a ControlPlane,
    node: &'a Node,
    proxy: &'a Arc<Proxy>,
    identity: Option<&'a Identity>,
}

async fn stream(
    link: Link<'_>,
    held: &mut BTreeMap<String, Resource>,
    got_push: &mut bool,
) -> anyhow::Result<()> {
    let Link {
        control_plane,
        node,
        proxy,
        identity,
    } = link;
    let address = &control_plane.address;
    let channel = control_plane
        .channel(identity.and_then(Identity::certified_key), None)
        .await?;
    let mut client = DiscoveryClient::new(channel).max_decoding_message_size(MAX_PUSH_BYTES);
    let (outbound, messages) = mpsc::channel(4);
    let known_versions = held
        .iter()
        .map(|(name, resource)| (name.clone(), resource.version.clone()))
        .collect();
    outbound
        .send(ProxyMessage {
            message: Some(proxy_message::Message::Hello(Hello {
                node: Some(node.clone()),
                known_versions,
            })),
        })
        .await?;
    let mut pushes = client
        .stream(ReceiverStream::new(messages))
        .await
        .map_err(|status| anyhow::anyhow!("{} ({:?})", status.message(), status.code()))?
        .into_inner();
    tracing::info!("connected to weftd at {address}");
    // The drain waits for this stream (at most GOODBYE_WAIT after it
    // starts): the goodbye below must reach weftd before the process exits.
    let (_stream_open, stream_done) = tokio::sync::oneshot::channel::<()>();
    proxy.state.drain.spawn_connection(async move {
        let _ = stream_done.await;
    });
    loop {
        let push = tokio::select! {
            push = pushes.message() => match push? {
                Some(push) => push,
                None => break,
            },
            () = proxy.state.drain.signaled() => {
                // A clean shutdown: weftd removes this proxy's endpoints
                // now instead of keeping them for its grace period.
                let goodbye = proxy_message::Message::Goodbye(Goodbye {
                    reason: "draining".into(),
                });
                outbound.send(ProxyMessage { message: Some(goodbye) }).await?;
                drop(outbound);
                // weftd closes the stream once it has the goodbye.
                let closed = async { while let Ok(Some(_)) = pushes.message().await {} };
                let _ = tokio::time::timeout(GOODBYE_WAIT, closed).await;
                tracing::info!("draining: said goodbye to weftd");
                return Ok(());
            }
        };
        *got_push = true;
        let ack = apply(push, proxy, identity, held);
        outbound
            .send(ProxyMessage {
                message: Some(proxy_message::Message::Ack(ack)),
            })
            .await?;
    }
    Ok(())
}

/// Applies a push on top of what is held, all or nothing. A trust bundle
/// it carries goes to the workload identity first (which accepts it only
/// if the held root vouches for it).
fn apply(
    push: Push,
    proxy: &Arc<Proxy>,
    identity: Option<&Identity>,
    held: &mut BTreeMap<String, Resource>,
) -> Ack {
    if !push.trust_bundle_pem.is_empty()
        && let Some(identity) = identity
        && let Err(err) = identity.set_roots(&push.trust_bundle_pem)
    {
        tracing::error!("{err}");
    }
    let mut candidate = held.clone();
    for name in &push.removed {
        candidate.remove(name);
    }
    for resource in push.resources {
        candidate.insert(resource.name.clone(), resource);
    }
    let config = assemble(candidate.values(), &push.version);
    match proxy.apply(config, "weftd") {
        Ok(()) => {
            *held = candidate;
            Ack {
                nonce: push.nonce,
                version: push.version,
                error: String::new(),
            }
        }
        Err(err) => {
            tracing::error!(
                "config from weftd refused (NACK), the previous config keeps serving:\n  {err}"
            );
            let versions: BTreeMap<_, _> = held
                .iter()
                .map(|(name, resource)| (name.clone(), resource.version.clone()))
                .collect();
            Ack {
                nonce: push.nonce,
                version: set_version(&versions),
                error: err.to_string(),
            }
        }
    }
}

//! Pushing config to proxies.
//!
//! [`mesh::build_loop`] rebuilds the [`MeshIndex`](crate::compiler::MeshIndex)
//! after changes (debounced) and publishes it; each proxy's stream
//! ([`session`]) compiles that proxy's config from the latest index, splits
//! it into versioned resources and sends only those the proxy does not hold.
//! One push is in flight per proxy; its ACK or NACK lands on the
//! [`StatusBoard`](crate::status::StatusBoard).

pub mod mesh;
mod session;

use std::sync::Arc;

pub use crate::ca::service::{CertificateService, CertificatesServer};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::discovery::v1::discovery_server::Discovery;
pub use weft_proto::discovery::v1::discovery_server::DiscoveryServer;
use weft_proto::discovery::v1::{ProxyMessage, Push, proxy_message};

use crate::status::StatusBoard;
use mesh::{Connected, Mesh};

/// The gRPC service each proxy streams from.
pub struct DiscoveryService {
    mesh: watch::Receiver<Arc<Mesh>>,
    connected: Arc<Connected>,
    status: Arc<StatusBoard>,
    trust_bundle: Option<Arc<str>>,
}

impl DiscoveryService {
    pub fn new(
        mesh: watch::Receiver<Arc<Mesh>>,
        connected: Arc<Connected>,
        status: Arc<StatusBoard>,
    ) -> Self {
        Self {
            mesh,
            connected,
            status,
            trust_bundle: None,
        }
    }

    /// Every stream's first push carries these trust anchors (PEM).
    pub fn with_trust_bundle(mut self, pem: &str) -> Self {
        self.trust_bundle = Some(Arc::from(pem));
        self
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type StreamStream = ReceiverStream<Result<Push, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        // Who the connection proved to be (set by ca::listener).
        let caller = request
            .extensions()
            .get::<crate::ca::caller::Caller>()
            .cloned();
        tracing::debug!(?caller, "discovery stream opened");
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(ProxyMessage {
                message: Some(proxy_message::Message::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
        };
        let node = hello
            .node
            .filter(|node| !node.id.is_empty())
            .ok_or_else(|| Status::invalid_argument("Hello.node.id is required"))?;
        let (outbound, pushes) = mpsc::channel(4);
        let session = session::Session::new(
            node,
            hello.known_versions,
            self.connected.clone(),
            self.status.clone(),
        )
        .with_trust_bundle(self.trust_bundle.clone());
        tokio::spawn(session.run(inbound, outbound, self.mesh.clone()));
        Ok(Response::new(ReceiverStream::new(pushes)))
    }
}

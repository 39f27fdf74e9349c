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
        }
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type StreamStream = ReceiverStream<Result<Push, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
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
        );
        tokio::spawn(session.run(inbound, outbound, self.mesh.clone()));
        Ok(Response::new(ReceiverStream::new(pushes)))
    }
}

//! The test gRPC service (`proto/echo.proto`): unary and bidirectional
//! streaming echo, answering with the server's name.

use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    tonic::include_proto!("weft.testkit.echo");
}

pub use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest};

struct Service {
    name: String,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Service {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let message = request.into_inner().message;
        if message == "fail" {
            return Err(Status::failed_precondition("asked to fail"));
        }
        Ok(Response::new(EchoReply {
            message,
            server: self.name.clone(),
        }))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        let server = self.name.clone();
        let replies = request.into_inner().map(move |item| {
            item.map(|request| EchoReply {
                message: request.message,
                server: server.clone(),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// Starts the echo service on a loopback port.
pub async fn start(name: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|err| panic!("grpc backend cannot bind: {err}"));
    let addr = listener.local_addr().unwrap_or_else(|err| panic!("{err}"));
    let service = EchoServer::new(Service {
        name: name.to_string(),
    });
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (addr, task)
}

/// An echo client over a new channel to `addr` (a proxy listener, usually).
pub async fn connect(addr: SocketAddr) -> EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|err| panic!("endpoint for {addr}: {err}"))
        .connect()
        .await
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    EchoClient::new(channel)
}

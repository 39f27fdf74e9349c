//! The admission webhooks on `--webhook ADDR` (Istio's 15017, behind the
//! `weftd` Service's 443): `POST /validate` and `POST /inject`, over TLS with
//! the same serving certificate as `--xds` (from weftd's CA, SANs `weftd`,
//! `weftd.weft-system.svc`, loopback, `--xds-san`). What each path answers
//! is `weft_kube::webhook`; this file is the HTTP server around it.
//!
//! The API server must trust weftd's root: the webhook configurations'
//! `caBundle` is weftd's `root-cert.pem`. In Kubernetes mode (`--kubernetes`
//! in a pod, or `--kubeconfig`), weftd writes it there itself at start
//! ([`patch_ca_bundles`]), as istiod does, so `weft install` can ship the
//! configurations without one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use tokio::net::TcpListener;
use weft_kube::inject::{Settings, supports_native_sidecars};

use crate::ca::listener::ServingCert;

/// The API server sends one object per review; Kubernetes objects are at
/// most 1.5 MiB in etcd, so this leaves room for the review around it.
const MAX_BODY: usize = 4 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// weftd's webhook flags.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Serve the validation and injection webhooks here (TLS), e.g.
    /// 0.0.0.0:15017. Off unless given.
    #[arg(long = "webhook", value_name = "ADDR")]
    pub address: Option<SocketAddr>,
    /// The image injected pods run `weft-init` and `weft-proxy` from.
    #[arg(long = "proxy-image", value_name = "IMAGE", default_value_t = weft_kube::inject::default_image())]
    pub image: String,
    /// Where injected proxies reach weftd's --xds.
    #[arg(
        long = "inject-control-plane",
        default_value = "weftd.weft-system.svc:15012"
    )]
    pub control_plane: String,
    /// The Kubernetes version of the API server (e.g. 1.36): native sidecars
    /// from 1.29 on, the classic way before. Default: native.
    #[arg(long = "kube-server-version", value_name = "MAJOR.MINOR")]
    pub server_version: Option<String>,
    /// The `istio.io/rev` this injector answers to.
    #[arg(long, default_value = "default")]
    pub revision: String,
}

impl WebhookArgs {
    pub fn settings(&self) -> Settings {
        let native = self.server_version.as_deref().is_none_or(|version| {
            let (major, minor) = version.split_once('.').unwrap_or((version, ""));
            supports_native_sidecars(major, minor)
        });
        Settings {
            image: self.image.clone(),
            control_plane: self.control_plane.clone(),
            native_sidecars: native,
            revision: self.revision.clone(),
            ..Settings::default()
        }
    }
}

/// The webhook's TLS: weftd's serving certificate, no client certificate
/// (the API server authenticates nothing to webhooks by default), HTTP/2
/// or HTTP/1.1.
pub fn server_config(
    serving: Arc<ServingCert>,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// weftd's hook: with `--webhook`, binds it and serves both webhooks; with
/// a cluster `client`, also writes `roots_pem` as their caBundle.
pub async fn start(
    args: &WebhookArgs,
    serving: Arc<ServingCert>,
    provider: Arc<CryptoProvider>,
    roots_pem: &str,
    client: Option<weft_kube::kube::Client>,
    mesh: crate::meshconfig::Receiver,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(address) = args.address else {
        return Ok(None);
    };
    let tls = server_config(serving, provider)?;
    let task = listen(address, args.settings(), tls, mesh).await?;
    if let Some(client) = client {
        let roots = roots_pem.to_string();
        tokio::spawn(async move {
            if let Err(err) = patch_ca_bundles(client, &roots).await {
                tracing::error!(
                    "cannot write weftd's root into the webhook configurations (the API server \
                     will not trust --webhook until their caBundle is set): {err:#}"
                );
            }
        });
    }
    Ok(Some(task))
}

/// Binds `address` and serves the webhooks until the task is dropped.
/// Each pod is injected with the MeshConfig `defaultConfig` in force when
/// it is admitted (`mesh`), as Istio's injector does.
pub async fn listen(
    address: SocketAddr,
    settings: Settings,
    tls: Arc<ServerConfig>,
    mesh: crate::meshconfig::Receiver,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for --webhook"))?;
    tracing::info!(
        "admission webhooks (TLS) listening on {}: /validate, /inject (native sidecars: {})",
        listener.local_addr().unwrap_or(address),
        settings.native_sidecars
    );
    Ok(tokio::spawn(serve(listener, Arc::new(settings), tls, mesh)))
}

async fn serve(
    listener: TcpListener,
    settings: Arc<Settings>,
    tls: Arc<ServerConfig>,
    mesh: crate::meshconfig::Receiver,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!("--webhook accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, settings, mesh) = (acceptor.clone(), settings.clone(), mesh.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    // Most often: the API server does not trust weftd's root
                    // (the webhook configuration's caBundle is not it).
                    tracing::warn!(
                        "--webhook: TLS handshake with {peer} failed: {err} (is the webhook \
                         configuration's caBundle weftd's root-cert.pem?)"
                    );
                    return;
                }
                Err(_) => {
                    tracing::warn!("--webhook: {peer} did not finish the TLS handshake");
                    return;
                }
            };
            let service = service_fn(move |request| {
                let mut settings = (*settings).clone();
                let in_force = mesh.borrow().clone();
                settings.proxy_defaults = in_force
                    .loaded
                    .config
                    .default_config
                    .clone()
                    .unwrap_or_default();
                async move { Ok::<_, Infallible>(respond(request, &settings).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(request: Request<Incoming>, settings: &Settings) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "webhooks answer POST only".into(),
        );
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the body (limit {} MiB): {err}", MAX_BODY >> 20),
            );
        }
    };
    let path = parts.uri.path();
    // Pure and small (one object, a diff of one pod): run inline.
    let answer = weft_kube::webhook::answer(path, &body, settings);
    match answer {
        Ok(json) => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        Err(bad) => {
            tracing::warn!("--webhook {path}: {}", bad.message);
            reply(
                StatusCode::from_u16(bad.status).unwrap_or(StatusCode::BAD_REQUEST),
                bad.message,
            )
        }
    }
}

fn reply(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message + "\n")));
    *response.status_mut() = status;
    response
}

/// Writes `root_pem` as the `caBundle` of every webhook in weft's two
/// webhook configurations (`weft-validator`, `weft-sidecar-injector`), with
/// a JSON merge of just that field per webhook. A configuration that does
/// not exist is left alone (weft install may not have made it).
pub async fn patch_ca_bundles(
    client: weft_kube::kube::Client,
    root_pem: &str,
) -> anyhow::Result<()> {
    weft_kube::webhook::ca_bundle::patch(client, root_pem).await
}

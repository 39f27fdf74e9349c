//! A running `weftd` process, started by a test with its own state and ports.
//!
//! weftd serves discovery and signing over TLS on `xds`; tests whose
//! proxies register without a credential use the opt-in plaintext port
//! (`grpc`, weftd's `--plaintext-grpc`). `root_cert` is the mesh root a
//! TLS proxy holds (`--ca-root`).
//!
//! Every API call goes over TCP with the admin token weftd wrote to
//! `<state-dir>/admin-token` at start (as `weft` does); [`WeftdProcess::socket`]
//! is the unix socket, for tests of that door.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::client;

pub struct WeftdProcess {
    child: Child,
    /// `--plaintext-grpc`: discovery only, callers trusted at their word.
    pub grpc: SocketAddr,
    /// `--xds`: discovery and certificates over TLS.
    pub xds: SocketAddr,
    /// `<state-dir>/root-cert.pem`, for proxies' `--ca-root`.
    pub root_cert: PathBuf,
    pub api: SocketAddr,
    pub state_dir: PathBuf,
    /// The admin bearer token, read after start.
    pub token: String,
    log: PathBuf,
    /// The weftd binary; weft-proxy is built beside it.
    binary: PathBuf,
}

/// A token `POST /v1/tokens` minted.
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub token: String,
    pub id: String,
    pub identity: String,
}

impl WeftdProcess {
    /// Starts weftd and waits until its API answers.
    pub async fn start(
        binary: &Path,
        state_dir: &Path,
        grpc: SocketAddr,
        api: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_with(binary, state_dir, grpc, api, &[]).await
    }

    /// [`start`](Self::start) on fresh loopback addresses, its state in
    /// `dir/store`.
    pub async fn start_in(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        Self::start(
            binary,
            &dir.join("store"),
            crate::free_addr(),
            crate::free_addr(),
        )
        .await
    }

    /// [`start`](Self::start) with more flags (e.g. `--cacerts DIR`), `--xds`
    /// on a fresh loopback address.
    pub async fn start_with(
        binary: &Path,
        state_dir: &Path,
        grpc: SocketAddr,
        api: SocketAddr,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_at(binary, state_dir, grpc, crate::free_addr(), api, extra).await
    }

    /// weftd on all of its addresses (a restart keeps the `xds` address the
    /// proxies know).
    pub async fn start_at(
        binary: &Path,
        state_dir: &Path,
        grpc: SocketAddr,
        xds: SocketAddr,
        api: SocketAddr,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let log = state_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(binary)
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--plaintext-grpc")
            .arg(grpc.to_string())
            .arg("--xds")
            .arg(xds.to_string())
            .arg("--api")
            .arg(api.to_string())
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("WEFT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let mut weftd = Self {
            child,
            grpc,
            xds,
            root_cert: state_dir.join("root-cert.pem"),
            api,
            state_dir: state_dir.to_path_buf(),
            token: String::new(),
            log,
            binary: binary.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = weftd.child.try_wait()? {
                bail!("weftd exited ({status}); log:\n{}", weftd.logs());
            }
            // The token file exists before the API listens.
            if let Ok(token) = std::fs::read_to_string(weftd.token_file()) {
                weftd.token = token.trim().to_string();
                if weftd
                    .call(http::Method::GET, "/v1/proxies", None)
                    .await
                    .is_ok_and(|r| r.status == 200)
                {
                    return Ok(weftd);
                }
            }
            if Instant::now() > deadline {
                bail!("weftd API not up after 20s; log:\n{}", weftd.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// A weft-proxy (the one built beside this weftd) taking its config
    /// from the plaintext discovery port with `args`, once it is ready.
    pub async fn plaintext_proxy(
        &self,
        args: &[&str],
    ) -> anyhow::Result<crate::proxy::ProxyProcess> {
        let binary = self.binary.with_file_name("weft-proxy");
        let options = crate::proxy::ProxyOptions::control_plane(&binary, self.grpc, args);
        crate::proxy::ProxyProcess::spawn_ready(options, Duration::from_secs(20)).await
    }

    /// Istio's ingress gateway on the plaintext discovery port: a
    /// `weft-proxy --router` in istio-system labelled `label` (what Gateway
    /// resources select), with `extra` flags, once it is ready.
    pub async fn ingress_gateway(
        &self,
        label: &str,
        extra: &[&str],
    ) -> anyhow::Result<crate::proxy::ProxyProcess> {
        let mut args = vec![
            "--router",
            "--workload",
            "istio-ingressgateway",
            "--namespace",
            "istio-system",
            "--label",
            label,
        ];
        args.extend_from_slice(extra);
        self.plaintext_proxy(&args).await
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where weftd keeps the admin token (for `weft --token-file`).
    pub fn token_file(&self) -> PathBuf {
        self.state_dir.join("admin-token")
    }

    /// The API's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("api.sock")
    }

    /// One API call over TCP with the admin token; `body` is sent as JSON.
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<client::Reply> {
        let authorization = format!("Bearer {}", self.token);
        let host = self.api.to_string();
        let mut headers = vec![("authorization", authorization.as_str())];
        let body = match body {
            Some(body) => {
                headers.push(("content-type", "application/json"));
                client::full(body)
            }
            None => client::empty(),
        };
        let request = client::request_with_headers(method, &host, path, &headers, body);
        client::Http1Client::connect(self.api)
            .await?
            .send(request)
            .await
    }

    /// `POST /v1/apply` with YAML (sent as `{"text": ...}`); the reply.
    pub async fn apply(&self, yaml: &str) -> anyhow::Result<client::Reply> {
        let body = serde_json::json!({ "text": yaml, "source": "test" }).to_string();
        self.call(http::Method::POST, "/v1/apply", Some(body)).await
    }

    /// `POST /v1/delete` with YAML naming the objects; the reply.
    pub async fn delete(&self, yaml: &str) -> anyhow::Result<client::Reply> {
        let body = serde_json::json!({ "text": yaml, "source": "test" }).to_string();
        self.call(http::Method::POST, "/v1/delete", Some(body))
            .await
    }

    /// `POST /v1/tokens`: a bootstrap token admitting a proxy into the
    /// WorkloadGroup `namespace`/`group` (which must have been applied).
    pub async fn mint_token(&self, namespace: &str, group: &str) -> anyhow::Result<String> {
        Ok(self
            .mint_token_with(namespace, group, None, None)
            .await?
            .token)
    }

    /// A token for a proxy that only needs the identity
    /// `namespace`/`service_account`: applies a WorkloadGroup of that name
    /// naming that service account (no labels), then mints for it.
    pub async fn mint_token_for_account(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<String> {
        let group = format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {{name: {service_account}, namespace: {namespace}}}\nspec: {{template: {{serviceAccount: {service_account}}}}}\n"
        );
        let reply = self.apply(&group).await?;
        if reply.status != 200 {
            bail!(
                "applying WorkloadGroup {namespace}/{service_account}: {}",
                reply.text()
            );
        }
        self.mint_token(namespace, service_account).await
    }

    /// [`mint_token`](Self::mint_token) bound to `address` and/or with a
    /// `ttl` ("30s", "1h").
    pub async fn mint_token_with(
        &self,
        namespace: &str,
        group: &str,
        address: Option<std::net::IpAddr>,
        ttl: Option<&str>,
    ) -> anyhow::Result<MintedToken> {
        let mut body = serde_json::json!({ "namespace": namespace, "workloadGroup": group });
        if let Some(address) = address {
            body["address"] = address.to_string().into();
        }
        if let Some(ttl) = ttl {
            body["ttl"] = ttl.into();
        }
        let reply = self
            .call(http::Method::POST, "/v1/tokens", Some(body.to_string()))
            .await?;
        if reply.status != 200 {
            bail!("POST /v1/tokens: {} {}", reply.status, reply.text());
        }
        let answer: serde_json::Value = serde_json::from_slice(&reply.body)
            .with_context(|| format!("POST /v1/tokens: not JSON: {}", reply.text()))?;
        let field = |name: &str| {
            answer[name]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("POST /v1/tokens: no {name} in {answer}"))
        };
        Ok(MintedToken {
            token: field("token")?,
            id: field("id")?,
            identity: field("identity")?,
        })
    }

    /// `DELETE /v1/tokens/<id>`: revokes one token.
    pub async fn revoke_token(&self, id: &str) -> anyhow::Result<()> {
        let reply = self
            .call(http::Method::DELETE, &format!("/v1/tokens/{id}"), None)
            .await?;
        if reply.status != 200 {
            bail!("DELETE /v1/tokens/{id}: {} {}", reply.status, reply.text());
        }
        Ok(())
    }

    /// `GET /v1/proxies` as text (JSON).
    pub async fn proxies(&self) -> anyhow::Result<String> {
        Ok(self
            .call(http::Method::GET, "/v1/proxies", None)
            .await?
            .text())
    }

    /// Stops weftd abruptly (SIGKILL) and waits for it to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

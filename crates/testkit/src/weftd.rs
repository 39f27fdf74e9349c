//! A running `weftd` process, started by a test with its own state and ports.
//!
//! weftd serves discovery and signing over TLS on `xds`; tests whose
//! proxies register without a credential use the opt-in plaintext port
//! (`grpc`, weftd's `--plaintext-grpc`). `root_cert` is the mesh root a
//! TLS proxy holds (`--ca-root`).

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
    log: PathBuf,
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
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = weftd.child.try_wait()? {
                bail!("weftd exited ({status}); log:\n{}", weftd.logs());
            }
            if client::get(api, "weftd", "/v1/proxies")
                .await
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(weftd);
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

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `POST /v1/apply` with YAML; the reply body.
    pub async fn apply(&self, yaml: &str) -> anyhow::Result<client::Reply> {
        let request = client::request(
            http::Method::POST,
            "weftd",
            "/v1/apply",
            client::full(yaml.to_string()),
        );
        client::Http1Client::connect(self.api)
            .await?
            .send(request)
            .await
    }

    /// A bootstrap token for one workload: applies WorkloadGroup `group`
    /// in `namespace` (these labels, this service account), then mints a
    /// token for it (`POST /v1/tokens {"namespace","workloadGroup"}`).
    pub async fn mint_token_for_group(
        &self,
        namespace: &str,
        group: &str,
        labels: &[(&str, &str)],
        service_account: &str,
    ) -> anyhow::Result<String> {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}: {v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let group_yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {{name: {group}, \
             namespace: {namespace}}}\nspec:\n  metadata: {{labels: {{{labels}}}}}\n  template: \
             {{serviceAccount: {service_account}}}\n"
        );
        let applied = self.apply(&group_yaml).await?;
        if applied.status != 200 {
            bail!(
                "apply WorkloadGroup {group}: {} {}",
                applied.status,
                applied.text()
            );
        }
        let body = format!(r#"{{"namespace":"{namespace}","workloadGroup":"{group}"}}"#);
        match self.post_token(body).await?.map(token_of) {
            Ok(token) => token,
            // A weftd whose API predates workload groups (until the token
            // API change is merged): the same identity, unbound.
            Err(reply) if reply.status == 400 => self
                .post_token(format!(
                    r#"{{"namespace":"{namespace}","serviceAccount":"{service_account}"}}"#
                ))
                .await?
                .map_err(|reply| {
                    anyhow::anyhow!("POST /v1/tokens: {} {}", reply.status, reply.text())
                })
                .and_then(token_of),
            Err(reply) => bail!("POST /v1/tokens: {} {}", reply.status, reply.text()),
        }
    }

    /// A bootstrap token for `service_account` in `namespace`, through a
    /// WorkloadGroup of the same name with no labels.
    pub async fn mint_token(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<String> {
        self.mint_token_for_group(namespace, service_account, &[], service_account)
            .await
    }

    /// `POST /v1/tokens` with the JSON `body`: the answer
    /// (`{"token","id",...}`), or the refusal.
    pub async fn post_token(
        &self,
        body: String,
    ) -> anyhow::Result<Result<serde_json::Value, client::Reply>> {
        let mut request = client::request(
            http::Method::POST,
            "weftd",
            "/v1/tokens",
            client::full(body),
        );
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let reply = client::Http1Client::connect(self.api)
            .await?
            .send(request)
            .await?;
        if reply.status != 200 {
            return Ok(Err(reply));
        }
        let text = reply.text();
        let json = serde_json::from_str(&text)
            .with_context(|| format!("POST /v1/tokens: not JSON: {text}"))?;
        Ok(Ok(json))
    }

    /// `DELETE /v1/tokens/<id>`: revokes one token; the reply.
    pub async fn revoke_token(&self, id: &str) -> anyhow::Result<client::Reply> {
        let request = client::request(
            http::Method::DELETE,
            "weftd",
            &format!("/v1/tokens/{id}"),
            client::full(String::new()),
        );
        client::Http1Client::connect(self.api)
            .await?
            .send(request)
            .await
    }

    /// `GET /v1/proxies` as text (JSON).
    pub async fn proxies(&self) -> anyhow::Result<String> {
        Ok(client::get(self.api, "weftd", "/v1/proxies").await?.text())
    }

    /// Stops weftd abruptly (SIGKILL) and waits for it to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// The `token` of a `POST /v1/tokens` answer.
fn token_of(answer: serde_json::Value) -> anyhow::Result<String> {
    answer
        .get("token")
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .with_context(|| format!("POST /v1/tokens: no token in {answer}"))
}

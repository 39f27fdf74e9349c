//! A real Kubernetes API server for tests: etcd and `kube-apiserver` on
//! loopback, started from the binary named by `WEFT_TEST_KUBE_APISERVER`
//! (etcd from `WEFT_TEST_ETCD`, else `etcd` on the PATH).
//!
//! There is no kubelet, scheduler or controller manager: [`KubeCluster`]
//! plays their part where a test needs it (namespaces, service accounts,
//! Services, EndpointSlices, Pods with `status.podIP` written through the
//! status subresource, pod-bound service-account tokens from TokenRequest).
//!
//! The server trusts one static admin token (group `system:masters`) and
//! authorizes with RBAC, serves with a certificate from a throw-away CA
//! (written to `ca.crt`), signs service-account tokens with its own P-256
//! key for the audiences [`AUDIENCES`], and keeps its state in one temp
//! dir. Dropping the cluster stops both processes by PID.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, PodCondition, PodIP, PodStatus, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use tokio::process::{Child, Command};

/// The audiences the API server accepts in service-account tokens: its own
/// issuer (for ordinary in-cluster clients) and Istio's CA audience, which
/// weftd asks for in TokenReview.
pub const AUDIENCES: &[&str] = &["https://kubernetes.default.svc.cluster.local", "istio-ca"];

/// The static admin token (group `system:masters`).
const ADMIN_TOKEN: &str = "weft-test-admin";

/// Every CustomResourceDefinition in the repository's `manifests/crds/`
/// (Istio's and Weft's), in file order.
pub fn weft_crds() -> anyhow::Result<Vec<serde_json::Value>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("{}: not YAML", file.display()))?;
        crds.extend(documents.into_iter().filter(|doc| {
            doc.get("kind").and_then(serde_json::Value::as_str) == Some("CustomResourceDefinition")
        }));
    }
    Ok(crds)
}

/// The `kube-apiserver` binary, or `None` after saying plainly that `test`
/// skipped (CI has no API server; the tests that need one say so).
pub fn apiserver_or_skip(test: &str) -> Option<PathBuf> {
    match std::env::var_os("WEFT_TEST_KUBE_APISERVER") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            eprintln!(
                "{test}: skipped: WEFT_TEST_KUBE_APISERVER is not set (the path of a \
                 kube-apiserver binary; etcd comes from WEFT_TEST_ETCD or the PATH)"
            );
            None
        }
    }
}

/// etcd and a kube-apiserver, and an admin client for them.
pub struct KubeCluster {
    etcd: Child,
    apiserver: Option<Child>,
    binary: PathBuf,
    dir: tempfile::TempDir,
    etcd_url: String,
    /// `https://IP:PORT` of the API server.
    pub url: String,
    /// A kubeconfig with the admin token and the serving CA.
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
}

impl KubeCluster {
    /// Starts etcd and the API server and waits until `/readyz` answers ok.
    pub async fn start(apiserver: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir for the API server")?;
        let (etcd, etcd_url) = start_etcd(dir.path()).await?;
        let bind = crate::free_addr();
        let url = format!("https://{bind}");
        write_credentials(dir.path(), bind.ip())?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_text(&url, &dir.path().join("ca.crt")),
        )
        .context("writing the kubeconfig")?;
        let client = client_for(&kubeconfig).await?;
        let mut cluster = Self {
            etcd,
            apiserver: None,
            binary: apiserver.to_path_buf(),
            dir,
            etcd_url,
            url,
            kubeconfig,
            client,
        };
        cluster.start_apiserver().await?;
        Ok(cluster)
    }

    /// The API server's log so far.
    pub fn apiserver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// The directory holding the server's files (kubeconfig, ca.crt, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the API server (SIGTERM, then waits) and starts it again on
    /// the same address with the same etcd: every object survives.
    pub async fn restart_apiserver(&mut self) -> anyhow::Result<()> {
        self.stop_apiserver().await;
        self.start_apiserver().await
    }

    /// Stops the API server only (etcd keeps running).
    pub async fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            terminate(&mut child).await;
        }
    }

    /// Starts the API server (again) and waits for `/readyz`.
    pub async fn start_apiserver(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let address = self
            .url
            .strip_prefix("https://")
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .context("the server URL is https://IP:PORT")?;
        let file = |name: &str| dir.join(name).display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("apiserver.log"))
            .context("the API server's log file")?;
        let child = Command::new(&self.binary)
            .args([
                format!("--etcd-servers={}", self.etcd_url),
                format!("--bind-address={}", address.ip()),
                format!("--advertise-address={}", address.ip()),
                format!("--secure-port={}", address.port()),
                format!("--cert-dir={}", file("certs")),
                format!("--tls-cert-file={}", file("serving.crt")),
                format!("--tls-private-key-file={}", file("serving.key")),
                format!("--token-auth-file={}", file("tokens.csv")),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", file("sa.pub")),
                format!("--service-account-signing-key-file={}", file("sa.key")),
                format!("--api-audiences={}", AUDIENCES.join(",")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                // The endpoints reconciler would write a loopback address
                // into `default/kubernetes`, which validation refuses.
                "--endpoint-reconciler-type=none".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                "--enable-priority-and-fairness=false".into(),
                "-v=1".into(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.apiserver = Some(child);
        self.wait_ready(Duration::from_secs(90)).await
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.apiserver.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "kube-apiserver exited ({status}) before it was ready; log:\n{}",
                    tail(&self.apiserver_log(), 40)
                );
            }
            let request = http::Request::get("/readyz").body(Vec::new())?;
            let last = match self.client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(err) => err.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after {limit:?} ({last}); log:\n{}",
                    tail(&self.apiserver_log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Creates a namespace with these labels and its `default` service
    /// account (the controller manager's job).
    pub async fn namespace(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<()> {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels}
        }))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        self.service_account(name, "default").await
    }

    pub async fn service_account(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        let account: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &account)
            .await
            .with_context(|| format!("creating service account {namespace}/{name}"))?;
        Ok(())
    }

    /// Creates any namespaced object given as JSON (`apiVersion`, `kind`
    /// and `metadata.name` set; the plural is the lower-cased kind + "s").
    pub async fn create(
        &self,
        namespace: &str,
        object: serde_json::Value,
    ) -> anyhow::Result<DynamicObject> {
        let (resource, object) = dynamic(object)?;
        Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource)
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating {} in {namespace}", resource.kind))
    }

    /// Creates a cluster-scoped object (a Node, ...) given as JSON.
    pub async fn create_cluster_scoped(
        &self,
        object: serde_json::Value,
    ) -> anyhow::Result<DynamicObject> {
        let (resource, object) = dynamic(object)?;
        Api::<DynamicObject>::all_with(self.client.clone(), &resource)
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating {}", resource.kind))
    }

    /// Creates or replaces a namespaced object (server-side apply).
    pub async fn apply(
        &self,
        namespace: &str,
        object: serde_json::Value,
    ) -> anyhow::Result<DynamicObject> {
        let (resource, object) = dynamic(object)?;
        let name = object.metadata.name.clone().unwrap_or_default();
        Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource)
            .patch(
                &name,
                &PatchParams::apply("weft-test").force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("applying {} {namespace}/{name}", resource.kind))
    }

    /// Deletes a namespaced object named in `object` (JSON as for
    /// [`create`](Self::create); only apiVersion, kind and name are read).
    pub async fn delete(&self, namespace: &str, object: serde_json::Value) -> anyhow::Result<()> {
        let (resource, object) = dynamic(object)?;
        let name = object.metadata.name.clone().unwrap_or_default();
        Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource)
            .delete(&name, &Default::default())
            .await
            .with_context(|| format!("deleting {} {namespace}/{name}", resource.kind))?;
        Ok(())
    }

    /// Installs Weft's own CRDs ([`weft_crds`]), as `weft install` does.
    pub async fn install_weft_crds(&self) -> anyhow::Result<()> {
        self.install_crds(&weft_crds()?).await
    }

    /// Creates CustomResourceDefinitions (JSON objects) and waits until the
    /// API server serves each (condition `Established`).
    pub async fn install_crds(&self, crds: &[serde_json::Value]) -> anyhow::Result<()> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api = Api::<CustomResourceDefinition>::all(self.client.clone());
        let mut names = Vec::new();
        for crd in crds {
            let crd: CustomResourceDefinition =
                serde_json::from_value(crd.clone()).context("a CRD")?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.create(&PostParams::default(), &crd)
                .await
                .with_context(|| format!("creating CRD {name}"))?;
            names.push(name);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in names {
            loop {
                let crd = api
                    .get(&name)
                    .await
                    .with_context(|| format!("CRD {name}"))?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("CRD {name} is not established after 30 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Creates a Pod as the scheduler and kubelet would leave it: bound to
    /// `node`, Running and Ready with `ip` as its address. Returns its uid.
    pub async fn running_pod(
        &self,
        namespace: &str,
        pod: serde_json::Value,
        node: &str,
        ip: std::net::IpAddr,
    ) -> anyhow::Result<Pod> {
        let mut pod: Pod = serde_json::from_value(pod).context("the pod JSON")?;
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        let pods = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .context("creating the pod")?;
        let name = created.metadata.name.clone().unwrap_or_default();
        let status = PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.to_string()),
            pod_ips: Some(vec![PodIP { ip: ip.to_string() }]),
            host_ip: Some("127.0.0.1".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        };
        let patch = serde_json::json!({"status": status});
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("writing the status of pod {namespace}/{name}"))
    }

    /// A service-account token bound to `pod` (what the kubelet projects),
    /// for `audience`, valid for an hour.
    pub async fn pod_token(&self, pod: &Pod, audience: &str) -> anyhow::Result<String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.to_string()]),
                expiration_seconds: Some(3600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            }),
            ..TokenRequest::default()
        };
        let answered = Api::<ServiceAccount>::namespaced(self.client.clone(), &namespace)
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for {namespace}/{account}"))?;
        answered
            .status
            .and_then(|s| s.token)
            .context("the TokenRequest came back without a token")
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL to both; etcd's data is in the temp dir.
        if let Some(child) = self.apiserver.as_mut() {
            let _ = child.start_kill();
        }
        let _ = self.etcd.start_kill();
    }
}

/// The resource of a JSON object and the object as kube-rs takes it.
fn dynamic(object: serde_json::Value) -> anyhow::Result<(ApiResource, DynamicObject)> {
    let text = |key: &str| {
        object
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("the object has no {key}"))
    };
    let (api_version, kind) = (text("apiVersion")?, text("kind")?);
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    let gvk = GroupVersionKind::gvk(group, version, &kind);
    let plural = plural(&kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let object: DynamicObject = serde_json::from_value(object).context("the object JSON")?;
    Ok((resource, object))
}

/// Kubernetes plurals of the kinds tests create.
fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.as_str() {
        "endpointslice" => "endpointslices".into(),
        _ if lower.ends_with('y') && !lower.ends_with("ay") => {
            format!("{}ies", &lower[..lower.len() - 1])
        }
        _ if lower.ends_with('s') => format!("{lower}es"),
        _ => format!("{lower}s"),
    }
}

async fn start_etcd(dir: &Path) -> anyhow::Result<(Child, String)> {
    let binary = std::env::var_os("WEFT_TEST_ETCD").unwrap_or_else(|| "etcd".into());
    let (client, peer) = (crate::free_addr(), crate::free_addr());
    let url = format!("http://{client}");
    let peer_url = format!("http://{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).context("etcd's log file")?;
    let mut child = Command::new(&binary)
        .args([
            "--name=weft-test".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=weft-test={peer_url}"),
            "--log-level=warn".into(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("log file")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start etcd ({binary:?}; set WEFT_TEST_ETCD)"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "etcd exited ({status}); log:\n{}",
                std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
            );
        }
        if tokio::net::TcpStream::connect(client).await.is_ok() {
            return Ok((child, url));
        }
        if Instant::now() > deadline {
            bail!("etcd is not listening on {client} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The serving CA and certificate, the service-account key pair and the
/// static token file.
fn write_credentials(dir: &Path, ip: std::net::IpAddr) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "weft-test-apiserver-ca");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    params.subject_alt_names.push(SanType::IpAddress(ip));
    let serving = params.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("ca.crt"), ca.pem())?;
    std::fs::write(dir.join("serving.crt"), serving.pem())?;
    std::fs::write(dir.join("serving.key"), key.serialize_pem())?;
    let sa = KeyPair::generate()?;
    std::fs::write(dir.join("sa.key"), sa.serialize_pem())?;
    std::fs::write(dir.join("sa.pub"), sa.public_key_pem())?;
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{ADMIN_TOKEN},weft-test-admin,weft-test-admin,\"system:masters\"\n"),
    )?;
    Ok(())
}

fn kubeconfig_text(url: &str, ca: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
         certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n\
         current-context: test\n",
        ca.display()
    )
}

/// A client from a kubeconfig file, as weftd's `--kubeconfig` reads it.
pub async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("using {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("building the client")
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_of_the_kinds_tests_create() {
        assert_eq!(plural("VirtualService"), "virtualservices");
        assert_eq!(plural("AuthorizationPolicy"), "authorizationpolicies");
        assert_eq!(plural("EndpointSlice"), "endpointslices");
        assert_eq!(plural("Service"), "services");
        assert_eq!(plural("Gateway"), "gateways");
        assert_eq!(plural("ServiceEntry"), "serviceentries");
        assert_eq!(plural("Telemetry"), "telemetries");
    }
}

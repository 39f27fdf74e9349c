//! The running mesh: start-up in order (weftd, node, pods, sidecars, apps,
//! ingress), supervision (restarts with backoff), and teardown in reverse. Every step records
//! what it makes in the state file *before* making it, so a failure at any
//! point is undone completely, here or by `weft down`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixStream};
use tokio::task::JoinHandle;

use super::Signals;
use super::identity;
use super::network::{self, NsSockets};
use super::plan::{Plan, Pod, Role};
use super::pod::{self, PodView};
use super::process::{self, Change, Proc, ProcRecord, Spec};
use super::relay::{self, Upstream};
use super::state::{self, State};

/// weftd's API must answer within this after start.
const WEFTD_TIMEOUT: Duration = Duration::from_secs(20);
/// Sidecars: start, connect through the relay, get their first config.
const SIDECAR_TIMEOUT: Duration = Duration::from_secs(30);
/// Apps: start listening on their declared ports.
const APP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Running {
    plan: Plan,
    state: State,
    run_dir: PathBuf,
    weftd: Vec<Proc>,
    sidecars: Vec<Proc>,
    apps: Vec<Proc>,
    relays: Vec<JoinHandle<()>>,
    /// (host address, gateway pod, pod port) of every exposed port.
    ingress: Vec<(SocketAddr, String, SocketAddr)>,
    api: Option<SocketAddr>,
}

impl Running {
    /// Takes the mesh's name: refuses if a runner of that name is alive,
    /// cleans up after one that crashed, and refuses namespaces it did not
    /// make.
    pub fn claim(plan: Plan) -> anyhow::Result<Self> {
        if let Some(old) = State::load(&plan.name)? {
            if old.runner_alive() {
                bail!(
                    "mesh {:?} is already running (pid {}); stop it with `weft down {}`",
                    plan.name,
                    old.runner.as_ref().map_or(0, |r| r.pid),
                    plan.name
                );
            }
            note!(
                "weft up: cleaning up after an earlier run of {:?} that did not stop cleanly",
                plan.name
            );
            let problems = old.clean_up();
            if !problems.is_empty() {
                bail!("cannot clean up the earlier run: {}", problems.join("; "));
            }
        }
        let namespaces =
            std::iter::once(&plan.node_netns).chain(plan.pods.iter().map(|p| &p.netns));
        for netns in namespaces {
            if network::netns_exists(netns) {
                bail!(
                    "network namespace {netns} exists but no state file records it; if it is a leftover of weft, remove it with `ip netns del {netns}`"
                );
            }
        }
        let run_dir = state::run_dir(&plan.name);
        let state = State {
            name: plan.name.clone(),
            dir: plan.dir.clone(),
            runner: Some(ProcRecord::of_self("weft up")),
            ..State::default()
        };
        Ok(Self {
            plan,
            state,
            run_dir,
            weftd: Vec::new(),
            sidecars: Vec::new(),
            apps: Vec::new(),
            relays: Vec::new(),
            ingress: Vec::new(),
            api: None,
        })
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.run_dir.join("logs")
    }

    pub async fn start(
        &mut self,
        ingress: Option<SocketAddr>,
        api: Option<SocketAddr>,
    ) -> anyhow::Result<()> {
        // A fresh run: earlier logs and weftd's store go (the mesh's
        // config is DIR; `weft apply` changes last until `weft down`).
        let logs = self.logs_dir();
        let _ = std::fs::remove_dir_all(&logs);
        let _ = std::fs::remove_dir_all(self.run_dir.join("weftd"));
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        self.state.save()?;

        // Host ports first: a taken port fails before anything is made.
        let listeners = self.bind_ingress(ingress).await?;
        let api = pick_api(api).await?;
        // weftd's TLS discovery and certificates (`--xds`), relayed into
        // the node; weftd serves no plaintext port here.
        let xds = free_loopback_port().await?;
        let began = Instant::now();
        let step = |what: &str| note!("weft up: {what} ({:.1}s)", began.elapsed().as_secs_f64());
        self.start_weftd(api, xds).await?;
        step(&format!("weftd ready, API on {api}"));

        self.state.namespaces.push(self.plan.node_netns.clone());
        self.state.save()?;
        network::create_node(&self.plan)?;
        let node = Arc::new(NsSockets::enter(&self.plan.node_netns)?);
        let discovery = node
            .listen(self.plan.discovery_address())
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} in the node",
                    self.plan.discovery_address()
                )
            })?;
        self.relays
            .push(relay::spawn(discovery, Upstream::Host(xds), "discovery"));

        for pod in &self.plan.pods {
            // Pods before the node in the list: deleted first.
            self.state.namespaces.insert(0, pod.netns.clone());
            self.state.etc_dirs.push(network::etc_dir(&pod.netns));
            self.state.save()?;
            network::create_pod(&self.plan, pod)
                .with_context(|| format!("pod {}: cannot set up its network", pod.name))?;
            network::write_etc(pod, &self.plan.hosts_file(pod))?;
            if matches!(pod.role, Role::Workload { .. }) {
                network::intercept(pod, self.plan.dns_capture)?;
            }
        }

        step(&format!("node and {} pods created", self.plan.pods.len()));
        self.state.runtime_dir = Some(self.plan.runtime_dir.clone());
        self.state.save()?;
        pod::make_dirs(&self.plan)?;
        identity::issue_tokens(&self.api_socket(), &self.plan).await?;
        // The mesh root the sidecars verify weftd with (--ca-root), held by
        // each sidecar in its own pod directory (weftd's state is hidden).
        identity::hand_out_root(
            &self.plan,
            &self.run_dir.join("weftd").join("root-cert.pem"),
        )?;
        step("workload identities issued");
        let sidecars: Vec<(String, Vec<String>, PodView)> = self
            .plan
            .pods
            .iter()
            .map(|pod| {
                let view = PodView::of(&self.plan, pod, false);
                (pod.name.clone(), self.sidecar_argv(pod), view)
            })
            .collect();
        for (pod, argv, view) in sidecars {
            let proc = process::spawn(Spec {
                label: format!("{pod} sidecar"),
                argv,
                env: Vec::new(),
                cwd: PathBuf::from("/"),
                log: logs.join(format!("{pod}-sidecar.log")),
                view: Some(view),
            })?;
            self.track(proc, Kind::Sidecar)?;
        }
        // Like holdApplicationUntilProxyStarts: no app before its sidecar
        // is ready (has its first config from weftd).
        let deadline = Instant::now() + SIDECAR_TIMEOUT;
        for (pod, sidecar) in self.plan.pods.iter().zip(self.sidecars.iter_mut()) {
            wait_ready(&node, pod, sidecar, deadline).await?;
        }
        step("sidecars ready");

        let mut apps = Vec::new();
        for pod in &self.plan.pods {
            let Role::Workload { command, env, .. } = &pod.role else {
                continue;
            };
            let argv = command.clone();
            let view = PodView::of(&self.plan, pod, true);
            let home = self.plan.pod_dir(pod).join("app");
            let mut vars = vec![
                // Its own writable directory; the runner's HOME is root's.
                ("HOME".to_string(), home.display().to_string()),
                ("POD_NAME".to_string(), pod.name.clone()),
                ("POD_NAMESPACE".to_string(), pod.namespace.clone()),
                ("POD_IP".to_string(), pod.ip.to_string()),
                ("SERVICE_ACCOUNT".to_string(), pod.service_account.clone()),
            ];
            vars.extend(env.iter().cloned());
            apps.push((pod.name.clone(), argv, vars, view));
        }
        for (pod, argv, vars, view) in apps {
            let proc = process::spawn(Spec {
                label: format!("{pod} app"),
                argv,
                env: vars,
                cwd: self.plan.dir.clone(),
                log: logs.join(format!("{pod}-app.log")),
                view: Some(view),
            })?;
            self.track(proc, Kind::App)?;
        }
        let deadline = Instant::now() + APP_TIMEOUT;
        let workloads = self
            .plan
            .pods
            .iter()
            .filter(|p| matches!(p.role, Role::Workload { .. }));
        for (pod, app) in workloads.zip(self.apps.iter_mut()) {
            wait_listening(pod, app, deadline).await?;
        }
        step("apps listening");

        for (listener, (host, _, target)) in listeners.into_iter().zip(&self.ingress) {
            self.relays.push(relay::spawn(
                listener,
                Upstream::Namespace(node.clone(), *target),
                "ingress",
            ));
            self.state.ingress.push(host.to_string());
        }
        self.state.save()
    }

    /// Binds every exposed host address now; relays start once the
    /// gateways are ready. `--ingress` replaces the first one.
    async fn bind_ingress(
        &mut self,
        first: Option<SocketAddr>,
    ) -> anyhow::Result<Vec<TcpListener>> {
        let mut listeners = Vec::new();
        for pod in &self.plan.pods {
            let Role::Gateway { expose } = &pod.role else {
                continue;
            };
            for rule in expose {
                let host = match (first, self.ingress.is_empty()) {
                    (Some(given), true) => given,
                    _ => rule.host_address,
                };
                let listener = TcpListener::bind(host).await.with_context(|| {
                    format!("cannot listen on {host} for gateway {} (in use? choose another with --ingress ADDR)", pod.workload)
                })?;
                self.ingress.push((
                    host,
                    pod.name.clone(),
                    SocketAddr::from((pod.ip, rule.port)),
                ));
                listeners.push(listener);
            }
        }
        if first.is_some() && self.ingress.is_empty() {
            note!("weft up: --ingress ignored: the mesh file has no gateway with `expose`");
        }
        Ok(listeners)
    }

    /// weftd's API socket (in its state directory): root's, no token.
    fn api_socket(&self) -> PathBuf {
        self.run_dir.join("weftd").join("api.sock")
    }

    async fn start_weftd(&mut self, api: SocketAddr, xds: SocketAddr) -> anyhow::Result<()> {
        let bin_dir = self.bin_dir();
        let argv = vec![
            bin_dir.join("weftd").display().to_string(),
            "--state-dir".into(),
            self.run_dir.join("weftd").display().to_string(),
            "--config-dir".into(),
            self.plan.dir.display().to_string(),
            "--xds".into(),
            xds.to_string(),
            "--api".into(),
            api.to_string(),
        ];
        let proc = process::spawn(Spec {
            label: "weftd".into(),
            argv,
            env: Vec::new(),
            cwd: self.run_dir.clone(),
            log: self.logs_dir().join("weftd.log"),
            view: None,
        })?;
        self.track(proc, Kind::Weftd)?;
        let deadline = Instant::now() + WEFTD_TIMEOUT;
        loop {
            // weftd's socket: no token needed (file permissions, as root).
            if let Ok(stream) = UnixStream::connect(&self.api_socket()).await
                && let Ok((StatusCode::OK, _)) =
                    exchange(stream, Method::GET, "/v1/proxies", None).await
            {
                break;
            }
            let weftd = &mut self.weftd[0];
            if let Some(status) = weftd.exited() {
                bail!("weftd exited ({status})\n{}", weftd.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "weftd's API did not answer on {api} within {WEFTD_TIMEOUT:?}\n{}",
                    weftd.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.api = Some(api);
        self.state.api = Some(api.to_string());
        self.state.api_socket = Some(self.api_socket());
        self.state.api_token_file = Some(self.run_dir.join("weftd").join("admin-token"));
        self.state.save()?;
        if self.plan.pods.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_vec(&self.plan.mesh_resources())?;
        let stream = UnixStream::connect(self.api_socket())
            .await
            .context("connecting to weftd's API socket")?;
        let (status, answer) = exchange(stream, Method::POST, "/v1/apply", Some(body))
            .await
            .context("registering the mesh's services and workload groups with weftd")?;
        if status != StatusCode::OK {
            bail!(
                "weftd refused the mesh's services and workload groups ({status}): {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(())
    }

    /// `weft-proxy` as its pod's view shows it, and its flags.
    fn sidecar_argv(&self, pod: &Pod) -> Vec<String> {
        let proxy = self.plan.view_bin_dir().join("weft-proxy");
        let mut argv = vec![proxy.display().to_string()];
        let mut flags = vec![
            "--control-plane".to_string(),
            self.plan.discovery_address().to_string(),
            // Unique per replica; the workload name is shared.
            "--node-id".into(),
            format!("{}.{}", pod.name, pod.namespace),
            "--workload".into(),
            pod.workload.clone(),
            "--namespace".into(),
            pod.namespace.clone(),
            "--service-account".into(),
            pod.service_account.clone(),
            "--address".into(),
            pod.ip.to_string(),
        ];
        for (key, value) in &pod.labels {
            flags.push("--label".into());
            flags.push(format!("{key}={value}"));
        }
        match &pod.role {
            Role::Workload { ports, metrics, .. } => {
                flags.push("--capture".into());
                if self.plan.dns_capture {
                    flags.push("--dns-capture".into());
                }
                // Istio's merged metrics port, with the app's when declared.
                flags.push("--merged-metrics".into());
                flags.push("0.0.0.0:15020".into());
                if let Some(metrics) = metrics {
                    flags.push("--app-metrics".into());
                    flags.push(metrics.clone());
                }
                for (port, protocol) in ports {
                    flags.push("--port".into());
                    flags.push(match protocol {
                        Some(protocol) => format!("{port}/{protocol}"),
                        None => port.to_string(),
                    });
                }
            }
            Role::Gateway { .. } => flags.push("--router".into()),
        }
        // MeshConfig defaultConfig, as injection applies it on Kubernetes.
        flags.extend(self.plan.proxy_defaults.proxy_flags());
        // The bootstrap token: the sidecar gets its certificate with it.
        flags.push("--token-file".into());
        flags.push(self.plan.token_path(pod).display().to_string());
        // The root it verifies weftd's serving certificate with.
        flags.push("--ca-root".into());
        flags.push(self.plan.root_path(pod).display().to_string());
        argv.extend(flags);
        argv
    }

    fn bin_dir(&self) -> PathBuf {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    }

    fn track(&mut self, proc: Proc, kind: Kind) -> anyhow::Result<()> {
        self.state.processes.push(proc.record.clone());
        match kind {
            Kind::Weftd => self.weftd.push(proc),
            Kind::Sidecar => self.sidecars.push(proc),
            Kind::App => self.apps.push(proc),
        }
        self.state.save()
    }

    pub fn print_summary(&self, took: Duration) {
        use std::io::Write as _;
        // A closed stdout must not kill the runner (and leave the mesh up).
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "weft up: mesh {:?} is up ({:.1}s)",
            self.plan.name,
            took.as_secs_f64()
        );
        let _ = writeln!(out, "  pods:");
        for pod in &self.plan.pods {
            let role = match pod.role {
                Role::Workload { run_as, .. } => format!("app (uid {}) + sidecar", run_as.0),
                Role::Gateway { .. } => "gateway".to_string(),
            };
            let _ = writeln!(
                out,
                "    {:<28} {:<14} {:<15} {role}",
                pod.name,
                pod.namespace,
                pod.ip.to_string()
            );
        }
        if !self.plan.services.is_empty() {
            let _ = writeln!(out, "  services:");
        }
        for service in &self.plan.services {
            let ports: Vec<String> = service.ports.iter().map(|p| p.port.to_string()).collect();
            let _ = writeln!(
                out,
                "    {:<40} {:<15} port {}",
                service.hostname(),
                service.vip.to_string(),
                ports.join(", ")
            );
        }
        for (host, pod, target) in &self.ingress {
            let _ = writeln!(out, "  ingress:   http://{host} -> {pod} ({target})");
        }
        if let Some(api) = self.api {
            let _ = writeln!(
                out,
                "  weftd API: {api} and {} (weft apply/get/delete/token/proxy-status use it by themselves)",
                self.api_socket().display()
            );
        }
        let _ = writeln!(out, "  logs:      {}", self.logs_dir().display());
        let _ = writeln!(out, "Ctrl-C or `weft down {}` to stop.", self.plan.name);
    }

    /// Until a stop signal: restarts processes that exit (weftd keeps its
    /// store on disk, so a restart loses no applied config), keeping the
    /// state file's PIDs current.
    pub async fn supervise(&mut self, signals: &mut Signals) {
        loop {
            tokio::select! {
                _ = signals.next() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            // A sidecar about to restart gets a fresh bootstrap token.
            let socket = self.api_socket();
            for (pod, sidecar) in self.plan.pods.iter().zip(&self.sidecars) {
                if sidecar.restart_due()
                    && let Err(err) = identity::issue_token(&socket, &self.plan, pod).await
                {
                    note!("weft up: {}: no fresh token: {err:#}", sidecar.spec.label);
                }
            }
            let mut changed = false;
            let procs = self
                .weftd
                .iter_mut()
                .chain(&mut self.sidecars)
                .chain(&mut self.apps);
            for proc in procs {
                let label = proc.spec.label.clone();
                match proc.keep_alive() {
                    None => {}
                    Some(Change::Exited { status, delay }) => note!(
                        "weft up: {label} exited ({status}); restarting in {}s; see {}",
                        delay.as_secs(),
                        proc.spec.log.display()
                    ),
                    Some(Change::Restarted { old }) => {
                        note!("weft up: {} restarted (pid {})", old.label, proc.record.pid);
                        match self.state.processes.iter_mut().find(|r| **r == old) {
                            Some(record) => *record = proc.record.clone(),
                            None => self.state.processes.push(proc.record.clone()),
                        }
                        changed = true;
                    }
                    Some(Change::RestartFailed(err)) => {
                        note!("weft up: cannot restart {label}: {err}")
                    }
                }
            }
            if changed && let Err(err) = self.state.save() {
                note!("weft up: {err:#}");
            }
        }
    }

    /// Reverse order: relays, apps, sidecars, weftd, then namespaces and
    /// files. Returns what could not be removed.
    pub async fn tear_down(&mut self) -> Vec<String> {
        for relay in self.relays.drain(..) {
            relay.abort();
        }
        process::stop(&mut self.apps).await;
        process::stop(&mut self.sidecars).await;
        process::stop(&mut self.weftd).await;
        self.state.clean_up()
    }
}

enum Kind {
    Weftd,
    Sidecar,
    App,
}

/// A sidecar's (or gateway's) `/healthz/ready`, asked from the node.
async fn wait_ready(
    node: &NsSockets,
    pod: &Pod,
    proc: &mut Proc,
    deadline: Instant,
) -> anyhow::Result<()> {
    let health = SocketAddr::from((pod.ip, 15021));
    loop {
        if let Ok(stream) = node.connect(health).await
            && let Ok((StatusCode::OK, _)) =
                exchange(stream, Method::GET, "/healthz/ready", None).await
        {
            return Ok(());
        }
        if let Some(status) = proc.exited() {
            bail!(
                "pod {}: the sidecar exited ({status})\n{}",
                pod.name,
                proc.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "pod {}: the sidecar was not ready (http://{health}/healthz/ready) within {SIDECAR_TIMEOUT:?}\n{}",
                pod.name,
                proc.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each declared port accepts connections on the pod's loopback (where
/// the sidecar delivers inbound traffic).
async fn wait_listening(pod: &Pod, proc: &mut Proc, deadline: Instant) -> anyhow::Result<()> {
    let Role::Workload { ports, .. } = &pod.role else {
        return Ok(());
    };
    if ports.is_empty() {
        return Ok(());
    }
    let sockets = NsSockets::enter(&pod.netns)?;
    for (port, _) in ports {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
        loop {
            if sockets.connect(address).await.is_ok() {
                break;
            }
            if let Some(status) = proc.exited() {
                bail!(
                    "pod {}: the app exited ({status})\n{}",
                    pod.name,
                    proc.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {}: the app does not listen on port {port} (on 0.0.0.0 or 127.0.0.1) within {APP_TIMEOUT:?}\n{}",
                    pod.name,
                    proc.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// One HTTP/1 request on `stream`: (status, body), within 5 s. A body is
/// JSON (weftd takes nothing else).
pub(super) async fn exchange<S>(
    stream: S,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(StatusCode, Bytes)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost")
        .header("x-weft-source", "weft up");
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    tokio::time::timeout(
        Duration::from_secs(5),
        crate::client::exchange(stream, request),
    )
    .await
    .map_err(|_| anyhow!("no answer within 5s"))?
    .map_err(Into::into)
}

/// `--api`, else 15014, else any free loopback port.
async fn pick_api(given: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
    if let Some(given) = given {
        return Ok(given);
    }
    let default: SocketAddr = crate::client::DEFAULT_ADDRESS
        .parse()
        .context("the default API address")?;
    if TcpListener::bind(default).await.is_ok() {
        return Ok(default);
    }
    free_loopback_port().await
}

/// A loopback port free a moment ago (weftd binds it right after).
async fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("no free port on 127.0.0.1")?;
    Ok(listener.local_addr()?)
}

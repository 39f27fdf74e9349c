//! A running `weft-proxy` process, started by a test with its own ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::client;

/// The proxy's endpoints and files. Killed on drop if still running.
pub struct ProxyProcess {
    child: Child,
    dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub health: SocketAddr,
    pub metrics: SocketAddr,
}

/// How to start it: the binary, the config, and an optional command prefix
/// (e.g. `ip netns exec NAME setpriv --reuid 1337 ...`).
pub struct ProxyOptions<'a> {
    pub binary: &'a Path,
    /// A config file's content, or `None` with `--control-plane` in `args`.
    pub config: Option<&'a str>,
    pub prefix: Vec<String>,
    pub admin: Option<SocketAddr>,
    /// More flags, e.g. `--control-plane ADDR --node-id a`.
    pub args: Vec<String>,
}

impl<'a> ProxyOptions<'a> {
    pub fn new(binary: &'a Path, config: &'a str) -> Self {
        Self {
            binary,
            config: Some(config),
            prefix: Vec::new(),
            admin: None,
            args: Vec::new(),
        }
    }

    /// A proxy fed by weftd's plaintext port (`--plaintext-grpc`, the
    /// `grpc` of a test's weftd) with node flags in `args`: no credential,
    /// no certificate.
    pub fn control_plane(binary: &'a Path, control_plane: SocketAddr, args: &[&str]) -> Self {
        let mut all = vec![
            "--control-plane".to_string(),
            control_plane.to_string(),
            "--plaintext-control-plane".to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        Self {
            binary,
            config: None,
            prefix: Vec::new(),
            admin: None,
            args: all,
        }
    }

    /// A proxy fed by weftd's TLS port `xds`, holding `root_cert` and
    /// getting its first certificate with `token_file`; node flags in
    /// `args`.
    pub fn secure(
        binary: &'a Path,
        xds: SocketAddr,
        root_cert: &Path,
        token_file: &Path,
        args: &[&str],
    ) -> Self {
        let mut all = vec![
            "--control-plane".to_string(),
            xds.to_string(),
            "--ca-root".to_string(),
            root_cert.display().to_string(),
            "--token-file".to_string(),
            token_file.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        Self {
            binary,
            config: None,
            prefix: Vec::new(),
            admin: None,
            args: all,
        }
    }
}

impl ProxyProcess {
    /// Starts the proxy on loopback and waits until `/ready` says LIVE.
    pub async fn start(binary: &Path, config: &str) -> anyhow::Result<Self> {
        Self::spawn_ready(ProxyOptions::new(binary, config), Duration::from_secs(20)).await
    }

    /// Starts the proxy without waiting for it.
    pub fn spawn(options: ProxyOptions<'_>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("weft-proxy-test")
            .tempdir()?;
        // Readable by an unprivileged proxy UID too.
        set_mode(dir.path(), 0o755)?;
        let config_path = dir.path().join("proxy.yaml");
        if let Some(config) = options.config {
            std::fs::write(&config_path, config)?;
            set_mode(&config_path, 0o644)?;
        }
        let log = std::fs::File::create(dir.path().join("proxy.log"))?;
        let admin = options.admin.unwrap_or_else(crate::free_addr);
        let (health, metrics) = (crate::free_addr(), crate::free_addr());
        let mut argv: Vec<String> = options.prefix.clone();
        argv.push(options.binary.display().to_string());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        if options.config.is_some() {
            command.arg("--config").arg(&config_path);
        }
        command
            .args(&options.args)
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--health")
            .arg(health.to_string())
            .arg("--metrics")
            .arg(metrics.to_string())
            .arg("--reload-interval")
            .arg("100ms")
            .env(
                "RUST_LOG",
                std::env::var("WEFT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("spawn {argv:?}"))?;
        Ok(Self {
            child,
            dir,
            admin,
            health,
            metrics,
        })
    }

    /// [`spawn`](Self::spawn), then [`wait_ready`](Self::wait_ready).
    pub async fn spawn_ready(options: ProxyOptions<'_>, timeout: Duration) -> anyhow::Result<Self> {
        let mut proxy = Self::spawn(options)?;
        proxy.wait_ready(timeout).await?;
        Ok(proxy)
    }

    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "proxy exited ({status}) before it was ready; log:\n{}",
                    self.logs()
                );
            }
            if let Ok(reply) = client::get(self.admin, "admin", "/ready").await
                && reply.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("proxy not ready after {timeout:?}; log:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.yaml")
    }

    /// Replaces the config file atomically (write, then rename), as a
    /// config-management tool would.
    pub fn write_config(&self, config: &str) -> anyhow::Result<()> {
        let staging = self.dir.path().join("proxy.yaml.next");
        std::fs::write(&staging, config)?;
        set_mode(&staging, 0o644)?;
        std::fs::rename(&staging, self.config_path())?;
        Ok(())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    pub async fn admin_get(&self, path: &str) -> anyhow::Result<client::Reply> {
        client::get(self.admin, "admin", path).await
    }

    /// Sends SIGTERM to the proxy (only to the process this handle started).
    pub fn terminate(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("proxy already exited")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        Ok(())
    }

    /// Waits for the process to exit; its exit code, or an error on timeout.
    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .context("proxy did not exit in time")??;
        Ok(status.code())
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

//! Network namespaces a test creates for itself (and deletes on drop), so
//! interception is tested for real with nothing routed off the machine.

use std::fs::File;
use std::process::Command;

use anyhow::{Context, bail};
use nix::sched::{CloneFlags, setns};

/// Whether this process may create namespaces and program iptables. Under
/// `CI=true` a missing privilege is a failure, never a skip.
pub fn privileged_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = which("ip") && which("iptables");
    if root && tools {
        return true;
    }
    let why = if root {
        "`ip` or `iptables` is not installed"
    } else {
        "it needs root"
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run: {why} (under CI=true this test must run)");
    }
    eprintln!("SKIPPED {test}: {why}; run scripts/test as root to include it");
    false
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates `weft-<tag>-<pid>` with loopback up.
    pub fn create(tag: &str) -> anyhow::Result<Self> {
        let name = format!("weft-{tag}-{}", std::process::id());
        // A leftover from a crashed run of the same pid would block us.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run("ip", &["netns", "add", &name])?;
        let netns = Self { name };
        netns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Runs a command inside the namespace; fails on a non-zero exit.
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(argv);
        run("ip", &full)
    }

    /// The argv prefix that runs a command inside the namespace.
    pub fn prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .map(String::from)
            .to_vec()
    }

    /// [`prefix`](Self::prefix), then `setpriv` to run as `uid` (same GID,
    /// no groups): how a sidecar (UID 1337) runs in the namespace.
    pub fn prefix_as(&self, uid: &str) -> Vec<String> {
        let mut prefix = self.prefix();
        prefix.extend(
            ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"].map(String::from),
        );
        prefix
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it
    /// creates (including a runtime it builds) live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let handle = File::open(format!("/var/run/netns/{}", self.name))
            .with_context(|| format!("open namespace {}", self.name))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&handle, CloneFlags::CLONE_NEWNET).context("setns")?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

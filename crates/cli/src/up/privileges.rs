//! What `weft up` needs from the machine, checked before anything is
//! created: root (or CAP_NET_ADMIN + CAP_SYS_ADMIN), network namespaces,
//! and the `ip` and `iptables-restore` tools. (Pods' namespaces and users
//! are entered with system calls: no `setpriv` or `nsenter` is needed.)

use nix::sched::{CloneFlags, unshare};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const TOOLS: [(&str, &str); 2] = [("ip", "iproute2"), ("iptables-restore", "iptables")];

/// `Err(one message)` naming everything missing and how to get it.
pub fn check() -> Result<(), String> {
    let mut missing = Vec::new();
    let privileged = nix::unistd::geteuid().is_root()
        || effective_caps().is_some_and(|caps| {
            caps & (1 << CAP_NET_ADMIN) != 0 && caps & (1 << CAP_SYS_ADMIN) != 0
        });
    if !privileged {
        missing.push("root privileges (or CAP_NET_ADMIN and CAP_SYS_ADMIN)".to_string());
    } else if let Err(err) = probe_netns() {
        missing.push(format!("network namespaces (creating one failed: {err})"));
    }
    let packages: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, package)| *package)
        .collect();
    if !packages.is_empty() {
        missing.push(format!("the packages {}", packages.join(", ")));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut how = Vec::new();
    if !privileged {
        how.push("run it as root (`sudo weft up DIR`)".to_string());
    }
    if !packages.is_empty() {
        how.push(format!(
            "install {} (`sudo apt-get install {}`, or run `sudo scripts/up`, which installs them)",
            packages.join(", "),
            packages.join(" ")
        ));
    }
    Err(format!(
        "weft up needs {}: {}. Nothing was started.",
        missing.join(" and "),
        how.join("; ")
    ))
}

/// CapEff from `/proc/self/status`.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Unshares a network namespace on a throwaway thread: proves the kernel
/// (and any container around us) lets us make one, without making a
/// named one.
fn probe_netns() -> Result<(), String> {
    std::thread::spawn(|| unshare(CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string()))
        .join()
        .unwrap_or_else(|_| Err("probe thread panicked".into()))
}

/// On `PATH`, or in an sbin directory a non-root `PATH` often lacks (so
/// the message does not send a user to install what is there).
fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .any(|dir| dir.join(tool).is_file())
}

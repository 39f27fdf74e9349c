//! Namespaces, links, addresses and interception rules, made with the
//! system's `ip` and `iptables-restore` (the same tools an operator uses to
//! look at the result), and sockets made inside a namespace.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

use weft_kube::inject::capture::Capture;

use super::plan::{PROXY_UID, Plan, Pod, Role};

const BRIDGE: &str = "weft0";

/// Runs `ip ARGS`; fails with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args, None)
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("writing to {program}"))?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The node: an isolated namespace holding the bridge every pod plugs
/// into. It has no link to the host namespace, so nothing routes out.
pub fn create_node(plan: &Plan) -> anyhow::Result<()> {
    let ns = plan.node_netns.as_str();
    ip(&["netns", "add", ns])?;
    disable_ipv6(ns)?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&["-n", ns, "link", "add", BRIDGE, "type", "bridge"])?;
    let address = format!("{}/{}", plan.bridge, plan.pod_cidr.prefix_len());
    ip(&["-n", ns, "addr", "add", &address, "dev", BRIDGE])?;
    ip(&["-n", ns, "link", "set", BRIDGE, "up"])
}

/// A pod: its namespace, a veth from the node's bridge (`eth0` inside), its
/// address, and a default route via the bridge.
pub fn create_pod(plan: &Plan, pod: &Pod) -> anyhow::Result<()> {
    let (node, ns) = (plan.node_netns.as_str(), pod.netns.as_str());
    ip(&["netns", "add", ns])?;
    // Before any link exists: links made later take `default`.
    disable_ipv6(ns)?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    if let Role::Gateway { .. } = pod.role {
        low_ports_for_all(ns)?;
    }
    // Made inside the node namespace with its peer sent straight into the
    // pod: no veth ever appears in the host namespace, and the short
    // names only need to be unique within this node.
    ip(&[
        "-n", node, "link", "add", &pod.veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    ip(&["-n", node, "link", "set", &pod.veth, "master", BRIDGE])?;
    ip(&["-n", node, "link", "set", &pod.veth, "up"])?;
    let address = format!("{}/{}", pod.ip, plan.pod_cidr.prefix_len());
    ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        &plan.bridge.to_string(),
    ])
}

/// Lets an unprivileged gateway proxy bind ports below 1024 in its own
/// namespace (Gateway servers on 80 and 443, as in Istio's egress task):
/// what Istio's gateway pods get from the
/// `net.ipv4.ip_unprivileged_port_start=0` sysctl. The namespace holds
/// only the gateway, so nothing else gains from it.
fn low_ports_for_all(netns: &str) -> anyhow::Result<()> {
    in_netns(netns, || {
        let path = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
        std::fs::write(path, "0").map_err(|err| std::io::Error::other(format!("{path}: {err}")))
    })
    .with_context(|| format!("cannot open low ports to the gateway in namespace {netns}"))
}

/// Turns IPv6 off in a namespace (`all`, and `default` for links made
/// later): interception is IPv4 only (`iptables`), so a pod that could
/// speak IPv6 (link-local addresses appear on their own) would reach, and
/// be reached by, apps around the sidecars. A kernel without IPv6 is fine.
pub fn disable_ipv6(netns: &str) -> anyhow::Result<()> {
    in_netns(netns, || {
        for conf in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            match std::fs::write(&path, "1") {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                other => other.map_err(|err| std::io::Error::other(format!("{path}: {err}")))?,
            }
        }
        Ok(())
    })
    .with_context(|| format!("cannot disable IPv6 in namespace {netns}"))
}

/// Runs `work` on a thread that entered the namespace (`/proc/sys/net`
/// shows the namespace of the thread that reads it).
fn in_netns<T: Send>(
    netns: &str,
    work: impl FnOnce() -> std::io::Result<T> + Send,
) -> anyhow::Result<T> {
    let handle = File::open(PathBuf::from("/var/run/netns").join(netns))
        .with_context(|| format!("cannot open namespace {netns}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&handle, CloneFlags::CLONE_NEWNET)?;
                work()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
            .map_err(Into::into)
    })
}

/// The rules Istio's init container installs, in one atomic
/// `iptables-restore`: all of them or none (fail closed).
pub fn intercept(pod: &Pod, dns: bool) -> anyhow::Result<()> {
    restore_rules(&interception_rules(dns), Some(&pod.netns))
        .with_context(|| format!("pod {}: cannot install the interception rules", pod.name))
}

/// Installs `rules` (an `iptables-restore` input) in `netns`, or in the
/// caller's own namespace (`weft intercept`, run inside a pod).
pub fn restore_rules(rules: &str, netns: Option<&str>) -> anyhow::Result<()> {
    match netns {
        Some(netns) => run(
            "ip",
            &["netns", "exec", netns, "iptables-restore"],
            Some(rules),
        ),
        None => run("iptables-restore", &[], Some(rules)),
    }
}

/// What `weft up` captures: everything, as Istio does without annotations
/// (the same rules `weft intercept` builds, from [`Capture`]).
/// `dns`: the mesh file's `dnsCapture`.
fn interception_rules(dns: bool) -> String {
    Capture {
        proxy_uid: PROXY_UID,
        dns,
        ..Capture::default()
    }
    .rules()
}

/// `/etc/netns/<ns>/{hosts,resolv.conf}`, which `ip netns exec` mounts
/// over `/etc` for processes started in the pod. Names resolve from the
/// hosts file; the resolver points at the pod's own loopback, where nothing
/// answers, so any other lookup fails at once instead of waiting for the
/// host's DNS server, which the pod cannot reach (Python's HTTP server,
/// for one, looks up its own address at start).
pub fn write_etc(pod: &Pod, hosts: &str) -> anyhow::Result<()> {
    let dir = etc_dir(&pod.netns);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let resolv = format!(
        "nameserver 127.0.0.1\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local\noptions timeout:1 attempts:1\n",
        ns = pod.namespace
    );
    for (name, text) in [("hosts", hosts), ("resolv.conf", resolv.as_str())] {
        let file = dir.join(name);
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

pub fn etc_dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}

/// Whether a namespace of this name exists.
pub fn netns_exists(netns: &str) -> bool {
    PathBuf::from("/var/run/netns").join(netns).exists()
}

/// PIDs of the processes inside a namespace (`ip netns pids`).
pub fn netns_pids(netns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", netns])
        .stderr(Stdio::null())
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

type Reply = oneshot::Sender<std::io::Result<Socket>>;

/// Makes TCP sockets inside a namespace: a thread that entered it makes
/// them on request, and the sockets keep that namespace wherever they are
/// used afterwards (here: on the caller's tokio runtime).
pub struct NsSockets {
    netns: String,
    requests: std::sync::mpsc::Sender<Reply>,
}

impl NsSockets {
    pub fn enter(netns: &str) -> anyhow::Result<Self> {
        let handle = File::open(PathBuf::from("/var/run/netns").join(netns))
            .with_context(|| format!("cannot open namespace {netns}"))?;
        let (requests, incoming) = std::sync::mpsc::channel::<Reply>();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("netns {netns}"))
            .spawn(move || {
                let result = setns(&handle, CloneFlags::CLONE_NEWNET);
                let ok = result.is_ok();
                let _ = entered_tx.send(result);
                if !ok {
                    return;
                }
                // Ends when the last NsSockets handle is dropped.
                for reply in incoming {
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP));
                    let _ = reply.send(socket);
                }
            })
            .context("cannot start a thread")?;
        entered
            .recv()
            .context("namespace thread ended")?
            .with_context(|| format!("cannot enter namespace {netns}"))?;
        Ok(Self {
            netns: netns.to_string(),
            requests,
        })
    }

    async fn socket(&self) -> std::io::Result<Socket> {
        let (reply, answer) = oneshot::channel();
        let gone = || std::io::Error::other(format!("namespace {} thread ended", self.netns));
        self.requests.send(reply).map_err(|_| gone())?;
        let socket = answer.await.map_err(|_| gone())??;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    pub async fn connect(&self, address: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = self.socket().await?;
        TcpSocket::from_std_stream(socket.into())
            .connect(address)
            .await
    }

    pub async fn listen(&self, address: SocketAddr) -> std::io::Result<TcpListener> {
        let socket = self.socket().await?;
        socket.set_reuse_address(true)?;
        socket.bind(&address.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(socket.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_leave_the_proxy_and_loopback_alone() {
        let rules = interception_rules(false);
        let at = |needle: &str| {
            rules
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} in {rules}"))
        };
        // Exclusions come before the catch-all redirect in each chain.
        assert!(at("--uid-owner 1337 -j RETURN") < at("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
        assert!(at("-d 127.0.0.0/8 -j RETURN") < at("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
        assert!(at("--dport 15021 -j RETURN") < at("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"));
        assert!(rules.ends_with("COMMIT\n"));
        // Exactly what weft up installed before the rules moved to Capture.
        assert_eq!(
            rules,
            "*nat\n:ISTIO_INBOUND - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n:ISTIO_OUTPUT - [0:0]\n\
             :ISTIO_REDIRECT - [0:0]\n-A PREROUTING -p tcp -j ISTIO_INBOUND\n\
             -A ISTIO_INBOUND -p tcp --dport 15000 -j RETURN\n\
             -A ISTIO_INBOUND -p tcp --dport 15001 -j RETURN\n\
             -A ISTIO_INBOUND -p tcp --dport 15006 -j RETURN\n\
             -A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN\n\
             -A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN\n\
             -A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN\n\
             -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n\
             -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n\
             -A OUTPUT -p tcp -j ISTIO_OUTPUT\n\
             -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN\n\
             -A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN\n\
             -A ISTIO_OUTPUT -d 127.0.0.0/8 -j RETURN\n\
             -A ISTIO_OUTPUT -j ISTIO_REDIRECT\n\
             -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n"
        );
        // The ports a mesh file may not serve are the ones capture skips.
        assert_eq!(
            super::super::meshfile::PROXY_PORTS,
            weft_kube::inject::capture::PROXY_PORTS
        );
    }
}

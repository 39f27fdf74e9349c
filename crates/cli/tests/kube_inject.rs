//! `weft kube-inject` on Istio's own Bookinfo manifest, and the injected
//! init container's command run for real in a network namespace: the
//! rules it installs are the ones its annotations asked for.

use std::process::{Command, Output};

use serde_json::Value;
use weft_testkit::netns::{NetNs, privileged_or_skip};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT).args(args).output().expect("weft runs")
}

fn documents(stdout: &[u8]) -> Vec<Value> {
    weft_api::decode::parse_documents(&String::from_utf8_lossy(stdout)).expect("YAML out")
}

#[test]
fn bookinfo_deployments_are_injected_and_everything_else_is_kept() {
    let Some(corpus) = weft_testkit::corpus::root_or_skip("kube_inject bookinfo") else {
        return;
    };
    let file = corpus.join("istio/samples/bookinfo/platform/kube/bookinfo.yaml");
    let before =
        weft_api::decode::parse_documents(&std::fs::read_to_string(&file).expect("bookinfo.yaml"))
            .expect("parses");
    let out = weft(&[
        "kube-inject",
        "-f",
        file.to_str().expect("path"),
        "--kube-version",
        "1.28",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = documents(&out.stdout);
    let before: Vec<&Value> = before.iter().filter(|d| !d.is_null()).collect();
    assert_eq!(after.len(), before.len());
    let mut injected = 0;
    for (old, new) in before.iter().zip(&after) {
        let kind = new["kind"].as_str().unwrap_or("");
        if kind == "Deployment" {
            injected += 1;
            let template = &new["spec"]["template"];
            let containers = template["spec"]["containers"]
                .as_array()
                .expect("containers");
            // 1.28: the classic sidecar, after the app.
            assert_eq!(containers.last().expect("proxy")["name"], "weft-proxy");
            assert_eq!(template["spec"]["initContainers"][0]["name"], "weft-init");
            assert!(template["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
            assert_eq!(new["spec"]["replicas"], old["spec"]["replicas"]);
        } else {
            assert_eq!(*old, new, "{kind} must pass through unchanged");
        }
    }
    assert_eq!(
        injected, 6,
        "productpage, details, ratings and reviews v1-v3"
    );

    // Injected output injected again: nothing added twice.
    let dir = tempfile::tempdir().expect("tempdir");
    let once = dir.path().join("once.yaml");
    std::fs::write(&once, &out.stdout).expect("write");
    let twice = weft(&["kube-inject", "-f", once.to_str().expect("path")]);
    assert!(twice.status.success());
    assert_eq!(documents(&twice.stdout), after);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already injected"));
}

#[test]
fn bad_annotations_fail_with_the_object_and_annotation_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pod.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    \
         traffic.sidecar.istio.io/includeOutboundIPRanges: \"fd00::/8\"\n\
         spec:\n  containers:\n  - name: web\n    image: web\n",
    )
    .expect("write");
    let out = weft(&["kube-inject", "-f", file.to_str().expect("path")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Pod default/web")
            && stderr.contains("includeOutboundIPRanges")
            && stderr.contains("IPv4 only"),
        "{stderr}"
    );
}

#[test]
fn a_mesh_config_file_gives_every_pod_its_default_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  \
         - name: web\n    image: web\n",
    )
    .expect("write");
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        "defaultConfig:\n  concurrency: 2\n  proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\"}\n",
    )
    .expect("write");
    let (pod, mesh) = (pod.to_str().expect("path"), mesh.to_str().expect("path"));
    let out = weft(&["kube-inject", "-f", pod, "--meshConfigFile", mesh]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let injected = &documents(&out.stdout)[0];
    let inits = injected["spec"]["initContainers"]
        .as_array()
        .expect("inits");
    let args = |name: &str| -> Vec<String> {
        let container = inits.iter().find(|c| c["name"] == name).expect(name);
        serde_json::from_value(container["args"].clone()).expect("args")
    };
    let proxy = args("weft-proxy");
    let at = proxy
        .iter()
        .position(|a| a == "--workers")
        .expect("--workers");
    assert_eq!(proxy[at + 1], "2");
    assert!(args("weft-init").contains(&"--capture-dns".to_string()));

    // Without the file: the sidecar's own defaults.
    let out = weft(&["kube-inject", "-f", pod]);
    let plain = String::from_utf8_lossy(&out.stdout);
    assert!(!plain.contains("--workers") && !plain.contains("--capture-dns"));

    // An invalid MeshConfig is refused with its field named.
    std::fs::write(mesh, "defaultConfig: {terminationDrainDuration: soon}\n").expect("write");
    let out = weft(&["kube-inject", "-f", pod, "--mesh-config", mesh]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("defaultConfig.terminationDrainDuration"),
        "{stderr}"
    );
}

#[test]
fn the_init_container_installs_the_annotated_capture_in_its_namespace() {
    if !privileged_or_skip("kube_inject init container") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pod.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db-client\n  annotations:\n    \
         traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"\n    \
         traffic.sidecar.istio.io/includeInboundPorts: \"9080\"\n    \
         traffic.sidecar.istio.io/excludeOutboundIPRanges: \"169.254.169.254/32\"\n    \
         proxy.istio.io/config: '{\"proxyMetadata\": {\"ISTIO_META_DNS_CAPTURE\": \"true\"}}'\n\
         spec:\n  containers:\n  - name: app\n    image: app\n",
    )
    .expect("write");
    let out = weft(&["kube-inject", "-f", file.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod = &documents(&out.stdout)[0];
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["command"][0], "weft");
    let args: Vec<String> = serde_json::from_value(init["args"].clone()).expect("args");

    let netns = NetNs::create("kinject").expect("netns");
    let mut argv = netns.prefix();
    argv.push(WEFT.to_string());
    argv.extend(args);
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .expect("runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut save = netns.prefix();
    save.extend(["iptables", "-t", "nat", "-S"].map(String::from));
    let rules = Command::new(&save[0])
        .args(&save[1..])
        .output()
        .expect("iptables");
    let rules = String::from_utf8_lossy(&rules.stdout);
    for wanted in [
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 9080 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
        "-A ISTIO_OUTPUT -d 169.254.169.254/32 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        // DNS capture (proxyMetadata ISTIO_META_DNS_CAPTURE).
        "-A OUTPUT -p udp -m udp --dport 53 -m owner --uid-owner 1337 -j RETURN",
        "-A OUTPUT -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
        "-A ISTIO_OUTPUT -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053",
    ] {
        assert!(rules.contains(wanted), "{wanted} missing from\n{rules}");
    }
    // Only 9080 is captured inbound: no catch-all redirect.
    assert!(
        !rules.contains("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"),
        "{rules}"
    );
}

#[test]
fn wait_proxy_returns_once_the_proxy_is_ready_and_fails_after_its_timeout() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    // Not ready twice, then ready: what a starting weft-proxy answers.
    let server = std::thread::spawn(move || {
        for answer in [
            "503 Service Unavailable",
            "503 Service Unavailable",
            "200 OK",
        ] {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = [0u8; 1024];
            let read = stream.read(&mut request).expect("read");
            assert!(String::from_utf8_lossy(&request[..read]).starts_with("GET /healthz/ready "));
            let _ = write!(stream, "HTTP/1.1 {answer}\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let started = std::time::Instant::now();
    let out = weft(&["wait-proxy", "--health", &address, "--timeout", "10s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    server.join().expect("server");

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let out = weft(&["wait-proxy", "--health", &closed, "--timeout", "1s"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not ready after 1s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Both forms of injection (classic for 1.28, native for 1.29+) of Istio's
/// Bookinfo manifest are accepted by a real API server, which validates
/// every pod template (skipped without `WEFT_TEST_KUBE_APISERVER`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_bookinfo_is_accepted_by_a_real_api_server() -> anyhow::Result<()> {
    let test = "injected_bookinfo_is_accepted_by_a_real_api_server";
    let Some(binary) = weft_testkit::kube::apiserver_or_skip(test) else {
        return Ok(());
    };
    let Some(corpus) = weft_testkit::corpus::root_or_skip(test) else {
        return Ok(());
    };
    let file = corpus.join("istio/samples/bookinfo/platform/kube/bookinfo.yaml");
    let cluster = weft_testkit::kube::KubeCluster::start(&binary).await?;
    for (namespace, version) in [("classic", "1.28"), ("native", "1.36")] {
        let out = weft(&[
            "kube-inject",
            "-f",
            file.to_str().expect("path"),
            "--kube-version",
            version,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.namespace(namespace, &[]).await?;
        let mut deployments = 0;
        for document in documents(&out.stdout) {
            if document["kind"] == "Deployment" {
                deployments += 1;
            }
            let what = format!("{} {}", document["kind"], document["metadata"]["name"]);
            cluster
                .create(namespace, document)
                .await
                .map_err(|err| anyhow::anyhow!("{namespace}: {what}: {err:#}"))?;
        }
        assert_eq!(deployments, 6);
    }
    Ok(())
}

//! A cluster as a source: kube-rs reflectors (watch + relist with backoff)
//! on Services, EndpointSlices, Pods, Nodes, Namespaces, Secrets (gateway
//! credentials, `convert::secret`) and the Istio
//! kinds, turned into one [`ClusterState`] published on a `watch`.
//!
//! Contract:
//! - Nothing is published before every reflector finished its first list:
//!   a weftd that (re)starts never pushes a half-empty cluster.
//! - Changes are gathered for `debounce`, the state rebuilt from the
//!   reflectors' caches and published only when it differs from the last
//!   one. A relist, a watch that restarts, or an API server restarted with
//!   the same etcd publishes nothing when nothing changed; resourceVersion
//!   or status churn is not a change (see [`istio::decode`]).
//! - Watch errors (the API server away) are retried with kube-rs' default
//!   backoff, logged once per outage; the last published state stays.

pub mod istio;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use weft_api::{Problem, Resource};

use crate::convert::{self, ClusterSnapshot};

/// How the source reads the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Service hostnames are `<name>.<namespace>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// Changes arriving within this window are published together.
    pub debounce: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
            debounce: Duration::from_millis(50),
        }
    }
}

/// Everything weftd takes from the cluster, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    pub discovery: Arc<ClusterSnapshot>,
    /// Valid Istio resources, sorted by kind, namespace and name.
    pub config: Vec<Resource>,
    /// Invalid Istio objects found in the cluster (skipped), with their
    /// file-validation messages.
    pub problems: Vec<String>,
    /// Namespace name → labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

/// The caches the state is built from.
struct Caches {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    /// Secrets that may be gateway credentials (`credentialName`).
    secrets: Store<Secret>,
    /// One per Istio kind the cluster serves; kinds whose CRD appears
    /// later are added by [`rediscover`].
    istio: Arc<Mutex<Vec<IstioCache>>>,
}

/// The cache of one Istio kind, read at `api_version`.
#[derive(Clone)]
struct IstioCache {
    api_version: String,
    kind: String,
    cache: Store<DynamicObject>,
}

/// How often kinds without a CRD are looked for again.
const REDISCOVERY: Duration = Duration::from_secs(10);

/// Starts the reflectors and the builder; the receiver holds `None` until
/// the first complete state.
pub async fn spawn(client: Client, options: Options) -> watch::Receiver<Option<Arc<ClusterState>>> {
    let changed = Arc::new(Notify::new());
    let (found, missing) = discover_istio_kinds(&client, istio::KINDS, true).await;
    let istio: Vec<IstioCache> = found
        .iter()
        .map(|resource| watch_kind(&client, resource, &changed))
        .collect();
    let istio = Arc::new(Mutex::new(istio));
    if !missing.is_empty() {
        tokio::spawn(rediscover(
            client.clone(),
            missing,
            istio.clone(),
            changed.clone(),
        ));
    }
    let caches = Caches {
        services: reflect(Api::all(client.clone()), &changed, "Services"),
        slices: reflect(Api::all(client.clone()), &changed, "EndpointSlices"),
        pods: reflect(Api::all(client.clone()), &changed, "Pods"),
        nodes: reflect(Api::all(client.clone()), &changed, "Nodes"),
        namespaces: reflect(Api::all(client.clone()), &changed, "Namespaces"),
        secrets: reflect_secrets(&client, &changed),
        istio,
    };
    let (publish, states) = watch::channel(None);
    tokio::spawn(build_loop(caches, options, changed, publish));
    states
}

/// Which of `wanted` this cluster serves, each at the version the API
/// server prefers (every served version holds the same objects), and which
/// it does not (said when `say`).
async fn discover_istio_kinds(
    client: &Client,
    wanted: &[(&'static str, &'static str)],
    say: bool,
) -> (Vec<ApiResource>, Vec<(&'static str, &'static str)>) {
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    let groups: BTreeSet<&str> = wanted.iter().map(|(group, _)| *group).collect();
    for group in groups {
        let kinds = wanted.iter().filter(|(g, _)| *g == group);
        match kube::discovery::group(client, group).await {
            Ok(api_group) => {
                for (group, kind) in kinds {
                    match api_group.recommended_kind(kind) {
                        Some((resource, _)) => found.push(resource),
                        None => {
                            if say {
                                tracing::warn!(
                                    "the cluster serves no {group} {kind} (CRD not installed): \
                                     {kind} objects are not read until it does"
                                );
                            }
                            missing.push((*group, *kind));
                        }
                    }
                }
            }
            Err(err) => {
                if say {
                    tracing::warn!(
                        "the cluster serves no API group {group} ({err}): install Weft's CRDs \
                         (manifests/crds) or Istio's; its kinds are read once it does"
                    );
                }
                missing.extend(kinds.copied());
            }
        }
    }
    (found, missing)
}

/// Looks for the `missing` kinds every [`REDISCOVERY`] and starts reading
/// each one a CRD now defines.
async fn rediscover(
    client: Client,
    mut missing: Vec<(&'static str, &'static str)>,
    istio: Arc<Mutex<Vec<IstioCache>>>,
    changed: Arc<Notify>,
) {
    while !missing.is_empty() {
        tokio::time::sleep(REDISCOVERY).await;
        let (found, still) = discover_istio_kinds(&client, &missing, false).await;
        for resource in &found {
            tracing::info!(
                "the cluster now serves {} {}: reading it",
                resource.api_version,
                resource.kind
            );
            let cache = watch_kind(&client, resource, &changed);
            istio.lock().unwrap_or_else(|p| p.into_inner()).push(cache);
        }
        missing = still;
    }
}

fn watch_kind(client: &Client, resource: &ApiResource, changed: &Arc<Notify>) -> IstioCache {
    IstioCache {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
        cache: reflect_dynamic(client, resource, changed),
    }
}

fn reflect<K>(api: Api<K>, changed: &Arc<Notify>, what: &'static str) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(drain(stream, changed.clone(), what.to_string()));
    store
}

/// Secrets in every namespace except service-account tokens and Helm
/// releases (a field selector on `type`, so the API server never sends
/// them): gateway credentials may live in any gateway's namespace, and
/// which namespaces hold gateways is only known from the Pods. Only
/// Secrets shaped as TLS credentials are kept in the snapshot
/// (`convert::secret`).
fn reflect_secrets(client: &Client, changed: &Arc<Notify>) -> Store<Secret> {
    let (store, writer) = reflector::store();
    let config = watcher::Config::default()
        .fields("type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1");
    let stream = reflector::reflector(
        writer,
        watcher(Api::<Secret>::all(client.clone()), config).default_backoff(),
    );
    tokio::spawn(drain(stream, changed.clone(), "Secrets".to_string()));
    store
}

fn reflect_dynamic(
    client: &Client,
    resource: &ApiResource,
    changed: &Arc<Notify>,
) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client.clone(), resource);
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(drain(stream, changed.clone(), resource.kind.clone()));
    store
}

/// Runs one reflector's stream, telling the builder about every event and
/// logging an outage once (the backoff retries quietly).
async fn drain<S, T>(stream: S, changed: Arc<Notify>, what: String)
where
    S: futures_util::Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => {
                if failing {
                    tracing::info!("watching {what} again");
                    failing = false;
                }
                changed.notify_one();
            }
            Err(err) if !failing => {
                tracing::warn!("watching {what} failed, retrying with backoff: {err}");
                failing = true;
            }
            Err(err) => tracing::debug!("watching {what}: {err}"),
        }
    }
}

async fn build_loop(
    caches: Caches,
    options: Options,
    changed: Arc<Notify>,
    publish: watch::Sender<Option<Arc<ClusterState>>>,
) {
    let ready = tokio::try_join!(
        caches.services.wait_until_ready(),
        caches.slices.wait_until_ready(),
        caches.pods.wait_until_ready(),
        caches.nodes.wait_until_ready(),
        caches.namespaces.wait_until_ready(),
        caches.secrets.wait_until_ready(),
    );
    if ready.is_err() {
        return;
    }
    let initial: Vec<IstioCache> = caches
        .istio
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for kind in initial {
        if kind.cache.wait_until_ready().await.is_err() {
            return;
        }
    }
    tracing::info!("cluster caches synced");
    let mut said: BTreeSet<String> = BTreeSet::new();
    loop {
        let state = build(&caches, &options.cluster_domain);
        for problem in state.problems.iter().filter(|p| !said.contains(*p)) {
            tracing::error!("{problem} (skipped)");
        }
        said = state.problems.iter().cloned().collect();
        publish.send_if_modified(|last| {
            if last.as_deref() == Some(&state) {
                return false;
            }
            *last = Some(Arc::new(state));
            true
        });
        changed.notified().await;
        tokio::time::sleep(options.debounce).await;
    }
}

/// The state the caches hold now.
fn build(caches: &Caches, cluster_domain: &str) -> ClusterState {
    let mut discovery = convert::snapshot(
        &caches.services.state(),
        &caches.slices.state(),
        &caches.pods.state(),
        &caches.nodes.state(),
        cluster_domain,
    );
    discovery.credentials = caches
        .secrets
        .state()
        .iter()
        .filter_map(|secret| convert::secret::credential(secret))
        .map(|(namespace, name, found)| ((namespace, name), found))
        .collect();
    let mut config = Vec::new();
    let mut problems: Vec<Problem> = Vec::new();
    let istio = caches
        .istio
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for IstioCache {
        api_version,
        kind,
        cache,
    } in &istio
    {
        for object in cache.state() {
            match istio::decode(&object, api_version, kind) {
                istio::Decoded::Resource(resource, _) => config.push(*resource),
                istio::Decoded::Invalid(found) => problems.extend(found),
                istio::Decoded::Other => {}
            }
        }
    }
    config.sort_by(|a, b| {
        (a.kind(), &a.metadata().namespace, &a.metadata().name).cmp(&(
            b.kind(),
            &b.metadata().namespace,
            &b.metadata().name,
        ))
    });
    let namespaces = caches
        .namespaces
        .state()
        .iter()
        .filter_map(|ns| {
            Some((
                ns.metadata.name.clone()?,
                ns.metadata.labels.clone().unwrap_or_default(),
            ))
        })
        .collect();
    ClusterState {
        discovery: Arc::new(discovery),
        config,
        problems: problems.iter().map(ToString::to_string).collect(),
        namespaces,
    }
}

//! One writer among weftd replicas (issue 13, item 7): a
//! `coordination.k8s.io` Lease names the replica that writes what must be
//! written once; every replica serves proxies either way.
//!
//! The protocol is Kubernetes' own (client-go's leaderelection, which
//! istiod uses): a replica holds the Lease while it renews it within
//! `leaseDurationSeconds`; any replica may take a Lease whose holder let it
//! expire. Every write carries the resourceVersion read, so two replicas
//! racing for it cannot both win (one gets a conflict). A leader that
//! cannot renew (the API server away) steps down once its lease could have
//! expired, before another replica can take it.
//!
//! What the leader writes: the mesh root in the ConfigMap
//! [`ROOT_CERT_CONFIG_MAP`] (key [`ROOT_CERT_KEY`]) of every namespace but
//! Kubernetes' own bookkeeping ones, where injected sidecars mount it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Error};
use tokio::sync::watch;

use crate::source::ClusterState;

/// The per-namespace trust root injected sidecars mount (Istio's is
/// `istio-ca-root-cert`).
pub const ROOT_CERT_CONFIG_MAP: &str = "weft-ca-root-cert";
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Namespaces that never run workloads (Istio skips the same).
const SKIPPED_NAMESPACES: &[&str] = &["kube-public", "kube-node-lease", "local-path-storage"];

#[derive(Debug, Clone)]
pub struct Options {
    /// Where the Lease lives (weftd's own namespace).
    pub namespace: String,
    pub name: String,
    /// This replica (its pod name, or host and pid).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub duration: Duration,
}

/// Who the Lease says leads, as seen at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This replica holds it (renew).
    Mine,
    /// Nobody holds it, or the holder let it expire (take it).
    Free,
    /// Another replica holds it until it expires.
    Held(String),
}

/// The Lease's verdict for `me` at `now` (pure).
pub fn verdict(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Verdict {
    let Some(spec) = spec else {
        return Verdict::Free;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return Verdict::Free;
    }
    if holder == me {
        return Verdict::Mine;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match renewed.and_then(|at| at.checked_add(duration).ok()) {
        Some(expires) if expires > now => Verdict::Held(holder),
        _ => Verdict::Free,
    }
}

/// Runs the election for as long as weftd runs, telling `leading`
/// whether this replica leads.
pub async fn run(client: Client, options: Options, leading: watch::Sender<bool>) {
    let api = Api::<Lease>::namespaced(client, &options.namespace);
    let mut last_renewed: Option<Instant> = None;
    loop {
        let now_leading = match attempt(&api, &options).await {
            Ok(won) => {
                last_renewed = won.then(Instant::now);
                won
            }
            Err(err) => {
                // Keep leading only while the lease we wrote still holds,
                // with a margin, so two leaders never overlap.
                let holds = last_renewed.is_some_and(|at| at.elapsed() < options.duration * 2 / 3);
                tracing::warn!(
                    lease = %format!("{}/{}", options.namespace, options.name),
                    "leader election: {err}{}",
                    if holds { "; still leading until the lease runs out" } else { "" }
                );
                holds
            }
        };
        leading.send_if_modified(|was| {
            if *was == now_leading {
                return false;
            }
            tracing::info!(
                identity = %options.identity,
                "{} the leader (Lease {}/{})",
                if now_leading { "now" } else { "no longer" },
                options.namespace,
                options.name
            );
            *was = now_leading;
            true
        });
        tokio::time::sleep(options.duration / 3).await;
    }
}

/// One round: create, renew or take the Lease; whether this replica holds
/// it afterwards. A conflict (another replica wrote first) is a loss.
async fn attempt(api: &Api<Lease>, options: &Options) -> Result<bool, Error> {
    let now = Timestamp::now();
    let seconds = i32::try_from(options.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let lease = api.get_opt(&options.name).await?;
    let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
    let mut next = match verdict(spec, &options.identity, now) {
        Verdict::Held(_) => return Ok(false),
        Verdict::Mine => spec.cloned().unwrap_or_default(),
        Verdict::Free => LeaseSpec {
            holder_identity: Some(options.identity.clone()),
            acquire_time: Some(MicroTime(now)),
            lease_transitions: Some(
                spec.and_then(|s| s.lease_transitions).unwrap_or(0) + i32::from(lease.is_some()),
            ),
            ..LeaseSpec::default()
        },
    };
    next.renew_time = Some(MicroTime(now));
    next.lease_duration_seconds = Some(seconds);
    let written = match lease {
        None => {
            let mut fresh = Lease::default();
            fresh.metadata.name = Some(options.name.clone());
            fresh.spec = Some(next);
            api.create(&PostParams::default(), &fresh).await
        }
        Some(mut held) => {
            // Keeps metadata.resourceVersion: a concurrent write conflicts.
            held.spec = Some(next);
            api.replace(&options.name, &PostParams::default(), &held)
                .await
        }
    };
    match written {
        Ok(_) => Ok(true),
        Err(Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// While this replica leads, keeps [`ROOT_CERT_CONFIG_MAP`] in every
/// namespace of the cluster (as `states` sees it) equal to `root_pem`; re-checks every
/// namespace when it becomes leader and every `resync`.
pub async fn publish_root_cert(
    client: Client,
    root_pem: String,
    mut leading: watch::Receiver<bool>,
    mut states: watch::Receiver<Option<Arc<ClusterState>>>,
    resync: Duration,
) {
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut last_sync = Instant::now();
    loop {
        if !*leading.borrow_and_update() {
            written.clear();
        } else {
            if last_sync.elapsed() >= resync {
                written.clear();
                last_sync = Instant::now();
            }
            let wanted: BTreeSet<String> = states
                .borrow_and_update()
                .as_ref()
                .map(|state| state.namespaces.keys().cloned().collect())
                .unwrap_or_default();
            for namespace in &wanted {
                if written.contains(namespace) || SKIPPED_NAMESPACES.contains(&namespace.as_str()) {
                    continue;
                }
                match write_root_cert(&client, namespace, &root_pem).await {
                    Ok(()) => {
                        written.insert(namespace.clone());
                    }
                    Err(err) => tracing::warn!(
                        "cannot write ConfigMap {namespace}/{ROOT_CERT_CONFIG_MAP}: {err}; retrying"
                    ),
                }
            }
            written.retain(|ns| wanted.contains(ns));
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return },
            changed = states.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(resync.min(Duration::from_secs(5))) => {}
        }
    }
}

async fn write_root_cert(client: &Client, namespace: &str, root_pem: &str) -> Result<(), Error> {
    let map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ROOT_CERT_CONFIG_MAP,
                     "labels": {"app.kubernetes.io/managed-by": "weftd"}},
        "data": {ROOT_CERT_KEY: root_pem}
    });
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            ROOT_CERT_CONFIG_MAP,
            &PatchParams::apply("weftd").force(),
            &Patch::Apply(&map),
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: Timestamp, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_mine_held_or_free_by_holder_and_expiry() {
        let now = Timestamp::now();
        let ago = |s: i64| now.checked_sub(SignedDuration::from_secs(s)).expect("time");
        assert_eq!(verdict(None, "a", now), Verdict::Free);
        assert_eq!(
            verdict(Some(&spec("a", ago(100), 15)), "a", now),
            Verdict::Mine
        );
        assert_eq!(
            verdict(Some(&spec("b", ago(5), 15)), "a", now),
            Verdict::Held("b".into())
        );
        assert_eq!(
            verdict(Some(&spec("b", ago(16), 15)), "a", now),
            Verdict::Free,
            "expired"
        );
        assert_eq!(
            verdict(Some(&spec("", ago(1), 15)), "a", now),
            Verdict::Free
        );
        let never_renewed = LeaseSpec {
            holder_identity: Some("b".into()),
            ..LeaseSpec::default()
        };
        assert_eq!(verdict(Some(&never_renewed), "a", now), Verdict::Free);
    }
}

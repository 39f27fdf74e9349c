//! `--kubeconfig`/`--context`: weftd on a Kubernetes cluster, reached
//! through the API server, and the cluster's objects for `weft analyze`.
//!
//! A user's machine cannot reach pod IPs, so requests go through the API
//! server's service proxy:
//! `/api/v1/namespaces/<ns>/services/http:weftd:http-api/proxy/<path>`.
//! (istioctl port-forwards to a pod instead; that needs a kubelet streaming
//! the connection, the proxy subresource needs only the API server.) The
//! API server authenticates the kubeconfig's user and checks RBAC
//! (`services/proxy`), then deletes the caller's `Authorization` header, so
//! weftd's own credential travels in `X-Weft-Admin-Token`: the token weftd
//! keeps in the Secret `weftd-admin-token` of its namespace, read here
//! with the user's kubeconfig (see `weft_kube::api_token`). The hop from
//! the API server to weftd is plain HTTP inside the cluster's network.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use weft_kube::api_token;
use weft_kube::install::WEFTD;
use weft_kube::k8s_openapi::api::core::v1::Secret;
use weft_kube::kube::api::{Api, DynamicObject, ListParams};
use weft_kube::kube::config::{KubeConfigOptions, Kubeconfig};
use weft_kube::kube::{self, Client, Config};

/// Which cluster, and where weftd runs in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `--kubeconfig`; `None`: `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// weftd's namespace (`--weft-namespace`, `weft install`'s by default).
    pub namespace: String,
}

impl Cluster {
    /// `Some` when the user asked for a cluster (`--kubeconfig` or
    /// `--context`). `$KUBECONFIG` alone does not: it is set on many
    /// machines that also run `weft up`, whose weftd must stay the default.
    pub fn chosen(
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        namespace: &str,
    ) -> Option<Self> {
        (kubeconfig.is_some() || context.is_some()).then(|| Self {
            kubeconfig,
            context,
            namespace: namespace.to_string(),
        })
    }

    /// For messages: `weftd in weft-system through the API server of
    /// kubeconfig K (context C)`.
    pub fn describe(&self) -> String {
        let file = match &self.kubeconfig {
            Some(path) => format!("kubeconfig {}", path.display()),
            None => "$KUBECONFIG or ~/.kube/config".to_string(),
        };
        let context = match &self.context {
            Some(context) => format!(", context {context}"),
            None => String::new(),
        };
        format!(
            "weftd in namespace {} through the API server of {file}{context}",
            self.namespace
        )
    }

    /// A client for the kubeconfig's cluster and user.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .with_context(|| format!("--kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(file, &options)
                    .await
                    .with_context(|| {
                        format!("--kubeconfig {}: no usable context", path.display())
                    })?
            }
            None => Config::from_kubeconfig(&options)
                .await
                .context("no kubeconfig ($KUBECONFIG or ~/.kube/config) with that context")?,
        };
        Client::try_from(config).context("making the Kubernetes client")
    }

    /// weftd's admin token, from its Secret, read as the kubeconfig's user.
    pub async fn admin_token(&self, client: &Client) -> anyhow::Result<String> {
        let namespace = &self.namespace;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret = match secrets.get_opt(api_token::SECRET).await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                return Err(anyhow!(
                    "there is no Secret {namespace}/{}: weftd creates it when it starts in \
                     Kubernetes mode; is weftd running in namespace {namespace} (`weft install`, \
                     or --weft-namespace)?",
                    api_token::SECRET
                ));
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err(anyhow!(
                    "the API server refused to show weftd's admin token: {}. Using weftd's API \
                     is for whoever may read the Secret {namespace}/{}: an administrator grants \
                     it with `kubectl -n {namespace} create rolebinding NAME --role {} --user \
                     USER`",
                    status.message,
                    api_token::SECRET,
                    weft_kube::install::API_ROLE
                ));
            }
            Err(err) => {
                return Err(anyhow!(
                    "cannot read the Secret {namespace}/{}: {err}",
                    api_token::SECRET
                ));
            }
        };
        api_token::token_of(&secret)
            .map_err(|why| anyhow!("the Secret {namespace}/{}: {why}", api_token::SECRET))
    }
}

/// The API server path that proxies `path` (with its query) to weftd's API.
pub fn proxy_path(namespace: &str, path: &str) -> String {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    format!(
        "/api/v1/namespaces/{namespace}/services/{}/proxy{path}",
        weft_kube::install::api_proxy_name()
    )
}

/// Sends a request meant for weftd through the API server's proxy, with
/// weftd's token in its own header (the client adds the user's).
pub async fn send(
    client: &Client,
    namespace: &str,
    token: &str,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let (mut parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = proxy_path(namespace, &path)
        .parse()
        .with_context(|| format!("{path}: not a path the API server can proxy"))?;
    parts.headers.remove(header::HOST);
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.insert(
        api_token::HEADER,
        token
            .parse()
            .context("weftd's admin token is not a header value")?,
    );
    let request = Request::from_parts(parts, kube::client::Body::from(body.to_vec()));
    let response = client
        .send(request)
        .await
        .map_err(|err| anyhow!("the API server did not answer: {err}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|err| anyhow!("reading the answer through the API server: {err}"))?;
    Ok((status, body))
}

/// The API server's own refusal (a `Status` object, not weftd's JSON) as a
/// sentence that says what to do, or `None` when the body is weftd's.
pub fn api_server_refusal(status: StatusCode, body: &Value, namespace: &str) -> Option<String> {
    if body.get("kind").and_then(Value::as_str) != Some("Status")
        || body.get("apiVersion").and_then(Value::as_str) != Some("v1")
    {
        return None;
    }
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    let hint = match status {
        StatusCode::FORBIDDEN => format!(
            ": using weftd's API needs the services/proxy subresource of {namespace}/{WEFTD}; an \
             administrator grants it with `kubectl -n {namespace} create rolebinding NAME --role \
             {} --user USER`",
            weft_kube::install::API_ROLE
        ),
        StatusCode::NOT_FOUND => format!(
            ": is weftd installed in namespace {namespace} (`weft install`, or --weft-namespace)?"
        ),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => {
            format!(": no weftd pod answers (`kubectl -n {namespace} get pods -l app={WEFTD}`)")
        }
        _ => String::new(),
    };
    Some(format!("the API server answered {status}: {message}{hint}"))
}

/// The kinds `weft analyze --kubeconfig` reads besides Istio's: what the
/// analyzers know of workloads, services and namespaces.
async fn core_objects(client: &Client, out: &mut Vec<Value>) -> anyhow::Result<()> {
    use weft_kube::k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
    let params = ListParams::default();
    for namespace in list(Api::<Namespace>::all(client.clone()), &params, "namespaces").await? {
        out.push(serde_json::to_value(namespace)?);
    }
    for service in list(Api::<Service>::all(client.clone()), &params, "services").await? {
        out.push(serde_json::to_value(service)?);
    }
    for pod in list(Api::<Pod>::all(client.clone()), &params, "pods").await? {
        out.push(serde_json::to_value(pod)?);
    }
    // Nodes only give pods their locality; many users may not list them.
    match Api::<Node>::all(client.clone()).list(&params).await {
        Ok(nodes) => {
            for node in nodes {
                out.push(serde_json::to_value(node)?);
            }
        }
        Err(kube::Error::Api(status)) if status.code == 403 => eprintln!(
            "weft analyze: not reading Nodes (forbidden): localities of pods are not analyzed"
        ),
        Err(err) => return Err(anyhow!("listing nodes: {err}")),
    }
    Ok(())
}

async fn list<K>(api: Api<K>, params: &ListParams, what: &str) -> anyhow::Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(params)
        .await
        .map(|list| list.items)
        .map_err(|err| anyhow!("listing {what} (weft analyze reads the whole cluster): {err}"))
}

/// Every object `weft analyze` needs from the cluster, as written objects
/// (apiVersion and kind set): Namespaces, Services, Pods, Nodes and every
/// Istio kind Weft serves, at the version the API server prefers.
pub async fn objects(client: &Client) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    core_objects(client, &mut out).await?;
    let groups: std::collections::BTreeSet<&str> = weft_kube::source::istio::KINDS
        .iter()
        .map(|(group, _)| *group)
        .collect();
    for group in groups {
        // A group the cluster does not serve has no objects to analyze.
        let Ok(served) = kube::discovery::group(client, group).await else {
            continue;
        };
        for (_, kind) in weft_kube::source::istio::KINDS
            .iter()
            .filter(|(g, _)| *g == group)
        {
            let Some((resource, _)) = served.recommended_kind(kind) else {
                continue;
            };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let what = format!("{} ({group})", resource.plural);
            for item in list(api, &ListParams::default(), &what).await? {
                let mut value = serde_json::to_value(item)?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("apiVersion".into(), resource.api_version.clone().into());
                    object.insert("kind".into(), resource.kind.clone().into());
                }
                out.push(value);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_through_the_service_proxy_of_weftds_api_port() {
        assert_eq!(
            proxy_path("weft-system", "/v1/proxies"),
            "/api/v1/namespaces/weft-system/services/http:weftd:http-api/proxy/v1/proxies"
        );
        assert_eq!(
            proxy_path("mesh", "/v1/describe?service=a&namespace=b"),
            "/api/v1/namespaces/mesh/services/http:weftd:http-api/proxy/v1/describe?service=a&namespace=b"
        );
    }

    #[test]
    fn a_cluster_is_chosen_by_flags_not_by_kubeconfig_in_the_environment() {
        assert_eq!(Cluster::chosen(None, None, "weft-system"), None);
        let by_context = Cluster::chosen(None, Some("prod".into()), "weft-system").expect("chosen");
        assert_eq!(
            by_context.describe(),
            "weftd in namespace weft-system through the API server of $KUBECONFIG or \
             ~/.kube/config, context prod"
        );
        let by_file = Cluster::chosen(Some("/k".into()), None, "mesh").expect("chosen");
        assert_eq!(
            by_file.describe(),
            "weftd in namespace mesh through the API server of kubeconfig /k"
        );
    }

    #[test]
    fn the_api_servers_refusals_say_what_to_do_and_weftds_answers_pass() {
        let status = |code: u16, message: &str| {
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "message": message, "code": code})
        };
        let forbidden = api_server_refusal(
            StatusCode::FORBIDDEN,
            &status(
                403,
                "services \"weftd\" is forbidden: User \"bob\" cannot get resource",
            ),
            "weft-system",
        )
        .expect("the API server's");
        assert!(forbidden.contains("User \"bob\" cannot get"), "{forbidden}");
        assert!(forbidden.contains("--role weftd-api"), "{forbidden}");
        let unavailable = api_server_refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            &status(503, "no endpoints available for service \"weftd\""),
            "weft-system",
        )
        .expect("the API server's");
        assert!(
            unavailable.contains("no weftd pod answers"),
            "{unavailable}"
        );
        let weftd = serde_json::json!({"error": "no proxy \"x\""});
        assert_eq!(
            api_server_refusal(StatusCode::NOT_FOUND, &weftd, "weft-system"),
            None
        );
    }
}

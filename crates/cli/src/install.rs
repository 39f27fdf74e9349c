//! `weft install` and `weft uninstall`: the objects `weft_kube::install`
//! renders, printed (`--dry-run`) or applied with server-side apply (field
//! manager `weft-install`, so a second install updates in place) through a
//! kubeconfig; uninstall deletes them in reverse order.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;
use weft_kube::install::{self, FIELD_MANAGER, InstallOptions};
use weft_kube::kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use weft_kube::kube::core::{ApiResource, GroupVersionKind};
use weft_kube::kube::{self, Client, Config};

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Print every object as YAML instead of applying it.
    #[arg(long)]
    dry_run: bool,
    /// The cluster's kubeconfig (default: $KUBECONFIG, ~/.kube/config, or
    /// the in-cluster service account).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The image with weftd, weft-proxy and weft (see the Dockerfile).
    #[arg(long, default_value_t = weft_kube::inject::default_image())]
    image: String,
    /// The API server's version (MAJOR.MINOR), which decides native sidecars
    /// (1.29+). Default: asked of the server; with --dry-run, native.
    #[arg(long, value_name = "MAJOR.MINOR")]
    kube_version: Option<String>,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    #[arg(long, default_value_t = 1)]
    replicas: i32,
    /// weftd's CA from the `cacerts` Secret in weft-system (Istio's plug-in
    /// CA layout), required for more than one replica.
    #[arg(long)]
    plugin_ca: bool,
    /// Leave out the ingress gateway.
    #[arg(long)]
    no_ingress_gateway: bool,
}

#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Also delete the CRDs, and with them every Istio resource in the cluster.
    #[arg(long)]
    purge: bool,
    /// Print what would be deleted.
    #[arg(long)]
    dry_run: bool,
}

/// `context`: the global `--context` (the kubeconfig's current one if `None`).
pub fn install(args: &InstallArgs, context: Option<&str>) -> ExitCode {
    if args.replicas > 1 && !args.plugin_ca {
        eprintln!(
            "weft install: --replicas {} without --plugin-ca: each weftd would make its own root, \
             and proxies trust only one",
            args.replicas
        );
        return ExitCode::FAILURE;
    }
    let mut options = InstallOptions {
        image: args.image.clone(),
        kube_version: args.kube_version.clone(),
        trust_domain: args.trust_domain.clone(),
        replicas: args.replicas,
        plugin_ca: args.plugin_ca,
        ingress_gateway: !args.no_ingress_gateway,
    };
    if args.dry_run {
        return match install::render(&options).and_then(|objects| install::to_yaml(&objects)) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => fail(&anyhow::anyhow!(err)),
        };
    }
    block_on(async {
        let client = client(args.kubeconfig.as_ref(), context).await?;
        if options.kube_version.is_none() {
            let version = client
                .apiserver_version()
                .await
                .context("asking the API server its version")?;
            let minor: String = version
                .minor
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            options.kube_version = Some(format!("{}.{minor}", version.major));
        }
        let objects = install::render(&options).map_err(anyhow::Error::msg)?;
        for object in &objects {
            let (api, name) = api_for(&client, object)?;
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .with_context(|| format!("applying {}", label(object)))?;
            println!("{} applied", label(object));
        }
        println!(
            "weft installed (Kubernetes {}). Label a namespace with istio-injection=enabled to \
             inject its new pods.",
            options.kube_version.as_deref().unwrap_or("?")
        );
        Ok(())
    })
}

pub fn uninstall(args: &UninstallArgs, context: Option<&str>) -> ExitCode {
    let objects = match install::render(&InstallOptions::default()) {
        Ok(objects) => objects,
        Err(err) => return fail(&anyhow::anyhow!(err)),
    };
    // Reverse order: the namespace (and everything left in it) last.
    let doomed: Vec<&Value> = objects
        .iter()
        .rev()
        .filter(|o| args.purge || o["kind"] != "CustomResourceDefinition")
        .collect();
    if args.dry_run {
        for object in doomed {
            println!("{} would be deleted", label(object));
        }
        return ExitCode::SUCCESS;
    }
    block_on(async {
        let client = client(args.kubeconfig.as_ref(), context).await?;
        for object in doomed {
            let (api, name) = api_for(&client, object)?;
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => println!("{} deleted", label(object)),
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    println!("{} not found", label(object))
                }
                Err(err) => {
                    return Err(anyhow::Error::from(err))
                        .with_context(|| format!("deleting {}", label(object)));
                }
            }
        }
        Ok(())
    })
}

async fn client(kubeconfig: Option<&PathBuf>, context: Option<&str>) -> anyhow::Result<Client> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("{}: no usable context", path.display()))?
        }
        (None, Some(context)) => Config::from_kubeconfig(&options)
            .await
            .with_context(|| format!("no kubeconfig with the context {context}"))?,
        (None, None) => Config::infer()
            .await
            .context("no kubeconfig found (give --kubeconfig, or set KUBECONFIG)")?,
    };
    Client::try_from(config).context("making the Kubernetes client")
}

/// The dynamic API for one rendered object, and its name.
fn api_for(client: &Client, object: &Value) -> anyhow::Result<(Api<DynamicObject>, String)> {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let kind = text("/kind");
    let (plural, namespaced) = install::resource_of(kind)
        .with_context(|| format!("{}: a kind install does not know", label(object)))?;
    let (group, version) = text("/apiVersion")
        .split_once('/')
        .unwrap_or(("", text("/apiVersion")));
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api = if namespaced {
        Api::namespaced_with(client.clone(), text("/metadata/namespace"), &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    Ok((api, text("/metadata/name").to_string()))
}

fn label(object: &Value) -> String {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    match text("/metadata/namespace") {
        "" => format!("{} {}", text("/kind"), text("/metadata/name")),
        namespace => format!("{} {namespace}/{}", text("/kind"), text("/metadata/name")),
    }
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&err.into()),
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("weft: {err:#}");
    ExitCode::FAILURE
}

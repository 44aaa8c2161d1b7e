//! `operator_bench`: the operator against a real Kubernetes control plane (`scripts/cluster.sh`:
//! etcd, kube-apiserver with RBAC, kube-controller-manager, kube-scheduler and KWOK, which makes
//! scheduled pods Running and Ready without containers and provisions PVCs).
//!
//! 1. In-process, the real `run_controller` with the chart ServiceAccount's token (so the chart's
//!    RBAC authorizes it) and every request counted by (verb, kind) in a tower layer on its
//!    `kube::Client`: wall time and API calls for one platform (`examples/minimal.yaml`'s spec)
//!    from nothing to Ready.
//! 2. Steady state: the controller's `reconcile` called on that unchanged Ready platform; p50/p95,
//!    API calls and writes per reconcile, and the children's resourceVersions before and after
//!    (nothing may change: a no-op server-side apply keeps the resourceVersion).
//! 3. Separate process: `caduceus-operator run` (kubeconfig with the ServiceAccount's token,
//!    `--watch-namespace` the bench's namespace) managing N platforms (default 500) until all are
//!    Ready; the time and the operator's RSS (VmRSS/VmHWM from /proc/PID/status).
//!
//! Which cluster: `--kubeconfig` or `CADUCEUS_BENCH_KUBECONFIG`, else this repository's control
//! plane (`scripts/cluster.sh up`, which reuses a running one). Never the current kubeconfig
//! context. Every namespace the bench creates is unique (`bench-<pid>-<hex>`) and deleted at the
//! end, also after a failure or Ctrl-C.
//!
//! Build first: `cargo build --release -p caduceus-operator -p caduceus-bench`, then
//! `target/release/operator_bench` (the operator binary is looked up next to this one).
//! Targets: < 50 ms per steady-state reconcile (p95), ≤ 1 write per child per reconcile and no
//! child changed when nothing changed, < 100 MiB operator RSS at 500 platforms.

// The (verb, kind) of a Kubernetes API request, shared with the operator's cluster tests.
#[path = "../../../operator/tests/support/call_kind.rs"]
mod call_kind;

use call_kind::is_write;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use caduceus_operator::{
    controller::{reconcile, run_with_context, Context},
    run_controller, ControllerConfig, HealthcarePlatform, Metrics,
};
use clap::Parser;
use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        core::v1::{Container, Event as CoreEvent, Namespace, Node, Pod, PodSpec, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
    core::{DynamicObject, GroupVersionKind},
    discovery::ApiResource,
    runtime::{watcher, WatchStreamExt},
    Client, Config,
};
use serde_json::{json, Value};
use tokio::{
    process::{Child, Command},
    sync::{oneshot, Notify},
    task::JoinHandle,
};

const TARGET_RECONCILE_MS: f64 = 50.0;
const TARGET_RSS_MIB: f64 = 100.0;
/// The platform count the RSS target is defined for.
const TARGET_RSS_PLATFORMS: usize = 500;
/// Field manager of the bench's own writes (CRD, RBAC, namespaces).
const MANAGER: &str = "caduceus-bench";
/// The operator's release namespace (its ServiceAccount) as the tests use it.
const OPERATOR_NS: &str = "caduceus-system";
const HCP_CRD: &str = "healthcareplatforms.caduceus.io";

#[derive(Parser, Debug)]
#[command(about = "Operator benchmark against a real Kubernetes control plane")]
struct Args {
    /// Kubeconfig of the cluster to use (default: `scripts/cluster.sh up`, this repository's own
    /// control plane). Never the current context of ~/.kube/config.
    #[arg(long, env = "CADUCEUS_BENCH_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Platforms managed by the operator process for the scale and memory measurement.
    #[arg(long, default_value_t = 500)]
    platforms: usize,
    /// Steady-state reconciles to time.
    #[arg(long, default_value_t = 200)]
    reconciles: usize,
    /// `caduceus-operator` binary (default: next to this binary).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Only the in-process measurements (one platform, steady state).
    #[arg(long)]
    skip_rss: bool,
    /// Seconds to wait for one platform to become Ready (in-process part).
    #[arg(long, default_value_t = 180)]
    one_timeout: u64,
    /// Seconds to wait for all platforms to become Ready in the scale run.
    #[arg(long, default_value_t = 1800)]
    ready_timeout: u64,
    /// Scale run: minimal.yaml's resource requests unchanged (by default they are lowered so
    /// that KWOK's fake nodes admit more platforms; see SCALE_REQUESTS).
    #[arg(long)]
    keep_requests: bool,
    /// Platforms created at once in the scale run.
    #[arg(long, default_value_t = 8)]
    create_concurrency: usize,
    /// Seconds to wait for a bench namespace to be gone at the end (deletion goes on in the
    /// cluster after this).
    #[arg(long, default_value_t = 900)]
    cleanup_timeout: u64,
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn repo_file(rel: &str) -> anyhow::Result<String> {
    let path = repo_path(rel);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The kubeconfig to use and where it came from (never the current context).
fn kubeconfig_path(args: &Args) -> anyhow::Result<(PathBuf, &'static str)> {
    if let Some(p) = args
        .kubeconfig
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        return Ok((p.clone(), "--kubeconfig / CADUCEUS_BENCH_KUBECONFIG"));
    }
    let script = repo_path("scripts/cluster.sh");
    eprintln!("operator_bench: no --kubeconfig: running `scripts/cluster.sh up`");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("up")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("`scripts/cluster.sh up` failed ({}): {stdout}", out.status);
    }
    let last = stdout.lines().last().unwrap_or_default();
    let path = last.strip_prefix("export KUBECONFIG=").ok_or_else(|| {
        anyhow!("`scripts/cluster.sh up` did not end with `export KUBECONFIG=<path>`: {last:?}")
    })?;
    Ok((PathBuf::from(path), "scripts/cluster.sh up"))
}

/// A tool installed by `scripts/tools.sh`, else from PATH.
fn tool(name: &str) -> PathBuf {
    let local = repo_path(&format!(".tools/bin/{name}"));
    if local.is_file() {
        local
    } else {
        PathBuf::from(name)
    }
}

/// Multi-document YAML as JSON values (empty documents dropped).
fn yaml_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).context("parsing a YAML document")?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The ServiceAccount and RBAC objects of the operator chart, as `helm template` renders them.
fn chart_rbac() -> anyhow::Result<Vec<Value>> {
    let helm = tool("helm");
    let out = std::process::Command::new(&helm)
        .args(["template", "caduceus-operator"])
        .arg(repo_path("charts/caduceus-operator"))
        .args(["--namespace", OPERATOR_NS])
        .args(["--show-only", "templates/serviceaccount.yaml"])
        .args(["--show-only", "templates/rbac.yaml"])
        .output()
        .with_context(|| format!("running {} (scripts/tools.sh installs it)", helm.display()))?;
    if !out.status.success() {
        bail!(
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    yaml_documents(&String::from_utf8_lossy(&out.stdout)).context("helm template output")
}

/// Server-side applies a manifest of any served kind as the bench, forcing conflicts.
async fn apply_manifest(client: &Client, obj: &Value) -> anyhow::Result<DynamicObject> {
    let gvk = GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: obj["apiVersion"].as_str().unwrap_or_default().into(),
        kind: obj["kind"].as_str().unwrap_or_default().into(),
    })
    .context("apiVersion/kind of a manifest")?;
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("{gvk:?} is not served"))?;
    let name = obj["metadata"]["name"]
        .as_str()
        .ok_or_else(|| anyhow!("{} without metadata.name", gvk.kind))?;
    let api: Api<DynamicObject> = match (caps.scope, obj["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        (kube::discovery::Scope::Namespaced, None) => {
            Api::default_namespaced_with(client.clone(), &ar)
        }
        (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .with_context(|| format!("applying {} {name}", gvk.kind))
}

async fn wait_crd_established(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let crd = api
            .get(name)
            .await
            .with_context(|| format!("reading CRD {name}"))?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("CRD {name} not Established within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Config that authenticates with a fresh token of the ServiceAccount, and the token.
async fn token_config(
    admin: &Client,
    admin_config: &Config,
    account: &str,
    seconds: u64,
) -> anyhow::Result<(Config, String)> {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), OPERATOR_NS);
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": seconds}
    });
    let answer: Value = accounts
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {OPERATOR_NS}/{account}"))?;
    let token = answer["status"]["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no token in the TokenRequest status"))?
        .to_string();
    let mut config = admin_config.clone();
    config.auth_info = AuthInfo {
        token: Some(token.clone().into()),
        ..AuthInfo::default()
    };
    Ok((config, token))
}

/// What the measurements share: the admin client and the operator's identity.
struct Cluster {
    server: String,
    admin: Client,
    admin_config: Config,
    account: String,
}

impl Cluster {
    /// Installs the CRD from `crds/` and the chart's ServiceAccount and RBAC (idempotent:
    /// server-side apply of the same manifests the operator tests apply).
    async fn prepare(kubeconfig: &Path) -> anyhow::Result<Cluster> {
        let kc = Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let admin_config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading {}", kubeconfig.display()))?;
        let server = admin_config.cluster_url.to_string();
        let admin = Client::try_from(admin_config.clone()).context("admin client")?;
        let version = admin
            .apiserver_version()
            .await
            .with_context(|| format!("the API server at {server} does not answer"))?;
        println!(
            "cluster: {server} (Kubernetes {}), kubeconfig {}",
            version.git_version,
            kubeconfig.display()
        );

        let crd: CustomResourceDefinition =
            serde_norway::from_str(&repo_file("crds/caduceus.io_healthcareplatforms.yaml")?)
                .context("parsing the CRD")?;
        apply_manifest(&admin, &serde_json::to_value(crd)?)
            .await
            .context("installing the HealthcarePlatform CRD")?;
        wait_crd_established(&admin, HCP_CRD).await?;
        apply_manifest(
            &admin,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}}),
        )
        .await?;
        let rbac = tokio::task::spawn_blocking(chart_rbac)
            .await
            .context("helm task")??;
        let mut account = None;
        for obj in &rbac {
            if obj["kind"] == "ServiceAccount" {
                account = obj["metadata"]["name"].as_str().map(str::to_string);
            }
            apply_manifest(&admin, obj)
                .await
                .context("the chart's RBAC")?;
        }
        let account = account.ok_or_else(|| anyhow!("the chart renders no ServiceAccount"))?;
        Ok(Cluster {
            server,
            admin,
            admin_config,
            account,
        })
    }

    async fn operator_config(&self, seconds: u64) -> anyhow::Result<(Config, String)> {
        token_config(&self.admin, &self.admin_config, &self.account, seconds).await
    }
}

/// A kubeconfig file for the operator process: the cluster's address and CA, the token.
fn write_operator_kubeconfig(config: &Config, token: &str, path: &Path) -> anyhow::Result<()> {
    let mut cluster = json!({"server": config.cluster_url.to_string()});
    let ca_pem = match (&config.root_cert_file, &config.root_cert) {
        (Some(file), _) => Some(
            std::fs::read(file).with_context(|| format!("reading the CA {}", file.display()))?,
        ),
        (None, Some(ders)) => Some(
            ders.iter()
                .map(|d| der_to_pem(d))
                .collect::<String>()
                .into(),
        ),
        (None, None) => None,
    };
    if let Some(pem) = ca_pem {
        cluster["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    if config.accept_invalid_certs {
        cluster["insecure-skip-tls-verify"] = json!(true);
    }
    if let Some(name) = &config.tls_server_name {
        cluster["tls-server-name"] = json!(name);
    }
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "operator"}}],
        "current-context": "bench",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&kubeconfig)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

// ---------------------------------------------------------------------------------------------
// Namespaces (unique, always deleted)
// ---------------------------------------------------------------------------------------------

fn hcp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("caduceus.io", "v1alpha1", "HealthcarePlatform"),
        "healthcareplatforms",
    )
}

/// The namespaces this run created (deleted by [`Namespaces::delete_all`]).
#[derive(Clone, Default)]
struct Namespaces(Arc<Mutex<Vec<String>>>);

impl Namespaces {
    async fn create(&self, admin: &Client, purpose: &str) -> anyhow::Result<String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "bench-{}-{purpose}-{:06x}",
            std::process::id(),
            nanos & 0xff_ffff
        );
        // Registered first: a failed or interrupted create is still cleaned up.
        self.0.lock().expect("namespaces").push(name.clone());
        apply_manifest(
            admin,
            &json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "caduceus.io/bench": "true"
                }}
            }),
        )
        .await
        .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }

    /// Deletes the namespace and waits (bounded) until it is gone. Platforms lose their
    /// finalizer (the operator that would remove it is stopped by now).
    async fn delete(&self, admin: &Client, ns: &str, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        match namespaces.delete(ns, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting namespace {ns}")),
        }
        let platforms: Api<DynamicObject> =
            Api::namespaced_with(admin.clone(), ns, &hcp_resource());
        loop {
            if namespaces.get_opt(ns).await?.is_none() {
                break;
            }
            let list = match platforms.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
                Err(e) => return Err(e).context("listing platforms to remove finalizers"),
            };
            let with_finalizers: Vec<String> = list
                .into_iter()
                .filter(|p| {
                    p.metadata
                        .finalizers
                        .as_ref()
                        .is_some_and(|f| !f.is_empty())
                })
                .filter_map(|p| p.metadata.name)
                .collect();
            stream::iter(with_finalizers)
                .for_each_concurrent(8, |name| {
                    let platforms = platforms.clone();
                    async move {
                        let patch = json!({"metadata": {"finalizers": null}});
                        // 404 (deleted meanwhile) is fine; others show up as a slow deletion.
                        let _ = platforms
                            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                            .await;
                    }
                })
                .await;
            if start.elapsed() > timeout {
                eprintln!(
                    "operator_bench: namespace {ns} still terminating after {} s; the cluster keeps deleting it",
                    timeout.as_secs()
                );
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.0.lock().expect("namespaces").retain(|n| n != ns);
        Ok(())
    }

    async fn delete_all(&self, admin: &Client, timeout: Duration) {
        let all = self.0.lock().expect("namespaces").clone();
        for ns in all {
            let t = Instant::now();
            match self.delete(admin, &ns, timeout).await {
                Ok(()) => println!(
                    "cleanup: namespace {ns} deleted in {:.1} s",
                    t.elapsed().as_secs_f64()
                ),
                Err(e) => eprintln!("operator_bench: cleanup of {ns} failed: {e:#}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The operator's API calls (tower layer on its kube Client)
// ---------------------------------------------------------------------------------------------

/// Requests sent through a client, by (verb, kind); when the last write (not an Event) and the
/// first write of a child (not the platform, not an Event) were sent; 403 answers.
#[derive(Clone, Default)]
struct CallLog(Arc<Mutex<CallLogInner>>);

#[derive(Default)]
struct CallLogInner {
    counts: BTreeMap<(String, String), u64>,
    forbidden: BTreeMap<(String, String), u64>,
    last_write: Option<Instant>,
    first_child_write: Option<Instant>,
    /// Time from sending a request to its response head, by verb.
    waited: BTreeMap<String, Duration>,
}

#[derive(Clone)]
struct Recording<S> {
    inner: S,
    log: CallLog,
}

impl<S, B> tower::Service<http::Request<kube::client::Body>> for Recording<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let key = self.log.record(&req);
        let log = self.log.clone();
        let sent = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            *log.0
                .lock()
                .expect("call log")
                .waited
                .entry(key.0.clone())
                .or_default() += sent.elapsed();
            if let Ok(r) = &res {
                if r.status() == http::StatusCode::FORBIDDEN {
                    *log.0
                        .lock()
                        .expect("call log")
                        .forbidden
                        .entry(key)
                        .or_default() += 1;
                }
            }
            res
        })
    }
}

impl CallLog {
    /// Counts one request by its (verb, kind) ([`call_kind::classify`]).
    fn record<B>(&self, req: &http::Request<B>) -> (String, String) {
        let (verb, kind) = call_kind::classify(req);
        let mut inner = self.0.lock().expect("call log");
        if is_write(&verb) && kind != "Event" {
            let now = Instant::now();
            inner.last_write = Some(now);
            if kind != "HealthcarePlatform" && inner.first_child_write.is_none() {
                inner.first_child_write = Some(now);
            }
        }
        *inner
            .counts
            .entry((verb.clone(), kind.clone()))
            .or_default() += 1;
        (verb, kind)
    }

    fn counts(&self) -> CallCounts {
        CallCounts(self.0.lock().expect("call log").counts.clone())
    }

    fn waited(&self) -> BTreeMap<String, Duration> {
        self.0.lock().expect("call log").waited.clone()
    }

    fn forbidden(&self) -> CallCounts {
        CallCounts(self.0.lock().expect("call log").forbidden.clone())
    }

    fn last_write(&self) -> Option<Instant> {
        self.0.lock().expect("call log").last_write
    }

    fn first_child_write(&self) -> Option<Instant> {
        self.0.lock().expect("call log").first_child_write
    }

    fn forget_first_child_write(&self) {
        self.0.lock().expect("call log").first_child_write = None;
    }
}

/// A snapshot of a [`CallLog`].
#[derive(Clone, Debug, Default)]
struct CallCounts(BTreeMap<(String, String), u64>);

impl CallCounts {
    fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts(
            self.0
                .iter()
                .map(|(k, n)| (k.clone(), n - earlier.0.get(k).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    fn verb(&self, verb: &str) -> u64 {
        self.0
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    fn writes(&self) -> u64 {
        self.0
            .iter()
            .filter(|((v, _), _)| is_write(v))
            .map(|(_, n)| n)
            .sum()
    }

    fn writes_of(&self, kind: &str) -> u64 {
        self.0
            .iter()
            .filter(|((v, k), _)| is_write(v) && k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// `verb=n (kind n, kind n) ...`, per `per` units (1 for totals).
    fn describe(&self, per: f64) -> String {
        const VERBS: &[&str] = &[
            "get",
            "list",
            "watch",
            "create",
            "apply",
            "patch",
            "update",
            "delete",
            "discovery",
            "other",
        ];
        let fmt = |n: f64| {
            if per == 1.0 {
                format!("{n:.0}")
            } else {
                format!("{n:.2}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            }
        };
        VERBS
            .iter()
            .filter_map(|verb| {
                let n = self.verb(verb);
                if n == 0 {
                    return None;
                }
                let kinds: Vec<String> = self
                    .0
                    .iter()
                    .filter(|((v, k), _)| v == verb && !k.is_empty())
                    .map(|((_, k), c)| format!("{k} {}", fmt(*c as f64 / per)))
                    .collect();
                Some(if kinds.is_empty() {
                    format!("{verb}={}", fmt(n as f64 / per))
                } else {
                    format!("{verb}={} ({})", fmt(n as f64 / per), kinds.join(", "))
                })
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A client with the given identity whose requests are recorded in `log`.
fn counting_client(config: &Config, log: &CallLog) -> anyhow::Result<Client> {
    let log = log.clone();
    Ok(kube::client::ClientBuilder::try_from(config.clone())
        .context("operator client")?
        .with_layer(&tower::layer::layer_fn(move |inner| Recording {
            inner,
            log: log.clone(),
        }))
        .build())
}

/// Waits until the client has sent nothing new for `quiet` (and at least one watch).
async fn wait_calls_settle(log: &CallLog, quiet: Duration, max: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last_total = log.counts().total();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let counts = log.counts();
        if counts.total() != last_total {
            last_total = counts.total();
            since = Instant::now();
        } else if since.elapsed() >= quiet && counts.verb("watch") > 0 {
            return Ok(());
        }
        if start.elapsed() > max {
            bail!(
                "the controller kept calling the API for {} s after its start: {}",
                max.as_secs(),
                counts.describe(1.0)
            );
        }
    }
}

/// Waits until the log shows no write (but Events) for `quiet`.
async fn wait_writes_quiet(log: &CallLog, quiet: Duration, max: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let since = log
            .last_write()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX);
        if since >= quiet {
            return Ok(());
        }
        if start.elapsed() > max {
            bail!(
                "the operator kept writing for {} s: {}",
                max.as_secs(),
                log.counts().describe(1.0)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Platforms
// ---------------------------------------------------------------------------------------------

/// The platform used throughout: `examples/minimal.yaml`'s spec.
fn platform_spec() -> anyhow::Result<Value> {
    let text = repo_file("examples/minimal.yaml")?;
    let doc: Value = serde_norway::from_str(&text).context("parsing examples/minimal.yaml")?;
    doc.get("spec")
        .cloned()
        .ok_or_else(|| anyhow!("examples/minimal.yaml has no spec"))
}

/// Creates through the dynamic API so the body is the manifest (as kubectl would send it).
async fn create_platform(
    client: &Client,
    ns: &str,
    name: &str,
    spec: &Value,
) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &hcp_resource());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "caduceus.io/v1alpha1",
        "kind": "HealthcarePlatform",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))?;
    api.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating platform {ns}/{name}"))?;
    Ok(())
}

/// The phase of every platform of a namespace, kept by a watch (no polling of the API).
struct PhaseWatch {
    phases: Arc<Mutex<BTreeMap<String, String>>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl PhaseWatch {
    async fn start(admin: &Client, ns: &str) -> anyhow::Result<PhaseWatch> {
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &hcp_resource());
        let phases = Arc::new(Mutex::new(BTreeMap::new()));
        let changed = Arc::new(Notify::new());
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let (p, c) = (phases.clone(), changed.clone());
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            let phase_of = |o: &DynamicObject| {
                o.data["status"]["phase"]
                    .as_str()
                    .unwrap_or("(none)")
                    .to_string()
            };
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        eprintln!("operator_bench: platform watch: {e}");
                        continue;
                    }
                };
                {
                    let mut map = p.lock().expect("phases");
                    match &ev {
                        watcher::Event::Init => map.clear(),
                        watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                            map.insert(o.metadata.name.clone().unwrap_or_default(), phase_of(o));
                        }
                        watcher::Event::Delete(o) => {
                            map.remove(o.metadata.name.as_deref().unwrap_or_default());
                        }
                        watcher::Event::InitDone => {}
                    }
                }
                if matches!(ev, watcher::Event::InitDone) {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                c.notify_waiters();
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .context("the platform watch did not start within 30 s")?
            .context("the platform watch ended")?;
        Ok(PhaseWatch {
            phases,
            changed,
            task,
        })
    }

    fn phase(&self, name: &str) -> Option<String> {
        self.phases.lock().expect("phases").get(name).cloned()
    }

    fn histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        for phase in self.phases.lock().expect("phases").values() {
            *h.entry(phase.clone()).or_default() += 1;
        }
        h
    }

    /// Waits for a change (or `at_most`).
    async fn changed(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.changed.notified()).await;
    }
}

impl Drop for PhaseWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn describe_histogram(h: &BTreeMap<String, usize>) -> String {
    h.iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every kind the operator creates children of: (group, version, kind, plural).
const CHILD_KINDS: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
    ("networking.k8s.io", "v1", "Ingress", "ingresses"),
];

/// One child as found in the cluster.
#[derive(Clone, Debug, PartialEq)]
struct ChildVersion {
    resource_version: String,
    /// Managers of its managedFields with their last write, for a changed child's report.
    managers: Vec<String>,
}

/// `Kind/name` → resourceVersion of every object owned by the platform (ownerReference to its
/// UID), plus the platform itself (`HealthcarePlatform/<name>`).
async fn child_versions(
    admin: &Client,
    ns: &str,
    platform: &str,
) -> anyhow::Result<BTreeMap<String, ChildVersion>> {
    let hcp: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &hcp_resource());
    let p = hcp
        .get(platform)
        .await
        .with_context(|| format!("reading platform {ns}/{platform}"))?;
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let version = |o: &DynamicObject| ChildVersion {
        resource_version: o.metadata.resource_version.clone().unwrap_or_default(),
        managers: o
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|m| {
                format!(
                    "{} {} {}",
                    m.manager.as_deref().unwrap_or("?"),
                    m.operation.as_deref().unwrap_or("?"),
                    m.time.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
                )
            })
            .collect(),
    };
    let mut out = BTreeMap::new();
    out.insert(format!("HealthcarePlatform/{platform}"), version(&p));
    for (group, v, kind, plural) in CHILD_KINDS {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, v, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &ar);
        let list = api
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing {kind} in {ns}"))?;
        for o in list.items {
            let owned = o
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid);
            if owned {
                let name = o.metadata.name.clone().unwrap_or_default();
                out.insert(format!("{kind}/{name}"), version(&o));
            }
        }
    }
    Ok(out)
}

/// What pods ask the scheduler for: CPU cores, memory bytes, pod slots.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Requests {
    cpu: f64,
    memory: f64,
    pods: f64,
}

impl Requests {
    fn plus(self, o: Requests) -> Requests {
        Requests {
            cpu: self.cpu + o.cpu,
            memory: self.memory + o.memory,
            pods: self.pods + o.pods,
        }
    }

    fn max(self, o: Requests) -> Requests {
        Requests {
            cpu: self.cpu.max(o.cpu),
            memory: self.memory.max(o.memory),
            pods: self.pods.max(o.pods),
        }
    }

    fn times(self, n: f64) -> Requests {
        Requests {
            cpu: self.cpu * n,
            memory: self.memory * n,
            pods: self.pods * n,
        }
    }

    fn minus(self, o: Requests) -> Requests {
        Requests {
            cpu: (self.cpu - o.cpu).max(0.0),
            memory: (self.memory - o.memory).max(0.0),
            pods: (self.pods - o.pods).max(0.0),
        }
    }

    /// How many times `per` fits into `self`, and the resource that limits it.
    fn fits(self, per: Requests) -> (usize, &'static str) {
        let mut best = (usize::MAX, "nothing");
        for (have, need, what) in [
            (self.pods, per.pods, "pods"),
            (self.cpu, per.cpu, "cpu"),
            (self.memory, per.memory, "memory"),
        ] {
            if need > 0.0 {
                let n = (have / need).floor() as usize;
                if n < best.0 {
                    best = (n, what);
                }
            }
        }
        best
    }

    fn describe(&self) -> String {
        format!(
            "{:.0} pods, {:.2} CPU, {:.2} GiB memory",
            self.pods,
            self.cpu,
            self.memory / (1u64 << 30) as f64
        )
    }
}

/// A Kubernetes quantity (`250m`, `1`, `512Mi`, `1e3`, `2G`) as a number.
fn parse_quantity(q: &str) -> anyhow::Result<f64> {
    let q = q.trim();
    let suffixes: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let value: f64 = number
        .parse()
        .with_context(|| format!("not a Kubernetes quantity: {q:?}"))?;
    Ok(value * factor)
}

fn container_requests(c: &Container) -> anyhow::Result<Requests> {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let get = |key: &str| -> anyhow::Result<f64> {
        requests
            .and_then(|r| r.get(key))
            .map(|q| parse_quantity(&q.0))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    Ok(Requests {
        cpu: get("cpu")?,
        memory: get("memory")?,
        pods: 0.0,
    })
}

/// What the scheduler reserves for a pod: the containers (and sidecars), or the largest init
/// container when that is more.
fn pod_requests(spec: &PodSpec) -> anyhow::Result<Requests> {
    let mut running = Requests::default();
    for c in &spec.containers {
        running = running.plus(container_requests(c)?);
    }
    let mut init = Requests::default();
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.as_deref() == Some("Always") {
            running = running.plus(container_requests(c)?);
        } else {
            init = init.max(container_requests(c)?);
        }
    }
    Ok(running.max(init).plus(Requests {
        pods: 1.0,
        ..Requests::default()
    }))
}

/// (allocatable on schedulable Ready nodes, requested by the pods not finished anywhere).
async fn cluster_room(admin: &Client) -> anyhow::Result<(Requests, Requests)> {
    let nodes = Api::<Node>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .context("listing nodes")?;
    let mut allocatable = Requests::default();
    for n in nodes.items {
        let spec = n.spec.unwrap_or_default();
        if spec.unschedulable == Some(true)
            || spec
                .taints
                .iter()
                .flatten()
                .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        {
            continue;
        }
        let status = n.status.unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            continue;
        }
        let a = status.allocatable.unwrap_or_default();
        let get = |key: &str| -> anyhow::Result<f64> {
            a.get(key)
                .map(|q| parse_quantity(&q.0))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        allocatable = allocatable.plus(Requests {
            cpu: get("cpu")?,
            memory: get("memory")?,
            pods: get("pods")?,
        });
    }
    let lp = ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let pods = Api::<Pod>::all(admin.clone())
        .list(&lp)
        .await
        .context("listing pods")?;
    let mut used = Requests::default();
    for p in &pods.items {
        if let Some(spec) = &p.spec {
            used = used.plus(pod_requests(spec)?);
        }
    }
    Ok((allocatable, used))
}

/// What one platform's workloads (its Deployments and StatefulSets: replicas × pod template)
/// ask the scheduler for, once the operator created `expected` of them (waits up to `timeout`),
/// and `Kind/name replicas` of each.
async fn platform_requests(
    admin: &Client,
    ns: &str,
    platform: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<(Requests, usize, String)> {
    let start = Instant::now();
    let prefix = format!("{platform}-");
    loop {
        let deployments = Api::<Deployment>::namespaced(admin.clone(), ns)
            .list(&ListParams::default())
            .await
            .context("listing Deployments")?;
        let statefulsets = Api::<StatefulSet>::namespaced(admin.clone(), ns)
            .list(&ListParams::default())
            .await
            .context("listing StatefulSets")?;
        let mut workloads: Vec<(String, i32, Option<PodSpec>)> = Vec::new();
        for d in deployments.items {
            let name = d.metadata.name.unwrap_or_default();
            if let (true, Some(spec)) = (name.starts_with(&prefix), d.spec) {
                let replicas = spec.replicas.unwrap_or(1);
                workloads.push((format!("Deployment/{name}"), replicas, spec.template.spec));
            }
        }
        for s in statefulsets.items {
            let name = s.metadata.name.unwrap_or_default();
            if let (true, Some(spec)) = (name.starts_with(&prefix), s.spec) {
                let replicas = spec.replicas.unwrap_or(1);
                workloads.push((format!("StatefulSet/{name}"), replicas, spec.template.spec));
            }
        }
        if workloads.len() >= expected {
            let mut total = Requests::default();
            for (_, replicas, spec) in &workloads {
                if let Some(spec) = spec {
                    total = total.plus(pod_requests(spec)?.times(f64::from(*replicas)));
                }
            }
            let text = workloads
                .iter()
                .map(|(w, r, _)| format!("{w} {r}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Ok((total, workloads.len(), text));
        }
        if start.elapsed() > timeout {
            bail!(
                "platform {ns}/{platform}: {} of {expected} workloads after {} s",
                workloads.len(),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn count_pods(admin: &Client, ns: &str, fields: &str) -> anyhow::Result<usize> {
    let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let lp = ListParams::default().fields(fields);
    Ok(api
        .list_metadata(&lp)
        .await
        .context("listing pods")?
        .items
        .len())
}

/// The most frequent scheduler complaints in the namespace (why pods stay Pending).
async fn scheduling_failures(admin: &Client, ns: &str) -> anyhow::Result<String> {
    let events = Api::<CoreEvent>::namespaced(admin.clone(), ns)
        .list(&ListParams::default().fields("reason=FailedScheduling"))
        .await
        .context("listing FailedScheduling events")?;
    let mut by_message: BTreeMap<String, i32> = BTreeMap::new();
    for e in events.items {
        *by_message.entry(e.message.unwrap_or_default()).or_default() += e.count.unwrap_or(1);
    }
    let mut top: Vec<(String, i32)> = by_message.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(top
        .into_iter()
        .take(3)
        .map(|(m, n)| format!("{n}× {m}"))
        .collect::<Vec<_>>()
        .join(" | "))
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "OK"
    } else {
        "MISSED"
    }
}

/// What the in-process part found.
struct InProcess {
    p95_ms: f64,
    writes_ok: bool,
    /// Deployments and StatefulSets of one platform.
    workloads: usize,
}

/// One platform from nothing to Ready with the real controller, then the steady state.
async fn in_process(
    args: &Args,
    cluster: &Cluster,
    namespaces: &Namespaces,
) -> anyhow::Result<InProcess> {
    let spec = platform_spec()?;
    let ns = namespaces.create(&cluster.admin, "one").await?;
    let log = CallLog::default();
    let (operator_config, _) = cluster.operator_config(3600).await?;
    let client = counting_client(&operator_config, &log)?;
    let phases = PhaseWatch::start(&cluster.admin, &ns).await?;

    let metrics = Metrics::new();
    let config = ControllerConfig {
        namespace: Some(ns.clone()),
        metrics: metrics.clone(),
        ..ControllerConfig::default()
    };
    // Dropping `stop` (also on an early return) stops the controller.
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(run_controller(client.clone(), config, async move {
        let _ = stopped.await;
    }));
    wait_calls_settle(&log, Duration::from_secs(1), Duration::from_secs(30))
        .await
        .context("starting the controller")?;
    let startup = log.counts();
    println!("== one platform, nothing to Ready (in-process run_controller, namespace {ns})");
    println!(
        "controller start (before the platform exists): {} API calls: {}",
        startup.total(),
        startup.describe(1.0)
    );

    log.forget_first_child_write();
    let t0 = Instant::now();
    create_platform(&cluster.admin, &ns, "p0", &spec).await?;
    let timeout = Duration::from_secs(args.one_timeout);
    loop {
        if phases.phase("p0").as_deref() == Some("Ready") {
            break;
        }
        if t0.elapsed() > timeout {
            bail!(
                "platform p0 not Ready after {} s (phase {:?}); operator calls: {}",
                timeout.as_secs(),
                phases.phase("p0"),
                log.counts().since(&startup).describe(1.0)
            );
        }
        phases.changed(Duration::from_millis(200)).await;
    }
    let to_ready = t0.elapsed();
    let at_ready = log.counts().since(&startup);
    let first_child = log
        .first_child_write()
        .map(|t| ms(t.saturating_duration_since(t0)))
        .unwrap_or_default();
    wait_writes_quiet(&log, Duration::from_secs(2), Duration::from_secs(60)).await?;
    let quiet_after = log
        .last_write()
        .map(|t| t.saturating_duration_since(t0))
        .unwrap_or_default();
    let to_quiet = log.counts().since(&startup);
    let reconciles = metrics.reconciles.with_label_values(&["success"]).get();
    let pods = count_pods(
        &cluster.admin,
        &ns,
        "status.phase!=Succeeded,status.phase!=Failed",
    )
    .await?;
    let (requests, workload_count, workloads) =
        platform_requests(&cluster.admin, &ns, "p0", 1, Duration::ZERO).await?;
    let replica_sets = Api::<ReplicaSet>::namespaced(cluster.admin.clone(), &ns)
        .list_metadata(&ListParams::default())
        .await
        .context("listing ReplicaSets")?
        .items
        .len();
    println!(
        "first child written after {first_child:.0} ms; phase Ready after {:.0} ms (pods made Running/Ready by KWOK)",
        ms(to_ready)
    );
    println!(
        "operator API calls from create to Ready: {} ({} writes): {}",
        at_ready.total(),
        at_ready.writes(),
        at_ready.describe(1.0)
    );
    println!(
        "until the operator stopped writing (last write at {:.0} ms): {} calls ({} writes), {reconciles} reconciles; \
         {pods} pods not finished (workloads: {workloads}; {replica_sets} ReplicaSets); the platform requests {}",
        ms(quiet_after),
        to_quiet.total(),
        to_quiet.writes(),
        requests.describe(),
    );

    drop(stop);
    tokio::time::timeout(Duration::from_secs(30), controller)
        .await
        .context("the controller did not stop within 30 s")?
        .context("controller task")?
        .map_err(|e| anyhow!(e))
        .context("the controller failed")?;

    // Steady state: the reconcile the Controller runs, on the unchanged Ready platform, with the
    // controller running on the same context (its watches fill the watch cache the reconcile
    // reads; its own reconciles of p0 are done before measuring).
    let ctx = Arc::new(Context::new(
        client.clone(),
        ControllerConfig {
            namespace: Some(ns.clone()),
            ..ControllerConfig::default()
        },
    ));
    let (stop_watching, watching_stopped) = oneshot::channel::<()>();
    let watching = tokio::spawn(run_with_context(ctx.clone(), async move {
        let _ = watching_stopped.await;
    }));
    wait_calls_settle(&log, Duration::from_secs(1), Duration::from_secs(30))
        .await
        .context("starting the controller for the steady state")?;
    println!(
        "controller restarted for the steady state: its watches hold {} children",
        ctx.drift.watched.len()
    );
    let platforms: Api<HealthcarePlatform> = Api::namespaced(cluster.admin.clone(), &ns);
    for _ in 0..5 {
        let hp = platforms.get("p0").await.context("reading p0")?;
        reconcile(Arc::new(hp), ctx.clone())
            .await
            .map_err(|e| anyhow!(e))
            .context("warm-up reconcile")?;
    }
    let before = child_versions(&cluster.admin, &ns, "p0").await?;
    let calls_before = log.counts();
    let waited_before = log.waited();
    let mut durations = Vec::with_capacity(args.reconciles);
    for _ in 0..args.reconciles {
        // The bench's read (admin client) is not counted; the reconcile reads the platform
        // fresh itself.
        let hp = Arc::new(platforms.get("p0").await.context("reading p0")?);
        let t = Instant::now();
        reconcile(hp, ctx.clone())
            .await
            .map_err(|e| anyhow!(e))
            .context("steady-state reconcile")?;
        durations.push(t.elapsed());
    }
    let steady = log.counts().since(&calls_before);
    let waited: BTreeMap<String, Duration> = log
        .waited()
        .into_iter()
        .map(|(verb, d)| {
            let before = waited_before.get(&verb).copied().unwrap_or_default();
            (verb, d.saturating_sub(before))
        })
        .filter(|(_, d)| !d.is_zero())
        .collect();
    let after = child_versions(&cluster.admin, &ns, "p0").await?;
    drop(stop_watching);
    tokio::time::timeout(Duration::from_secs(30), watching)
        .await
        .context("the controller did not stop within 30 s")?
        .context("controller task")?
        .map_err(|e| anyhow!(e))
        .context("the controller failed")?;
    durations.sort();
    let p50 = ms(percentile(&durations, 0.50));
    let p95 = ms(percentile(&durations, 0.95));
    let n = args.reconciles.max(1) as f64;
    let children = before
        .keys()
        .filter(|k| !k.starts_with("HealthcarePlatform/"))
        .count();
    let changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k).map(|b| &b.resource_version) != Some(&v.resource_version))
        .map(|(k, v)| format!("{k} (managers: {})", v.managers.join("; ")))
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(|k| format!("{k} (gone)")),
        )
        .collect();
    let writes = steady.writes() - steady.writes_of("Event");
    let per_child = writes as f64 / n / children.max(1) as f64;
    let writes_ok = per_child <= 1.0 && changed.is_empty();
    println!(
        "== steady-state reconcile ({} reconciles of the unchanged Ready platform)",
        args.reconciles
    );
    println!(
        "p50 {p50:.2} ms, p95 {p95:.2} ms, max {:.2} ms (target < {TARGET_RECONCILE_MS} ms): {}",
        ms(durations.last().copied().unwrap_or_default()),
        verdict(p95 < TARGET_RECONCILE_MS)
    );
    println!(
        "per reconcile: {:.2} API calls: {}",
        steady.total() as f64 / n,
        steady.describe(n)
    );
    println!(
        "writes per reconcile: {:.2} for {children} children = {per_child:.2} per child, {:.2} Events; \
         resourceVersions changed over {} reconciles: {} of {} objects (target ≤ 1 write per child, none changed): {}",
        writes as f64 / n,
        steady.writes_of("Event") as f64 / n,
        args.reconciles,
        changed.len(),
        after.len(),
        verdict(writes_ok)
    );
    for c in &changed {
        println!("  changed: {c}");
    }
    let mean = durations.iter().sum::<Duration>() / args.reconciles.max(1) as u32;
    let waited_total = waited.values().sum::<Duration>() / args.reconciles.max(1) as u32;
    println!(
        "mean reconcile {:.2} ms, of which {:.2} ms ({:.0} %) waiting for API responses; mean per call: {}",
        ms(mean),
        ms(waited_total),
        100.0 * waited_total.as_secs_f64() / mean.as_secs_f64().max(f64::EPSILON),
        waited
            .iter()
            .map(|(verb, d)| {
                let calls = steady.verb(verb).max(1);
                format!("{verb} {:.2} ms", ms(*d) / calls as f64)
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let forbidden = log.forbidden();
    if forbidden.total() > 0 {
        println!(
            "WARNING: the chart's RBAC refused operator requests: {}",
            forbidden.describe(1.0)
        );
    }
    drop(phases);
    let t = Instant::now();
    namespaces
        .delete(
            &cluster.admin,
            &ns,
            Duration::from_secs(args.cleanup_timeout),
        )
        .await?;
    println!(
        "cleanup: namespace {ns} deleted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(InProcess {
        p95_ms: p95,
        writes_ok,
        workloads: workload_count,
    })
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("binary has no directory"))?;
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{} not found; build it with `cargo build --release -p caduceus-operator` or pass --operator-bin",
            path.display()
        )
    }
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |key: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .ok_or_else(|| anyhow!("{key} missing in /proc/{pid}/status"))?;
        let kb: f64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("malformed {key} line"))?
            .parse()
            .context("parsing kB")?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU seconds (user + system) the process used so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()
            .context("parsing /proc/PID/stat")
    };
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the state.
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// SIGTERM to the process this bench started, then SIGKILL after 10 s.
async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The operator's own counters from its /metrics (reconciles by result, errors, drift).
async fn operator_metrics(port: u16) -> anyhow::Result<String> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .context("reading the operator's /metrics")?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("caduceus_operator_reconciles_total")
                || l.starts_with("caduceus_operator_reconcile_errors_total")
                || l.starts_with("caduceus_operator_drift_corrections_total")
                || l.starts_with("caduceus_operator_reconcile_duration_seconds_count")
                || l.starts_with("caduceus_operator_reconcile_duration_seconds_sum")
        })
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(", "))
}

/// The operator's JSON log lines counted by level, and its most frequent messages (with the
/// error when there is one).
fn summarize_log(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut levels: BTreeMap<String, usize> = BTreeMap::new();
    let mut messages: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            *levels.entry("unparsed".into()).or_default() += 1;
            continue;
        };
        *levels
            .entry(v["level"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        let fields = &v["fields"];
        let mut message = fields["message"].as_str().unwrap_or_default().to_string();
        if let Some(e) = fields["error"].as_str() {
            // Object names vary per platform; the first 160 characters group them well enough.
            message = format!("{message}: {}", e.chars().take(160).collect::<String>());
        }
        *messages.entry(message).or_default() += 1;
    }
    if levels.is_empty() {
        return Ok("empty".into());
    }
    let mut top: Vec<(String, usize)> = messages.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(format!(
        "{}; most frequent: {}",
        levels
            .iter()
            .map(|(l, n)| format!("{n} {l}"))
            .collect::<Vec<_>>()
            .join(", "),
        top.iter()
            .take(3)
            .map(|(m, n)| format!("{n}× {m}"))
            .collect::<Vec<_>>()
            .join(" | ")
    ))
}

/// What the scale part found.
struct Scale {
    ready: usize,
    hwm_mib: f64,
}

/// CPU and memory every container of the scale run's platforms requests (unless
/// `--keep-requests`): KWOK's fake nodes admit pods by their requests, and minimal.yaml's
/// (≈ 0.85 CPU per platform with the two API replicas HIPAA Enforce mode asks for) would fill
/// the three 32-CPU nodes of `scripts/cluster.sh` at ~110 platforms. Requests change nothing the
/// operator or the control plane does.
const SCALE_REQUESTS: (&str, &str) = ("10m", "32Mi");

/// The scale run's spec: minimal.yaml's, with the API, database and cache requests lowered to
/// [`SCALE_REQUESTS`] and their limits as the CRD defaults them (read from a server-side dry
/// run, so nothing here repeats the CRD's defaults).
async fn scale_spec(admin: &Client, ns: &str, spec: &Value) -> anyhow::Result<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &hcp_resource());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "caduceus.io/v1alpha1",
        "kind": "HealthcarePlatform",
        "metadata": {"name": "dry-run", "namespace": ns},
        "spec": spec,
    }))?;
    let defaulted = api
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &obj,
        )
        .await
        .context("server-side dry run of the platform (CRD defaults)")?;
    let mut out = spec.clone();
    for component in ["apiServer", "database", "cache"] {
        let limits = defaulted.data["spec"][component]["resources"]["limits"].clone();
        if !limits.is_object() {
            bail!("the CRD defaults no spec.{component}.resources.limits");
        }
        if !out[component].is_object() {
            out[component] = json!({});
        }
        out[component]["resources"] = json!({
            "requests": {"cpu": SCALE_REQUESTS.0, "memory": SCALE_REQUESTS.1},
            "limits": limits,
        });
    }
    Ok(out)
}

/// N platforms with the operator as a separate process.
async fn scale(
    args: &Args,
    cluster: &Cluster,
    namespaces: &Namespaces,
    workloads_per_platform: usize,
) -> anyhow::Result<Scale> {
    let operator_bin = match &args.operator_bin {
        Some(p) => p.clone(),
        None => sibling("caduceus-operator")?,
    };
    let n = args.platforms;
    println!(
        "== {n} platforms, operator as a separate process ({})",
        operator_bin.display()
    );
    let ns = namespaces.create(&cluster.admin, "scale").await?;
    let spec = if args.keep_requests {
        println!("platform spec: examples/minimal.yaml");
        platform_spec()?
    } else {
        println!(
            "platform spec: examples/minimal.yaml with cpu {} / memory {} requests for the API, database and cache \
             (for KWOK's fake node capacity; --keep-requests uses minimal.yaml's)",
            SCALE_REQUESTS.0, SCALE_REQUESTS.1
        );
        scale_spec(&cluster.admin, &ns, &platform_spec()?).await?
    };
    let (allocatable, used) = cluster_room(&cluster.admin).await?;
    println!(
        "cluster: {} allocatable on schedulable Ready nodes; {} requested by pods of others",
        allocatable.describe(),
        used.describe()
    );

    let dir = tempfile::tempdir().context("temporary directory")?;
    let kubeconfig = dir.path().join("operator.kubeconfig");
    let token_seconds = args.ready_timeout + 3600;
    let (operator_config, token) = cluster.operator_config(token_seconds).await?;
    write_operator_kubeconfig(&operator_config, &token, &kubeconfig)?;
    let phases = PhaseWatch::start(&cluster.admin, &ns).await?;
    let metrics_port = free_port()?;
    let operator_log = dir.path().join("operator.log");
    let mut operator = Command::new(&operator_bin)
        .args([
            "run",
            "--leader-election",
            "false",
            "--log-level",
            "warn",
            "--watch-namespace",
            &ns,
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        // Its JSON log (warnings and errors at --log-level warn) goes to stdout: kept in a file.
        .stdout(Stdio::from(
            std::fs::File::create(&operator_log)
                .with_context(|| format!("creating {}", operator_log.display()))?,
        ))
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", operator_bin.display()))?;
    let pid = operator
        .id()
        .ok_or_else(|| anyhow!("the operator exited at once"))?;
    println!(
        "operator pid {pid}, namespace {ns}, kubeconfig with the chart ServiceAccount's token"
    );

    let result: anyhow::Result<Scale> = async {
        let t0 = Instant::now();
        // The first platform alone: what one asks the scheduler for, to know whether N fit.
        create_platform(&cluster.admin, &ns, "p0000", &spec).await?;
        let (per, _, workloads) = platform_requests(
            &cluster.admin,
            &ns,
            "p0000",
            workloads_per_platform,
            Duration::from_secs(120),
        )
        .await
        .context("the operator's workloads of the first platform")?;
        let (room, limit) = allocatable.minus(used).fits(per);
        println!(
            "one platform requests {} ({workloads}); room for {room} platforms (limited by {limit})",
            per.describe()
        );
        if room < n {
            bail!(
                "the cluster has room for {room} platforms of this spec (limited by {limit}: {} allocatable, {} used by others, \
                 {} per platform), {n} asked: pass --platforms {room} or less, or use a cluster with more nodes \
                 (e.g. a fresh `CADUCEUS_CLUSTER_NODES=<n> scripts/cluster.sh up`)",
                allocatable.describe(),
                used.describe(),
                per.describe()
            );
        }
        let creates = (1..n).map(|i| {
            let (admin, ns, spec) = (cluster.admin.clone(), ns.clone(), spec.clone());
            async move { create_platform(&admin, &ns, &format!("p{i:04}"), &spec).await }
        });
        stream::iter(creates)
            .buffer_unordered(args.create_concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        let created = t0.elapsed();
        println!("created {n} platforms in {:.1} s", created.as_secs_f64());
        let mut peak_rss = 0.0f64;
        let mut last_report = Instant::now();
        let timeout = Duration::from_secs(args.ready_timeout);
        let mut all_ready = None;
        loop {
            if let Some(status) = operator.try_wait()? {
                bail!("the operator exited: {status}");
            }
            let (rss, _) = rss_mib(pid)?;
            peak_rss = peak_rss.max(rss);
            let hist = phases.histogram();
            let ready = hist.get("Ready").copied().unwrap_or(0);
            if ready == n {
                all_ready = Some(t0.elapsed());
                break;
            }
            if t0.elapsed() > timeout {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(30) {
                last_report = Instant::now();
                println!(
                    "  [{:>5.0} s] {ready}/{n} Ready ({}); {} pods Pending; operator RSS {rss:.1} MiB, CPU {:.1} s",
                    t0.elapsed().as_secs_f64(),
                    describe_histogram(&hist),
                    count_pods(&cluster.admin, &ns, "status.phase=Pending").await?,
                    cpu_seconds(pid)?
                );
            }
            phases.changed(Duration::from_secs(1)).await;
        }
        let ready = phases.histogram().get("Ready").copied().unwrap_or(0);
        match all_ready {
            Some(t) => println!(
                "all {n} platforms Ready after {:.1} s (created in {:.1} s); operator CPU {:.1} s",
                t.as_secs_f64(),
                created.as_secs_f64(),
                cpu_seconds(pid)?
            ),
            None => println!(
                "NOT all Ready: {ready}/{n} after {} s ({}); {} pods Pending in {ns}; scheduler: {}",
                timeout.as_secs(),
                describe_histogram(&phases.histogram()),
                count_pods(&cluster.admin, &ns, "status.phase=Pending").await?,
                scheduling_failures(&cluster.admin, &ns).await?
            ),
        }
        // Settle: let the reconciles the last readiness changes triggered finish, then read what
        // the operator keeps.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (rss, hwm) = rss_mib(pid)?;
        let rss_verdict = if ready >= TARGET_RSS_PLATFORMS {
            verdict(hwm < TARGET_RSS_MIB).to_string()
        } else {
            format!(
                "{} at {ready} platforms, not verified at {TARGET_RSS_PLATFORMS}",
                verdict(hwm < TARGET_RSS_MIB)
            )
        };
        println!(
            "operator RSS {rss:.1} MiB after settling (sampled peak {:.1} MiB, VmHWM {hwm:.1} MiB) at {ready} Ready platforms \
             (target < {TARGET_RSS_MIB} MiB at {TARGET_RSS_PLATFORMS}): {rss_verdict}; operator CPU {:.1} s in total",
            peak_rss.max(rss),
            cpu_seconds(pid)?
        );
        match operator_metrics(metrics_port).await {
            Ok(m) => println!("operator metrics: {m}"),
            Err(e) => println!("operator metrics unavailable: {e:#}"),
        }
        println!("operator log: {}", summarize_log(&operator_log)?);
        Ok(Scale {
            ready,
            hwm_mib: hwm,
        })
    }
    .await;
    stop_child(&mut operator).await;
    drop(phases);
    let t = Instant::now();
    namespaces
        .delete(
            &cluster.admin,
            &ns,
            Duration::from_secs(args.cleanup_timeout),
        )
        .await?;
    println!(
        "cleanup: namespace {ns} deleted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    result
}

async fn run(args: &Args, cluster: &Cluster, namespaces: &Namespaces) -> anyhow::Result<()> {
    let one = in_process(args, cluster, namespaces).await?;
    let scaled = if args.skip_rss {
        None
    } else {
        Some(scale(args, cluster, namespaces, one.workloads.max(1)).await?)
    };
    let mut missed = Vec::new();
    if one.p95_ms >= TARGET_RECONCILE_MS {
        missed.push(format!("steady-state reconcile p95 {:.1} ms", one.p95_ms));
    }
    if !one.writes_ok {
        missed.push("writes per child per reconcile / unchanged children".to_string());
    }
    if let Some(s) = &scaled {
        if s.ready < args.platforms {
            missed.push(format!(
                "only {}/{} platforms Ready",
                s.ready, args.platforms
            ));
        }
        if s.hwm_mib >= TARGET_RSS_MIB {
            missed.push(format!("operator peak RSS {:.1} MiB", s.hwm_mib));
        }
        if s.ready < TARGET_RSS_PLATFORMS {
            println!(
                "operator_bench: the RSS target (< {TARGET_RSS_MIB} MiB at {TARGET_RSS_PLATFORMS} platforms) was measured at {} only",
                s.ready
            );
        }
    }
    if missed.is_empty() {
        println!("operator_bench: all targets met");
        Ok(())
    } else {
        bail!("targets missed: {}", missed.join("; "))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // kube-runtime's Controller (with all its watches) and the reconcile are deep futures: an
    // unoptimised build overflows the default 2 MiB worker stack.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(16 << 20)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        tokio::spawn(bench(args))
            .await
            .context("the benchmark task panicked")?
    })
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let (kubeconfig, source) = kubeconfig_path(&args)?;
    println!(
        "operator_bench: kubeconfig from {source}; load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cluster = Cluster::prepare(&kubeconfig).await?;
    let namespaces = Namespaces::default();
    let result = tokio::select! {
        r = run(&args, &cluster, &namespaces) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    // Whatever happened: no namespace of this run stays behind.
    namespaces
        .delete_all(&cluster.admin, Duration::from_secs(args.cleanup_timeout))
        .await;
    println!("cluster {} left running", cluster.server);
    result.map_err(|e| e.context("operator_bench"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let cases = [
            ("250m", 0.25),
            ("1", 1.0),
            ("1.5", 1.5),
            ("32", 32.0),
            ("512Mi", 512.0 * 1024.0 * 1024.0),
            ("256Gi", 256.0 * 1024f64.powi(3)),
            ("2G", 2e9),
            ("1e3", 1000.0),
            ("100k", 100_000.0),
        ];
        for (q, want) in cases {
            let got = parse_quantity(q).unwrap();
            assert!(
                (got - want).abs() < 1e-9 * want.max(1.0),
                "{q}: {got} != {want}"
            );
        }
        assert!(parse_quantity("lots").is_err());
    }

    #[test]
    fn room_is_limited_by_the_scarcest_resource() {
        let free = Requests {
            cpu: 96.0,
            memory: 768.0 * 1024f64.powi(3),
            pods: 1374.0,
        };
        let per = Requests {
            cpu: 0.85,
            memory: 1.5 * 1024f64.powi(3),
            pods: 4.0,
        };
        assert_eq!(free.fits(per), (112, "cpu"));
        let small = Requests { cpu: 0.04, ..per };
        assert_eq!(free.fits(small), (343, "pods"));
    }

    #[test]
    fn call_classification() {
        let log = CallLog::default();
        let req = |method: &str, uri: &str, apply: bool| {
            let mut b = http::Request::builder().method(method).uri(uri);
            if apply {
                b = b.header(http::header::CONTENT_TYPE, "application/apply-patch+yaml");
            }
            b.body(()).unwrap()
        };
        let cases = [
            (
                req("GET", "/api/v1/namespaces/n/secrets/s", false),
                ("get", "Secret"),
            ),
            (
                req("GET", "/apis/apps/v1/namespaces/n/deployments", false),
                ("list", "Deployment"),
            ),
            (
                req(
                    "GET",
                    "/apis/apps/v1/namespaces/n/deployments?watch=true",
                    false,
                ),
                ("watch", "Deployment"),
            ),
            (
                req(
                    "PATCH",
                    "/apis/networking.k8s.io/v1/namespaces/n/networkpolicies/x",
                    true,
                ),
                ("apply", "NetworkPolicy"),
            ),
            (
                req(
                    "PATCH",
                    "/apis/caduceus.io/v1alpha1/namespaces/n/healthcareplatforms/p/status",
                    false,
                ),
                ("patch", "HealthcarePlatform"),
            ),
            (
                req("POST", "/apis/events.k8s.io/v1/namespaces/n/events", false),
                ("create", "Event"),
            ),
            (
                req("GET", "/apis/monitoring.coreos.com/v1", false),
                ("discovery", ""),
            ),
        ];
        for (r, (verb, kind)) in cases {
            assert_eq!(
                log.record(&r),
                (verb.to_string(), kind.to_string()),
                "{}",
                r.uri()
            );
        }
        let counts = log.counts();
        assert_eq!(counts.total(), 7);
        assert_eq!(counts.writes(), 3);
        assert_eq!(counts.writes_of("Event"), 1);
        assert!(log.first_child_write().is_some());
    }
}

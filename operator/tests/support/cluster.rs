//! The real controller (`run_controller`: kube-runtime `Controller` with all its watches) running
//! in-process against a real Kubernetes control plane (`scripts/cluster.sh`: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler and KWOK). No fixed sleeps: every wait
//! polls with a timeout.
//!
//! Which cluster: `CADUCEUS_TEST_KUBECONFIG` (a throw-away cluster the caller opted into), else
//! this repository's own control plane, started with `scripts/cluster.sh up` when it is not
//! running (it stays up; `scripts/cluster.sh down` stops it). Never the current kubeconfig context.
//!
//! Once per test process: the HealthcarePlatform CRD from `crds/` and the chart's ServiceAccount
//! and RBAC (`helm template`) are applied; the controller then runs with a token of that
//! ServiceAccount (TokenRequest API), so the chart's RBAC is what authorizes it.
//!
//! Per test ([`Env`]): a namespace of its own labelled `pod-security.kubernetes.io/enforce:
//! restricted`, a mirror of the namespace's objects kept by watches (the synchronous helpers read
//! it), and a log of the operator's own API calls (verb, kind). With
//! [`Setup::namespaced_rbac`] the controller runs instead as a ServiceAccount of its own, which
//! the chart rendered with `rbac.scope=Namespaced` for the test's namespace: a Role and
//! RoleBinding there and nothing cluster-wide.

use super::call_kind::{self, is_write};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use caduceus_operator::{
    crd::Phase, names::Names, run_controller, ControllerConfig, HealthcarePlatform, Metrics,
};
use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::{Namespace, ServiceAccount},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{Api, DeleteParams, Patch, PatchParams, PostParams},
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
    core::{DynamicObject, GroupVersionKind},
    discovery::ApiResource,
    runtime::watcher,
    Client, Config,
};
use serde_json::{json, Value};
use tokio::{sync::oneshot, task::JoinHandle};

/// The platform the helpers without a name are about.
pub const DEMO: &str = "demo";

/// The operator's release namespace (its ServiceAccount, Lease) in the test cluster.
pub const OPERATOR_NS: &str = "caduceus-system";

/// Every kind the operator creates children of (plus PVCs of the StatefulSet controller).
pub const CHILD_KINDS: &[(&str, &str)] = &[
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("networking.k8s.io/v1", "Ingress"),
];

/// Kinds mirrored besides the children: the platform, Pods, and Events of both APIs.
const OTHER_KINDS: &[(&str, &str)] = &[
    ("caduceus.io/v1alpha1", "HealthcarePlatform"),
    ("v1", "Pod"),
    ("events.k8s.io/v1", "Event"),
    ("v1", "Event"),
];

// ---------------------------------------------------------------------------------------------
// The cluster (once per test process)
// ---------------------------------------------------------------------------------------------

/// What every test of this process shares: plain data only (each test has its own runtime, so
/// clients are built per test).
#[derive(Clone)]
pub struct TestCluster {
    pub kubeconfig: PathBuf,
    /// Admin (system:masters client certificate).
    pub admin: Config,
    /// The chart's ServiceAccount (bearer token from the TokenRequest API).
    pub operator: Config,
    /// The operator ServiceAccount's name.
    pub operator_account: String,
}

static CLUSTER: tokio::sync::OnceCell<TestCluster> = tokio::sync::OnceCell::const_new();

/// A file of the repository, by its path from the repository root.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

pub fn repo_file(rel: &str) -> String {
    let path = repo_path(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The kubeconfig of the cluster the tests may use (see the module docs).
fn kubeconfig_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CADUCEUS_TEST_KUBECONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let script = repo_path("scripts/cluster.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("up")
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`scripts/cluster.sh up` failed ({}): {stdout}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let path = last.strip_prefix("export KUBECONFIG=").unwrap_or_else(|| {
        panic!("`scripts/cluster.sh up` did not end with an export line: {last}")
    });
    PathBuf::from(path)
}

/// A tool installed by `scripts/tools.sh`, else from PATH.
pub fn tool(name: &str) -> PathBuf {
    let local = repo_path(&format!(".tools/bin/{name}"));
    if local.is_file() {
        local
    } else {
        PathBuf::from(name)
    }
}

/// Multi-document YAML as JSON values (empty documents dropped).
pub fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The ServiceAccount and RBAC objects of the operator chart, as `helm template` renders them.
pub fn chart_rbac(values: &[&str]) -> Vec<Value> {
    let mut cmd = std::process::Command::new(tool("helm"));
    cmd.args(["template", "caduceus-operator"])
        .arg(repo_path("charts/caduceus-operator"))
        .args(["--namespace", OPERATOR_NS])
        .args(["--show-only", "templates/serviceaccount.yaml"])
        .args(["--show-only", "templates/rbac.yaml"]);
    for v in values {
        cmd.args(["--set", v]);
    }
    let out = cmd
        .output()
        .expect("helm runs (scripts/tools.sh installs it)");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&String::from_utf8_lossy(&out.stdout))
}

/// Server-side applies a manifest (any kind the API serves) as `manager`, forcing conflicts.
pub async fn apply_manifest(client: &Client, manager: &str, obj: &Value) -> DynamicObject {
    let gvk = GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: obj["apiVersion"].as_str().unwrap_or_default().into(),
        kind: obj["kind"].as_str().unwrap_or_default().into(),
    })
    .expect("apiVersion/kind");
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{gvk:?} is not served: {e}"));
    let name = obj["metadata"]["name"].as_str().expect("metadata.name");
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
        &PatchParams::apply(manager).force(),
        &Patch::Apply(obj),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind))
}

/// Waits until the API server authorizes `config` by the RBAC objects just applied (its
/// authorizer reads them from an informer cache, a moment behind; the first request of a
/// controller started at once could be refused, and a refused first list ends it).
async fn wait_rbac_effective(config: &Config, ns: &str) {
    let client = Client::try_from(config.clone()).expect("client");
    let api: Api<HealthcarePlatform> = Api::namespaced(client, ns);
    let start = Instant::now();
    loop {
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            Err(e) => panic!("listing platforms in {ns} as the namespaced ServiceAccount: {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the namespaced RBAC of {ns} not in effect after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the object a manifest names (namespaced kinds only).
pub async fn delete_manifest(client: &Client, obj: &Value) -> Result<(), kube::Error> {
    let gvk = GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: obj["apiVersion"].as_str().unwrap_or_default().into(),
        kind: obj["kind"].as_str().unwrap_or_default().into(),
    })
    .expect("apiVersion/kind");
    let (ar, _) = kube::discovery::pinned_kind(client, &gvk).await?;
    let ns = obj["metadata"]["namespace"].as_str().expect("namespace");
    let name = obj["metadata"]["name"].as_str().expect("metadata.name");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    api.delete(name, &DeleteParams::background()).await?;
    Ok(())
}

impl TestCluster {
    /// The shared cluster, set up on first use.
    pub async fn get() -> TestCluster {
        CLUSTER.get_or_init(Self::init).await.clone()
    }

    async fn init() -> TestCluster {
        let kubeconfig = tokio::task::spawn_blocking(kubeconfig_path)
            .await
            .expect("cluster start");
        let kc = Kubeconfig::read_from(&kubeconfig)
            .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
        let admin = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("admin kubeconfig");
        let client = Client::try_from(admin.clone()).expect("admin client");

        apply_manifest(
            &client,
            "caduceus-tests",
            &serde_json::to_value(crd_from_repo()).expect("CRD"),
        )
        .await;
        wait_crd_established(&client, "healthcareplatforms.caduceus.io").await;
        apply_manifest(
            &client,
            "caduceus-tests",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}}),
        )
        .await;
        let rbac = tokio::task::spawn_blocking(|| chart_rbac(&[]))
            .await
            .expect("helm");
        let mut account = None;
        for obj in &rbac {
            if obj["kind"] == "ServiceAccount" {
                account = obj["metadata"]["name"].as_str().map(str::to_string);
            }
            apply_manifest(&client, "caduceus-tests", obj).await;
        }
        let operator_account = account.expect("the chart renders a ServiceAccount");
        let operator = token_config(&client, &admin, &operator_account).await;
        TestCluster {
            kubeconfig,
            admin,
            operator,
            operator_account,
        }
    }

    pub fn admin_client(&self) -> Client {
        Client::try_from(self.admin.clone()).expect("admin client")
    }

    /// A client with the chart ServiceAccount's identity whose calls (and refusals) are
    /// recorded in `log`.
    pub fn operator_client(&self, log: &CallLog) -> Client {
        client_with_log(self.operator.clone(), log)
    }

    /// The directory of the third-party CRDs `scripts/cluster.sh up` links beside the kubeconfig.
    pub fn third_party_crd(&self, file: &str) -> CustomResourceDefinition {
        let dir = self
            .kubeconfig
            .parent()
            .expect("kubeconfig directory")
            .join("third-party-crds");
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_norway::from_str(&text).expect("CRD YAML")
    }
}

/// A client authenticating as `config` says whose calls (and refusals) are recorded in `log`.
pub fn client_with_log(config: Config, log: &CallLog) -> Client {
    let log = log.clone();
    kube::client::ClientBuilder::try_from(config)
        .expect("operator client")
        .with_layer(&tower::layer::layer_fn(move |inner| Recording {
            inner,
            log: log.clone(),
        }))
        .build()
}

/// A Config that authenticates with a fresh token of the ServiceAccount (1 h).
pub async fn token_config(client: &Client, admin: &Config, account: &str) -> Config {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), OPERATOR_NS);
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}
    });
    let answer: Value = accounts
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the chart's ServiceAccount");
    let token = answer["status"]["token"]
        .as_str()
        .expect("token in the TokenRequest status")
        .to_string();
    let mut config = admin.clone();
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..AuthInfo::default()
    };
    config
}

pub async fn wait_crd_established(client: &Client, name: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        if let Ok(crd) = api.get(name).await {
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "CRD {name} not Established within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The HealthcarePlatform CRD as shipped in `crds/`.
pub fn crd_from_repo() -> CustomResourceDefinition {
    serde_norway::from_str(&repo_file("crds/caduceus.io_healthcareplatforms.yaml"))
        .expect("CRD YAML")
}

/// Installs a CRD (server-side apply) and waits until it is served.
pub async fn install_crd(client: &Client, crd: CustomResourceDefinition) {
    let name = crd.metadata.name.clone().expect("CRD name");
    apply_manifest(
        client,
        "caduceus-tests",
        &serde_json::to_value(crd).expect("CRD"),
    )
    .await;
    wait_crd_established(client, &name).await;
}

/// Deletes a CRD and waits until it is gone.
pub async fn uninstall_crd(client: &Client, name: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return,
        Err(e) => panic!("deleting CRD {name}: {e}"),
    }
    let start = Instant::now();
    while api.get_opt(name).await.expect("get CRD").is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "CRD {name} still there after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CRD tests change what the whole cluster serves: they hold this lock exclusively
/// ([`crds_exclusive`]), and every other [`Env`] of the test process holds it shared for its
/// lifetime, so no other test's operator applies a custom resource while its CRD is installed or
/// removed (the API server refuses that with 403 "create not allowed while custom resource
/// definition is terminating", which the RBAC check would count). Test binaries run one after
/// another.
static CRD_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

thread_local! {
    /// Whether the test on this thread holds [`CRD_LOCK`] exclusively (its `Env` then takes no
    /// shared guard). A test's body runs on its own thread.
    static CRDS_EXCLUSIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The exclusive hold of [`CRD_LOCK`] (see [`crds_exclusive`]).
pub struct CrdsExclusive {
    _guard: tokio::sync::RwLockWriteGuard<'static, ()>,
}

impl Drop for CrdsExclusive {
    fn drop(&mut self) {
        CRDS_EXCLUSIVE.with(|e| e.set(false));
    }
}

/// Waits until no other test of this process has an `Env`, and keeps them out until dropped:
/// for tests that install or remove CRDs. Take it before `Env::start`.
pub async fn crds_exclusive() -> CrdsExclusive {
    let guard = CRD_LOCK.write().await;
    CRDS_EXCLUSIVE.with(|e| e.set(true));
    CrdsExclusive { _guard: guard }
}

// ---------------------------------------------------------------------------------------------
// The operator's API calls
// ---------------------------------------------------------------------------------------------

/// Requests the operator's client sent, counted by (verb, kind), when it last wrote, and which
/// requests the API server refused with 403 Forbidden (a grant the chart's RBAC lacks).
#[derive(Clone, Default)]
pub struct CallLog {
    inner: Arc<Mutex<CallLogInner>>,
}

#[derive(Default)]
struct CallLogInner {
    counts: BTreeMap<(String, String), u64>,
    forbidden: BTreeMap<(String, String), u64>,
    last_write: Option<Instant>,
}

/// The tower service that feeds a [`CallLog`].
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
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if let Ok(r) = &res {
                if r.status() == http::StatusCode::FORBIDDEN {
                    *log.inner
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

/// A snapshot of a [`CallLog`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallCounts(pub BTreeMap<(String, String), u64>);

impl CallCounts {
    /// Calls made after `earlier` was taken.
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts(
            self.0
                .iter()
                .map(|(k, n)| (k.clone(), n - earlier.0.get(k).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    /// Calls with this verb, any kind.
    pub fn verb(&self, verb: &str) -> u64 {
        self.0
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every call.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Calls that change something (create, update, patch, apply, delete).
    pub fn writes(&self) -> u64 {
        self.0
            .iter()
            .filter(|((v, _), _)| is_write(v))
            .map(|(_, n)| n)
            .sum()
    }
}

impl CallLog {
    /// Counts one request by its (verb, kind) ([`call_kind::classify`]).
    fn record<B>(&self, req: &http::Request<B>) -> (String, String) {
        let (verb, kind) = call_kind::classify(req);
        let mut inner = self.inner.lock().expect("call log");
        if is_write(&verb) && kind != "Event" {
            inner.last_write = Some(Instant::now());
        }
        *inner
            .counts
            .entry((verb.clone(), kind.clone()))
            .or_default() += 1;
        (verb, kind)
    }

    /// Requests refused with 403 Forbidden, by (verb, kind).
    pub fn forbidden(&self) -> CallCounts {
        CallCounts(self.inner.lock().expect("call log").forbidden.clone())
    }

    pub fn counts(&self) -> CallCounts {
        CallCounts(self.inner.lock().expect("call log").counts.clone())
    }

    /// When the operator last wrote anything but an Event.
    pub fn last_write(&self) -> Option<Instant> {
        self.inner.lock().expect("call log").last_write
    }
}

// ---------------------------------------------------------------------------------------------
// The namespace mirror
// ---------------------------------------------------------------------------------------------

type ObjectKey = (String, String, String); // (apiVersion, kind, name)

/// The objects of one namespace, kept current by one watch per kind.
#[derive(Clone, Default)]
pub struct Mirror {
    objects: Arc<Mutex<BTreeMap<ObjectKey, Value>>>,
    /// Every status the platforms had, in order (name, status).
    platform_history: Arc<Mutex<Vec<(String, Value)>>>,
    changes: Arc<AtomicU64>,
}

impl Mirror {
    fn upsert(&self, av: &str, kind: &str, obj: Value) {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if kind == "HealthcarePlatform" {
            let status = obj.get("status").cloned().unwrap_or(Value::Null);
            let mut h = self.platform_history.lock().expect("mirror");
            if h.iter().rev().find(|(n, _)| *n == name).map(|(_, s)| s) != Some(&status) {
                h.push((name.clone(), status));
            }
        }
        self.objects
            .lock()
            .expect("mirror")
            .insert((av.into(), kind.into(), name), obj);
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    fn remove(&self, av: &str, kind: &str, name: &str) {
        self.objects
            .lock()
            .expect("mirror")
            .remove(&(av.into(), kind.into(), name.into()));
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    fn replace_kind(&self, av: &str, kind: &str, objs: Vec<Value>) {
        self.objects
            .lock()
            .expect("mirror")
            .retain(|(a, k, _), _| !(a == av && k == kind));
        for o in objs {
            self.upsert(av, kind, o);
        }
    }

    pub fn get(&self, av: &str, kind: &str, name: &str) -> Option<Value> {
        self.objects
            .lock()
            .expect("mirror")
            .get(&(av.into(), kind.into(), name.into()))
            .cloned()
    }

    pub fn list(&self, av: &str, kind: &str) -> Vec<Value> {
        self.objects
            .lock()
            .expect("mirror")
            .iter()
            .filter(|((a, k, _), _)| a == av && k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn platform_history(&self, name: &str) -> Vec<Value> {
        self.platform_history
            .lock()
            .expect("mirror")
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

/// Watches `av`/`kind` in `ns` into the mirror; returns once the initial list is in.
async fn mirror_kind(
    client: &Client,
    ns: &str,
    av: &str,
    kind: &str,
    mirror: &Mirror,
) -> JoinHandle<()> {
    let gvk = GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: av.into(),
        kind: kind.into(),
    })
    .expect("gvk");
    // A CRD that just became Established can take a moment to appear in discovery.
    let start = Instant::now();
    let ar = loop {
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((ar, _)) => break ar,
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                panic!("{av} {kind} is not served: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let mirror = mirror.clone();
    let (av, kind) = (av.to_string(), kind.to_string());
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut initial: Vec<Value> = Vec::new();
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            match ev {
                watcher::Event::Init => initial.clear(),
                watcher::Event::InitApply(o) => {
                    initial.push(serde_json::to_value(o).expect("object"))
                }
                watcher::Event::InitDone => {
                    mirror.replace_kind(&av, &kind, std::mem::take(&mut initial));
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                watcher::Event::Apply(o) => {
                    mirror.upsert(&av, &kind, serde_json::to_value(o).expect("object"))
                }
                watcher::Event::Delete(o) => {
                    mirror.remove(&av, &kind, &o.metadata.name.unwrap_or_default())
                }
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(30), ready_rx).await;
    task
}

// ---------------------------------------------------------------------------------------------
// One test's environment
// ---------------------------------------------------------------------------------------------

/// How an [`Env`] waits and how its controller is configured.
pub struct Setup {
    wait: Duration,
    quiet: Duration,
    config: ControllerConfig,
    namespaced_rbac: bool,
}

impl Default for Setup {
    /// 120 s waits (a loaded 2-core machine runs the whole plane), quiet after 1.5 s without operator writes, and the controller watching the
    /// test's namespace with fast progress re-checks and error back-off.
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(120),
            quiet: Duration::from_millis(1500),
            config: ControllerConfig {
                progress_interval: Duration::from_millis(500),
                error_backoff_base: Duration::from_millis(100),
                error_backoff_max: Duration::from_secs(2),
                crd_recheck_interval: Duration::from_secs(1),
                ..ControllerConfig::default()
            },
            namespaced_rbac: false,
        }
    }
}

impl Setup {
    /// The bound of every wait (and of the controller's shutdown).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How long the operator must not write for [`Env::wait_quiet`] to return.
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// The controller runs as a ServiceAccount of its own whose only grants are what the chart
    /// renders with `rbac.scope=Namespaced` and `watchNamespace` the test's namespace (a Role and
    /// RoleBinding there, the leader-election Role in the release namespace), instead of the
    /// shared ServiceAccount of the default, cluster-wide RBAC.
    pub fn namespaced_rbac(mut self) -> Self {
        self.namespaced_rbac = true;
        self
    }

    /// Changes the controller's configuration beyond the defaults.
    pub fn controller(mut self, change: impl FnOnce(&mut ControllerConfig)) -> Self {
        change(&mut self.config);
        self
    }
}

static NAMESPACE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh namespace name for this test process.
fn fresh_namespace() -> String {
    let n = NAMESPACE_SEQ.fetch_add(1, Ordering::SeqCst);
    let salt: u32 = rand::random();
    format!("t{}-{n}-{:06x}", std::process::id(), salt & 0xff_ffff)
}

pub struct Env {
    pub cluster: TestCluster,
    /// The test's namespace.
    pub ns: String,
    /// Admin client (the test's own reads and writes; not counted).
    pub admin: Client,
    /// The operator's client (chart ServiceAccount; every call counted in [`Env::calls`]).
    pub client: Client,
    pub call_log: CallLog,
    pub mirror: Mirror,
    /// The controller's metrics registry.
    pub metrics: Metrics,
    wait: Duration,
    quiet: Duration,
    config: Option<ControllerConfig>,
    stop: Option<oneshot::Sender<()>>,
    controller: Option<JoinHandle<()>>,
    watches: Vec<JoinHandle<()>>,
    /// What [`Setup::namespaced_rbac`] installed in the release namespace (removed by `stop`).
    release_ns_objects: Vec<Value>,
    /// Shared hold of [`CRD_LOCK`] (none in the test that holds it exclusively).
    _crds: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
}

impl Env {
    /// A namespace with the mirror, and the controller running.
    pub async fn start_with(setup: Setup) -> Self {
        let mut env = Self::without_controller(setup).await;
        env.start_controller();
        env
    }

    /// A namespace with the mirror; the controller starts with [`Env::start_controller`].
    pub async fn without_controller(mut setup: Setup) -> Self {
        // The operator's warnings (failed applies, refused requests) in the test's output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "caduceus_operator=warn".into()),
            )
            .try_init();
        let crds = match CRDS_EXCLUSIVE.with(|e| e.get()) {
            true => None,
            false => Some(CRD_LOCK.read().await),
        };
        let cluster = TestCluster::get().await;
        let admin = cluster.admin_client();
        let call_log = CallLog::default();
        let mut client = cluster.operator_client(&call_log);
        let ns = fresh_namespace();
        apply_manifest(
            &admin,
            "caduceus-tests",
            &json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "caduceus.io/test": "true"
                }}
            }),
        )
        .await;
        let mirror = Mirror::default();
        let mut watches = Vec::new();
        for (av, kind) in CHILD_KINDS.iter().chain(OTHER_KINDS) {
            watches.push(mirror_kind(&admin, &ns, av, kind, &mirror).await);
        }
        setup.config.namespace = Some(ns.clone());
        let mut release_ns_objects = Vec::new();
        if setup.namespaced_rbac {
            let values = [
                format!("fullnameOverride=op-{ns}"),
                "rbac.scope=Namespaced".to_string(),
                format!("watchNamespace={ns}"),
            ];
            let rbac = tokio::task::spawn_blocking(move || {
                chart_rbac(&values.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .await
            .expect("helm");
            let mut account = None;
            for obj in &rbac {
                assert!(
                    obj["metadata"]["namespace"].is_string(),
                    "rbac.scope=Namespaced renders a cluster-scoped {}",
                    obj["kind"]
                );
                if obj["kind"] == "ServiceAccount" {
                    account = obj["metadata"]["name"].as_str().map(str::to_string);
                }
                if obj["metadata"]["namespace"] == OPERATOR_NS {
                    release_ns_objects.push(obj.clone());
                }
                apply_manifest(&admin, "caduceus-tests", obj).await;
            }
            let account = account.expect("the chart renders a ServiceAccount");
            let config = token_config(&admin, &cluster.admin, &account).await;
            wait_rbac_effective(&config, &ns).await;
            client = client_with_log(config, &call_log);
        }
        Self {
            cluster,
            ns,
            admin,
            client,
            call_log,
            mirror,
            metrics: setup.config.metrics.clone(),
            wait: setup.wait,
            quiet: setup.quiet,
            config: Some(setup.config),
            stop: None,
            controller: None,
            watches,
            release_ns_objects,
            _crds: crds,
        }
    }

    /// Mirrors one more kind (e.g. a third-party CRD's, once installed).
    pub async fn mirror_kind(&mut self, av: &str, kind: &str) {
        let task = mirror_kind(&self.admin, &self.ns, av, kind, &self.mirror).await;
        self.watches.push(task);
    }

    /// Starts the controller (once).
    pub fn start_controller(&mut self) {
        let config = self.config.take().expect("the controller starts once");
        let (stop, stopped) = oneshot::channel::<()>();
        let c = self.client.clone();
        self.controller = Some(tokio::spawn(async move {
            run_controller(c, config, async move {
                let _ = stopped.await;
            })
            .await
            .expect("controller runs");
        }));
        self.stop = Some(stop);
    }

    /// Stops the controller, ends the watches and deletes the namespace (without waiting).
    /// Fails when the API server refused any of the operator's requests (RBAC).
    pub async fn stop(mut self) {
        self.stop_controller().await;
        let forbidden = self.call_log.forbidden();
        assert!(
            forbidden.0.is_empty(),
            "the chart's RBAC refused operator requests (verb, kind): {forbidden:?}"
        );
        for w in self.watches.drain(..) {
            w.abort();
        }
        if std::env::var("CADUCEUS_TEST_KEEP").as_deref() != Ok("1") {
            // Platforms keep their finalizer once the controller is gone: drop it so the
            // namespace can go.
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.admin.clone(), &self.ns, &hcp_resource());
            if let Ok(list) = api.list(&Default::default()).await {
                for p in list {
                    let name = p.metadata.name.unwrap_or_default();
                    let _ = api
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                        )
                        .await;
                }
            }
            let namespaces: Api<Namespace> = Api::all(self.admin.clone());
            let _ = namespaces
                .delete(&self.ns, &DeleteParams::background())
                .await;
            for obj in &self.release_ns_objects {
                let _ = delete_manifest(&self.admin, obj).await;
            }
        }
    }

    /// Stops the controller and waits for it to end (the namespace stays).
    pub async fn stop_controller(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(c) = self.controller.take() {
            tokio::time::timeout(self.wait, c)
                .await
                .expect("controller stops")
                .expect("controller task");
        }
    }

    /// The bound of every wait.
    pub fn wait_bound(&self) -> Duration {
        self.wait
    }

    /// `<namespace>/demo`: the `platform` label of `demo`'s metrics.
    pub fn platform_label(&self) -> String {
        format!("{}/{DEMO}", self.ns)
    }

    /// The operator's calls so far.
    pub fn calls(&self) -> CallCounts {
        self.call_log.counts()
    }

    /// Platforms through the admin client.
    pub fn platforms(&self) -> Api<HealthcarePlatform> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// A typed API of the test namespace through the admin client.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// Sends the platform as a raw manifest (as kubectl/ArgoCD would); the API's answer.
    pub async fn try_create_platform(
        &self,
        name: &str,
        spec: Value,
    ) -> Result<DynamicObject, kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.admin.clone(), &self.ns, &hcp_resource());
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "caduceus.io/v1alpha1",
            "kind": "HealthcarePlatform",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": spec,
        }))
        .expect("platform");
        api.create(&PostParams::default(), &obj).await
    }

    /// Creates the platform from the raw manifest, which the CRD schema must admit.
    pub async fn create_named_platform(&self, name: &str, spec: Value) -> HealthcarePlatform {
        self.try_create_platform(name, spec)
            .await
            .expect("platform admitted by the CRD schema");
        self.platforms()
            .get(name)
            .await
            .expect("platform readable as the typed resource")
    }

    /// Merge-patches `demo` (the whole object: metadata and/or spec).
    pub async fn patch_platform(&self, patch: Value) {
        self.platforms()
            .patch(DEMO, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("patch platform");
    }

    /// Merge-patches the spec of `demo`; its new generation.
    pub async fn patch_spec(&self, patch: Value) -> i64 {
        let p = self
            .platforms()
            .patch(
                DEMO,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": patch })),
            )
            .await
            .expect("spec patched");
        p.metadata.generation.unwrap_or_default()
    }

    /// The object as last seen in the test namespace.
    pub fn stored(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.mirror.get(api_version, kind, name)
    }

    /// Every object of a kind in the test namespace.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        self.mirror.list(api_version, kind)
    }

    pub fn platform_status(&self, name: &str) -> Value {
        self.stored("caduceus.io/v1alpha1", "HealthcarePlatform", name)
            .and_then(|p| p.get("status").cloned())
            .unwrap_or(Value::Null)
    }

    /// The status of `demo`.
    pub fn status(&self) -> Value {
        self.platform_status(DEMO)
    }

    pub fn phase(&self, name: &str) -> Option<String> {
        self.platform_status(name)["phase"]
            .as_str()
            .map(str::to_string)
    }

    pub fn condition_of(&self, name: &str, type_: &str) -> Option<Value> {
        self.platform_status(name)["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
    }

    /// A condition of `demo`.
    pub fn condition(&self, type_: &str) -> Option<Value> {
        self.condition_of(DEMO, type_)
    }

    pub fn condition_is(&self, type_: &str, status: &str, reason: &str) -> bool {
        self.condition(type_)
            .is_some_and(|c| c["status"] == status && c["reason"] == reason)
    }

    /// `status.compliance` of `demo`.
    pub fn compliance(&self) -> Value {
        self.status()["compliance"].clone()
    }

    /// A key of the API ConfigMap of `demo`.
    pub fn api_config(&self, key: &str) -> Option<String> {
        self.stored("v1", "ConfigMap", &Names::new(DEMO).api_config())
            .and_then(|c| c["data"][key].as_str().map(str::to_string))
    }

    /// Events in the namespace (both Event APIs), as (reason, note/message).
    pub fn events(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (av, text) in [("events.k8s.io/v1", "note"), ("v1", "message")] {
            for ev in self.list(av, "Event") {
                out.push((
                    ev["reason"].as_str().unwrap_or_default().to_string(),
                    ev[text].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        out
    }

    pub fn has_event(&self, reason: &str, note_contains: &str) -> bool {
        self.events()
            .iter()
            .any(|(r, n)| r == reason && n.contains(note_contains))
    }

    /// Successful reconciles so far.
    pub fn reconciles(&self) -> u64 {
        self.metrics
            .reconciles
            .with_label_values(&["success"])
            .get()
    }

    /// `caduceus_compliance_rule_status` of `demo` for `rule`.
    pub fn rule_metric(&self, rule: &str) -> i64 {
        self.metrics
            .compliance
            .rule_status
            .with_label_values(&[&self.platform_label(), rule])
            .get()
    }

    /// `caduceus_compliance_violations` of `demo` for `severity`.
    pub fn violations_metric(&self, severity: &str) -> i64 {
        self.metrics
            .compliance
            .violations
            .with_label_values(&[&self.platform_label(), severity])
            .get()
    }

    /// (generation, resourceVersion) of every object the operator owns in the namespace.
    pub fn child_versions(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (av, kind) in CHILD_KINDS {
            for o in self.list(av, kind) {
                if *kind == "PersistentVolumeClaim" || *kind == "Job" {
                    continue; // written by the StatefulSet/CronJob controllers, not the operator
                }
                let name = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let rv = o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                out.insert(format!("{kind}/{name}"), rv);
            }
        }
        out
    }

    /// Waits until `cond` holds.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < self.wait,
                "timed out after {:?} waiting for: {what}; status: {:#}; events: {:?}; operator calls: {:?}",
                self.wait,
                self.status(),
                self.events(),
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the operator has written nothing (but Events) for the quiet period.
    pub async fn wait_quiet(&self) {
        let start = Instant::now();
        loop {
            let since = self
                .call_log
                .last_write()
                .map(|t| t.elapsed())
                .unwrap_or(Duration::MAX);
            if since >= self.quiet {
                return;
            }
            assert!(
                start.elapsed() < self.wait,
                "the operator kept writing; calls: {:?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the platform reports `phase` (Pods are made Ready by KWOK).
    pub async fn settle_until_phase(&self, name: &str, phase: Phase) {
        let want = format!("{phase:?}");
        self.wait_for(&format!("platform {name} {want}"), |e| {
            e.phase(name).as_deref() == Some(want.as_str())
        })
        .await;
    }

    /// `demo` Ready, and the reconciles its readiness updates triggered done.
    pub async fn settle_until_ready(&self) {
        self.settle_until_phase(DEMO, Phase::Ready).await;
        self.wait_quiet().await;
    }

    /// Touches `demo` and waits until the controller reconciled it again.
    pub async fn reconcile_again(&self, marker: &str) {
        let before = self.reconciles();
        self.patch_platform(json!({"metadata": {"annotations": {"test/touch": marker}}}))
            .await;
        self.wait_for("another reconcile", |e| e.reconciles() > before)
            .await;
        self.wait_quiet().await;
    }

    /// Waits until the status of `demo` describes generation `generation` and is evaluated.
    pub async fn wait_evaluated(&self, generation: i64) {
        self.wait_for("an evaluated status of the current generation", |e| {
            let s = e.status();
            s["observedGeneration"].as_i64() == Some(generation)
                && s["compliance"]["lastEvaluated"].is_string()
                && e.condition("Compliant")
                    .is_some_and(|c| c["observedGeneration"].as_i64() == Some(generation))
        })
        .await;
    }
}

pub fn hcp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("caduceus.io", "v1alpha1", "HealthcarePlatform"),
        "healthcareplatforms",
    )
}

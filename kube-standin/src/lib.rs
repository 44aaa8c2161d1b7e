//! `kube-standin`: a small, faithful stand-in for the Kubernetes API server.
//!
//! It serves the Kubernetes REST API over real HTTP on loopback, so a real `kube::Client`
//! (and kube-runtime's watchers and `Controller`) talk to it exactly as to a cluster:
//! discovery (including kinds of CRDs created at runtime), get/list/watch with selectors and
//! resourceVersions, create/replace/merge patch/JSON patch/server-side apply with field
//! ownership, the status subresource, generation, finalizers and deletion, ownerReference
//! garbage collection, and admission of custom resources against their CRD's structural
//! schema and CEL rules. See the README ("The Kubernetes stand-in") for what it does not model.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let standin = kube_standin::StandIn::start().await?;
//! let client = standin.client()?;
//! // ... run the code under test with `client` ...
//! standin.mark_workloads_ready();
//! # Ok(()) }
//! ```

pub mod controllers;
pub mod fields;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod server;
pub mod store;

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use server::Shared;
pub use store::{ApiError, Failure, Store};

/// Errors of the stand-in handle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the stand-in listener: {0}")]
    Bind(#[source] std::io::Error),
    #[error("building the server URL: {0}")]
    Url(String),
    #[error("building a kube client: {0}")]
    Client(#[source] kube::Error),
    #[error("unknown kind {kind} in {api_version}")]
    UnknownKind { api_version: String, kind: String },
}

/// API calls counted by `(verb, kind)`. Verbs: get, list, watch, create, update, patch,
/// apply, delete, deletecollection, discovery. Kinds of subresource calls are `Kind/status`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallCounts(pub BTreeMap<(String, String), u64>);

impl CallCounts {
    pub const WRITE_VERBS: &'static [&'static str] = &[
        "create",
        "update",
        "patch",
        "apply",
        "delete",
        "deletecollection",
    ];

    pub fn get(&self, verb: &str, kind: &str) -> u64 {
        self.0
            .get(&(verb.to_string(), kind.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// All calls with this verb, any kind.
    pub fn verb(&self, verb: &str) -> u64 {
        self.0
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// Writes of any kind.
    pub fn writes(&self) -> u64 {
        Self::WRITE_VERBS.iter().map(|v| self.verb(v)).sum()
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Calls made since `earlier` was taken.
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts(
            self.0
                .iter()
                .map(|(k, n)| (k.clone(), n - earlier.0.get(k).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }
}

/// A running stand-in API server and the test-facing handle to its state.
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Result<Self, Error> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`.
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr).await.map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let shared = Shared::new(Store::new());
        let app = server::router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "stand-in server stopped");
            }
        });
        Ok(Self {
            shared,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Config` for this server (namespace `default`, no auth).
    pub fn config(&self) -> Result<kube::Config, Error> {
        let uri: http::Uri = self
            .url()
            .parse()
            .map_err(|e: http::uri::InvalidUri| Error::Url(e.to_string()))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        config.read_timeout = Some(Duration::from_secs(295));
        Ok(config)
    }

    /// A real `kube::Client` talking HTTP to this server.
    pub fn client(&self) -> Result<kube::Client, Error> {
        kube::Client::try_from(self.config()?).map_err(Error::Client)
    }

    /// A kubeconfig file pointing at this server.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url())
    }

    /// Direct access to the store (for what the helpers below do not cover).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.shared.store())
    }

    fn resolve(&self, api_version: &str, kind: &str) -> Result<Arc<registry::ResourceType>, Error> {
        self.shared
            .store()
            .registry
            .lookup_kind(api_version, kind)
            .ok_or_else(|| Error::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })
    }

    /// One object as stored (`namespace` is ignored for cluster-scoped kinds).
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let t = self.resolve(api_version, kind).ok()?;
        let ns = if t.namespaced { namespace } else { "" };
        self.shared.store().lookup(&t.key(), ns, name).cloned()
    }

    /// All objects of a kind, optionally in one namespace, sorted by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        match self.resolve(api_version, kind) {
            Ok(t) => self
                .shared
                .store()
                .list_raw(&t.key(), namespace.filter(|_| t.namespaced)),
            Err(_) => Vec::new(),
        }
    }

    /// Sets an object's status as `kube-controller-manager` would; false if it does not exist.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> bool {
        let Ok(t) = self.resolve(api_version, kind) else {
            return false;
        };
        let Some(obj) = self.get(api_version, kind, namespace, name) else {
            return false;
        };
        self.shared
            .store()
            .write_status(&t, &obj, status, "kube-controller-manager")
            .is_some()
    }

    /// Marks every Deployment, StatefulSet, ReplicaSet, Job (complete) and CloudNativePG
    /// Cluster ready for its current spec, as if all pods became ready. Returns how many
    /// objects changed.
    pub fn mark_workloads_ready(&self) -> usize {
        self.shared.store().settle_all()
    }

    /// When on, workloads become ready as soon as they are written (and existing ones now).
    pub fn set_auto_ready(&self, on: bool) {
        let mut store = self.shared.store();
        store.auto_ready = on;
        if on {
            store.settle_all();
        }
    }

    /// API calls so far.
    pub fn calls(&self) -> CallCounts {
        CallCounts(self.shared.store().calls.clone())
    }

    pub fn reset_calls(&self) {
        self.shared.store().calls.clear();
    }

    /// The current (global) resourceVersion; it moves only when something is written.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Makes the next `times` requests with `verb` on `kind` (`"*"` matches any) fail with
    /// HTTP `code`.
    pub fn inject_failure(&self, verb: &str, kind: &str, code: u16, times: u32) {
        self.shared.store().failures.push(Failure {
            verb: verb.to_string(),
            kind: kind.to_string(),
            code,
            remaining: times,
        });
    }

    /// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like [`wait_until`](Self::wait_until) with an async condition.
    pub async fn wait_until_async<F, Fut>(&self, timeout: Duration, mut cond: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if cond().await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A kubeconfig for a stand-in at `url` (context `standin`, namespace `default`).
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {url}\nusers:\n- name: standin\n  user: {{}}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n    namespace: default\ncurrent-context: standin\n"
    )
}

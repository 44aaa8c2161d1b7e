//! The real controller (`run_controller`: kube-runtime `Controller` with all its watches) running
//! in-process against `kube-standin`, a stand-in Kubernetes API server reached over HTTP by a
//! real `kube::Client`. No fixed sleeps: every wait polls with a timeout.
//!
//! [`Env`] starts the stand-in, installs the CRD from `crds/`, creates the namespace [`NS`] and
//! (unless told otherwise) starts the controller with fast intervals. The helpers without a
//! platform name are about the platform `demo`.

use std::{collections::BTreeMap, time::Duration};

use caduceus_operator::{
    crd::Phase, names::Names, run_controller, ControllerConfig, HealthcarePlatform, Metrics,
};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{Api, Patch, PatchParams, PostParams},
    core::{DynamicObject, GroupVersionKind},
    discovery::ApiResource,
    Client,
};
use kube_standin::StandIn;
use serde_json::{json, Value};
use tokio::{sync::oneshot, task::JoinHandle};

pub const NS: &str = "clinic";

/// The platform the helpers without a name are about.
pub const DEMO: &str = "demo";

/// The `platform` label of `demo`'s metrics.
pub const PLATFORM: &str = "clinic/demo";

/// Every kind the operator creates children of (plus PVCs of the StatefulSet controller model).
pub const CHILD_KINDS: &[(&str, &str)] = &[
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("networking.k8s.io/v1", "Ingress"),
];

/// How an [`Env`] waits and how its controller is configured.
pub struct Setup {
    wait: Duration,
    quiet: Duration,
    mark_ready_while_waiting: bool,
    config: ControllerConfig,
}

impl Default for Setup {
    /// 20 s waits, quiet after 500 ms without writes, and the controller watching [`NS`] with
    /// fast progress re-checks and error back-off.
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(20),
            quiet: Duration::from_millis(500),
            mark_ready_while_waiting: false,
            config: ControllerConfig {
                progress_interval: Duration::from_millis(300),
                error_backoff_base: Duration::from_millis(50),
                error_backoff_max: Duration::from_secs(1),
                namespace: Some(NS.into()),
                ..ControllerConfig::default()
            },
        }
    }
}

impl Setup {
    /// The bound of every wait (and of the controller's shutdown).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How long nothing may be written for [`Env::wait_quiet`] to return.
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// [`Env::wait_for`] marks the workloads ready on every poll (as the kubelet would).
    pub fn mark_ready_while_waiting(mut self) -> Self {
        self.mark_ready_while_waiting = true;
        self
    }

    /// Changes the controller's configuration beyond the defaults.
    pub fn controller(mut self, change: impl FnOnce(&mut ControllerConfig)) -> Self {
        change(&mut self.config);
        self
    }
}

pub struct Env {
    pub standin: StandIn,
    pub client: Client,
    /// The controller's metrics registry.
    pub metrics: Metrics,
    wait: Duration,
    quiet: Duration,
    mark_ready_while_waiting: bool,
    config: Option<ControllerConfig>,
    stop: Option<oneshot::Sender<()>>,
    controller: Option<JoinHandle<()>>,
}

impl Env {
    /// The stand-in with the CRD and the namespace, and the controller running.
    pub async fn start_with(setup: Setup) -> Self {
        let mut env = Self::without_controller(setup).await;
        env.start_controller();
        env
    }

    /// The stand-in with the CRD and the namespace; the controller starts with
    /// [`Env::start_controller`].
    pub async fn without_controller(setup: Setup) -> Self {
        let standin = StandIn::start().await.expect("stand-in starts");
        let client = standin.client().expect("client");
        install_crd(&client, crd_from_repo()).await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace"),
            )
            .await
            .expect("namespace");
        Self {
            standin,
            client,
            metrics: setup.config.metrics.clone(),
            wait: setup.wait,
            quiet: setup.quiet,
            mark_ready_while_waiting: setup.mark_ready_while_waiting,
            config: Some(setup.config),
            stop: None,
            controller: None,
        }
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

    /// Stops the controller and waits for it to end.
    pub async fn stop(mut self) {
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

    pub fn platforms(&self) -> Api<HealthcarePlatform> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Sends the platform as a raw manifest (as kubectl/ArgoCD would); the API's answer.
    pub async fn try_create_platform(
        &self,
        name: &str,
        spec: Value,
    ) -> Result<DynamicObject, kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), NS, &hcp_resource());
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "caduceus.io/v1alpha1",
            "kind": "HealthcarePlatform",
            "metadata": {"name": name, "namespace": NS},
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

    /// The object as stored in the stand-in (namespace [`NS`]).
    pub fn stored(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.standin.get(api_version, kind, NS, name)
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

    /// Events in [`NS`] (both Event APIs), as (reason, note/message).
    pub fn events(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (av, text) in [("events.k8s.io/v1", "note"), ("v1", "message")] {
            for ev in self.standin.list(av, "Event", Some(NS)) {
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
            .with_label_values(&[PLATFORM, rule])
            .get()
    }

    /// `caduceus_compliance_violations` of `demo` for `severity`.
    pub fn violations_metric(&self, severity: &str) -> i64 {
        self.metrics
            .compliance
            .violations
            .with_label_values(&[PLATFORM, severity])
            .get()
    }

    /// resourceVersions of every object in the namespace except the platform and Events.
    pub fn child_versions(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (av, kind) in CHILD_KINDS {
            for o in self.standin.list(av, kind, Some(NS)) {
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

    /// Waits until `cond` holds (marking the workloads ready on every poll if so set up).
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let ok = self
            .standin
            .wait_until(self.wait, |s| {
                if self.mark_ready_while_waiting {
                    s.mark_workloads_ready();
                }
                cond(self)
            })
            .await;
        assert!(
            ok,
            "timed out waiting for: {what}; status: {:#}; events: {:?}; API calls: {:?}",
            self.status(),
            self.events(),
            self.standin.calls()
        );
    }

    /// Waits until nothing has been written for the quiet period (no reconcile in flight).
    pub async fn wait_quiet(&self) {
        let mut last_rv = self.standin.resource_version();
        let mut since = std::time::Instant::now();
        let ok = self
            .standin
            .wait_until(self.wait, |s| {
                let rv = s.resource_version();
                if rv != last_rv {
                    last_rv = rv;
                    since = std::time::Instant::now();
                }
                since.elapsed() >= self.quiet
            })
            .await;
        assert!(
            ok,
            "the operator kept writing; API calls: {:?}",
            self.standin.calls()
        );
    }

    /// Marks workloads ready until the platform reports `phase` (the operator may create
    /// workloads in several passes).
    pub async fn settle_until_phase(&self, name: &str, phase: Phase) {
        let want = format!("{phase:?}");
        let ok = self
            .standin
            .wait_until(self.wait, |s| {
                s.mark_workloads_ready();
                self.phase(name).as_deref() == Some(want.as_str())
            })
            .await;
        assert!(
            ok,
            "platform {name} never reached {want}; status: {}; API calls: {:?}",
            self.platform_status(name),
            self.standin.calls()
        );
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

/// A file of the repository, by its path from the repository root.
pub fn repo_file(rel: &str) -> String {
    let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The HealthcarePlatform CRD as shipped in `crds/`.
pub fn crd_from_repo() -> CustomResourceDefinition {
    serde_norway::from_str(&repo_file("crds/caduceus.io_healthcareplatforms.yaml"))
        .expect("CRD YAML")
}

pub async fn install_crd(client: &Client, crd: CustomResourceDefinition) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.create(&PostParams::default(), &crd)
        .await
        .expect("CRD installed");
}

/// A namespaced CRD of `group`/v1 whose schema admits any object (as a third-party operator
/// installs it, reduced to what the stand-in needs to serve our objects).
pub fn open_crd(
    group: &str,
    kind: &str,
    plural: &str,
    status_subresource: bool,
) -> CustomResourceDefinition {
    let mut version = json!({
        "name": "v1", "served": true, "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
    });
    if status_subresource {
        version["subresources"] = json!({"status": {}});
    }
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "names": {
                "kind": kind, "plural": plural, "singular": kind.to_ascii_lowercase(),
                "listKind": format!("{kind}List")
            },
            "scope": "Namespaced",
            "versions": [version]
        }
    }))
    .expect("CRD")
}

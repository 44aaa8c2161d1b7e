//! The real controller (`run_controller`: kube-runtime `Controller` with all its watches) running
//! in-process against `kube-standin`, a stand-in Kubernetes API server reached over HTTP by a
//! real `kube::Client`. No fixed sleeps: every wait polls with a timeout.

use std::{collections::BTreeMap, time::Duration};

use caduceus_operator::{
    crd::Phase,
    names::{Names, LABEL_MANAGED_BY, MANAGED_BY},
    run_controller, ControllerConfig, HealthcarePlatform, Metrics,
};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Namespace, PersistentVolumeClaim},
        networking::v1::NetworkPolicy,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{Api, DeleteParams, Patch, PatchParams, PostParams},
    core::{DynamicObject, GroupVersionKind},
    discovery::ApiResource,
    Client, ResourceExt,
};
use kube_standin::StandIn;
use serde_json::{json, Value};
use tokio::{sync::oneshot, task::JoinHandle};

const WAIT: Duration = Duration::from_secs(20);
const NS: &str = "clinic";

struct Env {
    standin: StandIn,
    client: Client,
    metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    controller: Option<JoinHandle<()>>,
}

impl Env {
    async fn start() -> Self {
        let standin = StandIn::start().await.expect("stand-in starts");
        let client = standin.client().expect("client");
        install_crd(&client, crd_from_repo()).await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
            )
            .await
            .expect("namespace");
        let config = ControllerConfig {
            progress_interval: Duration::from_millis(300),
            error_backoff_base: Duration::from_millis(50),
            error_backoff_max: Duration::from_secs(1),
            namespace: Some(NS.into()),
            ..ControllerConfig::default()
        };
        let metrics = config.metrics.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let c = client.clone();
        let controller = tokio::spawn(async move {
            run_controller(c, config, async move {
                let _ = stopped.await;
            })
            .await
            .expect("controller runs");
        });
        Self {
            standin,
            client,
            metrics,
            stop: Some(stop),
            controller: Some(controller),
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(c) = self.controller.take() {
            tokio::time::timeout(WAIT, c)
                .await
                .expect("controller stops")
                .expect("controller task");
        }
    }

    fn platforms(&self) -> Api<HealthcarePlatform> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Creates the platform from the raw manifest (as kubectl/ArgoCD would send it).
    async fn create_platform(&self, name: &str, spec: Value) -> HealthcarePlatform {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), NS, &hcp_resource());
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "caduceus.io/v1alpha1",
            "kind": "HealthcarePlatform",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }))
        .unwrap();
        api.create(&PostParams::default(), &obj)
            .await
            .expect("platform admitted by the CRD schema");
        self.platforms()
            .get(name)
            .await
            .expect("platform readable as the typed resource")
    }

    fn stored(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.standin.get(api_version, kind, NS, name)
    }

    fn platform_status(&self, name: &str) -> Value {
        self.stored("caduceus.io/v1alpha1", "HealthcarePlatform", name)
            .and_then(|p| p.get("status").cloned())
            .unwrap_or(Value::Null)
    }

    fn phase(&self, name: &str) -> Option<String> {
        self.platform_status(name)["phase"]
            .as_str()
            .map(str::to_string)
    }

    fn condition(&self, name: &str, type_: &str) -> Option<Value> {
        self.platform_status(name)["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
    }

    /// Marks workloads ready until the platform reports `phase` (the operator may create
    /// workloads in several passes).
    async fn settle_until_phase(&self, name: &str, phase: Phase) {
        let want = format!("{phase:?}");
        let ok = self
            .standin
            .wait_until(WAIT, |s| {
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

    async fn wait_for(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let ok = self.standin.wait_until(WAIT, |_| cond(self)).await;
        assert!(
            ok,
            "timed out waiting for: {what}; status: {}; API calls: {:?}",
            self.platform_status("demo"),
            self.standin.calls()
        );
    }

    /// resourceVersions of every object in the namespace except the platform and Events.
    fn child_versions(&self) -> BTreeMap<String, String> {
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

    /// Waits until nothing has been written for half a second.
    async fn wait_quiet(&self) {
        let mut last_rv = self.standin.resource_version();
        let mut since = std::time::Instant::now();
        let ok = self
            .standin
            .wait_until(WAIT, |s| {
                let rv = s.resource_version();
                if rv != last_rv {
                    last_rv = rv;
                    since = std::time::Instant::now();
                }
                since.elapsed() >= Duration::from_millis(500)
            })
            .await;
        assert!(
            ok,
            "the operator kept writing; API calls: {:?}",
            self.standin.calls()
        );
    }

    fn reconciles(&self) -> u64 {
        self.metrics
            .reconciles
            .with_label_values(&["success"])
            .get()
    }
}

const CHILD_KINDS: &[(&str, &str)] = &[
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

fn hcp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("caduceus.io", "v1alpha1", "HealthcarePlatform"),
        "healthcareplatforms",
    )
}

fn repo_file(rel: &str) -> String {
    let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn crd_from_repo() -> CustomResourceDefinition {
    serde_norway::from_str(&repo_file("crds/caduceus.io_healthcareplatforms.yaml"))
        .expect("CRD YAML")
}

async fn install_crd(client: &Client, crd: CustomResourceDefinition) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.create(&PostParams::default(), &crd)
        .await
        .expect("CRD installed");
}

/// The spec of `examples/minimal.yaml`; until that example exists, the smallest platform the
/// generated CRD admits (`apiServer.env` must be present for its CEL rule, see `kube-standin`'s
/// `real_crd` test).
fn minimal_spec() -> Value {
    let path = format!("{}/../examples/minimal.yaml", env!("CARGO_MANIFEST_DIR"));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let v: Value = serde_norway::from_str(&text).expect("minimal.yaml is YAML");
            v.get("spec").cloned().unwrap_or_else(|| json!({}))
        }
        Err(_) => json!({"apiServer": {"env": []}}),
    }
}

/// `spec` with `patch` merged in (JSON merge patch semantics).
fn with(mut spec: Value, patch: Value) -> Value {
    fn merge(target: &mut Value, patch: &Value) {
        match (target.as_object_mut(), patch.as_object()) {
            (Some(t), Some(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            _ => *target = patch.clone(),
        }
    }
    merge(&mut spec, &patch);
    spec
}

#[tokio::test]
async fn new_platform_gets_all_children_and_becomes_ready_only_when_workloads_are() {
    let env = Env::start().await;
    let hp = env.create_platform("demo", minimal_spec()).await;
    let names = Names::new("demo");
    let uid = hp.uid().unwrap();
    env.wait_for(
        "API Deployment, Postgres and Redis StatefulSets, default-deny NetworkPolicy",
        |e| {
            e.stored("apps/v1", "Deployment", &names.api()).is_some()
                && e.stored("apps/v1", "StatefulSet", &names.postgres())
                    .is_some()
                && e.stored("apps/v1", "StatefulSet", &names.redis()).is_some()
                && e.stored(
                    "networking.k8s.io/v1",
                    "NetworkPolicy",
                    &names.netpol_default_deny(),
                )
                .is_some()
                && e.stored("v1", "Secret", &names.api_secrets()).is_some()
        },
    )
    .await;
    // Pods are not ready yet: the status must not claim Ready.
    env.wait_for("a status", |e| e.phase("demo").is_some())
        .await;
    assert_ne!(
        env.phase("demo").as_deref(),
        Some("Ready"),
        "Ready before any pod is ready"
    );

    env.settle_until_phase("demo", Phase::Ready).await;
    let ready = env.condition("demo", "Ready").expect("Ready condition");
    assert_eq!(ready["status"], "True");

    // Every child is owned by the platform and carries the recommended labels.
    let children = env.child_versions();
    assert!(children.len() >= 8, "children: {children:?}");
    for (av, kind) in CHILD_KINDS {
        for o in env.standin.list(av, kind, Some(NS)) {
            if *kind == "PersistentVolumeClaim" {
                continue; // created by the StatefulSet controller, not the operator
            }
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let owners = o["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                owners.iter().any(|r| r["uid"] == uid.as_str()),
                "{kind}/{name} is not owned by the platform"
            );
            assert_eq!(
                o["metadata"]["labels"][LABEL_MANAGED_BY], MANAGED_BY,
                "{kind}/{name} labels"
            );
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/part-of"], "caduceus",
                "{kind}/{name} labels"
            );
        }
    }
    env.stop().await;
}

#[tokio::test]
async fn a_second_reconcile_changes_nothing() {
    let env = Env::start().await;
    env.create_platform("demo", minimal_spec()).await;
    env.settle_until_phase("demo", Phase::Ready).await;
    // Let in-flight reconciles triggered by the readiness updates finish.
    env.wait_quiet().await;
    let before = env.child_versions();
    let calls_before = env.standin.calls();
    let reconciles_before = env.reconciles();

    // Touch the platform (no spec change): the controller reconciles it again.
    let touched = env
        .platforms()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/touch": "1"}}})),
        )
        .await
        .unwrap();
    env.wait_for("another successful reconcile", |e| {
        e.reconciles() > reconciles_before
    })
    .await;
    env.wait_quiet().await;

    let platform_now = env.platforms().get("demo").await.unwrap();
    assert_eq!(
        platform_now.resource_version(),
        touched.resource_version(),
        "the status was rewritten although nothing changed"
    );

    assert_eq!(
        env.child_versions(),
        before,
        "a no-change reconcile modified children"
    );
    let calls = env.standin.calls().since(&calls_before);
    for ((verb, kind), n) in &calls.0 {
        let is_platform_touch = verb == "patch" && kind == "HealthcarePlatform";
        let harmless = matches!(
            verb.as_str(),
            "get" | "list" | "watch" | "discovery" | "apply"
        ) || is_platform_touch;
        let event = kind == "Event";
        assert!(
            harmless || event,
            "unexpected {n} {verb} {kind} calls in a steady-state reconcile: {calls:?}"
        );
    }
    assert!(
        calls.verb("apply") > 0,
        "the reconcile re-applied its children (idempotently): {calls:?}"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_deleted_network_policy_and_a_hand_edited_deployment_are_restored() {
    let env = Env::start().await;
    env.create_platform("demo", minimal_spec()).await;
    env.settle_until_phase("demo", Phase::Ready).await;
    let names = Names::new("demo");

    let policies: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), NS);
    let old_uid = policies
        .get(&names.netpol_default_deny())
        .await
        .unwrap()
        .uid();
    policies
        .delete(&names.netpol_default_deny(), &DeleteParams::default())
        .await
        .unwrap();
    env.wait_for("the default-deny NetworkPolicy to come back", |e| {
        e.stored(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            &names.netpol_default_deny(),
        )
        .is_some_and(|p| p["metadata"]["uid"].as_str() != old_uid.as_deref())
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), NS);
    let original = deployments.get(&names.api()).await.unwrap();
    let want_replicas = original.spec.as_ref().and_then(|s| s.replicas);
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    deployments
        .patch(&names.api(), &edit, &Patch::Merge(json!({"spec": {"replicas": 17}, "metadata": {"labels": {"app.kubernetes.io/managed-by": "someone"}}})))
        .await
        .unwrap();
    env.wait_for("the Deployment edit to be reverted", |e| {
        e.stored("apps/v1", "Deployment", &names.api())
            .is_some_and(|d| {
                d["spec"]["replicas"].as_i64() == want_replicas.map(i64::from)
                    && d["metadata"]["labels"][LABEL_MANAGED_BY] == MANAGED_BY
            })
    })
    .await;
    env.wait_for("DriftCorrected Events", |e| {
        e.standin
            .list("events.k8s.io/v1", "Event", Some(NS))
            .iter()
            .chain(e.standin.list("v1", "Event", Some(NS)).iter())
            .any(|ev| ev["reason"] == "DriftCorrected")
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn paused_keeps_children_and_still_updates_status() {
    let env = Env::start().await;
    env.create_platform("demo", minimal_spec()).await;
    env.settle_until_phase("demo", Phase::Ready).await;
    let names = Names::new("demo");
    let desired = |e: &Env| {
        e.stored("apps/v1", "Deployment", &names.api())
            .and_then(|d| d["spec"]["replicas"].as_i64())
    };
    let before = desired(&env);

    let p = env
        .platforms()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true, "apiServer": {"replicas": 5}}})),
        )
        .await
        .unwrap();
    let generation = p.metadata.generation.unwrap();
    env.wait_for("phase Paused for the new generation", |e| {
        let s = e.platform_status("demo");
        s["phase"] == "Paused" && s["observedGeneration"].as_i64() == Some(generation)
    })
    .await;
    assert_eq!(
        desired(&env),
        before,
        "a paused platform's spec change was applied"
    );

    // Status keeps tracking the workloads while paused.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), NS);
    deployments
        .patch_status(
            &names.api(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 0, "availableReplicas": 0}})),
        )
        .await
        .unwrap();
    env.wait_for("ApiServerReady=False while paused", |e| {
        e.condition("demo", "ApiServerReady")
            .is_some_and(|c| c["status"] == "False")
            && e.phase("demo").as_deref() == Some("Paused")
    })
    .await;

    env.platforms()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    env.wait_for("the spec change applied after unpausing", |e| {
        desired(e) == Some(5)
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn stopped_scales_workloads_to_zero_and_keeps_data() {
    let env = Env::start().await;
    env.create_platform("demo", minimal_spec()).await;
    env.settle_until_phase("demo", Phase::Ready).await;
    let names = Names::new("demo");
    let pvcs_before = env
        .standin
        .list("v1", "PersistentVolumeClaim", Some(NS))
        .len();
    assert!(
        pvcs_before > 0,
        "the StatefulSet controller model created PVCs"
    );

    env.platforms()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"stopped": true}})),
        )
        .await
        .unwrap();
    env.wait_for("all workloads at zero replicas", |e| {
        let zero = |av: &str, kind: &str, name: &str| {
            e.stored(av, kind, name)
                .is_some_and(|o| o["spec"]["replicas"].as_i64() == Some(0))
        };
        zero("apps/v1", "Deployment", &names.api())
            && zero("apps/v1", "StatefulSet", &names.postgres())
            && zero("apps/v1", "StatefulSet", &names.redis())
    })
    .await;
    env.settle_until_phase("demo", Phase::Stopped).await;
    assert_eq!(
        env.standin
            .list("v1", "PersistentVolumeClaim", Some(NS))
            .len(),
        pvcs_before,
        "data kept"
    );
    assert!(
        env.stored("v1", "Secret", &names.api_secrets()).is_some(),
        "secrets kept"
    );

    env.platforms()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"stopped": false}})),
        )
        .await
        .unwrap();
    env.settle_until_phase("demo", Phase::Ready).await;
    env.stop().await;
}

async fn delete_platform_and_wait(env: &Env, name: &str) {
    env.platforms()
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    env.wait_for("the platform to be gone (finalizer done)", |e| {
        e.stored("caduceus.io/v1alpha1", "HealthcarePlatform", name)
            .is_none()
    })
    .await;
}

#[tokio::test]
async fn deletion_with_retain_keeps_pvcs() {
    let env = Env::start().await;
    env.create_platform(
        "demo",
        with(minimal_spec(), json!({"deletionPolicy": "Retain"})),
    )
    .await;
    env.settle_until_phase("demo", Phase::Ready).await;
    let names = Names::new("demo");
    let pvcs: Vec<String> = env
        .standin
        .list("v1", "PersistentVolumeClaim", Some(NS))
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(!pvcs.is_empty());

    delete_platform_and_wait(&env, "demo").await;
    env.wait_for("children garbage-collected", |e| {
        e.stored("apps/v1", "Deployment", &names.api()).is_none()
    })
    .await;
    let left: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), NS);
    for pvc in &pvcs {
        assert!(
            left.get_opt(pvc).await.unwrap().is_some(),
            "Retain deleted PVC {pvc}"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn deletion_with_delete_removes_pvcs() {
    let env = Env::start().await;
    env.create_platform(
        "demo",
        with(minimal_spec(), json!({"deletionPolicy": "Delete"})),
    )
    .await;
    env.settle_until_phase("demo", Phase::Ready).await;
    assert!(!env
        .standin
        .list("v1", "PersistentVolumeClaim", Some(NS))
        .is_empty());
    let sets: Api<StatefulSet> = Api::namespaced(env.client.clone(), NS);
    assert!(!sets
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty());

    delete_platform_and_wait(&env, "demo").await;
    env.wait_for("PVCs deleted", |e| {
        e.standin
            .list("v1", "PersistentVolumeClaim", Some(NS))
            .is_empty()
    })
    .await;
    env.wait_for("StatefulSets garbage-collected", |e| {
        e.standin
            .list("apps/v1", "StatefulSet", Some(NS))
            .is_empty()
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn an_invalid_spec_yields_degraded_with_a_clear_reason() {
    let env = Env::start().await;
    // Admitted by the CRD schema (a quantity is int-or-string) but not a valid quantity.
    env.create_platform(
        "demo",
        with(
            minimal_spec(),
            json!({"database": {"storage": {"size": "lots"}}}),
        ),
    )
    .await;
    env.wait_for("Degraded=True", |e| {
        e.condition("demo", "Degraded")
            .is_some_and(|c| c["status"] == "True")
    })
    .await;
    let degraded = env.condition("demo", "Degraded").unwrap();
    assert_eq!(degraded["reason"], "InvalidSpec");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.database.storage.size"),
        "message names the field: {message}"
    );
    assert!(
        env.standin
            .list("apps/v1", "Deployment", Some(NS))
            .is_empty(),
        "nothing half-applied"
    );
    env.stop().await;
}

fn cnpg_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "clusters.postgresql.cnpg.io"},
        "spec": {
            "group": "postgresql.cnpg.io",
            "names": {"kind": "Cluster", "plural": "clusters", "singular": "cluster", "listKind": "ClusterList"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn cloudnativepg_without_its_crd_reports_it_then_creates_the_cluster_once_installed() {
    let env = Env::start().await;
    env.create_platform(
        "demo",
        with(
            minimal_spec(),
            json!({"database": {"provider": "CloudNativePG"}}),
        ),
    )
    .await;
    env.wait_for("DatabaseReady=False/CloudNativePGNotInstalled", |e| {
        e.condition("demo", "DatabaseReady")
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "CloudNativePGNotInstalled")
    })
    .await;
    let message = env.condition("demo", "DatabaseReady").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!message.is_empty(), "a clear message");

    install_crd(&env.client, cnpg_crd()).await;
    // Nudge a reconcile now rather than waiting for the periodic re-check.
    env.platforms()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/cnpg": "installed"}}})),
        )
        .await
        .unwrap();
    let names = Names::new("demo");
    env.wait_for("the CNPG Cluster", |e| {
        e.stored("postgresql.cnpg.io/v1", "Cluster", &names.cnpg_cluster())
            .is_some()
    })
    .await;
    env.settle_until_phase("demo", Phase::Ready).await;
    env.stop().await;
}

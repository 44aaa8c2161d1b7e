//! The real controller (`run_controller`: kube-runtime `Controller` with all its watches) running
//! in-process against a real control plane (`scripts/cluster.sh`): kube-apiserver with RBAC and
//! Pod Security admission, kube-controller-manager (Deployment, StatefulSet, garbage collector,
//! PV binder), kube-scheduler and KWOK, which makes scheduled Pods Running and Ready. The operator
//! runs with the chart's ServiceAccount. No fixed sleeps: every wait polls with a timeout.

mod support;

use caduceus_operator::{
    crd::Phase,
    names::{Names, LABEL_MANAGED_BY, MANAGED_BY},
    HealthcarePlatform,
};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{ConfigMap, PersistentVolumeClaim, Secret},
    networking::v1::NetworkPolicy,
};
use kube::{
    api::{Api, DeleteParams, Patch, PatchParams},
    ResourceExt,
};
use serde_json::{json, Value};
use support::cluster::{crds_exclusive, install_crd, uninstall_crd, Env, Setup, CHILD_KINDS};

/// Objects the control plane itself puts into every namespace (not the operator's children).
fn is_system_object(kind: &str, name: &str) -> bool {
    matches!(
        (kind, name),
        ("ServiceAccount", "default") | ("ConfigMap", "kube-root-ca.crt")
    )
}

/// `Env::start` and `create_platform` of these tests (several platforms, by name).
impl Env {
    async fn start() -> Self {
        Env::start_with(Setup::default()).await
    }

    async fn create_platform(&self, name: &str, spec: Value) -> HealthcarePlatform {
        self.create_named_platform(name, spec).await
    }
}

/// The spec of `examples/minimal.yaml`.
fn minimal_spec() -> Value {
    let v: Value = serde_norway::from_str(&support::cluster::repo_file("examples/minimal.yaml"))
        .expect("minimal.yaml is YAML");
    v.get("spec").cloned().expect("minimal.yaml has a spec")
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
    // The first status is written before any pod exists: it must not claim Ready.
    env.wait_for("a status", |e| e.phase("demo").is_some())
        .await;
    let first = env.mirror.platform_history("demo");
    let first_phase = first
        .iter()
        .find_map(|s| s["phase"].as_str().map(str::to_string));
    assert_ne!(
        first_phase.as_deref(),
        Some("Ready"),
        "Ready before any pod could be ready: {first:?}"
    );

    env.settle_until_phase("demo", Phase::Ready).await;
    let ready = env.condition_of("demo", "Ready").expect("Ready condition");
    assert_eq!(ready["status"], "True");

    // Every child is owned by the platform and carries the recommended labels.
    let children = env.child_versions();
    assert!(children.len() >= 8, "children: {children:?}");
    for (av, kind) in CHILD_KINDS {
        for o in env.list(av, kind) {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if *kind == "PersistentVolumeClaim" || *kind == "Job" || is_system_object(kind, &name) {
                continue; // created by the StatefulSet/CronJob controllers or the control plane
            }
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
    let calls_before = env.calls();
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
    let calls = env.calls().since(&calls_before);
    for ((verb, kind), n) in &calls.0 {
        let harmless = matches!(
            verb.as_str(),
            "get" | "list" | "watch" | "discovery" | "apply"
        );
        let event = kind == "Event";
        assert!(
            harmless || event,
            "unexpected {n} {verb} {kind} calls in a steady-state reconcile: {calls:?}"
        );
    }
    // The reconcile reached the apply stage (it read the generated Secrets) and, the watches
    // showing every child as the operator's last apply left it, applied none of them.
    assert!(
        calls
            .0
            .get(&("get".to_string(), "Secret".to_string()))
            .copied()
            > Some(0),
        "the reconcile did not reach the apply stage: {calls:?}"
    );
    assert_eq!(
        calls.verb("apply"),
        0,
        "unchanged children were applied again: {calls:?}"
    );
    // What the control plane's own controllers write (a Deployment's revision annotation, the
    // HPA's status, a claim's binding) is not drift.
    assert!(
        !env.has_event("DriftCorrected", ""),
        "a new platform reported drift: {:?}",
        env.events()
    );
    env.stop().await;
}

#[tokio::test]
async fn objects_the_platform_owns_but_no_longer_wants_are_swept_and_data_kinds_kept() {
    let mut env = Env::without_controller(Setup::default()).await;
    let hp = env.create_platform("sweep", minimal_spec()).await;
    let names = Names::new("sweep");
    // Left behind by an earlier version or an earlier spec, with the platform's labels and owner
    // reference: what the operator finds on its first reconcile.
    let labels = names.platform_selector();
    let owner = json!([{
        "apiVersion": "caduceus.io/v1alpha1", "kind": "HealthcarePlatform",
        "name": "sweep", "uid": hp.uid().unwrap(), "controller": true
    }]);
    let meta = |name: &str, owned: bool| {
        let mut m = json!({"name": name, "namespace": env.ns, "labels": labels});
        if owned {
            m["ownerReferences"] = owner.clone();
        }
        m
    };
    let policy = |name: &str, owned: bool| {
        serde_json::from_value::<NetworkPolicy>(json!({
            "metadata": meta(name, owned),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        }))
        .unwrap()
    };
    let policies: Api<NetworkPolicy> = env.api();
    for (name, owned) in [("sweep-allow-old", true), ("sweep-not-owned", false)] {
        policies
            .create(&Default::default(), &policy(name, owned))
            .await
            .unwrap();
    }
    let config_maps: Api<ConfigMap> = env.api();
    config_maps
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": meta("sweep-old-config", true)})).unwrap(),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = env.api();
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": meta("sweep-old-key", true),
                                           "stringData": {"key": "kept"}}))
            .unwrap(),
        )
        .await
        .unwrap();

    env.start_controller();
    env.settle_until_phase("sweep", Phase::Ready).await;
    env.wait_for("the unwanted NetworkPolicy and ConfigMap swept", |e| {
        e.stored("networking.k8s.io/v1", "NetworkPolicy", "sweep-allow-old")
            .is_none()
            && e.stored("v1", "ConfigMap", "sweep-old-config").is_none()
    })
    .await;
    // Kept: a Secret (kind kept when unwanted: it may unlock data) and an object the platform
    // does not own (labels alone do not make it the platform's).
    assert!(secrets.get_opt("sweep-old-key").await.unwrap().is_some());
    assert!(policies.get_opt("sweep-not-owned").await.unwrap().is_some());
    // Every wanted child is still there.
    for name in [
        names.netpol_default_deny(),
        names.netpol_api_ingress(),
        names.netpol_postgres_ingress(),
    ] {
        assert!(
            policies.get_opt(&name).await.unwrap().is_some(),
            "{name} was swept"
        );
    }
    assert!(config_maps
        .get_opt(&names.api_config())
        .await
        .unwrap()
        .is_some());
    env.stop().await;
}

#[tokio::test]
async fn a_deleted_network_policy_and_a_hand_edited_deployment_are_restored() {
    let env = Env::start().await;
    env.create_platform("demo", minimal_spec()).await;
    env.settle_until_phase("demo", Phase::Ready).await;
    let names = Names::new("demo");

    let policies: Api<NetworkPolicy> = env.api();
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

    let deployments: Api<Deployment> = env.api();
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
        e.list("events.k8s.io/v1", "Event")
            .iter()
            .chain(e.list("v1", "Event").iter())
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

    let generation = env
        .patch_spec(json!({"paused": true, "apiServer": {"replicas": 5}}))
        .await;
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

    // Status keeps tracking the workloads while paused: someone else scales the Deployment up
    // with pods no node can take, so fewer pods are ready than desired.
    let deployments: Api<Deployment> = env.api();
    let other = PatchParams {
        field_manager: Some("someone-else".into()),
        ..PatchParams::default()
    };
    deployments
        .patch(
            &names.api(),
            &other,
            &Patch::Merge(json!({"spec": {"replicas": 4, "template": {"spec": {"nodeSelector": {"caduceus.io/test": "no-such-node"}}}}})),
        )
        .await
        .unwrap();
    env.wait_for("ApiServerReady=False while paused", |e| {
        e.condition_of("demo", "ApiServerReady")
            .is_some_and(|c| c["status"] == "False")
            && e.phase("demo").as_deref() == Some("Paused")
    })
    .await;

    env.patch_spec(json!({"paused": false})).await;
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
    let pvcs_before = env.list("v1", "PersistentVolumeClaim").len();
    assert!(
        pvcs_before > 0,
        "the StatefulSet controller model created PVCs"
    );

    env.patch_spec(json!({"stopped": true})).await;
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
        env.list("v1", "PersistentVolumeClaim").len(),
        pvcs_before,
        "data kept"
    );
    assert!(
        env.stored("v1", "Secret", &names.api_secrets()).is_some(),
        "secrets kept"
    );

    env.patch_spec(json!({"stopped": false})).await;
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
        .list("v1", "PersistentVolumeClaim")
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
    let left: Api<PersistentVolumeClaim> = env.api();
    for pvc in &pvcs {
        assert!(
            left.get_opt(pvc).await.unwrap().is_some(),
            "Retain deleted PVC {pvc}"
        );
    }
    // The garbage collector has removed every other child; the credentials, the TLS key and the
    // key ring that unlock the retained data are still there, unowned.
    let secrets: Api<Secret> = env.api();
    for secret in [
        names.api_secrets(),
        names.postgres_credentials(),
        names.postgres_app(),
        names.postgres_tls(),
        names.redis_credentials(),
    ] {
        let s = secrets
            .get_opt(&secret)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("Retain deleted Secret {secret}"));
        assert!(
            s.metadata.owner_references.unwrap_or_default().is_empty(),
            "Secret {secret} is still owned by the deleted platform"
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
    assert!(!env.list("v1", "PersistentVolumeClaim").is_empty());
    let sets: Api<StatefulSet> = env.api();
    assert!(!sets
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty());

    delete_platform_and_wait(&env, "demo").await;
    env.wait_for("PVCs deleted", |e| {
        e.list("v1", "PersistentVolumeClaim").is_empty()
    })
    .await;
    env.wait_for("StatefulSets garbage-collected", |e| {
        e.list("apps/v1", "StatefulSet").is_empty()
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
        e.condition_of("demo", "Degraded")
            .is_some_and(|c| c["status"] == "True")
    })
    .await;
    let degraded = env.condition_of("demo", "Degraded").unwrap();
    assert_eq!(degraded["reason"], "InvalidSpec");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.database.storage.size"),
        "message names the field: {message}"
    );
    assert!(
        env.list("apps/v1", "Deployment").is_empty(),
        "nothing half-applied"
    );
    env.stop().await;
}

#[tokio::test]
async fn cloudnativepg_without_its_crd_reports_it_then_creates_the_cluster_once_installed() {
    let _crds = crds_exclusive().await;
    let mut env = Env::start().await;
    uninstall_crd(&env.admin, "clusters.postgresql.cnpg.io").await;
    env.create_platform(
        "demo",
        with(
            minimal_spec(),
            json!({"database": {"provider": "CloudNativePG"}}),
        ),
    )
    .await;
    env.wait_for("DatabaseReady=False/CloudNativePGNotInstalled", |e| {
        e.condition_of("demo", "DatabaseReady")
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "CloudNativePGNotInstalled")
    })
    .await;
    let message = env.condition_of("demo", "DatabaseReady").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!message.is_empty(), "a clear message");

    // CloudNativePG's own CRD, as its Go module publishes it: our Cluster is validated
    // against the real schema.
    let crd = env
        .cluster
        .third_party_crd("postgresql.cnpg.io_clusters.yaml");
    install_crd(&env.admin, crd).await;
    env.mirror_kind("postgresql.cnpg.io/v1", "Cluster").await;
    // Nudge a reconcile now rather than waiting for the periodic re-check.
    env.patch_platform(json!({"metadata": {"annotations": {"test/cnpg": "installed"}}}))
        .await;
    let names = Names::new("demo");
    env.wait_for("the CNPG Cluster", |e| {
        e.stored("postgresql.cnpg.io/v1", "Cluster", &names.cnpg_cluster())
            .is_some()
    })
    .await;
    // No CloudNativePG operator runs here: the Cluster reports what its operator would once
    // the instances are up.
    let clusters: Api<kube::core::DynamicObject> = Api::namespaced_with(
        env.admin.clone(),
        &env.ns,
        &kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
            "clusters",
        ),
    );
    let instances = env
        .stored("postgresql.cnpg.io/v1", "Cluster", &names.cnpg_cluster())
        .and_then(|c| c["spec"]["instances"].as_i64())
        .unwrap_or(1);
    clusters
        .patch_status(
            &names.cnpg_cluster(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "instances": instances, "readyInstances": instances,
                "phase": "Cluster in healthy state",
                "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady",
                                "message": "Cluster is Ready", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }})),
        )
        .await
        .expect("Cluster status");
    env.settle_until_phase("demo", Phase::Ready).await;
    let admin = env.admin.clone();
    env.stop().await;
    uninstall_crd(&admin, "clusters.postgresql.cnpg.io").await;
}

//! Every example in `examples/` applied to the real control plane (`scripts/cluster.sh`) and
//! reconciled by the real controller with the chart ServiceAccount's token: the CRD schema admits
//! each as shipped, the API server (Pod Security `restricted`, the CloudNativePG and Prometheus
//! Operator CRDs' own schemas) admits every child, the chart's RBAC grants every call (any 403
//! fails the test, see `Env::stop`), and each platform reaches the state it can reach here:
//! Ready, or, for external services that only a running API can verify, an honest
//! `ExternalNotVerified`. On `minimal.yaml`: drift repair, scaling through the CR, deletion.

mod support;

use caduceus_operator::{crd::Phase, names::Names};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use serde_json::{json, Value};
use support::cluster::{
    crds_exclusive, install_crd, repo_file, uninstall_crd, yaml_documents, Env, Setup,
};

/// The HealthcarePlatform of an example file.
fn example(file: &str) -> Value {
    yaml_documents(&repo_file(&format!("examples/{file}")))
        .into_iter()
        .find(|d| d["kind"] == "HealthcarePlatform")
        .unwrap_or_else(|| panic!("{file} holds a HealthcarePlatform"))
}

const THIRD_PARTY: [(&str, &str, &str, &str); 4] = [
    (
        "postgresql.cnpg.io_clusters.yaml",
        "postgresql.cnpg.io/v1",
        "Cluster",
        "clusters.postgresql.cnpg.io",
    ),
    (
        "postgresql.cnpg.io_scheduledbackups.yaml",
        "postgresql.cnpg.io/v1",
        "ScheduledBackup",
        "scheduledbackups.postgresql.cnpg.io",
    ),
    (
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        "servicemonitors.monitoring.coreos.com",
    ),
    (
        "monitoring.coreos.com_prometheusrules.yaml",
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        "prometheusrules.monitoring.coreos.com",
    ),
];

/// A namespace with the example's platform (moved into the namespace) and the Secrets it names.
async fn apply_example(file: &str) -> (Env, String) {
    let mut env = Env::start_with(Setup::default()).await;
    for (_, av, kind, _) in THIRD_PARTY {
        env.mirror_kind(av, kind).await;
    }
    let mut platform = example(file);
    // The StorageClasses an example names (e.g. `encrypted-ssd`) are the cluster operator's;
    // here KWOK's class provisions every claim.
    for pointer in [
        "/spec/database/storage/storageClassName",
        "/spec/cache/persistence/storageClassName",
    ] {
        if let Some(class) = platform.pointer_mut(pointer) {
            *class = json!("kwok-volume");
        }
    }
    let name = platform["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    for (part, url) in [
        (
            "database",
            "postgres://caduceus:pw@db.internal:5432/caduceus?sslmode=verify-full",
        ),
        ("cache", "rediss://:pw@cache.internal:6379/0"),
    ] {
        let sref = &platform["spec"][part]["secretRef"];
        if let (Some(secret), Some(key)) = (sref["name"].as_str(), sref["key"].as_str()) {
            support::cluster::apply_manifest(
                &env.admin,
                "caduceus-tests",
                &json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": secret, "namespace": env.ns},
                        "stringData": {key: url}}),
            )
            .await;
        }
    }
    env.create_named_platform(&name, platform["spec"].clone())
        .await;
    (env, name)
}

/// Writes the status CloudNativePG's operator would once every instance is up.
async fn cnpg_cluster_ready(env: &Env, cluster: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.admin.clone(),
        &env.ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
            "clusters",
        ),
    );
    let instances = env
        .stored("postgresql.cnpg.io/v1", "Cluster", cluster)
        .and_then(|c| c["spec"]["instances"].as_i64())
        .expect("Cluster instances");
    api.patch_status(
        cluster,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"instances": instances, "readyInstances": instances,
                                        "phase": "Cluster in healthy state"}}),
        ),
    )
    .await
    .expect("Cluster status admitted by the CloudNativePG schema");
}

#[tokio::test]
async fn every_example_reconciles_with_the_charts_rbac_on_a_real_api_server() {
    let _crds = crds_exclusive().await;
    let setup = Env::without_controller(Setup::default()).await;
    for (file, _, _, _) in THIRD_PARTY {
        install_crd(&setup.admin, setup.cluster.third_party_crd(file)).await;
    }
    setup.stop().await;

    // production.yaml: embedded database and cache, monitoring, Retain.
    let (env, name) = apply_example("production.yaml").await;
    env.settle_until_phase(&name, Phase::Ready).await;
    let names = Names::new(&name);
    env.wait_for("the Prometheus Operator objects", |e| {
        e.stored(
            "monitoring.coreos.com/v1",
            "PrometheusRule",
            &names.prometheus_rule(),
        )
        .is_some()
    })
    .await;
    env.stop().await;

    // cloudnative-pg.yaml: the Cluster and ScheduledBackup meet CloudNativePG's schemas.
    let (env, name) = apply_example("cloudnative-pg.yaml").await;
    let names = Names::new(&name);
    env.wait_for("the CloudNativePG Cluster and ScheduledBackup", |e| {
        e.stored("postgresql.cnpg.io/v1", "Cluster", &names.cnpg_cluster())
            .is_some()
            && e.stored(
                "postgresql.cnpg.io/v1",
                "ScheduledBackup",
                &names.cnpg_scheduled_backup(),
            )
            .is_some()
    })
    .await;
    cnpg_cluster_ready(&env, &names.cnpg_cluster()).await;
    env.settle_until_phase(&name, Phase::Ready).await;
    env.stop().await;

    // external-database.yaml: only a running API can reach the external services; the status
    // says so instead of claiming them ready.
    let (env, name) = apply_example("external-database.yaml").await;
    env.wait_for("the API Deployment ready and the cache not verified", |e| {
        e.condition_of(&name, "ApiServerReady")
            .is_some_and(|c| c["status"] == "True")
            && e.condition_of(&name, "CacheReady")
                .is_some_and(|c| c["status"] == "False" && c["reason"] == "ExternalNotVerified")
    })
    .await;
    assert_ne!(env.phase(&name).as_deref(), Some("Ready"));
    env.stop().await;

    // minimal.yaml: Ready, drift repair, scaling through the CR, deletion (Delete).
    let (env, name) = apply_example("minimal.yaml").await;
    env.settle_until_phase(&name, Phase::Ready).await;
    let names = Names::new(&name);
    let policies: Api<DynamicObject> = Api::namespaced_with(
        env.admin.clone(),
        &env.ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.k8s.io", "v1", "NetworkPolicy"),
            "networkpolicies",
        ),
    );
    let deny = names.netpol_default_deny();
    let old = env
        .stored("networking.k8s.io/v1", "NetworkPolicy", &deny)
        .expect("default deny")["metadata"]["uid"]
        .clone();
    policies
        .delete(&deny, &DeleteParams::default())
        .await
        .expect("delete policy");
    env.wait_for("the default-deny NetworkPolicy restored", |e| {
        e.stored("networking.k8s.io/v1", "NetworkPolicy", &deny)
            .is_some_and(|p| p["metadata"]["uid"] != old)
    })
    .await;
    env.platforms()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"apiServer": {"autoscaling": {
                "enabled": true, "minReplicas": 2, "maxReplicas": 4}}}})),
        )
        .await
        .expect("patch platform");
    env.wait_for("the HPA follows the CR", |e| {
        e.stored("autoscaling/v2", "HorizontalPodAutoscaler", &names.api())
            .is_some_and(|h| h["spec"]["minReplicas"] == 2 && h["spec"]["maxReplicas"] == 4)
    })
    .await;
    env.platforms()
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete platform");
    env.wait_for("the platform gone and its claims deleted", |e| {
        e.stored("caduceus.io/v1alpha1", "HealthcarePlatform", &name)
            .is_none()
            && e.list("v1", "PersistentVolumeClaim").is_empty()
    })
    .await;
    let admin = env.admin.clone();
    env.stop().await;

    for (_, _, _, crd) in THIRD_PARTY {
        uninstall_crd(&admin, crd).await;
    }
}

//! Day-2 changes on a live platform against the real control plane (`scripts/cluster.sh`): the
//! API server's immutability rules (a StatefulSet's `volumeClaimTemplates`), the Deployment and
//! StatefulSet controllers rolling pods (KWOK makes the new ones Ready), the HPA controller and
//! real garbage collection. For each database provider (Embedded, CloudNativePG, External):
//! upgrade `database.version` (where the operator runs the database),
//! `cache.version` and the API image tag, grow the database storage, switch cache persistence;
//! the children roll, no apply fails, and the platform returns to Ready. Then scaling,
//! autoscaling on/off and ingress on/off.

mod support;

use caduceus_operator::{crd::Phase, names::Names};
use kube::api::{Api, Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use serde_json::{json, Value};
use support::cluster::{crds_exclusive, install_crd, Env, Setup};

/// Rollouts replace pods one by one (and a StatefulSet whose claim templates change is replaced
/// first): longer waits than the default.
fn lifecycle_setup() -> Setup {
    Setup::default().wait(std::time::Duration::from_secs(180))
}

fn spec(extra: Value) -> Value {
    let mut spec = json!({
        "apiServer": {"replicas": 2, "env": []},
        "deletionPolicy": "Delete",
        "database": {"version": "16.6", "storage": {"size": "1Gi"}},
        "cache": {"version": "7.4", "persistence": {"enabled": false}}
    });
    merge(&mut spec, &extra);
    spec
}

fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = patch.clone(),
    }
}

/// The image of the first container of a workload's pod template.
fn image(env: &Env, kind: &str, name: &str) -> Option<String> {
    env.stored("apps/v1", kind, name).and_then(|o| {
        o["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .map(str::to_string)
    })
}

/// The workload finished rolling out its current template (every replica updated and ready).
fn rolled_out(env: &Env, kind: &str, name: &str) -> bool {
    env.stored("apps/v1", kind, name).is_some_and(|o| {
        let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
        let st = &o["status"];
        let observed = st["observedGeneration"] == o["metadata"]["generation"];
        let updated = st["updatedReplicas"].as_i64().unwrap_or(0) == want;
        let ready = st["readyReplicas"].as_i64().unwrap_or(0) == want;
        let revisions = kind != "StatefulSet" || st["currentRevision"] == st["updateRevision"];
        observed && updated && ready && revisions
    })
}

/// No condition reports a failed apply, and the platform is Ready for `generation`.
fn ready_for(env: &Env, generation: i64) -> bool {
    let s = env.status();
    s["phase"] == "Ready"
        && s["observedGeneration"].as_i64() == Some(generation)
        && !s["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "ApplyFailed"))
}

async fn wait_ready(env: &Env, generation: i64, what: &str) {
    env.wait_for(what, |e| ready_for(e, generation)).await;
}

#[tokio::test]
async fn embedded_platform_upgrades_grows_and_switches_persistence_in_place() {
    let env = Env::start_with(lifecycle_setup()).await;
    env.create_named_platform("demo", spec(json!({}))).await;
    env.settle_until_phase("demo", Phase::Ready).await;
    let names = Names::new("demo");

    // Minor upgrades of the database, the cache and the API image.
    let generation = env
        .patch_spec(
            json!({"database": {"version": "16.7"}, "cache": {"version": "7.4.1"},
                           "apiServer": {"image": {"tag": "0.1.1"}}}),
        )
        .await;
    env.wait_for("the new images rolled out", |e| {
        image(e, "StatefulSet", &names.postgres()).is_some_and(|i| i.ends_with(":16.7"))
            && image(e, "StatefulSet", &names.redis()).is_some_and(|i| i.ends_with(":7.4.1"))
            && image(e, "Deployment", &names.api()).is_some_and(|i| i.ends_with(":0.1.1"))
            && rolled_out(e, "StatefulSet", &names.postgres())
            && rolled_out(e, "StatefulSet", &names.redis())
            && rolled_out(e, "Deployment", &names.api())
    })
    .await;
    wait_ready(&env, generation, "Ready after the upgrades").await;

    // More database storage: the claims grow (a StatefulSet's claim templates are immutable).
    let claim = format!("data-{}-0", names.postgres());
    let generation = env
        .patch_spec(json!({"database": {"storage": {"size": "2Gi"}}}))
        .await;
    env.wait_for("the database claim asks for 2Gi", |e| {
        e.stored("v1", "PersistentVolumeClaim", &claim)
            .is_some_and(|c| c["spec"]["resources"]["requests"]["storage"] == "2Gi")
    })
    .await;
    wait_ready(&env, generation, "Ready after growing the storage").await;
    let sts = env
        .stored("apps/v1", "StatefulSet", &names.postgres())
        .expect("postgres");
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "2Gi",
        "new replicas get the new size"
    );

    // Cache persistence on: Redis gets a claim.
    let generation = env
        .patch_spec(json!({"cache": {"persistence": {"enabled": true, "size": "1Gi"}}}))
        .await;
    env.wait_for("the cache claim", |e| {
        e.list("v1", "PersistentVolumeClaim").iter().any(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(&format!("{}-0", names.redis())))
        }) && rolled_out(e, "StatefulSet", &names.redis())
    })
    .await;
    wait_ready(&env, generation, "Ready with cache persistence").await;

    // And off again.
    let generation = env
        .patch_spec(json!({"cache": {"persistence": {"enabled": false}}}))
        .await;
    env.wait_for("Redis without a claim template", |e| {
        e.stored("apps/v1", "StatefulSet", &names.redis())
            .is_some_and(|s| s["spec"]["volumeClaimTemplates"].is_null())
            && rolled_out(e, "StatefulSet", &names.redis())
    })
    .await;
    wait_ready(&env, generation, "Ready without cache persistence").await;

    // A smaller database is refused with a clear reason, and nothing is shrunk.
    env.patch_spec(json!({"database": {"storage": {"size": "1Gi"}}}))
        .await;
    env.wait_for("a condition explaining the refused shrink", |e| {
        e.status()["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["status"] == "True"
                    && c["type"] == "Degraded"
                    && c["message"].as_str().is_some_and(|m| m.contains("storage"))
            })
        })
    })
    .await;
    assert_eq!(
        env.stored("v1", "PersistentVolumeClaim", &claim)
            .expect("claim")["spec"]["resources"]["requests"]["storage"],
        "2Gi"
    );
    env.stop().await;
}

#[tokio::test]
async fn scaling_autoscaling_and_ingress_follow_the_spec() {
    let env = Env::start_with(lifecycle_setup()).await;
    env.create_named_platform("demo", spec(json!({}))).await;
    env.settle_until_phase("demo", Phase::Ready).await;
    let names = Names::new("demo");

    let generation = env.patch_spec(json!({"apiServer": {"replicas": 3}})).await;
    env.wait_for("3 API pods ready", |e| {
        e.stored("apps/v1", "Deployment", &names.api())
            .is_some_and(|d| d["spec"]["replicas"] == 3)
            && rolled_out(e, "Deployment", &names.api())
    })
    .await;
    wait_ready(&env, generation, "Ready at 3 replicas").await;

    // Autoscaling on: the HPA owns the replicas (the real HPA controller raises them to its
    // minimum); off again: the spec's replicas come back and the HPA is gone.
    let generation = env
        .patch_spec(json!({"apiServer": {"autoscaling": {"enabled": true, "minReplicas": 4, "maxReplicas": 6}}}))
        .await;
    env.wait_for("the HPA scaled the API to its minimum", |e| {
        e.stored("autoscaling/v2", "HorizontalPodAutoscaler", &names.api())
            .is_some_and(|h| h["spec"]["minReplicas"] == 4)
            && e.stored("apps/v1", "Deployment", &names.api())
                .is_some_and(|d| d["spec"]["replicas"] == 4)
            && rolled_out(e, "Deployment", &names.api())
    })
    .await;
    wait_ready(&env, generation, "Ready with autoscaling").await;
    let generation = env
        .patch_spec(json!({"apiServer": {"autoscaling": {"enabled": false}, "replicas": 2}}))
        .await;
    env.wait_for("no HPA and 2 replicas", |e| {
        e.stored("autoscaling/v2", "HorizontalPodAutoscaler", &names.api())
            .is_none()
            && e.stored("apps/v1", "Deployment", &names.api())
                .is_some_and(|d| d["spec"]["replicas"] == 2)
            && rolled_out(e, "Deployment", &names.api())
    })
    .await;
    wait_ready(&env, generation, "Ready without autoscaling").await;

    // Ingress on and off.
    let generation = env
        .patch_spec(json!({"apiServer": {"ingress": {"enabled": true, "host": "api.clinic.example.org",
                                                     "className": "nginx", "tlsSecretName": "api-tls"}},
                           "security": {"trustedProxies": ["10.0.0.0/8"]}}))
        .await;
    env.wait_for("the Ingress", |e| {
        e.stored("networking.k8s.io/v1", "Ingress", &names.api())
            .is_some_and(|i| i["spec"]["rules"][0]["host"] == "api.clinic.example.org")
    })
    .await;
    wait_ready(&env, generation, "Ready with an Ingress").await;
    let generation = env
        .patch_spec(json!({"apiServer": {"ingress": {"enabled": false}}}))
        .await;
    env.wait_for("the Ingress gone", |e| {
        e.stored("networking.k8s.io/v1", "Ingress", &names.api())
            .is_none()
    })
    .await;
    wait_ready(&env, generation, "Ready without an Ingress").await;
    env.stop().await;
}

#[tokio::test]
async fn cloudnativepg_platform_upgrades_and_grows_its_cluster() {
    let _crds = crds_exclusive().await;
    let mut env = Env::start_with(lifecycle_setup()).await;
    install_crd(
        &env.admin,
        env.cluster
            .third_party_crd("postgresql.cnpg.io_clusters.yaml"),
    )
    .await;
    env.mirror_kind("postgresql.cnpg.io/v1", "Cluster").await;
    env.create_named_platform(
        "demo",
        spec(
            json!({"database": {"provider": "CloudNativePG", "instances": 1},
                    "backup": {"enabled": false}}),
        ),
    )
    .await;
    let names = Names::new("demo");
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        env.admin.clone(),
        &env.ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
            "clusters",
        ),
    );
    // No CloudNativePG operator runs here: its status is written as it would write it.
    let ready = || async {
        clusters
            .patch_status(
                &names.cnpg_cluster(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"instances": 1, "readyInstances": 1,
                                                "phase": "Cluster in healthy state"}})),
            )
            .await
            .expect("Cluster status");
    };
    env.wait_for("the Cluster", |e| {
        e.stored("postgresql.cnpg.io/v1", "Cluster", &names.cnpg_cluster())
            .is_some()
    })
    .await;
    ready().await;
    env.settle_until_phase("demo", Phase::Ready).await;

    let generation = env
        .patch_spec(
            json!({"database": {"version": "16.7", "storage": {"size": "2Gi"}},
                           "apiServer": {"image": {"tag": "0.1.1"}}}),
        )
        .await;
    env.wait_for("the Cluster asks for 16.7 and 2Gi; the API rolled", |e| {
        e.stored("postgresql.cnpg.io/v1", "Cluster", &names.cnpg_cluster())
            .is_some_and(|c| {
                c["spec"]["imageName"]
                    .as_str()
                    .is_some_and(|i| i.ends_with(":16.7"))
                    && c["spec"]["storage"]["size"] == "2Gi"
            })
            && image(e, "Deployment", &names.api()).is_some_and(|i| i.ends_with(":0.1.1"))
            && rolled_out(e, "Deployment", &names.api())
    })
    .await;
    ready().await;
    wait_ready(&env, generation, "Ready after the upgrade").await;
    let admin = env.admin.clone();
    env.stop().await;
    support::cluster::uninstall_crd(&admin, "clusters.postgresql.cnpg.io").await;
}

#[tokio::test]
async fn external_database_platform_upgrades_the_api_and_its_embedded_cache() {
    let env = Env::start_with(lifecycle_setup()).await;
    support::cluster::apply_manifest(
        &env.admin,
        "caduceus-tests",
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "clinic-db", "namespace": env.ns},
                "stringData": {"url": "postgres://caduceus:pw@db.internal:5432/caduceus?sslmode=verify-full"}}),
    )
    .await;
    env.create_named_platform(
        "demo",
        spec(json!({"database": {"provider": "External",
                                 "secretRef": {"name": "clinic-db", "key": "url"},
                                 "externalCidrs": ["10.40.0.0/16"]},
                    "backup": {"enabled": false}})),
    )
    .await;
    env.settle_until_phase("demo", Phase::Ready).await;
    let names = Names::new("demo");
    assert!(
        env.stored("apps/v1", "StatefulSet", &names.postgres())
            .is_none(),
        "no embedded database with an External one"
    );
    let generation = env
        .patch_spec(
            json!({"cache": {"version": "7.4.1"}, "apiServer": {"image": {"tag": "0.1.1"}}}),
        )
        .await;
    env.wait_for("the API and the cache rolled", |e| {
        image(e, "Deployment", &names.api()).is_some_and(|i| i.ends_with(":0.1.1"))
            && image(e, "StatefulSet", &names.redis()).is_some_and(|i| i.ends_with(":7.4.1"))
            && rolled_out(e, "Deployment", &names.api())
            && rolled_out(e, "StatefulSet", &names.redis())
    })
    .await;
    wait_ready(&env, generation, "Ready after the upgrade").await;
    env.stop().await;
}

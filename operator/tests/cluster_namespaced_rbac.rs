//! The chart's `rbac.scope: Namespaced` against the real control plane (`scripts/cluster.sh`):
//! the controller runs as a ServiceAccount whose only grants are what the chart renders for one
//! watched namespace (a Role and RoleBinding there, nothing cluster-wide), and reconciles
//! platforms there through their whole life without one request refused (`Env::stop` fails on
//! any 403): creation to Ready (every child kind applied and watched, API discovery of the
//! optional CRDs, Events, status, finalizer), a restored child, backups on, and deletion with
//! `deletionPolicy` Delete (PVCs listed and deleted) and Retain (Secrets and PVCs detached).

mod support;

use caduceus_operator::{crd::Phase, names::Names};
use k8s_openapi::api::{
    core::v1::{PersistentVolumeClaim, Secret},
    networking::v1::NetworkPolicy,
};
use kube::api::{Api, DeleteParams};
use serde_json::{json, Value};
use support::cluster::{Env, Setup};

/// One API replica, embedded Postgres and Redis, backups to S3 (the credentials Secret need not
/// exist for the operator), autoscaling and an Ingress: most child kinds at once.
fn spec(deletion_policy: &str) -> Value {
    json!({
        "apiServer": {
            "replicas": 1,
            "autoscaling": {"enabled": true, "minReplicas": 1, "maxReplicas": 3},
            "ingress": {"enabled": true, "host": "api.clinic.example"}
        },
        "security": {"trustedProxies": ["10.42.0.0/16"]},
        "deletionPolicy": deletion_policy,
        "backup": {
            "schedule": "15 * * * *",
            "rpoMinutes": 60,
            "destination": {"s3": {
                "endpoint": "https://minio.storage:9000",
                "bucket": "phi-backups",
                "prefix": "clinic/demo",
                "credentialsSecretRef": "s3-creds",
                "forcePathStyle": true
            }}
        }
    })
}

async fn delete_platform_and_wait(env: &Env, name: &str) {
    env.platforms()
        .delete(name, &DeleteParams::default())
        .await
        .expect("platform deleted");
    env.wait_for("the platform to be gone (finalizer done)", |e| {
        e.stored("caduceus.io/v1alpha1", "HealthcarePlatform", name)
            .is_none()
    })
    .await;
}

#[tokio::test]
async fn namespaced_rbac_reconciles_a_platform_to_ready_and_deletes_it_without_a_refusal() {
    let env = Env::start_with(Setup::default().namespaced_rbac()).await;
    env.create_named_platform("demo", spec("Delete")).await;
    let names = Names::new("demo");
    env.settle_until_phase("demo", Phase::Ready).await;
    for (av, kind, name) in [
        ("apps/v1", "Deployment", names.api()),
        ("apps/v1", "StatefulSet", names.postgres()),
        ("apps/v1", "StatefulSet", names.redis()),
        ("batch/v1", "CronJob", names.backup_cron_job()),
        ("v1", "Secret", names.backup_key()),
        ("v1", "Secret", names.api_secrets()),
    ] {
        assert!(
            env.stored(av, kind, &name).is_some(),
            "{kind} {name} missing"
        );
    }
    for kind in ["HorizontalPodAutoscaler", "Ingress"] {
        let av = match kind {
            "Ingress" => "networking.k8s.io/v1",
            _ => "autoscaling/v2",
        };
        assert_eq!(env.list(av, kind).len(), 1, "one {kind}");
    }
    let calls = env.calls();
    assert!(calls.verb("discovery") > 0, "optional CRDs looked up");
    assert!(calls.verb("watch") > 0, "children watched");

    // A child deleted by hand is restored (watch, get, apply in the namespace).
    let policies: Api<NetworkPolicy> = env.api();
    policies
        .delete(&names.netpol_default_deny(), &DeleteParams::default())
        .await
        .expect("NetworkPolicy deleted");
    env.wait_for("the default-deny NetworkPolicy restored", |e| {
        e.stored(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            &names.netpol_default_deny(),
        )
        .is_some()
    })
    .await;

    // Backups off: the CronJob is swept.
    env.patch_spec(json!({"backup": {"enabled": false}})).await;
    env.wait_for("the backup CronJob deleted", |e| {
        e.stored("batch/v1", "CronJob", &names.backup_cron_job())
            .is_none()
    })
    .await;

    // deletionPolicy Delete: the finalizer lists and deletes the PVCs.
    assert!(!env.list("v1", "PersistentVolumeClaim").is_empty());
    delete_platform_and_wait(&env, "demo").await;
    env.wait_for("PVCs deleted", |e| {
        e.list("v1", "PersistentVolumeClaim").is_empty()
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn namespaced_rbac_retain_detaches_secrets_and_pvcs() {
    let env = Env::start_with(Setup::default().namespaced_rbac()).await;
    env.create_named_platform("demo", spec("Retain")).await;
    env.settle_until_phase("demo", Phase::Ready).await;
    let names = Names::new("demo");
    let pvcs: Vec<String> = env
        .list("v1", "PersistentVolumeClaim")
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert!(!pvcs.is_empty());
    delete_platform_and_wait(&env, "demo").await;
    let left: Api<PersistentVolumeClaim> = env.api();
    for pvc in &pvcs {
        let pvc = left
            .get_opt(pvc)
            .await
            .expect("read PVC")
            .unwrap_or_else(|| panic!("Retain deleted PVC {pvc}"));
        assert!(pvc.metadata.owner_references.unwrap_or_default().is_empty());
    }
    let secrets: Api<Secret> = env.api();
    let s = secrets
        .get_opt(&names.api_secrets())
        .await
        .expect("read Secret")
        .expect("Retain keeps the API's key Secret");
    assert!(s.metadata.owner_references.unwrap_or_default().is_empty());
    env.stop().await;
}

//! Two operator replicas against the in-process stand-in API server (`kube-standin`, which
//! serves `coordination.k8s.io/v1` Leases with server-side apply): only the Lease holder
//! reconciles; when it shuts down, the standby takes over.

use std::time::{Duration, Instant};

use caduceus_operator::leader::{run_with_leader_election, LeaderElection, LeaderOutcome};
use caduceus_operator::{ControllerConfig, Metrics};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Client;
use kube_standin::StandIn;
use serde_json::json;
use tokio::sync::oneshot;

const NS: &str = "clinic";

fn reconciles(m: &Metrics) -> u64 {
    m.reconciles.with_label_values(&["success"]).get()
        + m.reconciles.with_label_values(&["error"]).get()
}

async fn setup(client: &Client) {
    let path = format!(
        "{}/../crds/caduceus.io_healthcareplatforms.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let crd: CustomResourceDefinition =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    for ns in [NS, "caduceus-system"] {
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("caduceus.io", "v1alpha1", "HealthcarePlatform"),
        "healthcareplatforms",
    );
    let platform: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "caduceus.io/v1alpha1",
        "kind": "HealthcarePlatform",
        "metadata": {"name": "demo", "namespace": NS},
        "spec": {"apiServer": {"replicas": 1}},
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(client.clone(), NS, &ar)
        .create(&PostParams::default(), &platform)
        .await
        .unwrap();
}

struct Replica {
    metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<LeaderOutcome>,
}

fn replica(client: Client, identity: &str) -> Replica {
    let config = ControllerConfig {
        progress_interval: Duration::from_millis(200),
        requeue_interval: Duration::from_millis(300),
        namespace: Some(NS.into()),
        ..ControllerConfig::default()
    };
    let metrics = config.metrics.clone();
    let election = LeaderElection {
        lease_name: "caduceus-operator-leader".into(),
        namespace: "caduceus-system".into(),
        identity: identity.into(),
        duration_seconds: 5,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run_with_leader_election(client, election, config, async move {
            let _ = stopped.await;
        })
        .await
        .expect("leader election runs")
    });
    Replica {
        metrics,
        stop: Some(stop),
        task,
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let standin = StandIn::start().await.expect("stand-in starts");
    let client = standin.client().expect("client");
    setup(&client).await;

    let mut a = replica(client.clone(), "replica-a");
    wait_until("replica a to reconcile", || reconciles(&a.metrics) > 0).await;
    let b = replica(client.clone(), "replica-b");
    // B waits on the Lease while A keeps reconciling.
    let before = reconciles(&a.metrics);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        reconciles(&a.metrics) > before,
        "the leader keeps reconciling"
    );
    assert_eq!(reconciles(&b.metrics), 0, "the standby never reconciles");

    // A shuts down gracefully and releases the Lease; B takes over.
    let _ = a.stop.take().unwrap().send(());
    let outcome = tokio::time::timeout(Duration::from_secs(30), a.task)
        .await
        .expect("replica a stops")
        .unwrap();
    assert_eq!(outcome, LeaderOutcome::Stopped);
    let a_total = reconciles(&a.metrics);
    wait_until("replica b to take over", || reconciles(&b.metrics) > 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reconciles(&a.metrics), a_total, "a stopped reconciling");

    let mut b = b;
    let _ = b.stop.take().unwrap().send(());
    let outcome = tokio::time::timeout(Duration::from_secs(30), b.task)
        .await
        .expect("replica b stops")
        .unwrap();
    assert_eq!(outcome, LeaderOutcome::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_never_leads_stops_cleanly() {
    let standin = StandIn::start().await.expect("stand-in starts");
    let client = standin.client().expect("client");
    setup(&client).await;
    let mut a = replica(client.clone(), "replica-a");
    wait_until("replica a to reconcile", || reconciles(&a.metrics) > 0).await;
    let mut b = replica(client.clone(), "replica-b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = b.stop.take().unwrap().send(());
    let outcome = tokio::time::timeout(Duration::from_secs(30), b.task)
        .await
        .expect("standby stops")
        .unwrap();
    assert_eq!(outcome, LeaderOutcome::NeverLed);
    assert_eq!(reconciles(&b.metrics), 0);
    let _ = a.stop.take().unwrap().send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), a.task).await;
}

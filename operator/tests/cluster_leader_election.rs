//! Two operator replicas against the real control plane (`scripts/cluster.sh`), each with the
//! chart ServiceAccount's token, so the chart's Lease RBAC (create; get/patch of the one Lease
//! name) is what authorizes them: only the Lease holder reconciles; when it shuts down, the
//! standby takes over.

mod support;

use std::time::{Duration, Instant};

use caduceus_operator::leader::{run_with_leader_election, LeaderElection, LeaderOutcome};
use caduceus_operator::{ControllerConfig, Metrics};
use kube::Client;
use serde_json::json;
use support::cluster::{Env, Setup, OPERATOR_NS};
use tokio::sync::oneshot;

/// The chart's Lease (values.yaml `leaderElection.leaseName`): both tests use it, one at a time.
const LEASE: &str = "caduceus-operator-leader";
static LEASE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn reconciles(m: &Metrics) -> u64 {
    m.reconciles.with_label_values(&["success"]).get()
        + m.reconciles.with_label_values(&["error"]).get()
}

/// A namespace with one platform; no controller (the replicas are the controllers).
async fn setup() -> Env {
    let env = Env::without_controller(Setup::default()).await;
    env.try_create_platform("demo", json!({"apiServer": {"replicas": 1, "env": []}}))
        .await
        .expect("platform");
    env
}

struct Replica {
    metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<LeaderOutcome>,
}

fn replica(client: Client, namespace: &str, identity: &str) -> Replica {
    let config = ControllerConfig {
        progress_interval: Duration::from_millis(200),
        requeue_interval: Duration::from_millis(300),
        namespace: Some(namespace.into()),
        ..ControllerConfig::default()
    };
    let metrics = config.metrics.clone();
    let election = LeaderElection {
        lease_name: LEASE.into(),
        namespace: OPERATOR_NS.into(),
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
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let _lease = LEASE_LOCK.lock().await;
    let env = setup().await;
    let client = env.client.clone();

    let mut a = replica(client.clone(), &env.ns, "replica-a");
    wait_until("replica a to reconcile", || reconciles(&a.metrics) > 0).await;
    let b = replica(client.clone(), &env.ns, "replica-b");
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
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_never_leads_stops_cleanly() {
    let _lease = LEASE_LOCK.lock().await;
    let env = setup().await;
    let client = env.client.clone();
    let mut a = replica(client.clone(), &env.ns, "replica-a");
    wait_until("replica a to reconcile", || reconciles(&a.metrics) > 0).await;
    let mut b = replica(client.clone(), &env.ns, "replica-b");
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
    env.stop().await;
}

//! Leader election through a `coordination.k8s.io/v1` Lease (via `kube-lease-manager`), so two
//! operator replicas never reconcile at the same time.
//!
//! [`run_with_leader_election`] waits for the Lease, runs [`run_controller`] while it holds it,
//! and stops the controller (draining in-flight reconciles) as soon as the Lease is lost or
//! `shutdown` resolves. Dropping the Lease watch releases the Lease, so a standby takes over at
//! once on a graceful shutdown and after at most the Lease duration on a crash.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

use crate::controller::{run_controller, ControllerConfig, ControllerError};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    pub namespace: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    /// Seconds a Lease stays valid without renewal (at least 5).
    pub duration_seconds: u64,
}

/// How a leader-elected run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderOutcome {
    /// `shutdown` resolved before this replica became leader.
    NeverLed,
    /// Led, then stopped because `shutdown` resolved; the Lease was released.
    Stopped,
    /// Led, then lost the Lease; the controller was stopped. The caller should exit (and be
    /// restarted as a standby).
    LostLeadership,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election failed: {0}")]
    Lease(String),
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// Runs the controller only while this replica holds the Lease.
pub async fn run_with_leader_election(
    client: Client,
    election: LeaderElection,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<LeaderOutcome, LeaderError> {
    let duration = election.duration_seconds.max(5);
    let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(2))
        .build()
        .await
        .map_err(|e| LeaderError::Lease(e.to_string()))?;
    let (mut leader, lease_task) = manager.watch().await;

    // One stop signal, observable by several waiters.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    info!(lease = %election.lease_name, identity = %election.identity, "waiting for leadership");
    let mut stop = stop_rx.clone();
    let became_leader = tokio::select! {
        r = leader.wait_for(|is_leader| *is_leader) => r.is_ok(),
        _ = stop.wait_for(|s| *s) => false,
    };
    if !became_leader {
        drop(leader);
        let _ = lease_task.await;
        return Ok(LeaderOutcome::NeverLed);
    }
    info!(identity = %election.identity, "leadership acquired, starting the controller");

    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    let mut leader_watch = leader.clone();
    let mut stop_watch = stop_rx;
    let controller_shutdown = async move {
        tokio::select! {
            r = leader_watch.wait_for(|is_leader| !*is_leader) => {
                // A closed channel means the lease task ended: treat as lost, never keep leading.
                let _ = r;
                lost_flag.store(true, Ordering::SeqCst);
                warn!("leadership lost, stopping the controller");
            }
            _ = stop_watch.wait_for(|s| *s) => {}
        }
    };
    let result = run_controller(client, config, controller_shutdown).await;

    // Dropping the last receiver makes the lease task release the Lease and end.
    drop(leader);
    match lease_task.await {
        Ok(Ok(_)) => info!("lease released"),
        Ok(Err(e)) => warn!(error = %e, "releasing the lease failed"),
        Err(e) => warn!(error = %e, "lease task failed"),
    }
    result?;
    Ok(if lost.load(Ordering::SeqCst) {
        LeaderOutcome::LostLeadership
    } else {
        LeaderOutcome::Stopped
    })
}

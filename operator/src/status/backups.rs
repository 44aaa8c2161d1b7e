//! `status.backup`, `status.restore` and the `BackupHealthy` condition.

use super::*;

/// New `status.backup`: from the backup Jobs and their pods' termination messages, or from
/// CloudNativePG's Cluster status when delegated; merged with `previous` (times never move
/// backwards) and with the on-demand Job handled in this reconcile.
pub fn backup_status(
    p: &ValidatedPlatform,
    previous: Option<&BackupStatus>,
    obs: &Observed,
    now: Timestamp,
) -> Option<BackupStatus> {
    let mut status = if backup_cnpg::delegated(p) {
        backup_cnpg::status_from_cluster(previous, obs.cnpg_cluster.as_ref(), p, now)
    } else {
        let schedule = (backup::agent_backups(p) && !p.spec.stopped)
            .then_some(p.spec.backup.schedule.as_str());
        backup_status::compute(
            previous,
            &backup_status::Observation {
                jobs: &obs.backup_jobs,
                pods: &obs.backup_pods,
                schedule,
                now,
            },
        )
    };
    if let Some(job) = &obs.on_demand_job {
        status
            .get_or_insert_with(BackupStatus::default)
            .last_on_demand_job = Some(job.clone());
    }
    status
}

/// New `status.restore`: once recorded it never changes (the restore never runs again, even
/// after its Job was deleted); otherwise recorded when the restore Job is seen succeeded.
pub fn restore_status(
    p: &ValidatedPlatform,
    previous: Option<&RestoreStatus>,
    progress: &Progress,
    now: &Time,
) -> Option<RestoreStatus> {
    if let Some(done) = previous {
        return Some(done.clone());
    }
    let Progress::Succeeded {
        completion_time,
        result,
    } = progress
    else {
        return None;
    };
    let from = p.from_backup()?;
    Some(RestoreStatus {
        backup_name: from.name.clone(),
        restored_backup: result.restored_backup.clone(),
        skipped: result.skipped,
        completion_time: completion_time.clone().unwrap_or_else(|| now.clone()),
        job: p.names.restore_job(),
    })
}

/// How a pending restore shows in the conditions.
pub(super) struct RestoreView {
    pub(super) failed: bool,
    /// `Ready` / `Progressing` / `Degraded` reason.
    pub(super) reason: &'static str,
    /// What happens, for `Ready`, `Progressing` and `Degraded`.
    pub(super) message: String,
    /// `ApiServerReady` message (the API is held at 0 replicas).
    pub(super) api_message: String,
}

/// The conditions' view of a pending restore; `None` when no restore is pending or the
/// platform is stopped (then nothing runs).
pub(super) fn restore_view(p: &ValidatedPlatform, progress: &Progress) -> Option<RestoreView> {
    if !p.restore_pending || p.spec.stopped {
        return None;
    }
    let backup = p.from_backup().map(|f| f.name.as_str()).unwrap_or("latest");
    let job = p.names.restore_job();
    let held = "the API is held at 0 replicas until the restore succeeded";
    let (failed, message) = match progress {
        Progress::NotRequested | Progress::WaitingForDatabase => (
            false,
            format!("restoring backup {backup}: waiting for the database before starting Job {job}"),
        ),
        Progress::Running {
            waiting: Some(reason),
            ..
        } => (
            false,
            format!(
                "restoring backup {backup}: the pod of Job {job} cannot start ({reason}); check the fromBackup Secrets and `kubectl describe pod -l job-name={job}`"
            ),
        ),
        Progress::Running {
            waiting: None,
            failed_pods,
        } => (
            false,
            if *failed_pods > 0 {
                format!(
                    "restoring backup {backup} (Job {job}; {failed_pods} failed attempt(s) so far, see `kubectl logs job/{job}`)"
                )
            } else {
                format!("restoring backup {backup} (Job {job})")
            },
        ),
        Progress::Succeeded { .. } => (
            false,
            format!("backup {backup} restored (Job {job}); starting the API"),
        ),
        Progress::Failed { reason } => (
            true,
            format!(
                "the restore Job {job} of backup {backup} failed ({reason}); {held}. Read `kubectl logs job/{job}`, fix the cause, then delete the Job to retry"
            ),
        ),
    };
    Some(RestoreView {
        failed,
        reason: if failed {
            REASON_RESTORE_FAILED
        } else {
            REASON_RESTORING
        },
        api_message: format!("{held} ({message})"),
        message,
    })
}

/// `BackupHealthy` for the computed `status.backup`.
pub(super) fn backup_condition(
    p: &ValidatedPlatform,
    status: Option<&BackupStatus>,
    now: Timestamp,
) -> Cond {
    let b = &p.spec.backup;
    if let Some(problem) = backup_cnpg::delegation_problem(p) {
        return cond(
            BACKUP_HEALTHY,
            false,
            REASON_DESTINATION_UNSUPPORTED,
            problem,
        );
    }
    let (ok, reason, message) = backup_status::healthy(b.enabled, status, b.rpo_minutes, now);
    Cond {
        type_: BACKUP_HEALTHY,
        status: ok,
        reason: reason.to_string(),
        message,
    }
}

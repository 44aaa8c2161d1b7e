//! Availability and recovery rules: `api-availability` (replicas and PodDisruptionBudget) and
//! `backup-rpo` (the last successful backup within the RPO).

use super::{fail, not_evaluated, pass, Check, Inputs, MIN_API_REPLICAS, OFFLINE};

pub(super) fn api_availability(i: &Inputs<'_>) -> Check {
    let p = i.platform;
    if p.spec.stopped {
        return pass("the platform is stopped on purpose (spec.stopped)");
    }
    let min = p.api_min_replicas();
    if min < MIN_API_REPLICAS {
        return fail(format!(
            "the API runs {min} replica(s) at minimum (at least {MIN_API_REPLICAS} needed)"
        ));
    }
    if i.children.api_pdb.is_none() {
        return fail("the API has no PodDisruptionBudget");
    }
    pass(format!(
        "at least {min} API replicas with a PodDisruptionBudget"
    ))
}

pub(super) fn backup_rpo(i: &Inputs<'_>) -> Check {
    let b = &i.platform.spec.backup;
    if !b.enabled {
        return fail("backups are disabled (backup.enabled is false)");
    }
    if let Some(problem) = crate::desired::backup_cnpg::delegation_problem(i.platform) {
        return fail(format!("backups cannot run: {problem}"));
    }
    let Some(live) = i.live else {
        return not_evaluated(format!("backup age {OFFLINE}"));
    };
    let status = live.backup.as_ref();
    let Some(last) = status.and_then(|s| s.last_successful_time.as_ref()) else {
        if let Some(failed) = status.and_then(|s| s.last_failure_time.as_ref()) {
            return fail(format!(
                "no backup has succeeded yet; the last one failed at {}",
                failed.0
            ));
        }
        return not_evaluated(
            "no backup has completed yet (status.backup has no lastSuccessfulTime); \
             evaluated from the first backup on",
        );
    };
    if !crate::desired::backup_status::rpo_satisfied(live.backup.as_ref(), b.rpo_minutes, i.now) {
        fail(format!(
            "the last successful backup ({}) is older than the RPO of {} min",
            last.0, b.rpo_minutes
        ))
    } else {
        pass(format!(
            "last successful encrypted backup at {} (RPO {} min)",
            last.0, b.rpo_minutes
        ))
    }
}

//! Status stage: computes the platform status from what the cluster reports (pure), and patches
//! it through the status subresource only when it changed.
//!
//! Ready means pods are ready (Deployment/StatefulSet/CloudNativePG status), not that objects
//! were submitted. `lastTransitionTime` of a condition changes only when its status changes.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::apply::{describe, ApplyError, Observed};
use crate::compliance::self_report::SelfReport;
use crate::crd::{
    ApiServerStatus, BackupStatus, CacheProvider, DatabaseProvider, EndpointStatus,
    HealthcarePlatform, HealthcarePlatformStatus, Phase, RestoreStatus,
};
use crate::desired::backup_status::{self, BACKUP_HEALTHY};
use crate::desired::restore::Progress;
use crate::desired::{backup, backup_cnpg, ingress};
use crate::names::{Names, API_HTTP_PORT, FIELD_MANAGER};
use crate::validate::{ValidatedPlatform, ValidationError};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const DATABASE_READY: &str = "DatabaseReady";
pub const CACHE_READY: &str = "CacheReady";
pub const API_SERVER_READY: &str = "ApiServerReady";
pub const NETWORK_POLICY_READY: &str = "NetworkPolicyReady";
pub const RECONCILIATION_PAUSED: &str = "ReconciliationPaused";
pub const STOPPED: &str = "Stopped";

/// Reason used when the CloudNativePG CRD is not served.
pub const REASON_CNPG_NOT_INSTALLED: &str = "CloudNativePGNotInstalled";
/// `Progressing` / `Ready` reason while `database.bootstrap.fromBackup` is being restored.
pub const REASON_RESTORING: &str = "Restoring";
/// `Ready` / `Degraded` / `Progressing` reason when the restore Job failed.
pub const REASON_RESTORE_FAILED: &str = "RestoreFailed";
/// `ApiServerReady` reason while the API is held at 0 replicas for the restore.
pub const REASON_WAITING_FOR_RESTORE: &str = "WaitingForRestore";
/// `CacheReady` reasons of an External cache, from the API's self-report.
pub const REASON_EXTERNAL_REACHABLE: &str = "ExternalReachable";
pub const REASON_EXTERNAL_UNREACHABLE: &str = "ExternalUnreachable";
pub const REASON_EXTERNAL_NOT_VERIFIED: &str = "ExternalNotVerified";

/// What the reconcile achieved.
pub enum Outcome<'a> {
    /// The spec failed validation; nothing was applied.
    Invalid(&'a ValidationError),
    /// Generated Secrets of an existing platform are gone; nothing was applied.
    SecretsMissing(&'a [String]),
    /// Applying failed part-way.
    ApplyFailed(&'a ApplyError),
    /// Children applied (or, when paused, observed).
    Observed(&'a ValidatedPlatform, &'a Observed),
}

/// A condition as computed by this reconcile.
struct Cond {
    type_: &'static str,
    /// `None`: `Unknown`.
    status: Option<bool>,
    reason: String,
    message: String,
}

fn cond(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Cond {
    Cond {
        type_,
        status: Some(status),
        reason: reason.to_string(),
        message: message.into(),
    }
}

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
struct RestoreView {
    failed: bool,
    /// `Ready` / `Progressing` / `Degraded` reason.
    reason: &'static str,
    /// What happens, for `Ready`, `Progressing` and `Degraded`.
    message: String,
    /// `ApiServerReady` message (the API is held at 0 replicas).
    api_message: String,
}

/// The conditions' view of a pending restore; `None` when no restore is pending or the
/// platform is stopped (then nothing runs).
fn restore_view(p: &ValidatedPlatform, progress: &Progress) -> Option<RestoreView> {
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

/// `CacheReady` of an External cache, from the API's latest self-report: the API pings Redis,
/// but its readiness does not depend on Redis (the rate limiter falls back to per-pod limits),
/// so a ready API says nothing about the cache.
fn external_cache_readiness(report: Option<&Result<SelfReport, String>>) -> Readiness {
    let not_verified = |why: String| Readiness {
        ready: false,
        progressing: false,
        reason: REASON_EXTERNAL_NOT_VERIFIED.into(),
        message: format!("external Redis not verified: {why}"),
    };
    let report = match report {
        None => return not_verified("no API self-report was read yet".into()),
        Some(Err(e)) => return not_verified(format!("no API self-report yet ({e})")),
        Some(Ok(r)) => r,
    };
    match &report.cache {
        None => not_verified(format!(
            "the API (version {}) does not report the cache in its self-report",
            report.version
        )),
        Some(c) if c.configured && c.reachable => Readiness {
            ready: true,
            progressing: false,
            reason: REASON_EXTERNAL_REACHABLE.into(),
            message: "external Redis: the API's latest self-report says it answers".into(),
        },
        Some(c) => Readiness {
            ready: false,
            progressing: false,
            reason: REASON_EXTERNAL_UNREACHABLE.into(),
            message: if c.configured {
                "external Redis: the API's latest self-report says it does not answer (rate limits fall back to per-pod limits); check the URL Secret and the network path".into()
            } else {
                "external Redis: the API reports no Redis configured (rate limits are per pod); check cache.secretRef".into()
            },
        },
    }
}

/// `BackupHealthy` for the computed `status.backup`.
fn backup_condition(p: &ValidatedPlatform, status: Option<&BackupStatus>, now: Timestamp) -> Cond {
    let b = &p.spec.backup;
    if let Some(problem) = backup_cnpg::delegation_problem(p) {
        return cond(BACKUP_HEALTHY, false, "DestinationUnsupported", problem);
    }
    let (ok, reason, message) = backup_status::healthy(b.enabled, status, b.rpo_minutes, now);
    Cond {
        type_: BACKUP_HEALTHY,
        status: ok,
        reason: reason.to_string(),
        message,
    }
}

/// Merges computed conditions into the previous ones, keeping `lastTransitionTime` when the
/// status did not change. Conditions not computed this time are kept as they were.
fn merge_conditions(
    previous: &[Condition],
    computed: Vec<Cond>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous.to_vec();
    for c in computed {
        let status = match c.status {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        }
        .to_string();
        let transition = previous
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == status)
            .map(|p| p.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        let new = Condition {
            type_: c.type_.to_string(),
            status,
            reason: c.reason,
            message: c.message,
            observed_generation: generation,
            last_transition_time: transition,
        };
        match out.iter_mut().find(|p| p.type_ == new.type_) {
            Some(slot) => *slot = new,
            None => out.push(new),
        }
    }
    out
}

struct Readiness {
    ready: bool,
    progressing: bool,
    reason: String,
    message: String,
}

fn stateful_set_readiness(what: &str, sts: Option<&StatefulSet>, stopped: bool) -> Readiness {
    let Some(sts) = sts else {
        return Readiness {
            ready: false,
            progressing: true,
            reason: "NotCreated".into(),
            message: format!("{what} has not been created yet"),
        };
    };
    let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = sts.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
    if stopped {
        return Readiness {
            ready: false,
            progressing: status.replicas > 0,
            reason: "Stopped".into(),
            message: format!("{what} is scaled to zero (platform stopped); data is kept"),
        };
    }
    if observed && ready >= desired && updated >= desired {
        Readiness {
            ready: true,
            progressing: false,
            reason: "PodsReady".into(),
            message: format!("{what}: {ready}/{desired} pods ready"),
        }
    } else {
        Readiness {
            ready: false,
            progressing: true,
            reason: "PodsNotReady".into(),
            message: format!("{what}: {ready}/{desired} pods ready"),
        }
    }
}

fn deployment_readiness(d: Option<&Deployment>, stopped: bool) -> (Readiness, i32, i32) {
    let Some(d) = d else {
        return (
            Readiness {
                ready: false,
                progressing: true,
                reason: "NotCreated".into(),
                message: "the API Deployment has not been created yet".into(),
            },
            0,
            0,
        );
    };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let deadline = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if stopped {
        return (
            Readiness {
                ready: false,
                progressing: total > 0,
                reason: "Stopped".into(),
                message: "the API is scaled to zero (platform stopped)".into(),
            },
            ready,
            desired,
        );
    }
    let r = if deadline {
        Readiness {
            ready: false,
            progressing: false,
            reason: "ProgressDeadlineExceeded".into(),
            message: format!(
                "the API rollout is stuck ({ready}/{desired} pods ready); check the pods' events and logs"
            ),
        }
    } else if observed && desired > 0 && ready >= desired && updated >= desired && total <= desired
    {
        Readiness {
            ready: true,
            progressing: false,
            reason: "PodsReady".into(),
            message: format!("{ready}/{desired} API pods ready"),
        }
    } else {
        Readiness {
            ready: false,
            progressing: true,
            reason: "RollingOut".into(),
            message: format!("{ready}/{desired} API pods ready, {updated} updated"),
        }
    };
    (r, ready, desired)
}

/// Running API version: the image tag, once every desired pod runs the current template.
fn running_version(
    d: Option<&Deployment>,
    api_ready: bool,
    previous: Option<&str>,
) -> Option<String> {
    if !api_ready {
        return previous.map(str::to_string);
    }
    let image = d?
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "api")?
        .image
        .clone()?;
    image.rsplit_once(':').map(|(_, tag)| tag.to_string())
}

/// Computes the new status. Pure; `now` is the transition time for changed conditions.
pub fn compute(
    hp: &HealthcarePlatform,
    outcome: Outcome<'_>,
    now: Time,
) -> HealthcarePlatformStatus {
    let previous = hp.status.clone().unwrap_or_default();
    let generation = hp.metadata.generation;
    let mut status = HealthcarePlatformStatus {
        observed_generation: generation,
        compliance: previous.compliance.clone(),
        backup: previous.backup.clone(),
        endpoint: previous.endpoint.clone(),
        api_server: previous.api_server.clone(),
        database: previous.database.clone(),
        restore: previous.restore.clone(),
        ..Default::default()
    };
    let paused = cond(
        RECONCILIATION_PAUSED,
        hp.spec.paused,
        if hp.spec.paused {
            "Paused"
        } else {
            "Reconciling"
        },
        if hp.spec.paused {
            "spec.paused is true: spec changes are not applied; status is still updated"
        } else {
            "spec changes are applied"
        },
    );
    let stopped = cond(
        STOPPED,
        hp.spec.stopped,
        if hp.spec.stopped {
            "Stopped"
        } else {
            "Running"
        },
        if hp.spec.stopped {
            "spec.stopped is true: workloads are scaled to zero; data is kept"
        } else {
            "workloads run"
        },
    );

    let (phase, message, conditions) = match outcome {
        Outcome::Invalid(err) => {
            let msg = format!("invalid spec: {err}");
            (
                Phase::Failed,
                msg.clone(),
                vec![
                    cond(READY, false, "InvalidSpec", msg.clone()),
                    cond(DEGRADED, true, "InvalidSpec", msg.clone()),
                    cond(
                        PROGRESSING,
                        false,
                        "InvalidSpec",
                        "nothing is applied until the spec is fixed",
                    ),
                    paused,
                    stopped,
                ],
            )
        }
        Outcome::SecretsMissing(names) => {
            let msg = format!(
                "generated Secret(s) {} of this existing platform are missing; restore them from backup \
                 (new keys would make encrypted data and the database unreachable), or annotate the \
                 platform with caduceus.io/allow-new-secrets=true to generate new ones",
                names.join(", ")
            );
            (
                Phase::Degraded,
                msg.clone(),
                vec![
                    cond(READY, false, "SecretsMissing", msg.clone()),
                    cond(DEGRADED, true, "SecretsMissing", msg),
                    paused,
                    stopped,
                ],
            )
        }
        Outcome::ApplyFailed(err) => {
            let msg = err.to_string();
            (
                Phase::Degraded,
                msg.clone(),
                vec![
                    cond(READY, false, err.reason(), msg.clone()),
                    cond(DEGRADED, true, err.reason(), msg),
                    paused,
                    stopped,
                ],
            )
        }
        Outcome::Observed(p, obs) => {
            if obs.database.is_some() {
                status.database = obs.database.clone();
            }
            status.restore = restore_status(p, previous.restore.as_ref(), &obs.restore, &now);
            let (phase, message, mut conditions) =
                observed_conditions(p, obs, &previous, &mut status, paused, stopped);
            status.backup = backup_status(p, previous.backup.as_ref(), obs, now.0);
            conditions.push(backup_condition(p, status.backup.as_ref(), now.0));
            (phase, message, conditions)
        }
    };
    status.phase = phase;
    status.message = Some(message);
    status.conditions = merge_conditions(&previous.conditions, conditions, generation, &now);
    status
}

fn observed_conditions(
    p: &ValidatedPlatform,
    obs: &Observed,
    previous: &HealthcarePlatformStatus,
    status: &mut HealthcarePlatformStatus,
    paused: Cond,
    stopped_cond: Cond,
) -> (Phase, String, Vec<Cond>) {
    let stopped = p.spec.stopped;
    let names: &Names = &p.names;
    status.endpoint = Some(EndpointStatus {
        internal: format!(
            "http://{}:{API_HTTP_PORT}",
            names.service_host(&names.api(), &p.namespace)
        ),
        external: ingress::external_url(p),
    });

    let (mut api, ready_pods, desired_pods) =
        deployment_readiness(obs.deployment.as_ref(), stopped);
    let restore = restore_view(p, &obs.restore);
    if let Some(r) = &restore {
        api = Readiness {
            ready: false,
            progressing: !r.failed,
            reason: REASON_WAITING_FOR_RESTORE.into(),
            message: r.api_message.clone(),
        };
    }
    let previous_version = previous
        .api_server
        .as_ref()
        .and_then(|a| a.version.as_deref());
    status.api_server = Some(ApiServerStatus {
        version: running_version(obs.deployment.as_ref(), api.ready, previous_version),
        ready_replicas: ready_pods,
        desired_replicas: desired_pods,
        ready: format!("{ready_pods}/{desired_pods}"),
    });

    let mut degraded: Vec<(String, String)> = Vec::new();
    let db = match p.spec.database.provider {
        DatabaseProvider::Embedded => {
            stateful_set_readiness("the embedded database", obs.postgres.as_ref(), stopped)
        }
        DatabaseProvider::CloudNativePG if !obs.cnpg_installed => {
            let msg = "database.provider is CloudNativePG but the CRD clusters.postgresql.cnpg.io is not served; \
                       install the CloudNativePG operator (https://cloudnative-pg.io) or choose another provider"
                .to_string();
            degraded.push((REASON_CNPG_NOT_INSTALLED.into(), msg.clone()));
            Readiness {
                ready: false,
                progressing: false,
                reason: REASON_CNPG_NOT_INSTALLED.into(),
                message: msg,
            }
        }
        DatabaseProvider::CloudNativePG => cnpg_readiness(obs, p, stopped),
        DatabaseProvider::External => Readiness {
            ready: api.ready,
            progressing: false,
            reason: if api.ready {
                "ExternalReachable"
            } else {
                "ExternalNotVerified"
            }
            .into(),
            message: if api.ready {
                "external database; the API's readiness check reaches it".into()
            } else {
                "external database; not verified until an API pod is ready".into()
            },
        },
    };
    let cache = match p.spec.cache.provider {
        CacheProvider::Embedded => {
            stateful_set_readiness("the embedded cache", obs.redis.as_ref(), stopped)
        }
        CacheProvider::External => {
            let r = external_cache_readiness(obs.self_report.as_ref());
            if r.reason == REASON_EXTERNAL_UNREACHABLE {
                degraded.push((r.reason.clone(), r.message.clone()));
            }
            r
        }
        CacheProvider::Disabled => Readiness {
            ready: true,
            progressing: false,
            reason: "Disabled".into(),
            message: "cache disabled: the API rate-limits per pod".into(),
        },
    };
    let netpol = if p.spec.network_policy.enabled {
        if obs.network_policies > 0 {
            cond(
                NETWORK_POLICY_READY,
                true,
                "Applied",
                format!(
                    "default-deny and {} allow policies in place",
                    obs.network_policies.saturating_sub(1)
                ),
            )
        } else {
            cond(
                NETWORK_POLICY_READY,
                false,
                "Missing",
                "the default-deny NetworkPolicy is missing",
            )
        }
    } else {
        cond(
            NETWORK_POLICY_READY,
            false,
            "Disabled",
            "networkPolicy.enabled is false: platform pods accept and send traffic without restriction",
        )
    };
    if api.reason == "ProgressDeadlineExceeded" {
        degraded.push((api.reason.clone(), api.message.clone()));
    }
    if let Some(r) = restore.as_ref().filter(|r| r.failed) {
        degraded.push((r.reason.to_string(), r.message.clone()));
    }

    let all_ready = api.ready && db.ready && cache.ready;
    let progressing = !stopped && (api.progressing || db.progressing || cache.progressing);
    let was_up = matches!(previous.phase, Phase::Ready | Phase::Degraded)
        && previous.observed_generation == p.generation;
    let (phase, message) = if p.spec.paused {
        (
            Phase::Paused,
            "reconciliation paused (spec.paused); status still updated".to_string(),
        )
    } else if stopped {
        (
            Phase::Stopped,
            "stopped (spec.stopped): workloads scaled to zero, data kept".to_string(),
        )
    } else if let Some((_, msg)) = degraded.first() {
        (Phase::Degraded, msg.clone())
    } else if all_ready {
        (Phase::Ready, "all components ready".to_string())
    } else if was_up {
        (Phase::Degraded, not_ready_message(&api, &db, &cache))
    } else {
        (Phase::Provisioning, not_ready_message(&api, &db, &cache))
    };

    let ready_cond = if all_ready && !stopped {
        cond(
            READY,
            true,
            "AllComponentsReady",
            "API, database and cache are ready",
        )
    } else if stopped {
        cond(READY, false, "Stopped", "the platform is stopped")
    } else if let Some(r) = &restore {
        cond(READY, false, r.reason, r.message.clone())
    } else {
        cond(
            READY,
            false,
            "ComponentsNotReady",
            not_ready_message(&api, &db, &cache),
        )
    };
    let degraded_cond = match degraded.first() {
        Some((reason, msg)) => cond(DEGRADED, true, reason, msg.clone()),
        None if phase == Phase::Degraded => {
            cond(DEGRADED, true, "ComponentsNotReady", message.clone())
        }
        None => cond(DEGRADED, false, "AsExpected", "no problems detected"),
    };
    let progressing_cond = if let Some(r) = &restore {
        cond(PROGRESSING, !r.failed, r.reason, r.message.clone())
    } else if progressing {
        cond(
            PROGRESSING,
            true,
            "Provisioning",
            "waiting for pods to become ready",
        )
    } else {
        cond(PROGRESSING, false, "Settled", "nothing is rolling out")
    };
    let conditions = vec![
        ready_cond,
        progressing_cond,
        degraded_cond,
        cond(DATABASE_READY, db.ready, &db.reason, db.message),
        cond(CACHE_READY, cache.ready, &cache.reason, cache.message),
        cond(API_SERVER_READY, api.ready, &api.reason, api.message),
        netpol,
        paused,
        stopped_cond,
    ];
    (phase, message, conditions)
}

fn not_ready_message(api: &Readiness, db: &Readiness, cache: &Readiness) -> String {
    let mut parts = Vec::new();
    for r in [db, cache, api] {
        if !r.ready {
            parts.push(r.message.clone());
        }
    }
    if parts.is_empty() {
        "all components ready".into()
    } else {
        format!("waiting: {}", parts.join("; "))
    }
}

fn cnpg_readiness(obs: &Observed, p: &ValidatedPlatform, stopped: bool) -> Readiness {
    let Some(cluster) = obs.cnpg_cluster.as_ref() else {
        return Readiness {
            ready: false,
            progressing: true,
            reason: "NotCreated".into(),
            message: "the CloudNativePG Cluster has not been created yet".into(),
        };
    };
    if stopped {
        return Readiness {
            ready: false,
            progressing: false,
            reason: "Hibernating".into(),
            message: "the CloudNativePG Cluster is hibernated (platform stopped)".into(),
        };
    }
    let st = cluster.data.get("status");
    let ready_instances = st
        .and_then(|s| s.get("readyInstances"))
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let want = i64::from(p.spec.database.instances);
    let phase = st
        .and_then(|s| s.get("phase"))
        .and_then(|v| v.as_str())
        .unwrap_or("unknown");
    if ready_instances >= want {
        Readiness {
            ready: true,
            progressing: false,
            reason: "PodsReady".into(),
            message: format!("CloudNativePG: {ready_instances}/{want} instances ready"),
        }
    } else {
        Readiness {
            ready: false,
            progressing: true,
            reason: "PodsNotReady".into(),
            message: format!("CloudNativePG: {ready_instances}/{want} instances ready ({phase})"),
        }
    }
}

/// Patches the status through the status subresource (server-side apply) when it changed.
/// Returns whether a patch was sent.
pub async fn patch_if_changed(
    client: &Client,
    hp: &HealthcarePlatform,
    status: &HealthcarePlatformStatus,
) -> Result<bool, kube::Error> {
    if hp.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let ns = hp.namespace().unwrap_or_default();
    let api: Api<HealthcarePlatform> = Api::namespaced(client.clone(), &ns);
    let patch = json!({
        "apiVersion": "caduceus.io/v1alpha1",
        "kind": "HealthcarePlatform",
        "status": status,
    });
    api.patch_status(
        &hp.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

/// A kube error as a status-safe message.
pub fn status_error(e: &kube::Error) -> String {
    describe(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::HealthcarePlatformSpec;
    use crate::desired::{build_children, ExistingSecrets, SecretGenerator};
    use crate::validate::validate;
    use k8s_openapi::api::apps::v1::{DeploymentStatus, StatefulSetStatus};
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn hp(f: impl FnOnce(&mut HealthcarePlatformSpec)) -> HealthcarePlatform {
        let mut spec = HealthcarePlatformSpec::default();
        f(&mut spec);
        let mut hp = HealthcarePlatform::new("demo", spec);
        hp.metadata.namespace = Some("clinic".into());
        hp.metadata.generation = Some(3);
        hp.metadata.uid = Some("u".into());
        hp
    }

    /// Observed state with every workload at `ready` ready pods.
    fn observed(p: &ValidatedPlatform, ready: i32) -> Observed {
        let children = build_children(
            p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        let mut d = children.api_deployment.clone();
        d.metadata.generation = Some(1);
        let want = d.spec.as_ref().unwrap().replicas.unwrap_or(2);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(want),
            ready_replicas: Some(ready.min(want)),
            updated_replicas: Some(want),
            ..Default::default()
        });
        let sts = |s: &StatefulSet| {
            let mut s = s.clone();
            s.metadata.generation = Some(1);
            s.status = Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas: 1,
                ready_replicas: Some(ready.min(1)),
                updated_replicas: Some(1),
                ..Default::default()
            });
            s
        };
        Observed {
            deployment: Some(d),
            postgres: children.postgres.as_ref().map(|p| sts(&p.stateful_set)),
            redis: children.redis.as_ref().map(|r| sts(&r.stateful_set)),
            cnpg_cluster: None,
            network_policies: children.network_policies.len(),
            cnpg_installed: true,
            drift_corrected: vec![],
            monitoring: crate::apply::MonitoringState::Disabled,
            backup_jobs: vec![],
            backup_pods: vec![],
            on_demand_job: None,
            restore: Progress::NotRequested,
            self_report: None,
            database: children
                .postgres_tls
                .as_ref()
                .and_then(crate::desired::secrets::database_status),
        }
    }

    fn condition<'a>(s: &'a HealthcarePlatformStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn ready_only_when_pods_are_ready() {
        let obj = hp(|_| {});
        let p = validate(&obj, "d").unwrap();
        let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 0)), t(100));
        assert_eq!(s.phase, Phase::Provisioning);
        assert_eq!(condition(&s, READY).status, "False");
        assert_eq!(condition(&s, PROGRESSING).status, "True");
        assert_eq!(s.observed_generation, Some(3));
        let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), t(100));
        assert_eq!(s.phase, Phase::Ready);
        for c in [
            READY,
            DATABASE_READY,
            CACHE_READY,
            API_SERVER_READY,
            NETWORK_POLICY_READY,
        ] {
            assert_eq!(condition(&s, c).status, "True", "{c}");
        }
        assert_eq!(condition(&s, DEGRADED).status, "False");
        let api = s.api_server.clone().unwrap();
        assert_eq!(api.ready, "2/2");
        assert_eq!(api.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(
            s.endpoint.unwrap().internal,
            "http://demo-api.clinic.svc:8080"
        );
    }

    #[test]
    fn transition_time_changes_only_with_status() {
        let mut obj = hp(|_| {});
        let p = validate(&obj, "d").unwrap();
        let first = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), t(100));
        obj.status = Some(first.clone());
        let second = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), t(200));
        assert_eq!(
            first, second,
            "an unchanged platform yields an identical status"
        );
        obj.status = Some(second);
        let third = compute(&obj, Outcome::Observed(&p, &observed(&p, 0)), t(300));
        assert_eq!(condition(&third, READY).last_transition_time, t(300));
        assert_eq!(
            condition(&third, NETWORK_POLICY_READY).last_transition_time,
            t(100)
        );
        // Was ready for this generation, now pods are down: Degraded, not Provisioning.
        assert_eq!(third.phase, Phase::Degraded);
    }

    #[test]
    fn invalid_spec_is_degraded_with_reason() {
        let obj = hp(|s| {
            s.api_server.autoscaling.min_replicas = 5;
            s.api_server.autoscaling.max_replicas = 2;
        });
        let err = validate(&obj, "d").unwrap_err();
        let s = compute(&obj, Outcome::Invalid(&err), t(1));
        assert_eq!(s.phase, Phase::Failed);
        let d = condition(&s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert!(d.message.contains("spec.apiServer.autoscaling.maxReplicas"));
    }

    #[test]
    fn cnpg_missing_is_reported_not_crashed() {
        let obj = hp(|s| s.database.provider = DatabaseProvider::CloudNativePG);
        let p = validate(&obj, "d").unwrap();
        let mut obs = observed(&p, 2);
        obs.cnpg_installed = false;
        let s = compute(&obj, Outcome::Observed(&p, &obs), t(1));
        let c = condition(&s, DATABASE_READY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", REASON_CNPG_NOT_INSTALLED)
        );
        assert!(c.message.contains("clusters.postgresql.cnpg.io"));
        assert_eq!(s.phase, Phase::Degraded);
    }

    #[test]
    fn paused_and_stopped_phases() {
        let obj = hp(|s| s.paused = true);
        let p = validate(&obj, "d").unwrap();
        let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), t(1));
        assert_eq!(s.phase, Phase::Paused);
        assert_eq!(condition(&s, RECONCILIATION_PAUSED).status, "True");
        let obj = hp(|s| s.stopped = true);
        let p = validate(&obj, "d").unwrap();
        let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 0)), t(1));
        assert_eq!(s.phase, Phase::Stopped);
        assert_eq!(condition(&s, STOPPED).status, "True");
        assert_eq!(condition(&s, READY).reason, "Stopped");
    }

    #[test]
    fn disabled_network_policy_is_visible() {
        let obj = hp(|s| s.network_policy.enabled = false);
        let p = validate(&obj, "d").unwrap();
        let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), t(1));
        let c = condition(&s, NETWORK_POLICY_READY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Disabled")
        );
    }

    #[test]
    fn backup_healthy_follows_status_backup() {
        use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
        let obj = hp(|_| {});
        let p = validate(&obj, "d").unwrap();
        let now = t(1_800_000_000);
        let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), now.clone());
        let c = condition(&s, BACKUP_HEALTHY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "NoBackupYet")
        );
        assert_eq!(
            s.phase,
            Phase::Ready,
            "backup health does not change the phase"
        );
        assert!(s.backup.unwrap().next_scheduled_time.is_some());

        // A Job completed 10 minutes ago, recorded together with the on-demand Job.
        let mut obs = observed(&p, 2);
        obs.backup_jobs = vec![k8s_openapi::api::batch::v1::Job {
            metadata: kube::api::ObjectMeta {
                name: Some("demo-backup-1".into()),
                ..Default::default()
            },
            status: Some(JobStatus {
                succeeded: Some(1),
                conditions: Some(vec![JobCondition {
                    type_: "Complete".into(),
                    status: "True".into(),
                    last_transition_time: Some(t(1_800_000_000 - 600)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            spec: None,
        }];
        obs.on_demand_job = Some("demo-backup-now-abc".into());
        let s = compute(&obj, Outcome::Observed(&p, &obs), now.clone());
        let b = s.backup.clone().unwrap();
        assert_eq!(b.last_successful_time, Some(t(1_800_000_000 - 600)));
        assert_eq!(b.last_on_demand_job.as_deref(), Some("demo-backup-now-abc"));
        assert_eq!(condition(&s, BACKUP_HEALTHY).reason, "BackupWithinRpo");
        // Two hours later with nothing new: RpoExceeded.
        let mut later = obj.clone();
        later.status = Some(s);
        let s = compute(
            &later,
            Outcome::Observed(&p, &observed(&p, 2)),
            t(1_800_000_000 + 7200),
        );
        let c = condition(&s, BACKUP_HEALTHY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RpoExceeded")
        );
        assert_eq!(
            s.backup.unwrap().last_on_demand_job.as_deref(),
            Some("demo-backup-now-abc"),
            "kept"
        );

        // CloudNativePG with a pvc destination cannot delegate.
        let cnpg = hp(|s| s.database.provider = DatabaseProvider::CloudNativePG);
        let p = validate(&cnpg, "d").unwrap();
        let s = compute(&cnpg, Outcome::Observed(&p, &observed(&p, 2)), now);
        let c = condition(&s, BACKUP_HEALTHY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "DestinationUnsupported")
        );
    }

    fn from_backup(s: &mut HealthcarePlatformSpec) {
        use crate::crd::{BackupSource, DatabaseBootstrap, FromBackup};
        s.database.bootstrap = Some(DatabaseBootstrap {
            from_backup: Some(FromBackup {
                name: "latest".into(),
                source: BackupSource {
                    s3: None,
                    claim_name: Some("old-backups".into()),
                },
                secret_ref: "old-key".into(),
            }),
        });
    }

    /// `observed` of a platform held for its restore: the Deployment at 0 replicas.
    fn held(p: &ValidatedPlatform, restore: Progress) -> Observed {
        let mut obs = observed(p, 1);
        if let Some(d) = obs.deployment.as_mut() {
            d.status = Some(DeploymentStatus {
                observed_generation: Some(1),
                ..Default::default()
            });
        }
        obs.restore = restore;
        obs
    }

    #[test]
    fn the_api_waits_for_the_restore_and_a_failure_is_reported() {
        use crate::desired::restore::RestoreResult;
        let obj = hp(from_backup);
        let p = validate(&obj, "d").unwrap();
        assert!(p.restore_pending);

        // Running: Progressing/Restoring, the API held at 0 and not ready, no status.restore.
        let running = Progress::Running {
            waiting: None,
            failed_pods: 0,
        };
        let s = compute(&obj, Outcome::Observed(&p, &held(&p, running)), t(100));
        assert_eq!(s.phase, Phase::Provisioning);
        let c = condition(&s, PROGRESSING);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", REASON_RESTORING)
        );
        assert!(c.message.contains("demo-restore"), "{}", c.message);
        assert_eq!(condition(&s, READY).reason, REASON_RESTORING);
        let api = condition(&s, API_SERVER_READY);
        assert_eq!(
            (api.status.as_str(), api.reason.as_str()),
            ("False", REASON_WAITING_FOR_RESTORE)
        );
        assert_eq!(condition(&s, DEGRADED).status, "False");
        assert!(s.restore.is_none());

        // A pod that cannot start says why (a Kubernetes reason, nothing from the pod).
        let stuck = Progress::Running {
            waiting: Some("CreateContainerConfigError".into()),
            failed_pods: 0,
        };
        let s = compute(&obj, Outcome::Observed(&p, &held(&p, stuck)), t(100));
        assert!(condition(&s, PROGRESSING)
            .message
            .contains("CreateContainerConfigError"));

        // Failed: Degraded/RestoreFailed, Ready False, not progressing; still held.
        let failed = Progress::Failed {
            reason: "BackoffLimitExceeded".into(),
        };
        let s = compute(&obj, Outcome::Observed(&p, &held(&p, failed)), t(200));
        assert_eq!(s.phase, Phase::Degraded);
        for (type_, status) in [(DEGRADED, "True"), (READY, "False"), (PROGRESSING, "False")] {
            let c = condition(&s, type_);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (status, REASON_RESTORE_FAILED),
                "{type_}"
            );
        }
        let msg = &condition(&s, DEGRADED).message;
        assert!(
            msg.contains("BackoffLimitExceeded") && msg.contains("kubectl logs job/demo-restore"),
            "{msg}"
        );
        assert!(s.restore.is_none());

        // Succeeded: recorded once, with the backup and the completion time.
        let done = Progress::Succeeded {
            completion_time: Some(t(300)),
            result: RestoreResult {
                restored_backup: Some("backup-20261122T030000.000Z".into()),
                skipped: false,
            },
        };
        let s = compute(&obj, Outcome::Observed(&p, &held(&p, done)), t(310));
        let r = s.restore.clone().expect("status.restore");
        assert_eq!(r.backup_name, "latest");
        assert_eq!(
            r.restored_backup.as_deref(),
            Some("backup-20261122T030000.000Z")
        );
        assert_eq!(r.completion_time, t(300));
        assert_eq!(r.job, "demo-restore");

        // The next reconcile no longer restores: the API runs, even with the Job gone.
        let mut next = obj.clone();
        next.status = Some(s);
        let p2 = validate(&next, "d").unwrap();
        assert!(!p2.restore_pending && p2.api_replicas() == 2);
        let mut obs = observed(&p2, 2);
        obs.restore = Progress::NotRequested;
        let s = compute(&next, Outcome::Observed(&p2, &obs), t(400));
        assert_eq!(s.phase, Phase::Ready);
        assert_eq!(s.restore, Some(r.clone()), "kept as it was");
        // A later failed apply or invalid spec keeps it too.
        let mut after = next.clone();
        after.status = Some(s);
        let err = ApplyError::Discovery { detail: "x".into() };
        let s = compute(&after, Outcome::ApplyFailed(&err), t(500));
        assert_eq!(s.restore, Some(r));
    }

    #[test]
    fn external_cache_ready_only_when_the_self_report_says_reachable() {
        use crate::compliance::self_report::parse;
        use crate::crd::SecretKeyRef;
        let obj = hp(|s| {
            s.cache.provider = CacheProvider::External;
            s.cache.secret_ref = Some(SecretKeyRef {
                name: "redis".into(),
                key: "url".into(),
            });
        });
        let p = validate(&obj, "d").unwrap();
        let report = |cache: &str| {
            parse(
                format!(
                    r#"{{"version":"0.2.0","schema_version":7,
                    "encryption":{{"active":true,"active_key_id":"k-1","key_ids":["k-1"]}},
                    "audit":{{"chain_head_id":1,"chain_head_hash":"ab","write_failures":0,"retention_days":2190}},
                    "sessions":{{"idle_timeout_minutes":15,"access_token_ttl_minutes":15}},
                    "rate_limit":{{"enabled":true,"backend":"redis","requests_per_minute":600,"login_attempts_per_minute":5}},
                    "database_tls":true{cache}}}"#
                )
                .as_bytes(),
            )
            .expect("report")
        };
        let with = |self_report: Option<Result<SelfReport, String>>| {
            let mut obs = observed(&p, 2);
            obs.self_report = self_report;
            compute(&obj, Outcome::Observed(&p, &obs), t(1))
        };
        let cache_cond = |s: &HealthcarePlatformStatus| {
            let c = condition(s, CACHE_READY);
            (c.status.clone(), c.reason.clone())
        };

        // Every API pod ready, but no self-report yet: not verified (was: True).
        let s = with(None);
        assert_eq!(
            cache_cond(&s),
            ("False".into(), REASON_EXTERNAL_NOT_VERIFIED.into())
        );
        assert_eq!(condition(&s, API_SERVER_READY).status, "True");
        assert_ne!(s.phase, Phase::Ready);
        let s = with(Some(Err("no API pod is ready to answer".into())));
        assert_eq!(cache_cond(&s).1, REASON_EXTERNAL_NOT_VERIFIED);
        // An API that does not report the cache: not verified either.
        let s = with(Some(Ok(report(""))));
        assert_eq!(cache_cond(&s).1, REASON_EXTERNAL_NOT_VERIFIED);
        assert!(condition(&s, CACHE_READY).message.contains("0.2.0"));

        let s = with(Some(Ok(report(
            r#","cache":{"configured":true,"reachable":true}"#,
        ))));
        assert_eq!(
            cache_cond(&s),
            ("True".into(), REASON_EXTERNAL_REACHABLE.into())
        );
        assert_eq!(s.phase, Phase::Ready);

        let s = with(Some(Ok(report(
            r#","cache":{"configured":true,"reachable":false}"#,
        ))));
        assert_eq!(
            cache_cond(&s),
            ("False".into(), REASON_EXTERNAL_UNREACHABLE.into())
        );
        assert_eq!(s.phase, Phase::Degraded);
        assert_eq!(condition(&s, DEGRADED).reason, REASON_EXTERNAL_UNREACHABLE);
        assert_eq!(condition(&s, READY).status, "False");
    }
}

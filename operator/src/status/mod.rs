//! Status stage (this file: the conditions and phase; `readiness`, `backups`, `patch` beside it): computes the platform status from what the cluster reports (pure), and patches
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
use crate::desired::backup_status;
use crate::desired::restore::Progress;
use crate::desired::{backup, backup_cnpg, ingress};
use crate::names::{Names, API_HTTP_PORT, FIELD_MANAGER};
use crate::validate::{ValidatedPlatform, ValidationError};
use caduceus_contract::conditions::*;

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
            REASON_PAUSED
        } else {
            REASON_RECONCILING
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
            REASON_STOPPED
        } else {
            REASON_RUNNING
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
                    cond(READY, false, REASON_INVALID_SPEC, msg.clone()),
                    cond(DEGRADED, true, REASON_INVALID_SPEC, msg.clone()),
                    cond(
                        PROGRESSING,
                        false,
                        REASON_INVALID_SPEC,
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
                    cond(READY, false, REASON_SECRETS_MISSING, msg.clone()),
                    cond(DEGRADED, true, REASON_SECRETS_MISSING, msg),
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
            "https://{}:{API_HTTP_PORT}",
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
                REASON_EXTERNAL_REACHABLE
            } else {
                REASON_EXTERNAL_NOT_VERIFIED
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
            reason: REASON_DISABLED.into(),
            message: "cache disabled: the API rate-limits per pod".into(),
        },
    };
    let netpol = if p.spec.network_policy.enabled {
        if obs.network_policies > 0 {
            cond(
                NETWORK_POLICY_READY,
                true,
                REASON_APPLIED,
                format!(
                    "default-deny and {} allow policies in place",
                    obs.network_policies.saturating_sub(1)
                ),
            )
        } else {
            cond(
                NETWORK_POLICY_READY,
                false,
                REASON_MISSING,
                "the default-deny NetworkPolicy is missing",
            )
        }
    } else {
        cond(
            NETWORK_POLICY_READY,
            false,
            REASON_DISABLED,
            "networkPolicy.enabled is false: platform pods accept and send traffic without restriction",
        )
    };
    if api.reason == REASON_PROGRESS_DEADLINE_EXCEEDED {
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
            REASON_ALL_COMPONENTS_READY,
            "API, database and cache are ready",
        )
    } else if stopped {
        cond(READY, false, REASON_STOPPED, "the platform is stopped")
    } else if let Some(r) = &restore {
        cond(READY, false, r.reason, r.message.clone())
    } else {
        cond(
            READY,
            false,
            REASON_COMPONENTS_NOT_READY,
            not_ready_message(&api, &db, &cache),
        )
    };
    let degraded_cond = match degraded.first() {
        Some((reason, msg)) => cond(DEGRADED, true, reason, msg.clone()),
        None if phase == Phase::Degraded => {
            cond(DEGRADED, true, REASON_COMPONENTS_NOT_READY, message.clone())
        }
        None => cond(DEGRADED, false, REASON_AS_EXPECTED, "no problems detected"),
    };
    let progressing_cond = if let Some(r) = &restore {
        cond(PROGRESSING, !r.failed, r.reason, r.message.clone())
    } else if progressing {
        cond(
            PROGRESSING,
            true,
            REASON_PROVISIONING,
            "waiting for pods to become ready",
        )
    } else {
        cond(PROGRESSING, false, REASON_SETTLED, "nothing is rolling out")
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

mod backups;
mod patch;
mod readiness;

pub use backups::*;
pub use patch::*;
use readiness::*;

#[cfg(test)]
mod tests;

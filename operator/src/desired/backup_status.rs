//! `status.backup`, the `BackupHealthy` condition and the RPO rule, computed (purely) from the
//! backup Jobs, their pods' termination messages (the agent's result line, docs/contracts.md)
//! and the previous status. Jobs are garbage-collected (history limits), so the previous status
//! is merged in: times never move backwards.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{tz::TimeZone, SignedDuration, Timestamp};

use super::agent::{is_pod_of, result_line, success_message, true_condition};
use super::backup::CONTAINER;
use crate::crd::BackupStatus;
use caduceus_contract::conditions::{
    REASON_BACKUPS_DISABLED, REASON_BACKUP_FAILED, REASON_BACKUP_WITHIN_RPO, REASON_NO_BACKUP_YET,
    REASON_RPO_EXCEEDED,
};

/// The fields of the agent's result line the status uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentResult {
    pub name: String,
    pub size: i64,
}

/// Parse the agent's result line (the last line of a termination message).
pub fn parse_result(message: &str) -> Option<AgentResult> {
    let v = result_line(message)?;
    Some(AgentResult {
        name: v.get("name")?.as_str()?.to_string(),
        size: v.get("size")?.as_i64()?,
    })
}

fn condition_time(job: &Job, type_: &str) -> Option<Timestamp> {
    let c = true_condition(job, type_)?;
    c.last_transition_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| c.last_probe_time.as_ref().map(|t| t.0))
}

/// When the Job succeeded, if it did.
fn success_time(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref()?;
    if let Some(t) = condition_time(job, "Complete") {
        return Some(t);
    }
    if status.succeeded.unwrap_or(0) > 0 {
        return status.completion_time.as_ref().map(|t| t.0);
    }
    None
}

/// When the Job failed for good, if it did.
fn failure_time(job: &Job) -> Option<Timestamp> {
    condition_time(job, "Failed")
}

/// The result line of the Job's successful agent container.
fn job_result(job: &Job, pods: &[Pod]) -> Option<AgentResult> {
    let job_name = job.metadata.name.as_deref()?;
    pods.iter()
        .filter(|pod| is_pod_of(pod, job_name))
        .find_map(|pod| parse_result(success_message(pod, CONTAINER)?))
}

/// The next time `schedule` (5-field cron, UTC) fires after `now`; `None` if it cannot be parsed.
pub fn next_run(schedule: &str, now: Timestamp) -> Option<Timestamp> {
    let cron: croner::Cron = schedule.parse().ok()?;
    let zoned = now.to_zoned(TimeZone::UTC);
    cron.find_next_occurrence(&zoned, false)
        .ok()
        .map(|z| z.timestamp())
}

/// Inputs of [`compute`].
pub struct Observation<'a> {
    /// Backup Jobs of the platform (scheduled and on-demand).
    pub jobs: &'a [Job],
    /// Their pods.
    pub pods: &'a [Pod],
    /// The CronJob schedule, `None` when no CronJob runs (disabled, stopped, delegated).
    pub schedule: Option<&'a str>,
    pub now: Timestamp,
}

/// The new `status.backup`: newest success and failure over the observed Jobs and the previous
/// status. `None` when nothing was ever observed and nothing is scheduled.
pub fn compute(previous: Option<&BackupStatus>, o: &Observation<'_>) -> Option<BackupStatus> {
    let mut status = previous.cloned().unwrap_or_default();
    let mut newest_success: Option<(Timestamp, Option<AgentResult>)> = None;
    for job in o.jobs {
        if let Some(t) = success_time(job) {
            if newest_success.as_ref().is_none_or(|(best, _)| t > *best) {
                newest_success = Some((t, job_result(job, o.pods)));
            }
        }
        if let Some(t) = failure_time(job) {
            if status.last_failure_time.as_ref().is_none_or(|f| t > f.0) {
                status.last_failure_time = Some(Time(t));
            }
        }
    }
    if let Some((t, result)) = newest_success {
        if status.last_successful_time.as_ref().is_none_or(|s| t > s.0) {
            status.last_successful_time = Some(Time(t));
            status.last_backup_name = result.as_ref().map(|r| r.name.clone());
            status.size = result.map(|r| r.size);
        }
    }
    status.next_scheduled_time = o.schedule.and_then(|s| next_run(s, o.now)).map(Time);
    (status != BackupStatus::default()).then_some(status)
}

/// The compliance rule "last backup within RPO": a successful backup no older than
/// `rpo_minutes` at `now`.
pub fn rpo_satisfied(status: Option<&BackupStatus>, rpo_minutes: i32, now: Timestamp) -> bool {
    let Some(last) = status.and_then(|s| s.last_successful_time.as_ref()) else {
        return false;
    };
    let age = now.duration_since(last.0);
    age <= SignedDuration::from_mins(i64::from(rpo_minutes.max(0)))
}

/// `BackupHealthy` as (status, reason, message); `None` status means Unknown.
pub fn healthy(
    enabled: bool,
    status: Option<&BackupStatus>,
    rpo_minutes: i32,
    now: Timestamp,
) -> (Option<bool>, &'static str, String) {
    if !enabled {
        return (
            Some(false),
            REASON_BACKUPS_DISABLED,
            "spec.backup.enabled is false".into(),
        );
    }
    let success = status.and_then(|s| s.last_successful_time.as_ref());
    let failure = status.and_then(|s| s.last_failure_time.as_ref());
    match (success, failure) {
        (None, None) => (
            None,
            REASON_NO_BACKUP_YET,
            "no backup has completed yet".into(),
        ),
        (None, Some(f)) => (
            Some(false),
            REASON_BACKUP_FAILED,
            format!("no successful backup; the last one failed at {}", f.0),
        ),
        (Some(s), Some(f)) if f.0 > s.0 => (
            Some(false),
            REASON_BACKUP_FAILED,
            format!("the last backup failed at {} (last success {})", f.0, s.0),
        ),
        (Some(s), _) if !rpo_satisfied(status, rpo_minutes, now) => (
            Some(false),
            REASON_RPO_EXCEEDED,
            format!(
                "the last successful backup ({}) is older than the RPO of {rpo_minutes} min",
                s.0
            ),
        ),
        (Some(s), _) => (
            Some(true),
            REASON_BACKUP_WITHIN_RPO,
            format!("last successful backup at {} (RPO {rpo_minutes} min)", s.0),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn job(name: &str, kind: &str, at: &str) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(JobStatus {
                succeeded: (kind == "Complete").then_some(1),
                failed: (kind == "Failed").then_some(3),
                completion_time: (kind == "Complete").then(|| Time(ts(at))),
                conditions: (kind != "Running").then(|| {
                    vec![JobCondition {
                        type_: kind.into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(ts(at))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            spec: None,
        }
    }

    fn pod(job: &str, exit: i32, message: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("{job}-abcde")),
                labels: Some(BTreeMap::from([(
                    "batch.kubernetes.io/job-name".to_string(),
                    job.to_string(),
                )])),
                ..Default::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: exit,
                            message: Some(message.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            spec: None,
        }
    }

    fn result_line(name: &str, size: i64) -> String {
        format!(
            r#"{{"name":"{name}","size":{size},"sha256":"ab","key_id":"bk-000000000000","time":"2026-11-22T03:00:00.000Z"}}"#
        )
    }

    #[test]
    fn newest_success_and_failure_with_name_and_size_from_the_pod() {
        let jobs = [
            job("demo-backup-1", "Complete", "2026-11-22T02:00:05Z"),
            job("demo-backup-2", "Complete", "2026-11-22T03:00:07Z"),
            job("demo-backup-3", "Failed", "2026-11-22T04:00:09Z"),
            job("demo-backup-4", "Running", "2026-11-22T05:00:00Z"),
        ];
        let pods = [
            pod("demo-backup-1", 0, &result_line("backup-old", 10)),
            pod(
                "demo-backup-2",
                0,
                &result_line("backup-20261122T030000.000Z", 123456),
            ),
            pod(
                "demo-backup-3",
                1,
                "error: pg_dump failed (exit status: 1): connection refused",
            ),
        ];
        let now = ts("2026-11-22T05:10:00Z");
        let s = compute(
            None,
            &Observation {
                jobs: &jobs,
                pods: &pods,
                schedule: Some("0 * * * *"),
                now,
            },
        )
        .expect("status");
        assert_eq!(
            s.last_successful_time,
            Some(Time(ts("2026-11-22T03:00:07Z")))
        );
        assert_eq!(s.last_failure_time, Some(Time(ts("2026-11-22T04:00:09Z"))));
        assert_eq!(
            s.last_backup_name.as_deref(),
            Some("backup-20261122T030000.000Z")
        );
        assert_eq!(s.size, Some(123456));
        assert_eq!(
            s.next_scheduled_time,
            Some(Time(ts("2026-11-22T06:00:00Z")))
        );
        // The failure after the success makes the backup unhealthy.
        let (ok, reason, _) = healthy(true, Some(&s), 600, now);
        assert_eq!((ok, reason), (Some(false), "BackupFailed"));
    }

    #[test]
    fn garbage_collected_jobs_never_move_status_backwards() {
        let previous = BackupStatus {
            last_successful_time: Some(Time(ts("2026-11-22T03:00:00Z"))),
            last_failure_time: Some(Time(ts("2026-11-21T03:00:00Z"))),
            last_backup_name: Some("backup-b".into()),
            size: Some(42),
            next_scheduled_time: None,
            last_on_demand_job: None,
        };
        // Only an older job is still around.
        let jobs = [job("demo-backup-1", "Complete", "2026-11-22T01:00:00Z")];
        let pods = [pod("demo-backup-1", 0, &result_line("backup-a", 1))];
        let s = compute(
            Some(&previous),
            &Observation {
                jobs: &jobs,
                pods: &pods,
                schedule: None,
                now: ts("2026-11-22T03:30:00Z"),
            },
        )
        .expect("status");
        assert_eq!(s.last_successful_time, previous.last_successful_time);
        assert_eq!(s.last_backup_name.as_deref(), Some("backup-b"));
        assert_eq!(s.size, Some(42));
        assert_eq!(s.next_scheduled_time, None, "no schedule, no next run");
        // Nothing observed, nothing scheduled, nothing before: no status at all.
        assert!(compute(
            None,
            &Observation {
                jobs: &[],
                pods: &[],
                schedule: None,
                now: ts("2026-11-22T03:30:00Z")
            }
        )
        .is_none());
    }

    #[test]
    fn success_without_a_readable_result_keeps_time_but_no_name() {
        let jobs = [job("demo-backup-9", "Complete", "2026-11-22T03:00:00Z")];
        let pods = [pod("demo-backup-9", 0, "not json")];
        let s = compute(
            None,
            &Observation {
                jobs: &jobs,
                pods: &pods,
                schedule: None,
                now: ts("2026-11-22T03:01:00Z"),
            },
        )
        .expect("status");
        assert!(s.last_successful_time.is_some());
        assert_eq!(s.last_backup_name, None);
        assert_eq!(s.size, None);
    }

    #[test]
    fn rpo_rule_turns_red_when_the_last_success_is_older_than_rpo() {
        let status = BackupStatus {
            last_successful_time: Some(Time(ts("2026-11-22T03:00:00Z"))),
            ..Default::default()
        };
        assert!(rpo_satisfied(Some(&status), 60, ts("2026-11-22T03:59:59Z")));
        assert!(rpo_satisfied(Some(&status), 60, ts("2026-11-22T04:00:00Z")));
        assert!(!rpo_satisfied(
            Some(&status),
            60,
            ts("2026-11-22T04:00:01Z")
        ));
        assert!(!rpo_satisfied(None, 60, ts("2026-11-22T03:00:00Z")));
        assert!(!rpo_satisfied(
            Some(&BackupStatus::default()),
            60,
            ts("2026-11-22T03:00:00Z")
        ));
        let (ok, reason, message) = healthy(true, Some(&status), 60, ts("2026-11-22T04:30:00Z"));
        assert_eq!((ok, reason), (Some(false), "RpoExceeded"));
        assert!(message.contains("60 min"), "{message}");
        let (ok, reason, _) = healthy(true, Some(&status), 60, ts("2026-11-22T03:30:00Z"));
        assert_eq!((ok, reason), (Some(true), "BackupWithinRpo"));
    }

    #[test]
    fn health_without_backups() {
        let now = ts("2026-11-22T03:30:00Z");
        assert_eq!(healthy(true, None, 60, now).0, None);
        assert_eq!(healthy(false, None, 60, now).1, "BackupsDisabled");
        let failed = BackupStatus {
            last_failure_time: Some(Time(ts("2026-11-22T03:00:00Z"))),
            ..Default::default()
        };
        assert_eq!(healthy(true, Some(&failed), 60, now).1, "BackupFailed");
    }

    #[test]
    fn next_run_follows_the_cron_schedule() {
        let now = ts("2026-11-22T05:34:00Z");
        assert_eq!(next_run("0 * * * *", now), Some(ts("2026-11-22T06:00:00Z")));
        assert_eq!(
            next_run("30 2 * * *", now),
            Some(ts("2026-11-23T02:30:00Z"))
        );
        assert_eq!(
            next_run("*/15 * * * *", now),
            Some(ts("2026-11-22T05:45:00Z"))
        );
        assert_eq!(next_run("not a schedule", now), None);
    }

    #[test]
    fn result_line_parsing() {
        assert_eq!(
            parse_result(&format!("{}\n", result_line("backup-x", 5))),
            Some(AgentResult {
                name: "backup-x".into(),
                size: 5
            })
        );
        assert_eq!(parse_result("error: boom"), None);
        assert_eq!(parse_result(""), None);
    }
}

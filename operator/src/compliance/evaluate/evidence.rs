//! Readers of the evidence the rule families share: the API self-report, Secret values and
//! placeholders, the operator-issued TLS Secrets, the API container and its effective settings,
//! and every workload pod spec of the platform.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Secret};
use k8s_openapi::jiff::Timestamp;

use super::super::self_report::SelfReport;
use super::{Inputs, LiveEvidence, OFFLINE};
use crate::desired::Children;
use crate::names::ANNOTATION_PLACEHOLDER;

pub(super) fn self_report<'a>(i: &'a Inputs<'_>) -> Result<&'a SelfReport, String> {
    match i.live {
        None => Err(OFFLINE.to_string()),
        Some(live) => live
            .self_report
            .as_ref()
            .map_err(|e| format!("API self-report unavailable: {e}")),
    }
}

pub(super) fn secret_value<'a>(s: &'a Secret, key: &str) -> Option<&'a [u8]> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
}

pub(super) fn is_placeholder(s: &Secret) -> bool {
    s.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_PLACEHOLDER))
}

/// What is wrong with an operator-issued TLS Secret (`ca.crt`, `tls.crt`) of the `server`
/// (`database`, `API`) at `now`, if anything (nothing to say offline, where the values are
/// placeholders).
pub(super) fn tls_secret_problem(secret: &Secret, server: &str, now: Timestamp) -> Option<String> {
    use crate::desired::certs::{expiry, CA_CERT_KEY, SERVER_CERT_KEY};
    if is_placeholder(secret) {
        return None;
    }
    let text = |key: &str| {
        secret_value(secret, key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    match expiry(&text(CA_CERT_KEY), &text(SERVER_CERT_KEY)) {
        None => Some(format!(
            "the {server} TLS Secret holds no valid CA and server certificate (issuing failed)"
        )),
        Some((not_after, _)) if not_after <= now => Some(format!(
            "the {server} server certificate expired at {not_after}"
        )),
        Some(_) => None,
    }
}

pub(super) fn pod_spec_of_sts(s: &k8s_openapi::api::apps::v1::StatefulSet) -> Option<&PodSpec> {
    s.spec.as_ref()?.template.spec.as_ref()
}

pub(super) fn command_line(c: &Container) -> String {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn api_container(children: &Children) -> Option<&Container> {
    children
        .api_deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "api")
}

/// Effective value of a setting of the API container: the last literal env var of that name,
/// else the ConfigMap.
pub(super) fn api_setting(children: &Children, name: &str) -> Option<String> {
    let from_env = api_container(children).and_then(|c| {
        c.env
            .iter()
            .flatten()
            .rfind(|e| e.name == name)
            .map(|e: &EnvVar| e.value.clone().unwrap_or_default())
    });
    from_env.or_else(|| {
        children
            .api_config
            .data
            .as_ref()
            .and_then(|d| d.get(name).cloned())
    })
}

pub(super) fn env_overridden(children: &Children, name: &str) -> bool {
    api_container(children).is_some_and(|c| c.env.iter().flatten().any(|e| e.name == name))
}

pub(super) fn int_setting(children: &Children, name: &str) -> Result<i64, String> {
    let raw = api_setting(children, name).ok_or_else(|| format!("{name} is not set"))?;
    raw.trim()
        .parse::<i64>()
        .map_err(|_| format!("{name} is not an integer"))
}

/// Every workload pod spec of the platform with its name: the API Deployment, the database and
/// cache StatefulSets, the backup CronJob's job template and the on-demand backup Job as built,
/// and (with live evidence) the backup Jobs in the cluster. A live Job is what actually runs, so
/// it replaces the desired Job of the same name.
pub(super) fn workloads<'a>(
    children: &'a Children,
    live: Option<&'a LiveEvidence>,
) -> Vec<(String, &'a PodSpec)> {
    let mut out = Vec::new();
    let d = &children.api_deployment;
    if let Some(s) = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()) {
        out.push((
            format!("Deployment {}", d.metadata.name.clone().unwrap_or_default()),
            s,
        ));
    }
    let stses = [
        children.postgres.as_ref().map(|p| &p.stateful_set),
        children.redis.as_ref().map(|r| &r.stateful_set),
    ];
    for sts in stses.into_iter().flatten() {
        if let Some(s) = pod_spec_of_sts(sts) {
            out.push((
                format!(
                    "StatefulSet {}",
                    sts.metadata.name.clone().unwrap_or_default()
                ),
                s,
            ));
        }
    }
    if let Some(cj) = &children.backup.cron_job {
        let template = cj
            .spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .and_then(|s| s.template.spec.as_ref());
        if let Some(s) = template {
            out.push((
                format!("CronJob {}", cj.metadata.name.clone().unwrap_or_default()),
                s,
            ));
        }
    }
    let live_jobs: &[Job] = live.map(|l| l.backup_jobs.as_slice()).unwrap_or_default();
    let desired_jobs = children.backup.on_demand_job.iter().filter(|d| {
        !live_jobs
            .iter()
            .any(|l| l.metadata.name.is_some() && l.metadata.name == d.metadata.name)
    });
    for job in desired_jobs.chain(live_jobs) {
        if let Some(s) = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()) {
            out.push((
                format!("Job {}", job.metadata.name.clone().unwrap_or_default()),
                s,
            ));
        }
    }
    out
}

pub(super) fn all_containers(s: &PodSpec) -> impl Iterator<Item = &Container> {
    s.init_containers
        .iter()
        .flatten()
        .chain(s.containers.iter())
}

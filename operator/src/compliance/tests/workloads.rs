//! Tests of the isolation and hardening rules: network policies, pod security and resource
//! limits, with the backup pods (desired and live) among the workloads.

use super::*;

#[test]
fn network_policies_present_and_unmodified() {
    assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::NetworkPolicyDefaultDeny,
        Verdict::Pass,
    );
    let off = |s: &mut HealthcarePlatformSpec| s.network_policy.enabled = false;
    assert_verdict(
        &run(&audit(off), no_change),
        RuleId::NetworkPolicyDefaultDeny,
        Verdict::Fail,
    );
    let a = run(&enforce(off), no_change);
    assert_verdict(&a, RuleId::NetworkPolicyDefaultDeny, Verdict::Pass);
    assert_eq!(a.overrides[0].field, "spec.networkPolicy.enabled");
    let a = run(&audit(|_| {}), |_, ev| {
        ev.network_policies.retain(|n| {
            !n.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .ends_with("default-deny")
        });
    });
    let m = assert_verdict(&a, RuleId::NetworkPolicyDefaultDeny, Verdict::Fail);
    assert!(m.contains("demo-default-deny is missing"), "{m}");
    let a = run(&audit(|_| {}), |_, ev| {
        if let Some(spec) = ev.network_policies[0].spec.as_mut() {
            spec.ingress = None;
            spec.policy_types = Some(vec!["Egress".into()]);
        }
    });
    let m = assert_verdict(&a, RuleId::NetworkPolicyDefaultDeny, Verdict::Fail);
    assert!(m.contains("modified"), "{m}");
}

#[test]
fn pod_security_and_resource_limits() {
    let a = run(&audit(|_| {}), no_change);
    assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Pass);
    assert_verdict(&a, RuleId::ResourceLimits, Verdict::Pass);
    let a = run(&audit(|_| {}), |c, _| {
        let spec = c
            .api_deployment
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap();
        let api = &mut spec.containers[0];
        if let Some(sc) = api.security_context.as_mut() {
            sc.allow_privilege_escalation = Some(true);
        }
        if let Some(r) = api.resources.as_mut() {
            r.limits = None;
        }
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Fail);
    assert!(m.contains("allowPrivilegeEscalation"), "{m}");
    let m = assert_verdict(&a, RuleId::ResourceLimits, Verdict::Fail);
    assert!(m.contains("limits.cpu"), "{m}");
}

fn backup_pod(
    job: &mut k8s_openapi::api::batch::v1::JobSpec,
) -> &mut k8s_openapi::api::core::v1::PodSpec {
    job.template.spec.as_mut().unwrap()
}

/// What a pod template without hardening looks like (e.g. a CronJob edited by hand before the
/// operator restored it, or a Job created with `kubectl create job`).
fn unharden(pod: &mut k8s_openapi::api::core::v1::PodSpec) {
    pod.security_context = None;
    let c = &mut pod.containers[0];
    c.security_context = None;
    c.resources = None;
}

#[test]
fn backup_pods_are_workloads_desired_and_live() {
    let p = audit(|_| {});
    // API Deployment, Postgres and Redis StatefulSets and the backup CronJob's job template.
    let m = assert_verdict(
        &run(&p, no_change),
        RuleId::PodSecurityRestricted,
        Verdict::Pass,
    );
    assert!(m.starts_with("4 workload(s)"), "{m}");
    let m = assert_verdict(
        &assess_static(&p, now()),
        RuleId::ResourceLimits,
        Verdict::Pass,
    );
    assert!(m.contains("of 4 workload(s)"), "{m}");

    // The desired CronJob's pod template not hardened.
    let a = run(&p, |c, _| {
        let cj = c.backup.cron_job.as_mut().unwrap().spec.as_mut().unwrap();
        unharden(backup_pod(cj.job_template.spec.as_mut().unwrap()));
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Fail);
    assert!(m.contains("CronJob demo-backup: pod runAsNonRoot"), "{m}");
    assert!(
        m.contains("CronJob demo-backup/backup: runAsNonRoot"),
        "{m}"
    );
    let m = assert_verdict(&a, RuleId::ResourceLimits, Verdict::Fail);
    assert!(
        m.contains("CronJob demo-backup/backup: missing requests.cpu"),
        "{m}"
    );
    assert!(!m.contains("Deployment"), "{m}");

    // The desired on-demand Job (not created yet: no live Job of that name).
    let mut pending = p.clone();
    pending.backup_now = Some("tok1".into());
    let job_name = p
        .names
        .backup_now_job(&crate::desired::backup::token_hash("tok1"));
    let a = run(&pending, |c, ev| {
        ev.backup_jobs.clear();
        unharden(backup_pod(
            c.backup
                .on_demand_job
                .as_mut()
                .unwrap()
                .spec
                .as_mut()
                .unwrap(),
        ));
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Fail);
    assert!(
        m.contains(&format!("Job {job_name}: pod runAsNonRoot")),
        "{m}"
    );
    assert!(!m.contains("CronJob"), "{m}");
    assert_verdict(&a, RuleId::ResourceLimits, Verdict::Fail);
    // Offline too.
    let mut children = children_of(&pending);
    unharden(backup_pod(
        children
            .backup
            .on_demand_job
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap(),
    ));
    let offline = assess(&pending, &children, None, Vec::new(), now());
    assert_verdict(&offline, RuleId::PodSecurityRestricted, Verdict::Fail);

    // Once it exists, the live Job is what runs and replaces the desired one of the same name.
    let a = run(&pending, |c, ev| {
        assert_eq!(ev.backup_jobs.len(), 1);
        unharden(backup_pod(
            c.backup
                .on_demand_job
                .as_mut()
                .unwrap()
                .spec
                .as_mut()
                .unwrap(),
        ));
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Pass);
    assert!(m.starts_with("5 workload(s)"), "{m}");
    let a = run(&pending, |_, ev| {
        unharden(backup_pod(ev.backup_jobs[0].spec.as_mut().unwrap()));
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Fail);
    assert!(
        m.contains(&format!("Job {job_name}: pod runAsNonRoot")),
        "{m}"
    );

    // A live scheduled Job with a privileged, limit-less container fails both rules though the
    // desired CronJob is hardened.
    let a = run(&p, |c, ev| {
        let mut job = k8s_openapi::api::batch::v1::Job {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("demo-backup-29000001".into()),
                ..Default::default()
            },
            spec: c
                .backup
                .cron_job
                .as_ref()
                .and_then(|cj| cj.spec.as_ref())
                .and_then(|s| s.job_template.spec.clone()),
            status: None,
        };
        let pod = backup_pod(job.spec.as_mut().unwrap());
        let sc = pod.containers[0].security_context.as_mut().unwrap();
        sc.privileged = Some(true);
        pod.containers[0].resources = None;
        ev.backup_jobs = vec![job];
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Fail);
    assert!(
        m.contains("Job demo-backup-29000001/backup: privileged"),
        "{m}"
    );
    assert!(!m.contains("CronJob"), "{m}");
    let m = assert_verdict(&a, RuleId::ResourceLimits, Verdict::Fail);
    assert!(
        m.contains("Job demo-backup-29000001/backup: missing"),
        "{m}"
    );
}

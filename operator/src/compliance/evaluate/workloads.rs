//! Isolation and hardening rules: `network-policy-default-deny` (desired and live
//! NetworkPolicies), `pod-security-restricted` and `resource-limits` (every workload pod).

use super::evidence::{all_containers, workloads};
use super::{fail, pass, Check, Inputs};
use crate::desired::security::container_violations;

pub(super) fn network_policy_default_deny(i: &Inputs<'_>) -> Check {
    let p = i.platform;
    let desired = &i.children.network_policies;
    let deny_name = p.names.netpol_default_deny();
    let Some(deny) = desired
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(deny_name.as_str()))
    else {
        return fail("no default-deny NetworkPolicy (networkPolicy.enabled is false)");
    };
    let spec = deny.spec.clone().unwrap_or_default();
    let types = spec.policy_types.clone().unwrap_or_default();
    let denies_all = types.iter().any(|t| t == "Ingress")
        && types.iter().any(|t| t == "Egress")
        && spec.ingress.as_ref().is_none_or(|r| r.is_empty())
        && spec.egress.as_ref().is_none_or(|r| r.is_empty());
    let selects_platform = spec.pod_selector.as_ref().is_some_and(|s| {
        s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
            && s.match_labels.clone().unwrap_or_default() == p.names.platform_selector()
    });
    if !denies_all || !selects_platform {
        return fail(
            "the default-deny NetworkPolicy does not deny both directions for every platform pod",
        );
    }
    let Some(live) = i.live else {
        return pass(format!(
            "{} desired NetworkPolicies including default-deny",
            desired.len()
        ));
    };
    let mut problems = Vec::new();
    for want in desired {
        let name = want.metadata.name.clone().unwrap_or_default();
        match live
            .network_policies
            .iter()
            .find(|l| l.metadata.name.as_deref() == Some(name.as_str()))
        {
            None => problems.push(format!("{name} is missing")),
            Some(got)
                if !crate::apply::same_network_policy_spec(
                    got.spec.as_ref(),
                    want.spec.as_ref(),
                ) =>
            {
                problems.push(format!("{name} was modified"))
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        pass(format!(
            "{} NetworkPolicies present and unmodified",
            desired.len()
        ))
    } else {
        fail(format!(
            "NetworkPolicies differ from the desired ones: {}",
            problems.join("; ")
        ))
    }
}

pub(super) fn pod_security(i: &Inputs<'_>) -> Check {
    let mut problems = Vec::new();
    let wl = workloads(i.children, i.live);
    for (name, spec) in &wl {
        let psc = spec.security_context.clone().unwrap_or_default();
        if psc.run_as_non_root != Some(true) {
            problems.push(format!("{name}: pod runAsNonRoot"));
        }
        if spec.host_network == Some(true)
            || spec.host_pid == Some(true)
            || spec.host_ipc == Some(true)
        {
            problems.push(format!("{name}: host namespaces"));
        }
        for c in all_containers(spec) {
            let v: Vec<String> = container_violations(c)
                .into_iter()
                .filter(|v| {
                    !v.starts_with("requests.")
                        && !v.starts_with("limits.")
                        && !v.starts_with("image")
                })
                .collect();
            if !v.is_empty() {
                problems.push(format!("{name}/{}: {}", c.name, v.join(", ")));
            }
            if c.security_context.as_ref().and_then(|s| s.privileged) == Some(true) {
                problems.push(format!("{name}/{}: privileged", c.name));
            }
        }
    }
    if problems.is_empty() {
        pass(format!(
            "{} workload(s) meet the restricted profile",
            wl.len()
        ))
    } else {
        fail(format!("not restricted: {}", problems.join("; ")))
    }
}

pub(super) fn resource_limits(i: &Inputs<'_>) -> Check {
    let mut problems = Vec::new();
    let wl = workloads(i.children, i.live);
    for (name, spec) in &wl {
        for c in all_containers(spec) {
            let v: Vec<String> = container_violations(c)
                .into_iter()
                .filter(|v| v.starts_with("requests.") || v.starts_with("limits."))
                .collect();
            if !v.is_empty() {
                problems.push(format!("{name}/{}: missing {}", c.name, v.join(", ")));
            }
        }
    }
    if problems.is_empty() {
        pass(format!(
            "every container of {} workload(s) has requests and limits",
            wl.len()
        ))
    } else {
        fail(problems.join("; "))
    }
}

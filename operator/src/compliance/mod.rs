//! Continuous compliance: a rule catalogue ([`catalogue`]), a pure evaluation ([`evaluate`]),
//! enforcement overrides ([`enforce`]), status/condition/event/metric computation ([`report`])
//! and the client of the API's self-report ([`self_report`]).
//!
//! In the reconcile: [`prepare`] (after validate, before build) applies `Enforce` overrides to
//! the spec the children are built from; after apply, [`assess`] evaluates the built children,
//! the live NetworkPolicies, `status.backup`, the backup Jobs and the API self-report; [`report`]
//! turns the result into `status.compliance`, the `Compliant` condition, Events and metrics.
//! `compliance-report` runs [`assess_static`] on a spec file without a cluster.

pub mod audit_chain;
pub mod catalogue;
pub mod cli;
pub mod enforce;
pub mod evaluate;
pub mod metrics;
pub mod report;
pub mod self_report;
pub mod stage;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::crd::{ComplianceException, ComplianceMode, ComplianceProfile};
use crate::desired::{build_children, ExistingSecrets, SecretGenerator};
use crate::validate::ValidatedPlatform;
pub use catalogue::{rule, rules_for, Rule, RuleId, Severity, RULES};
pub use enforce::Override;
pub use evaluate::{evaluate, ExceptionState, Inputs, LiveEvidence, RuleResult, Verdict};

/// The result of one compliance evaluation of a platform.
#[derive(Clone, Debug, Serialize)]
pub struct Assessment {
    pub profiles: Vec<ComplianceProfile>,
    pub mode: ComplianceMode,
    pub results: Vec<RuleResult>,
    /// Values overridden in `Enforce` mode (empty in `Audit` mode).
    pub overrides: Vec<Override>,
    pub exceptions: Vec<(ComplianceException, ExceptionState)>,
    /// The audit chain head seen in this evaluation's self-report.
    pub chain_head: Option<crate::crd::AuditChainHead>,
}

impl Assessment {
    pub fn failures(&self) -> impl Iterator<Item = &RuleResult> {
        self.results.iter().filter(|r| r.verdict == Verdict::Fail)
    }
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.verdict == Verdict::Pass)
            .count()
    }
    /// `Some(true)` when every rule passed (or is excepted), `Some(false)` on any failure,
    /// `None` when nothing failed but some rules could not be evaluated.
    pub fn compliant(&self) -> Option<bool> {
        if self.failures().next().is_some() {
            Some(false)
        } else if self
            .results
            .iter()
            .any(|r| r.verdict == Verdict::NotEvaluated)
        {
            None
        } else {
            Some(true)
        }
    }
}

/// Whether the operator enforces `rule` for this platform: compliance enabled, `Enforce` mode,
/// the rule is in a selected profile and has no active exception.
pub fn enforced(p: &ValidatedPlatform, rule_id: RuleId, now: Timestamp) -> bool {
    let c = &p.spec.compliance;
    c.enabled
        && c.mode == ComplianceMode::Enforce
        && rule(rule_id).applies_to(&c.profiles)
        && !evaluate::excepted_rules(&c.exceptions, now).contains(&rule_id)
}

/// Enforce stage: the platform the children must be built from, and what was overridden.
/// In `Audit` mode (or with compliance disabled) the platform is returned unchanged.
pub fn prepare(p: &ValidatedPlatform, now: Timestamp) -> (ValidatedPlatform, Vec<Override>) {
    let mut effective = p.clone();
    let overrides = enforce::enforce(&mut effective.spec, |r| enforced(p, r, now));
    (effective, overrides)
}

fn exception_states(
    p: &ValidatedPlatform,
    now: Timestamp,
) -> Vec<(ComplianceException, ExceptionState)> {
    p.spec
        .compliance
        .exceptions
        .iter()
        .map(|e| (e.clone(), evaluate::exception_state(e, now)))
        .collect()
}

/// Evaluates `effective` (the output of [`prepare`]) with its built children and live evidence.
pub fn assess(
    effective: &ValidatedPlatform,
    children: &crate::desired::Children,
    live: Option<&LiveEvidence>,
    overrides: Vec<Override>,
    now: Timestamp,
) -> Assessment {
    let results = evaluate(&Inputs {
        platform: effective,
        children,
        live,
        now,
    });
    let chain_head =
        live.and_then(|l| l.self_report.as_ref().ok())
            .map(|r| crate::crd::AuditChainHead {
                id: r.audit.chain_head_id,
                hash: r.audit.chain_head_hash.to_ascii_lowercase(),
            });
    Assessment {
        profiles: effective.spec.compliance.profiles.clone(),
        mode: effective.spec.compliance.mode,
        results,
        overrides,
        exceptions: exception_states(effective, now),
        chain_head,
    }
}

/// Offline evaluation of a spec as written (no enforcement, no cluster): what
/// `compliance-report` prints. Rules that need a cluster are `NotEvaluated`.
pub fn assess_static(p: &ValidatedPlatform, now: Timestamp) -> Assessment {
    let children = build_children(
        p,
        &ExistingSecrets::default(),
        &mut SecretGenerator::Placeholder,
    );
    assess(p, &children, None, Vec::new(), now)
}

#[cfg(test)]
mod tests;

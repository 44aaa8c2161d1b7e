//! From an [`Assessment`] to what users see: `status.compliance`, the `Compliant` condition,
//! Events for violations that appear or clear, and the `compliance-report` table / JSON.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{json, Value};

use super::{Assessment, ExceptionState, Verdict};
use crate::crd::{
    ComplianceExceptionStatus, ComplianceOverride, ComplianceRuleNote, ComplianceStatus,
    ComplianceViolation,
};

/// `status.compliance` for an assessment. `since` of a violation that was already failing is
/// kept from `previous`.
///
/// `lastEvaluated` is refreshed only when something else changed or the previous evaluation is
/// older than [`LAST_EVALUATED_REFRESH_SECONDS`]: the status patch of a reconcile triggers the
/// next reconcile, which must find nothing to write.
pub fn status(a: &Assessment, previous: Option<&ComplianceStatus>, now: &Time) -> ComplianceStatus {
    let mut new = fresh_status(a, previous, now);
    if let Some(prev) = previous {
        let mut same = prev.clone();
        same.last_evaluated = new.last_evaluated.clone();
        let recent = prev
            .last_evaluated
            .as_ref()
            .is_some_and(|t| now.0.duration_since(t.0).as_secs() < LAST_EVALUATED_REFRESH_SECONDS);
        if same == new && recent {
            new.last_evaluated = prev.last_evaluated.clone();
        }
    }
    new
}

/// Least age of `lastEvaluated` before an unchanged result refreshes it.
pub const LAST_EVALUATED_REFRESH_SECONDS: i64 = 60;

fn fresh_status(
    a: &Assessment,
    previous: Option<&ComplianceStatus>,
    now: &Time,
) -> ComplianceStatus {
    let violations = a
        .failures()
        .map(|r| ComplianceViolation {
            rule: r.rule.id.to_string(),
            severity: r.rule.severity.as_str().to_string(),
            message: r.message.clone(),
            since: Some(
                previous
                    .and_then(|p| p.violations.iter().find(|v| v.rule == r.rule.id))
                    .and_then(|v| v.since.clone())
                    .unwrap_or_else(|| now.clone()),
            ),
        })
        .collect();
    ComplianceStatus {
        profiles: a.profiles.clone(),
        mode: Some(a.mode),
        compliant: a.compliant(),
        passed: i32::try_from(a.passed()).unwrap_or(i32::MAX),
        total: i32::try_from(a.results.len()).unwrap_or(i32::MAX),
        violations,
        last_evaluated: Some(now.clone()),
        not_evaluated: a
            .results
            .iter()
            .filter(|r| r.verdict == Verdict::NotEvaluated)
            .map(|r| ComplianceRuleNote {
                rule: r.rule.id.to_string(),
                message: r.message.clone(),
            })
            .collect(),
        enforced: a
            .overrides
            .iter()
            .map(|o| ComplianceOverride {
                rule: o.rule.as_str().to_string(),
                field: o.field.clone(),
                from: o.from.clone(),
                to: o.to.clone(),
                message: o.message(),
            })
            .collect(),
        exceptions: a
            .exceptions
            .iter()
            .map(|(e, state)| {
                let (state, message) = match state {
                    ExceptionState::Active => (
                        "Active",
                        match a.results.iter().find(|r| r.rule.id == e.rule) {
                            Some(r) if r.verdict == Verdict::Excepted => {
                                "applies: the rule's violation is accepted and not enforced".to_string()
                            }
                            Some(_) => "applies: the rule is not enforced (it currently passes or is not evaluated)".to_string(),
                            None => "the rule is not part of the selected profiles".to_string(),
                        },
                    ),
                    ExceptionState::Expired => (
                        "Expired",
                        format!(
                            "expired at {}: no longer applies; the rule is evaluated and enforced again",
                            e.expires.0
                        ),
                    ),
                    ExceptionState::UnknownRule => (
                        "UnknownRule",
                        "names no rule of the catalogue; it has no effect".to_string(),
                    ),
                };
                ComplianceExceptionStatus {
                    rule: e.rule.clone(),
                    expires: e.expires.clone(),
                    state: state.to_string(),
                    message,
                }
            })
            .collect(),
        audit_chain_head: a
            .chain_head
            .clone()
            .or_else(|| previous.and_then(|p| p.audit_chain_head.clone())),
    }
}

/// The `Compliant` condition: (status, reason, message).
pub fn condition(a: &Assessment) -> (&'static str, &'static str, String) {
    let failures: Vec<&str> = a.failures().map(|r| r.rule.id).collect();
    let not_evaluated: Vec<&str> = a
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::NotEvaluated)
        .map(|r| r.rule.id)
        .collect();
    let enforced = if a.overrides.is_empty() {
        String::new()
    } else {
        format!(
            "; {} value(s) overridden by Enforce mode (see status.compliance.enforced)",
            a.overrides.len()
        )
    };
    match a.compliant() {
        Some(false) => (
            "False",
            "ViolationsFound",
            format!(
                "{} of {} rules fail: {}{enforced}",
                failures.len(),
                a.results.len(),
                failures.join(", ")
            ),
        ),
        None => (
            "Unknown",
            "NotAllRulesEvaluated",
            format!(
                "no rule fails, but {} rule(s) could not be evaluated: {}{enforced}",
                not_evaluated.len(),
                not_evaluated.join(", ")
            ),
        ),
        Some(true) => (
            "True",
            "AllRulesPassed",
            format!("all {} rules pass{enforced}", a.results.len()),
        ),
    }
}

/// Sets a condition in `conditions`, keeping `lastTransitionTime` when the status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let transition = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let new = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(slot) => *slot = new,
        None => conditions.push(new),
    }
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComplianceEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// Events for violations that appeared or cleared and for new enforcement overrides.
pub fn events(previous: Option<&ComplianceStatus>, new: &ComplianceStatus) -> Vec<ComplianceEvent> {
    let before: BTreeSet<&str> = previous
        .map(|p| p.violations.iter().map(|v| v.rule.as_str()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for v in &new.violations {
        if !before.contains(v.rule.as_str()) {
            out.push(ComplianceEvent {
                warning: true,
                reason: "ComplianceViolation",
                note: format!("rule {} ({}) fails: {}", v.rule, v.severity, v.message),
            });
        }
    }
    let after: BTreeSet<&str> = new.violations.iter().map(|v| v.rule.as_str()).collect();
    for rule in before.difference(&after) {
        out.push(ComplianceEvent {
            warning: false,
            reason: "ComplianceViolationCleared",
            note: format!("rule {rule} no longer fails"),
        });
    }
    let enforced_before: BTreeSet<(&str, &str)> = previous
        .map(|p| {
            p.enforced
                .iter()
                .map(|o| (o.field.as_str(), o.to.as_str()))
                .collect()
        })
        .unwrap_or_default();
    for o in &new.enforced {
        if !enforced_before.contains(&(o.field.as_str(), o.to.as_str())) {
            out.push(ComplianceEvent {
                warning: true,
                reason: "ComplianceEnforced",
                note: o.message.clone(),
            });
        }
    }
    out
}

/// The assessment as a text table (one row per rule).
pub fn table(a: &Assessment) -> String {
    let mut out = String::new();
    let width = a
        .results
        .iter()
        .map(|r| r.rule.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:<width$}  {:<12}  {:<8}  MESSAGE",
        "RULE", "RESULT", "SEVERITY"
    );
    for r in &a.results {
        let _ = writeln!(
            out,
            "{:<width$}  {:<12}  {:<8}  {}",
            r.rule.id,
            r.verdict.as_str(),
            r.rule.severity.as_str(),
            r.message
        );
    }
    for (e, state) in &a.exceptions {
        let _ = writeln!(
            out,
            "exception {} (expires {}): {state:?}",
            e.rule, e.expires.0
        );
    }
    let verdict = match a.compliant() {
        Some(true) => "COMPLIANT".to_string(),
        Some(false) => format!("NOT COMPLIANT ({} violation(s))", a.failures().count()),
        None => "NO VIOLATIONS (some rules need a running platform)".to_string(),
    };
    let profiles: Vec<String> = a.profiles.iter().map(|p| format!("{p:?}")).collect();
    let _ = writeln!(
        out,
        "{verdict}: {} passed of {} rules; profiles {}, mode {:?}",
        a.passed(),
        a.results.len(),
        profiles.join(","),
        a.mode
    );
    out
}

/// The assessment as JSON for `-o json`.
pub fn json(a: &Assessment) -> Value {
    json!({
        "profiles": a.profiles,
        "mode": a.mode,
        "compliant": a.compliant(),
        "passed": a.passed(),
        "total": a.results.len(),
        "rules": a.results.iter().map(|r| json!({
            "rule": r.rule.id,
            "title": r.rule.title,
            "clauses": r.rule.clauses,
            "severity": r.rule.severity,
            "result": r.verdict.as_str(),
            "message": r.message,
        })).collect::<Vec<_>>(),
        "exceptions": a.exceptions.iter().map(|(e, s)| json!({
            "rule": e.rule, "expires": e.expires, "state": format!("{s:?}"),
        })).collect::<Vec<_>>(),
    })
}

//! Audit rules: `audit-retention`, `audit-chain-intact` and `audit-write-failures`.

use caduceus_contract::settings;

use super::evidence::{int_setting, self_report};
use super::{fail, not_evaluated, pass, Check, Inputs, MIN_AUDIT_RETENTION_DAYS};
use crate::crd::AuditChainHead;

pub(super) fn audit_retention(i: &Inputs<'_>) -> Check {
    let configured = match int_setting(i.children, settings::AUDIT_RETENTION_DAYS.name) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let min = i64::from(MIN_AUDIT_RETENTION_DAYS);
    if configured < min {
        return fail(format!(
            "audit retention is {configured} days (HIPAA needs at least {min})"
        ));
    }
    if let Ok(r) = self_report(i) {
        if r.audit.retention_days < min {
            return fail(format!(
                "the API reports audit retention of {} days (HIPAA needs at least {min})",
                r.audit.retention_days
            ));
        }
    }
    pass(format!("audit retention is {configured} days"))
}

pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

pub(super) fn audit_chain_intact(i: &Inputs<'_>) -> Check {
    let r = match self_report(i) {
        Ok(r) => r,
        Err(e) => return not_evaluated(e),
    };
    let head = AuditChainHead {
        id: r.audit.chain_head_id,
        hash: r.audit.chain_head_hash.to_ascii_lowercase(),
    };
    if head.id < 0 || !is_sha256_hex(&head.hash) {
        return fail("the API reports a malformed audit chain head");
    }
    let previous = i.live.and_then(|l| l.previous_chain_head.as_ref());
    match previous {
        Some(prev) if head.id < prev.id => fail(format!(
            "the audit chain head went back from id {} to {}: audit records were removed",
            prev.id, head.id
        )),
        Some(prev) if head.id == prev.id && !head.hash.eq_ignore_ascii_case(&prev.hash) => {
            fail(format!(
                "the hash of audit chain head {} changed: the audit trail was rewritten",
                head.id
            ))
        }
        Some(_) | None => pass(format!(
            "audit chain intact up to head {} (no removal or rewrite seen)",
            head.id
        )),
    }
}

pub(super) fn audit_write_failures(i: &Inputs<'_>) -> Check {
    match self_report(i) {
        Err(e) => not_evaluated(e),
        Ok(r) if r.audit.write_failures == 0 => pass("no audit write failures"),
        Ok(r) => fail(format!(
            "the API reports {} audit write failure(s) since it started",
            r.audit.write_failures
        )),
    }
}

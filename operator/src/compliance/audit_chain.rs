//! Audit chain checkpoints kept outside the database (issue #15, "an audit trail that survives
//! its database owner"): the operator records the API's chain head `(id, hash)` once an hour
//! and keeps the last [`KEEP`]; on every evaluation it passes them to the self-report
//! (`GET /internal/compliance?checkpoint=<id>:<hex hash>...`), which compares them with the rows
//! as they are now, and [`judge`] turns the answer into the `audit-chain-intact` verdict.
//!
//! Why this catches what the head comparison alone cannot: a chain hash commits to every row
//! before it, so rewriting any row at or before a checkpoint changes the checkpoint row's hash
//! (with the keyed chain an owner cannot even produce valid hashes); appending one event
//! afterwards moves the head on but leaves the checkpoint's `mismatch`.
//!
//! Pure: the caller passes the current time; kept small (24 entries of id, hash and time).

use caduceus_contract::self_report::{AuditCheckpoint, CheckpointCheck, CheckpointStatus};
use caduceus_contract::settings::SIX_YEARS_DAYS;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// A new checkpoint at most this often.
pub const INTERVAL: SignedDuration = SignedDuration::from_hours(1);
/// Checkpoints kept (a day at one per hour; the newest alone covers all history before it).
pub const KEEP: usize = 24;

/// A chain head the operator saw, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedCheckpoint {
    pub id: i64,
    pub hash: String,
    pub recorded_at: Timestamp,
}

impl RecordedCheckpoint {
    pub fn checkpoint(&self) -> AuditCheckpoint {
        AuditCheckpoint {
            id: self.id,
            hash: self.hash.clone(),
        }
    }
}

/// The checkpoints to keep after seeing `head` at `now`: `head` is added when the newest is
/// older than [`INTERVAL`] (or there is none) and the head moved on; the oldest beyond
/// [`KEEP`] are dropped. The empty chain (id 0) is not recorded.
pub fn record(
    previous: &[RecordedCheckpoint],
    head: &AuditCheckpoint,
    now: Timestamp,
) -> Vec<RecordedCheckpoint> {
    let mut out = previous.to_vec();
    let due = match out.last() {
        None => true,
        Some(last) => head.id > last.id && now.duration_since(last.recorded_at) >= INTERVAL,
    };
    if head.id > 0 && due {
        out.push(RecordedCheckpoint {
            id: head.id,
            hash: head.hash.to_ascii_lowercase(),
            recorded_at: now,
        });
    }
    let excess = out.len().saturating_sub(KEEP);
    out.drain(..excess);
    out
}

/// Judges the recorded checkpoints against the head and the API's comparison (`checks`, from
/// the self-report; empty from an API that does not compare them). `Ok(message)` when nothing
/// contradicts them, `Err(message)` naming the first checkpoint history moved away from.
/// Messages carry ids and times only.
pub fn judge(
    recorded: &[RecordedCheckpoint],
    checks: &[CheckpointCheck],
    head: &AuditCheckpoint,
    now: Timestamp,
) -> Result<String, String> {
    let retention = SignedDuration::from_hours(24 * i64::from(SIX_YEARS_DAYS));
    let mut compared = 0usize;
    for c in recorded {
        let at = c.recorded_at;
        if c.id > head.id {
            return Err(format!(
                "the audit chain head {} is below checkpoint {} (recorded {at}): audit records were removed",
                head.id, c.id
            ));
        }
        if c.id == head.id && !c.hash.eq_ignore_ascii_case(&head.hash) {
            return Err(format!(
                "the hash of audit row {} changed since checkpoint {at}: the audit trail was rewritten",
                c.id
            ));
        }
        match checks.iter().find(|k| k.id == c.id).map(|k| k.status) {
            Some(CheckpointStatus::Mismatch) => {
                return Err(format!(
                    "audit history up to row {} changed since checkpoint {at}: the audit trail was rewritten",
                    c.id
                ))
            }
            Some(CheckpointStatus::Missing) => {
                return Err(format!(
                    "audit row {} of checkpoint {at} is missing: audit records were removed",
                    c.id
                ))
            }
            Some(CheckpointStatus::Purged) if now.duration_since(at) < retention => {
                return Err(format!(
                    "audit row {} of checkpoint {at} was purged before its six-year retention",
                    c.id
                ))
            }
            Some(_) => compared += 1,
            None => {}
        }
    }
    Ok(if compared > 0 {
        format!(
            "audit chain intact up to head {}: {compared} checkpoint(s) kept outside the database match",
            head.id
        )
    } else {
        format!(
            "audit chain intact up to head {} (no removal or rewrite seen)",
            head.id
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }
    fn cp(id: i64, c: char) -> AuditCheckpoint {
        AuditCheckpoint { id, hash: h(c) }
    }
    fn t(hours: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap() + SignedDuration::from_hours(hours)
    }
    fn rec(id: i64, c: char, hours: i64) -> RecordedCheckpoint {
        RecordedCheckpoint {
            id,
            hash: h(c),
            recorded_at: t(hours),
        }
    }
    fn check(id: i64, status: CheckpointStatus) -> CheckpointCheck {
        CheckpointCheck { id, status }
    }

    #[test]
    fn one_checkpoint_an_hour_the_last_24_kept() {
        let mut kept = record(&[], &cp(0, '0'), t(0));
        assert!(kept.is_empty(), "the empty chain is not a checkpoint");
        kept = record(&kept, &cp(10, 'a'), t(0));
        assert_eq!(kept, vec![rec(10, 'a', 0)]);
        // within the hour, or the head did not move: nothing new
        assert_eq!(
            record(&kept, &cp(12, 'b'), t(0) + SignedDuration::from_mins(59)),
            kept
        );
        assert_eq!(record(&kept, &cp(10, 'a'), t(2)), kept);
        for hour in 1..=30 {
            kept = record(&kept, &cp(10 + hour, 'b'), t(hour));
        }
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept.last().unwrap().id, 40);
        assert_eq!(kept[0].id, 40 - KEEP as i64 + 1);
    }

    #[test]
    fn rewritten_history_and_one_appended_event_fail() {
        // checkpoint at row 10; the owner rewrites rows 1..10 and one event is appended: the head
        // (11) moved on, which the head comparison alone accepted; the API reports a mismatch
        let recorded = [rec(10, 'a', 0)];
        let head = cp(11, 'c');
        let err = judge(
            &recorded,
            &[check(10, CheckpointStatus::Mismatch)],
            &head,
            t(1),
        )
        .unwrap_err();
        assert!(err.contains("rewritten") && err.contains("row 10"), "{err}");
        let ok = judge(
            &recorded,
            &[check(10, CheckpointStatus::Match)],
            &head,
            t(1),
        )
        .unwrap();
        assert!(ok.contains("1 checkpoint(s)"), "{ok}");
    }

    #[test]
    fn removed_rows_and_early_purges_fail() {
        let recorded = [rec(10, 'a', 0), rec(20, 'b', 1)];
        // head below a checkpoint
        assert!(judge(&recorded, &[], &cp(15, 'c'), t(2))
            .unwrap_err()
            .contains("removed"));
        // same head id, other hash (an API that does not compare checkpoints)
        assert!(judge(&recorded, &[], &cp(20, 'x'), t(2))
            .unwrap_err()
            .contains("rewritten"));
        // a row gone behind an anchor within six years: not a retention purge
        let purged = [
            check(10, CheckpointStatus::Purged),
            check(20, CheckpointStatus::Match),
        ];
        assert!(judge(&recorded, &purged, &cp(25, 'c'), t(3))
            .unwrap_err()
            .contains("before its six-year retention"));
        // ... after six years it is
        let later = t(24 * i64::from(SIX_YEARS_DAYS) + 1);
        assert!(judge(&recorded, &purged, &cp(25, 'c'), later).is_ok());
        let missing = [check(10, CheckpointStatus::Missing)];
        assert!(judge(&recorded, &missing, &cp(25, 'c'), t(3))
            .unwrap_err()
            .contains("missing"));
    }

    #[test]
    fn without_checkpoints_or_comparisons_the_head_rules_still_apply() {
        assert!(judge(&[], &[], &cp(5, 'a'), t(0)).is_ok());
        assert!(judge(&[rec(5, 'a', 0)], &[], &cp(6, 'b'), t(1)).is_ok());
    }
}

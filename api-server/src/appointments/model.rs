//! Appointment types: the status and its transitions, request and response bodies with their
//! validation, and the stored row (its `reason` encrypted) as [`crate::access`] reads it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::access::{Need, PatientScoped, Resource};
use crate::crypto::{Aad, KeyRing};
use crate::error::{check_text, validated, Error, FieldError, Validate};
use crate::rbac::PatientAccess;

const TABLE: &str = "appointments";
/// Longest bookable appointment.
pub const MAX_DURATION_HOURS: i64 = 12;
/// Longest `reason`, in characters.
pub const REASON_MAX_CHARS: usize = 1000;

/// Appointment status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Booked,
    Arrived,
    Fulfilled,
    Cancelled,
    Noshow,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Booked,
        Status::Arrived,
        Status::Fulfilled,
        Status::Cancelled,
        Status::Noshow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Booked => "booked",
            Status::Arrived => "arrived",
            Status::Fulfilled => "fulfilled",
            Status::Cancelled => "cancelled",
            Status::Noshow => "noshow",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The transition table in the module docs.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Booked, Arrived)
                | (Booked, Cancelled)
                | (Booked, Noshow)
                | (Arrived, Fulfilled)
                | (Arrived, Cancelled)
        )
    }

    /// Statuses reachable from `self`.
    pub fn next(self) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|n| self.can_become(*n))
            .map(Status::as_str)
            .collect()
    }
}

pub(super) fn transition_conflict(from: Status, to: Status) -> Error {
    let mut ext = Map::new();
    ext.insert("from".into(), json!(from.as_str()));
    ext.insert("to".into(), json!(to.as_str()));
    ext.insert("allowed".into(), json!(from.next()));
    Error::Conflict {
        detail: format!(
            "an appointment cannot change from {} to {}",
            from.as_str(),
            to.as_str()
        ),
        extensions: ext,
    }
}

/// `POST /appointments` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAppointment {
    pub patient_id: Uuid,
    /// An active physician or nurse account.
    pub practitioner_id: Uuid,
    /// RFC 3339 start (inclusive).
    pub start: DateTime<Utc>,
    /// RFC 3339 end (exclusive); after `start`, at most 12 hours later, in the future.
    pub end: DateTime<Utc>,
    /// Reason for the visit (PHI, encrypted at rest; 1 to 1000 characters).
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub reason: Option<String>,
}

pub(super) fn check_times(errs: &mut Vec<FieldError>, start: DateTime<Utc>, end: DateTime<Utc>) {
    if end <= start {
        errs.push(FieldError::new("end", "must be after start"));
    } else if end - start > Duration::hours(MAX_DURATION_HOURS) {
        errs.push(FieldError::new(
            "end",
            format!("must be at most {MAX_DURATION_HOURS} hours after start"),
        ));
    }
    if end <= Utc::now() {
        errs.push(FieldError::new("end", "must be in the future"));
    }
}

fn check_reason(errs: &mut Vec<FieldError>, reason: Option<&str>) {
    if let Some(r) = reason {
        check_text(errs, "reason", r, REASON_MAX_CHARS);
    }
}

impl Validate for NewAppointment {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        check_times(&mut errs, self.start, self.end);
        check_reason(&mut errs, self.reason.as_deref());
        validated(errs)
    }
}

/// `PATCH /appointments/{id}`: absent fields are unchanged. Rescheduling (`start`, `end`,
/// `practitioner_id`) is possible while the appointment is `booked`; `status` follows the
/// transition table; `reason` may be changed by the care team only.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppointmentPatch {
    pub practitioner_id: Option<Uuid>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub reason: Option<String>,
    pub status: Option<Status>,
}

impl AppointmentPatch {
    pub(super) fn reschedules(&self) -> bool {
        self.practitioner_id.is_some() || self.start.is_some() || self.end.is_some()
    }
}

impl Validate for AppointmentPatch {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if !self.reschedules() && self.reason.is_none() && self.status.is_none() {
            errs.push(FieldError::new("", "at least one field must be given"));
        }
        check_reason(&mut errs, self.reason.as_deref());
        validated(errs)
    }
}

/// An appointment as returned by the API. `reason` is present only with `access: "full"`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Appointment {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub practitioner_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: Status,
    /// `full` (care team, the patient) or `demographics` (schedule only, no reason).
    pub access: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Stored row (+ the caller's care-team flag for the appointment's patient).
#[derive(Debug, FromRow)]
pub(super) struct AppointmentRow {
    pub(super) id: Uuid,
    pub(super) patient_id: Uuid,
    pub(super) practitioner_id: Uuid,
    pub(super) start_at: DateTime<Utc>,
    pub(super) end_at: DateTime<Utc>,
    pub(super) reason: Option<Vec<u8>>,
    pub(super) status: String,
    pub(super) created_by: Uuid,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) in_care_team: bool,
}

const COLUMNS: &str = "a.id, a.patient_id, a.practitioner_id, a.start_at, a.end_at, a.reason, \
    a.status, a.created_by, a.created_at, a.updated_at";

/// Appointments for [`crate::access::load`] and [`crate::access::list_query`]: the care team (and
/// the patient) opens them fully, others in the schedule without the reason; a patient account
/// asking for someone else's appointment gets `404`.
impl PatientScoped for AppointmentRow {
    const RESOURCE: Resource = Resource {
        resource_type: "appointment",
        columns: COLUMNS,
        from: "appointments a JOIN patients p ON p.id = a.patient_id",
        id_col: "a.id",
        patient_col: "a.patient_id",
        need: Need::Record,
    };

    fn scope(&self) -> (Uuid, bool) {
        (self.patient_id, self.in_care_team)
    }
}

fn reason_aad(id: Uuid) -> Aad<'static> {
    Aad {
        table: TABLE,
        row: id,
        column: "reason",
    }
}

pub(super) fn encrypt_reason(keys: &KeyRing, id: Uuid, reason: Option<&str>) -> Option<Vec<u8>> {
    reason.map(|r| keys.encrypt_str(reason_aad(id), r.trim()))
}

impl AppointmentRow {
    pub(super) fn status(&self) -> Result<Status, Error> {
        Status::parse(&self.status)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("unknown appointment status in row")))
    }

    pub(super) fn reason(&self, keys: &KeyRing) -> Result<Option<String>, Error> {
        Ok(self
            .reason
            .as_ref()
            .map(|ct| keys.decrypt_str(reason_aad(self.id), ct))
            .transpose()?)
    }

    /// Response body; decrypts the reason only when the caller may see it.
    pub(super) fn to_api(
        &self,
        keys: &KeyRing,
        access: PatientAccess,
    ) -> Result<Appointment, Error> {
        let clinical = access.clinical();
        Ok(Appointment {
            id: self.id,
            patient_id: self.patient_id,
            practitioner_id: self.practitioner_id,
            start: self.start_at,
            end: self.end_at,
            reason: if clinical { self.reason(keys)? } else { None },
            status: self.status()?,
            access: if clinical { "full" } else { "demographics" }.into(),
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        use Status::*;
        let allowed = [
            (Booked, Arrived),
            (Booked, Cancelled),
            (Booked, Noshow),
            (Arrived, Fulfilled),
            (Arrived, Cancelled),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
            assert_eq!(Status::parse(from.as_str()), Some(from));
        }
        for terminal in [Fulfilled, Cancelled, Noshow] {
            assert!(terminal.next().is_empty());
        }
    }

    #[test]
    fn time_rules() {
        let now = Utc::now();
        let mut errs = Vec::new();
        check_times(
            &mut errs,
            now + Duration::hours(2),
            now + Duration::hours(1),
        );
        assert_eq!(errs.len(), 1);
        let mut errs = Vec::new();
        check_times(
            &mut errs,
            now + Duration::hours(1),
            now + Duration::hours(14),
        );
        assert_eq!(errs[0].field, "end");
        let mut errs = Vec::new();
        check_times(
            &mut errs,
            now - Duration::hours(3),
            now - Duration::hours(2),
        );
        assert_eq!(errs.len(), 1);
        let mut errs = Vec::new();
        check_times(
            &mut errs,
            now + Duration::hours(1),
            now + Duration::hours(2),
        );
        assert!(errs.is_empty());
    }
}

//! Prescription types: request and response bodies with their validation, and the stored row
//! (every clinical field encrypted) as [`crate::access`] reads it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use super::interactions::Interaction;
use crate::access::{Need, PatientScoped, Resource};
use crate::crypto::{Aad, KeyRing};
use crate::error::{check_text, validated, Error, FieldError, Validate};

pub const TABLE: &str = "prescriptions";

/// Encrypted columns (for `rotate-keys`).
pub const ENC_COLUMNS: [&str; 8] = [
    "medication_name",
    "medication_code",
    "dose",
    "route",
    "frequency",
    "notes",
    "override_reason",
    "interactions",
];

/// Route of administration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteOfAdministration {
    Oral,
    Sublingual,
    Buccal,
    Intravenous,
    Intramuscular,
    Subcutaneous,
    Topical,
    Transdermal,
    Inhaled,
    Nasal,
    Ophthalmic,
    Otic,
    Rectal,
    Vaginal,
}

impl RouteOfAdministration {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Oral => "oral",
            Self::Sublingual => "sublingual",
            Self::Buccal => "buccal",
            Self::Intravenous => "intravenous",
            Self::Intramuscular => "intramuscular",
            Self::Subcutaneous => "subcutaneous",
            Self::Topical => "topical",
            Self::Transdermal => "transdermal",
            Self::Inhaled => "inhaled",
            Self::Nasal => "nasal",
            Self::Ophthalmic => "ophthalmic",
            Self::Otic => "otic",
            Self::Rectal => "rectal",
            Self::Vaginal => "vaginal",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(json!(s)).ok()
    }
}

/// The prescribed medication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Medication {
    /// Generic or brand name, e.g. `Warfarin 5 mg tablet` (1 to 200 characters, not blank).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub name: String,
    /// RxNorm code (ingredient RXCUIs are matched by the interaction check): 1 to 32 letters or digits.
    #[schema(pattern = r"^[A-Za-z0-9]{1,32}$")]
    pub code: Option<String>,
}

/// `POST /prescriptions` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPrescription {
    pub patient_id: Uuid,
    pub medication: Medication,
    /// e.g. `5 mg` (1 to 100 characters).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub dose: String,
    pub route: RouteOfAdministration,
    /// e.g. `once daily` (1 to 100 characters).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub frequency: String,
    /// 1 to 365.
    #[schema(minimum = 1, maximum = 365)]
    pub duration_days: i32,
    /// Up to 2000 characters.
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
    /// Required to prescribe despite a major interaction; audited as the purpose (1 to 500 characters).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub override_reason: Option<String>,
}

impl Validate for NewPrescription {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        check_text(&mut errs, "medication.name", &self.medication.name, 200);
        if let Some(c) = &self.medication.code {
            if c.is_empty() || c.len() > 32 || !c.chars().all(|ch| ch.is_ascii_alphanumeric()) {
                errs.push(FieldError::new(
                    "medication.code",
                    "must be 1 to 32 letters or digits",
                ));
            }
        }
        check_text(&mut errs, "dose", &self.dose, 100);
        check_text(&mut errs, "frequency", &self.frequency, 100);
        if !(1..=365).contains(&self.duration_days) {
            errs.push(FieldError::new("duration_days", "must be 1 to 365"));
        }
        if let Some(n) = &self.notes {
            if n.chars().count() > 2000 {
                errs.push(FieldError::new("notes", "must be at most 2000 characters"));
            }
        }
        if let Some(r) = &self.override_reason {
            check_text(&mut errs, "override_reason", r, 500);
        }
        validated(errs)
    }
}

/// Effective status: `active` (running), `completed` (duration elapsed), `discontinued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrescriptionStatus {
    Active,
    Completed,
    Discontinued,
}

/// A prescription as returned by the API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Prescription {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub prescriber_id: Uuid,
    pub medication: Medication,
    pub dose: String,
    pub route: RouteOfAdministration,
    pub frequency: String,
    pub duration_days: i32,
    pub notes: Option<String>,
    pub status: PrescriptionStatus,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Interactions found when it was prescribed (overridden majors, moderate/minor warnings).
    pub interactions: Vec<Interaction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discontinued_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discontinued_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
pub(super) struct PrescriptionRow {
    pub(super) id: Uuid,
    pub(super) patient_id: Uuid,
    pub(super) prescriber_id: Uuid,
    pub(super) medication_name: Vec<u8>,
    pub(super) medication_code: Option<Vec<u8>>,
    pub(super) dose: Vec<u8>,
    pub(super) route: Vec<u8>,
    pub(super) frequency: Vec<u8>,
    pub(super) notes: Option<Vec<u8>>,
    pub(super) override_reason: Option<Vec<u8>>,
    pub(super) interactions: Option<Vec<u8>>,
    pub(super) duration_days: i32,
    pub(super) status: String,
    pub(super) starts_at: DateTime<Utc>,
    pub(super) ends_at: DateTime<Utc>,
    pub(super) discontinued_at: Option<DateTime<Utc>>,
    pub(super) discontinued_by: Option<Uuid>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) in_care_team: bool,
}

const COLUMNS: &str = "r.id, r.patient_id, r.prescriber_id, r.medication_name, r.medication_code, \
    r.dose, r.route, r.frequency, r.notes, r.override_reason, r.interactions, r.duration_days, \
    r.status, r.starts_at, r.ends_at, r.discontinued_at, r.discontinued_by, r.created_at, r.updated_at";

/// Prescriptions for [`crate::access::load`] and [`crate::access::list_query`]: clinical, so only
/// full (or break-glass) access opens them.
impl PatientScoped for PrescriptionRow {
    const RESOURCE: Resource = Resource {
        resource_type: "prescription",
        columns: COLUMNS,
        from: "prescriptions r JOIN patients p ON p.id = r.patient_id",
        id_col: "r.id",
        patient_col: "r.patient_id",
        need: Need::Clinical,
    };

    fn scope(&self) -> (Uuid, bool) {
        (self.patient_id, self.in_care_team)
    }
}

pub(super) fn aad(id: Uuid, column: &str) -> Aad<'_> {
    Aad {
        table: TABLE,
        row: id,
        column,
    }
}

impl PrescriptionRow {
    pub(super) fn decrypt(&self, keys: &KeyRing) -> Result<Prescription, Error> {
        let d = |col: &str, v: &[u8]| keys.decrypt_str(aad(self.id, col), v);
        let d_opt = |col: &str, v: &Option<Vec<u8>>| v.as_ref().map(|b| d(col, b)).transpose();
        let malformed = || Error::internal(anyhow::anyhow!("malformed prescription row"));
        let interactions: Vec<Interaction> = match d_opt("interactions", &self.interactions)? {
            Some(s) => serde_json::from_str(&s).map_err(|_| malformed())?,
            None => Vec::new(),
        };
        let status = match self.status.as_str() {
            "discontinued" => PrescriptionStatus::Discontinued,
            "active" if self.ends_at <= Utc::now() => PrescriptionStatus::Completed,
            "active" => PrescriptionStatus::Active,
            _ => return Err(malformed()),
        };
        Ok(Prescription {
            id: self.id,
            patient_id: self.patient_id,
            prescriber_id: self.prescriber_id,
            medication: Medication {
                name: d("medication_name", &self.medication_name)?,
                code: d_opt("medication_code", &self.medication_code)?,
            },
            dose: d("dose", &self.dose)?,
            route: RouteOfAdministration::parse(&d("route", &self.route)?).ok_or_else(malformed)?,
            frequency: d("frequency", &self.frequency)?,
            duration_days: self.duration_days,
            notes: d_opt("notes", &self.notes)?,
            status,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            interactions,
            override_reason: d_opt("override_reason", &self.override_reason)?,
            discontinued_at: self.discontinued_at,
            discontinued_by: self.discontinued_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

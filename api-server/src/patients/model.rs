//! Patient request/response types and the encrypted row mapping.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::crypto::{Aad, CryptoError, KeyRing};
use crate::error::{check_text, FieldError};
pub use crate::store::patients::{Encrypted, PatientRow, ENC_COLUMNS, ROW_COLUMNS};

pub const TABLE: &str = "patients";

/// Administrative sex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

impl Sex {
    fn as_str(self) -> &'static str {
        match self {
            Sex::Female => "female",
            Sex::Male => "male",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [Sex::Female, Sex::Male, Sex::Other, Sex::Unknown]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// Emergency contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmergencyContact {
    /// 1 to 200 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub name: String,
    /// 1 to 100 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub relationship: Option<String>,
    /// 1 to 32 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub phone: Option<String>,
}

/// An entry of `allergies`, `medications` or `conditions`: 1 to 200 characters, not blank.
#[derive(ToSchema)]
#[schema(
    min_length = 1,
    max_length = 200,
    pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
)]
pub struct ListEntry(pub String);

/// All PHI of one record, in clear (memory only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPatient {
    /// Medical record number, unique (compared after removing spaces/hyphens, case-insensitive):
    /// 1 to 64 letters/digits, with spaces and hyphens, at most 100 characters in all.
    #[schema(max_length = 100, pattern = r"^[ -]*([A-Za-z0-9][ -]*){1,64}$")]
    pub mrn: String,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub given_name: String,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub family_name: String,
    /// `YYYY-MM-DD`, a past date after 1870-01-01.
    pub birth_date: NaiveDate,
    pub sex: Sex,
    /// Digits, spaces and `+ - ( ) .`, at most 32 characters, not blank.
    #[schema(max_length = 32, pattern = r"^[0-9 +().-]*[0-9+().-][0-9 +().-]*$")]
    pub phone: Option<String>,
    /// An e-mail address (`local@domain.tld`, no spaces or control characters), at most 254 characters.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+@[^.\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*\.[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^.\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]$"
    )]
    pub email: Option<String>,
    /// 1 to 500 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub address: Option<String>,
    #[serde(default)]
    #[schema(value_type = Vec<ListEntry>, max_items = 100)]
    pub allergies: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Vec<ListEntry>, max_items = 100)]
    pub medications: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Vec<ListEntry>, max_items = 100)]
    pub conditions: Vec<String>,
    pub emergency_contact: Option<EmergencyContact>,
}

/// `PATCH /patients/{id}`: absent fields are unchanged.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientPatch {
    /// As in [`NewPatient`]: 1 to 64 letters/digits, with spaces and hyphens, at most 100 characters.
    #[schema(max_length = 100, pattern = r"^[ -]*([A-Za-z0-9][ -]*){1,64}$")]
    pub mrn: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub given_name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub family_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<Sex>,
    /// Digits, spaces and `+ - ( ) .`, at most 32 characters, not blank.
    #[schema(max_length = 32, pattern = r"^[0-9 +().-]*[0-9+().-][0-9 +().-]*$")]
    pub phone: Option<String>,
    /// An e-mail address (`local@domain.tld`, no spaces or control characters), at most 254 characters.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+@[^.\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*\.[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^.\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]$"
    )]
    pub email: Option<String>,
    /// 1 to 500 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub address: Option<String>,
    #[schema(value_type = Option<Vec<ListEntry>>, max_items = 100)]
    pub allergies: Option<Vec<String>>,
    #[schema(value_type = Option<Vec<ListEntry>>, max_items = 100)]
    pub medications: Option<Vec<String>>,
    #[schema(value_type = Option<Vec<ListEntry>>, max_items = 100)]
    pub conditions: Option<Vec<String>>,
    pub emergency_contact: Option<EmergencyContact>,
    /// Replace semantics for the optional contact fields (`phone`, `email`, `address`,
    /// `emergency_contact`): absent means removed, not unchanged. Set by FHIR `PUT` (a whole
    /// resource), never by JSON clients.
    #[serde(skip)]
    pub replace_optional: bool,
}

impl PatientPatch {
    pub fn touches_clinical(&self) -> bool {
        self.allergies.is_some() || self.medications.is_some() || self.conditions.is_some()
    }

    pub fn apply(self, p: &mut NewPatient) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { p.$f = v; } )* };
        }
        macro_rules! set_opt {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { p.$f = Some(v); } )* };
        }
        set!(
            mrn,
            given_name,
            family_name,
            birth_date,
            sex,
            allergies,
            medications,
            conditions
        );
        if self.replace_optional {
            p.phone = self.phone;
            p.email = self.email;
            p.address = self.address;
            p.emergency_contact = self.emergency_contact;
        } else {
            set_opt!(phone, email, address, emergency_contact);
        }
    }
}

fn list(errs: &mut Vec<FieldError>, field: &str, v: &[String]) {
    if v.len() > 100 {
        errs.push(FieldError::new(field, "must have at most 100 entries"));
    }
    if v.iter()
        .any(|s| s.trim().is_empty() || s.chars().count() > 200)
    {
        errs.push(FieldError::new(
            field,
            "entries must be 1 to 200 characters",
        ));
    }
}

impl NewPatient {
    /// Field rules (messages never echo values).
    pub fn check(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let letters = self.mrn.chars().filter(char::is_ascii_alphanumeric).count();
        if letters == 0
            || letters > 64
            || self.mrn.chars().count() > 100
            || !self
                .mrn
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
        {
            errs.push(FieldError::new(
                "mrn",
                "must be 1 to 64 letters/digits, with spaces and hyphens, at most 100 characters",
            ));
        }
        check_text(&mut errs, "given_name", &self.given_name, 100);
        check_text(&mut errs, "family_name", &self.family_name, 100);
        let today = Utc::now().date_naive();
        if self.birth_date > today
            || self.birth_date < NaiveDate::from_ymd_opt(1870, 1, 1).unwrap_or(today)
        {
            errs.push(FieldError::new(
                "birth_date",
                "must be a past date after 1870-01-01",
            ));
        }
        if let Some(p) = &self.phone {
            if p.trim().is_empty()
                || p.len() > 32
                || !p
                    .chars()
                    .all(|c| c.is_ascii_digit() || " +-().".contains(c))
            {
                errs.push(FieldError::new(
                    "phone",
                    "must be up to 32 digits, spaces and + - ( ) .",
                ));
            }
        }
        if let Some(e) = &self.email {
            if crate::users::check_email(e).is_err() {
                errs.push(FieldError::new("email", "must be a valid email address"));
            }
        }
        if let Some(a) = &self.address {
            check_text(&mut errs, "address", a, 500);
        }
        list(&mut errs, "allergies", &self.allergies);
        list(&mut errs, "medications", &self.medications);
        list(&mut errs, "conditions", &self.conditions);
        if let Some(c) = &self.emergency_contact {
            check_text(&mut errs, "emergency_contact.name", &c.name, 200);
            if let Some(r) = &c.relationship {
                check_text(&mut errs, "emergency_contact.relationship", r, 100);
            }
            if let Some(p) = &c.phone {
                check_text(&mut errs, "emergency_contact.phone", p, 32);
            }
        }
        errs
    }
}

/// A patient record as returned by the API. Clinical fields are absent when the caller may only
/// see demographics (`access: "demographics"`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Patient {
    pub id: Uuid,
    pub mrn: String,
    pub given_name: String,
    pub family_name: String,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allergies: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub medications: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<String>>,
    pub emergency_contact: Option<EmergencyContact>,
    /// `full` or `demographics`.
    pub access: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Patient {
    pub fn from_phi(
        id: Uuid,
        p: NewPatient,
        clinical: bool,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            mrn: p.mrn,
            given_name: p.given_name,
            family_name: p.family_name,
            birth_date: p.birth_date,
            sex: p.sex,
            phone: p.phone,
            email: p.email,
            address: p.address,
            allergies: clinical.then_some(p.allergies),
            medications: clinical.then_some(p.medications),
            conditions: clinical.then_some(p.conditions),
            emergency_contact: p.emergency_contact,
            access: if clinical { "full" } else { "demographics" }.into(),
            created_at,
            updated_at,
        }
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Encrypt every PHI field of a record under the active key.
pub fn encrypt(keys: &KeyRing, id: Uuid, p: &NewPatient) -> Encrypted {
    let values: [Option<String>; 12] = [
        Some(p.mrn.trim().to_string()),
        Some(p.given_name.trim().to_string()),
        Some(p.family_name.trim().to_string()),
        Some(p.birth_date.to_string()),
        Some(p.sex.as_str().to_string()),
        p.phone.clone(),
        p.email.clone(),
        p.address.clone(),
        Some(json(&p.allergies)),
        Some(json(&p.medications)),
        Some(json(&p.conditions)),
        p.emergency_contact.as_ref().map(json),
    ];
    let mut cols: [Option<Vec<u8>>; 12] = Default::default();
    for (i, v) in values.iter().enumerate() {
        cols[i] = v.as_ref().map(|s| {
            keys.encrypt_str(
                Aad {
                    table: TABLE,
                    row: id,
                    column: ENC_COLUMNS[i],
                },
                s,
            )
        });
    }
    let mrn = keys.mrn_indexes(&p.mrn);
    Encrypted {
        key_id: keys.active_key_id().to_string(),
        bidx_key_id: mrn.key_id,
        mrn_bidx: mrn.active,
        name_dob_bidx: keys.name_dob_index(&p.family_name, p.birth_date),
        mrn_bidx_others: mrn.others,
        mrn_lock: mrn.lock,
        cols,
    }
}

/// Decrypt a stored row.
pub fn decrypt(keys: &KeyRing, r: &PatientRow) -> Result<NewPatient, CryptoError> {
    let d = |col: &str, v: &[u8]| {
        keys.decrypt_str(
            Aad {
                table: TABLE,
                row: r.id,
                column: col,
            },
            v,
        )
    };
    let d_opt = |col: &str, v: &Option<Vec<u8>>| v.as_ref().map(|b| d(col, b)).transpose();
    let list = |col: &str, v: &[u8]| -> Result<Vec<String>, CryptoError> {
        serde_json::from_str(&d(col, v)?).map_err(|_| CryptoError::Malformed)
    };
    Ok(NewPatient {
        mrn: d("mrn", &r.mrn)?,
        given_name: d("given_name", &r.given_name)?,
        family_name: d("family_name", &r.family_name)?,
        birth_date: d("birth_date", &r.birth_date)?
            .parse()
            .map_err(|_| CryptoError::Malformed)?,
        sex: Sex::parse(&d("sex", &r.sex)?).ok_or(CryptoError::Malformed)?,
        phone: d_opt("phone", &r.phone)?,
        email: d_opt("email", &r.email)?,
        address: d_opt("address", &r.address)?,
        allergies: list("allergies", &r.allergies)?,
        medications: list("medications", &r.medications)?,
        conditions: list("conditions", &r.conditions)?,
        emergency_contact: d_opt("emergency_contact", &r.emergency_contact)?
            .map(|s| serde_json::from_str(&s).map_err(|_| CryptoError::Malformed))
            .transpose()?,
    })
}

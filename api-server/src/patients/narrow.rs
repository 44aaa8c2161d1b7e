//! [`Narrowing`]: conditions a patient search checks on the decrypted record.

use super::model::{NewPatient, Sex};

/// Conditions on the decrypted record ([`super::PatientFilter::narrow`]); records are encrypted per
/// field, so they are checked on the rows the blind-index or id filter found.
#[derive(Debug, Default, Clone)]
pub struct Narrowing {
    pub given_name: Option<String>,
    pub sex: Option<Sex>,
}

impl Narrowing {
    pub(super) fn is_empty(&self) -> bool {
        self.given_name.is_none() && self.sex.is_none()
    }

    pub(super) fn admits(&self, phi: &NewPatient) -> bool {
        self.given_name
            .as_deref()
            .is_none_or(|g| phi.given_name.to_lowercase() == g.to_lowercase())
            && self.sex.is_none_or(|s| phi.sex == s)
    }

    /// How the narrowing is bound into list cursors.
    pub(super) fn key(&self) -> String {
        format!(
            "{}|{}",
            self.given_name
                .as_deref()
                .map(str::to_lowercase)
                .unwrap_or_default(),
            self.sex.map(|s| format!("{s:?}")).unwrap_or_default()
        )
    }
}

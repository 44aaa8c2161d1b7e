//! FHIR `AllergyIntolerance` and `Condition`, derived from the patient record's `allergies`
//! and `conditions` lists: every read and search is a read of the record through
//! `GET /api/v1/patients/{id}` ([`crate::patients::read`]: the same access decision,
//! break-glass included, and the same `patient.read` audit event). Callers whose access opens
//! only the demographics (admins, receptionists) are refused with `403`; a patient account
//! asking about another record gets `404`, as on the JSON route.
//!
//! Ids are `<patient id>-<n>`, `n` the 0-based position of the entry in its list: stable while
//! the entries before it are not removed, never derived from the entry's text (no PHI in ids or
//! URLs). `meta.versionId` is the record's version.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fhir_r4::r4::resources::allergy_intolerance::AllergyIntolerance;
use fhir_r4::r4::resources::condition::Condition;
use fhir_r4::r4::resources::Resource;
use fhir_r4::r4::types;
use uuid::Uuid;

use super::capability::{Interaction, ParamType, ResourceCapability, SearchParam};
use super::search::{reference_id, Match, Search};
use super::wire::{self, Version};
use crate::access::Need;
use crate::error::Error;
use crate::patients::model::Patient;
use crate::patients::{self, CallerAndPatient};
use crate::rbac::perm;
use crate::state::AppState;

const PATIENT_PARAM: SearchParam = SearchParam {
    name: "patient",
    kind: ParamType::Reference,
    doc: "the patient (`Patient/<id>`), required: the entries of that record",
};

/// What `/fhir/R4/AllergyIntolerance` serves.
pub const ALLERGY_CAPABILITY: ResourceCapability = ResourceCapability {
    type_name: "AllergyIntolerance",
    interactions: &[Interaction::Read, Interaction::SearchType],
    search: &[PATIENT_PARAM],
    sorts: &[],
    operations: &[],
    doc: "The allergies of a patient record (its `allergies` list; code.text only), for the care team and the patient. Ids are `<patient id>-<position>`. Change them on the Patient record (/api/v1).",
};

/// What `/fhir/R4/Condition` serves.
pub const CONDITION_CAPABILITY: ResourceCapability = ResourceCapability {
    type_name: "Condition",
    interactions: &[Interaction::Read, Interaction::SearchType],
    search: &[PATIENT_PARAM],
    sorts: &[],
    operations: &[],
    doc: "The conditions of a patient record (its `conditions` list; code.text only, clinicalStatus active), for the care team and the patient. Ids are `<patient id>-<position>`. Change them on the Patient record (/api/v1).",
};

/// One of the record's clinical lists served as a resource type.
pub trait ClinicalList: Send + Sync + 'static {
    const CAPABILITY: ResourceCapability;
    /// The list of the record (`None`: the caller's access does not open clinical data).
    fn entries(p: &Patient) -> Option<&Vec<String>>;
    /// The resource of entry `text`, id `id`, of record `patient`.
    fn resource(id: String, patient: Uuid, text: &str, version: Version) -> Resource;
}

/// `AllergyIntolerance` from `allergies`.
pub struct Allergies;
/// `Condition` from `conditions`.
pub struct Conditions;

fn active(system: &str) -> Option<types::CodeableConcept> {
    Some(types::CodeableConcept {
        coding: vec![types::Coding {
            system: Some(types::Uri(system.to_string())),
            code: Some(types::Code("active".into())),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn text(t: &str) -> Option<types::CodeableConcept> {
    Some(types::CodeableConcept {
        text: Some(types::String(t.to_string())),
        ..Default::default()
    })
}

impl ClinicalList for Allergies {
    const CAPABILITY: ResourceCapability = ALLERGY_CAPABILITY;

    fn entries(p: &Patient) -> Option<&Vec<String>> {
        p.allergies.as_ref()
    }

    fn resource(id: String, patient: Uuid, entry: &str, version: Version) -> Resource {
        Resource::AllergyIntolerance(Box::new(AllergyIntolerance {
            id: Some(types::String(id)),
            meta: Some(version.meta()),
            clinical_status: active(
                "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
            ),
            code: text(entry),
            patient: types::Reference {
                reference: Some(types::String(format!("Patient/{patient}"))),
                ..Default::default()
            },
            ..Default::default()
        }))
    }
}

impl ClinicalList for Conditions {
    const CAPABILITY: ResourceCapability = CONDITION_CAPABILITY;

    fn entries(p: &Patient) -> Option<&Vec<String>> {
        p.conditions.as_ref()
    }

    fn resource(id: String, patient: Uuid, entry: &str, version: Version) -> Resource {
        Resource::Condition(Box::new(Condition {
            id: Some(types::String(id)),
            meta: Some(version.meta()),
            clinical_status: active("http://terminology.hl7.org/CodeSystem/condition-clinical"),
            code: text(entry),
            subject: types::Reference {
                reference: Some(types::String(format!("Patient/{patient}"))),
                ..Default::default()
            },
            ..Default::default()
        }))
    }
}

/// The id of entry `index` of record `patient`'s list.
pub fn entry_id(patient: Uuid, index: usize) -> String {
    format!("{patient}-{index}")
}

/// The record and position an entry id names (`None`: not an id of ours).
pub fn parse_entry_id(id: &str) -> Option<(Uuid, usize)> {
    let (patient, index) = id.split_at_checked(36)?;
    let index = index.strip_prefix('-')?;
    if index.is_empty() || !index.chars().all(|c| c.is_ascii_digit()) || index.len() > 6 {
        return None;
    }
    Some((patient.parse().ok()?, index.parse().ok()?))
}

/// Extractor of `GET /<type>/{id}`: the caller and the record the id names (through
/// [`CallerAndPatient::for_id`]: 401, 403, then 404 for an id that is not ours), and the
/// entry's position.
pub struct EntryRead<K> {
    caller: CallerAndPatient<perm::PatientRead>,
    index: usize,
    _kind: PhantomData<K>,
}

impl<K: ClinicalList> FromRequestParts<AppState> for EntryRead<K> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let named = Path::<String>::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|Path(id)| parse_entry_id(&id));
        let id = named
            .map(|(p, _)| p)
            .ok_or_else(|| Error::NotFound.into_response());
        let caller = CallerAndPatient::for_id(parts, state, id).await?;
        Ok(Self {
            caller,
            index: named.map(|(_, i)| i).unwrap_or_default(),
            _kind: PhantomData,
        })
    }
}

/// Extractor of `GET /<type>?patient=...`: the parsed search, the caller and the record
/// `patient` names (401, 403, then 400 for a bad or missing `patient`).
pub struct PatientSearch<K> {
    caller: CallerAndPatient<perm::PatientRead>,
    search: Search,
    _kind: PhantomData<K>,
}

fn searched_patient(search: &Search) -> Result<Uuid, Error> {
    if search.cursor.is_some() {
        return Err(Error::bad_parameter(
            "_cursor",
            "a record's list is one page: there is no next page",
        ));
    }
    let value = search
        .one("patient")?
        .ok_or_else(|| Error::bad_parameter("patient", "is required (Patient/<id>)"))?;
    reference_id("patient", value, "Patient")
}

impl<K: ClinicalList> FromRequestParts<AppState> for PatientSearch<K> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let parsed = Search::parse(&K::CAPABILITY, parts.uri.query(), &parts.headers)
            .and_then(|s| searched_patient(&s).map(|id| (s, id)));
        // a bad search is answered after the session and permission checks, by `for_id`
        let (id, search) = match parsed {
            Ok((s, id)) => (Ok(id), Some(s)),
            Err(e) => (Err(e.into_response()), None),
        };
        let caller = CallerAndPatient::for_id(parts, state, id).await?;
        let search = search.ok_or_else(|| StatusCode::BAD_REQUEST.into_response())?;
        Ok(Self {
            caller,
            search,
            _kind: PhantomData,
        })
    }
}

/// The record read as on `GET /api/v1/patients/{id}` by a caller whose access opens its
/// clinical data (others are refused with `403` and audited as denied, before anything is
/// decrypted), and its list of `K`.
async fn record<K: ClinicalList>(
    state: &AppState,
    caller: CallerAndPatient<perm::PatientRead>,
) -> Result<(Patient, Vec<String>), Error> {
    let p = patients::read_for(state, caller, Need::Clinical).await?;
    let entries = K::entries(&p).cloned().ok_or_else(|| {
        Error::internal(anyhow::anyhow!(
            "clinical access opened a record without its clinical lists"
        ))
    })?;
    Ok((p, entries))
}

/// `GET /AllergyIntolerance/{id}`, `GET /Condition/{id}`.
pub async fn read<K: ClinicalList>(
    State(state): State<AppState>,
    target: EntryRead<K>,
) -> Result<Response, Error> {
    let (p, entries) = record::<K>(&state, target.caller).await?;
    let entry = entries.get(target.index).ok_or(Error::NotFound)?;
    let version = Version(p.updated_at);
    let resource = K::resource(entry_id(p.id, target.index), p.id, entry, version);
    Ok(wire::resource(StatusCode::OK, &resource, version, None))
}

/// `GET /AllergyIntolerance?patient=...`, `GET /Condition?patient=...`: every entry of the
/// record's list in one page (`_count` shortens it; `total` is the whole list).
pub async fn search<K: ClinicalList>(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    target: PatientSearch<K>,
) -> Result<Response, Error> {
    let (p, entries) = record::<K>(&state, target.caller).await?;
    let search = target.search;
    let version = Version(p.updated_at);
    let total = entries.len() as i64;
    let shown = search
        .count
        .map_or(entries.len(), |c| usize::try_from(c).unwrap_or(0));
    let mut matches = Vec::new();
    for (i, entry) in entries.iter().enumerate().take(shown) {
        let id = entry_id(p.id, i);
        let resource = serde_json::to_value(K::resource(id.clone(), p.id, entry, version))
            .map_err(|e| Error::internal(anyhow::Error::new(e)))?;
        matches.push(Match { id, resource });
    }
    let base = wire::base_url(&headers, state.config.tls.is_some());
    Ok(super::search::respond(
        &base,
        K::CAPABILITY.type_name,
        &search,
        Some(total),
        matches,
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids() {
        let p = Uuid::now_v7();
        let id = entry_id(p, 3);
        assert!(id.len() <= 64, "FHIR ids are at most 64 characters");
        assert_eq!(parse_entry_id(&id), Some((p, 3)));
        assert_eq!(parse_entry_id(&p.to_string()), None);
        assert_eq!(parse_entry_id(&format!("{p}-")), None);
        assert_eq!(parse_entry_id(&format!("{p}-x")), None);
        assert_eq!(parse_entry_id(&format!("{p}--1")), None);
        assert_eq!(parse_entry_id("short-1"), None);
        assert_eq!(parse_entry_id("ü"), None);
    }

    #[test]
    fn resources_carry_patient_code_and_status() {
        let p = Uuid::now_v7();
        let v = Version(chrono::Utc::now());
        let a = serde_json::to_value(Allergies::resource(entry_id(p, 0), p, "Penicillin", v))
            .expect("json");
        assert_eq!(a["resourceType"], "AllergyIntolerance");
        assert_eq!(a["patient"]["reference"], format!("Patient/{p}"));
        assert_eq!(a["code"]["text"], "Penicillin");
        assert_eq!(a["clinicalStatus"]["coding"][0]["code"], "active");
        let c = serde_json::to_value(Conditions::resource(entry_id(p, 1), p, "Asthma", v))
            .expect("json");
        assert_eq!(c["resourceType"], "Condition");
        assert_eq!(c["subject"]["reference"], format!("Patient/{p}"));
        assert_eq!(c["code"]["text"], "Asthma");
        assert_eq!(c["id"], format!("{p}-1"));
    }
}

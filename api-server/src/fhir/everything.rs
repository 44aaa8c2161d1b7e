//! `GET /Patient/{id}/$everything`: the patient compartment as one `searchset` Bundle — the
//! Patient, then its Appointments, MedicationRequests, AllergyIntolerances and Conditions —
//! for the patient themselves (the HIPAA right of access) and the care team: the access module
//! decides with [`Need::Clinical`] (demographic access, e.g. an admin's, is refused like none;
//! break-glass opens it as it opens a read). It is ONE access: one `patient.everything` audit
//! event for the patient (plus `patient.break_glass` through break-glass), written before
//! anything is returned (fail closed).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use fhir_r4::r4::resources::bundle::{Bundle, BundleEntry, BundleEntrySearch, BundleLink};
use fhir_r4::r4::resources::Resource;
use fhir_r4::r4::{codes, types};

use super::capability::Operation;
use super::clinical::{entry_id, Allergies, ClinicalList, Conditions};
use super::medication_request;
use super::wire::{self, Version};
use crate::access::{AccessLog, Need};
use crate::error::Error;
use crate::patients::model::{self, Patient};
use crate::patients::CallerAndPatient;
use crate::prescriptions;
use crate::rbac::perm;
use crate::state::AppState;

/// The audit action of a `$everything` (resource: the patient).
pub const PATIENT_EVERYTHING: &str = "patient.everything";

/// The operation as the CapabilityStatement declares it on Patient.
pub const OPERATION: Operation = Operation {
    name: "everything",
    definition: "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    doc: "The patient compartment (Patient, Appointments, MedicationRequests, AllergyIntolerances, Conditions) as one searchset Bundle, for the patient themselves and the care team; audited as one access (`patient.everything`). No parameters.",
};

/// One resource of the compartment: its FHIR type, id and JSON (with `resourceType`).
struct Found {
    type_name: &'static str,
    id: String,
    resource: serde_json::Value,
}

/// `GET /Patient/{id}/$everything`.
pub async fn everything(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    caller: CallerAndPatient<perm::PatientRead>,
) -> Result<Response, Error> {
    refuse_parameters(uri.query(), &headers)?;
    let (auth, id, row, access) = caller.access_for(&state, Need::Clinical).await?;
    let phi = model::decrypt(&state.keys, &row)?;
    let patient = Patient::from_phi(id, phi, access.clinical(), row.created_at, row.updated_at);
    let (fhir, _) = super::patient::to_fhir(&patient, &state.config.fhir_mrn_system);
    let mut found = vec![Found {
        type_name: "Patient",
        id: id.to_string(),
        resource: to_json(Resource::Patient(fhir))?,
    }];
    for a in crate::appointments::search::of_patient(&state, &auth, id).await? {
        let (appointment, _) = super::appointment::to_fhir(&a)?;
        found.push(Found {
            type_name: "Appointment",
            id: a.id.to_string(),
            resource: to_json(Resource::Appointment(Box::new(appointment)))?,
        });
    }
    for p in prescriptions::of_patient(&state, &auth, id).await? {
        let (m, _) = medication_request::mapping::to_fhir(&p);
        found.push(Found {
            type_name: "MedicationRequest",
            id: p.id.to_string(),
            resource: medication_request::mapping::json(m)?,
        });
    }
    clinical_list::<Allergies>(&patient, &mut found)?;
    clinical_list::<Conditions>(&patient, &mut found)?;
    // one access, audited before anything is returned
    AccessLog::new("patient")
        .add(&auth, PATIENT_EVERYTHING, id, id, access)
        .write(&state)
        .await?;
    let base = wire::base_url(&headers, state.config.tls.is_some());
    let self_url = format!("{base}/Patient/{id}/$everything");
    Ok(wire::fhir_json(
        StatusCode::OK,
        &Resource::Bundle(Box::new(bundle(&base, self_url, found))),
    ))
}

fn to_json(r: Resource) -> Result<serde_json::Value, Error> {
    serde_json::to_value(r).map_err(|e| Error::internal(anyhow::Error::new(e)))
}

/// The entries of one of the record's clinical lists (none without clinical access).
fn clinical_list<K: ClinicalList>(p: &Patient, found: &mut Vec<Found>) -> Result<(), Error> {
    let version = Version(p.updated_at);
    for (i, entry) in K::entries(p).into_iter().flatten().enumerate() {
        let id = entry_id(p.id, i);
        found.push(Found {
            type_name: K::CAPABILITY.type_name,
            resource: to_json(K::resource(id.clone(), p.id, entry, version))?,
            id,
        });
    }
    Ok(())
}

/// `$everything` takes no parameters here (`_since`, `_type`, `_count`, `start`, `end` are not
/// served): `400` naming the first one, unless `Prefer: handling=lenient`.
fn refuse_parameters(query: Option<&str>, headers: &HeaderMap) -> Result<(), Error> {
    if wire::lenient(headers) {
        return Ok(());
    }
    let unknown = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, _)| k.into_owned())
        .find(|k| k != "_format");
    match unknown {
        Some(k) => Err(Error::bad_parameter(
            &k,
            "Patient/$everything takes no parameters here (send Prefer: handling=lenient to ignore them)",
        )),
        None => Ok(()),
    }
}

/// The `searchset` of the compartment: the Patient as `match`, the rest as `include`.
fn bundle(base: &str, self_url: String, found: Vec<Found>) -> Bundle {
    let total = found.len();
    let entry = found
        .into_iter()
        .map(|f| BundleEntry {
            full_url: Some(types::Uri(format!("{base}/{}/{}", f.type_name, f.id))),
            resource: Some(f.resource),
            search: Some(BundleEntrySearch {
                mode: Some(fhir_r4::r4::coded::Coded::Known(
                    if f.type_name == "Patient" {
                        codes::SearchEntryMode::Match
                    } else {
                        codes::SearchEntryMode::Include
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Bundle {
        r#type: fhir_r4::r4::coded::Coded::Known(codes::BundleType::Searchset),
        total: Some(types::UnsignedInt(u32::try_from(total).unwrap_or(u32::MAX))),
        link: vec![BundleLink {
            relation: types::String("self".into()),
            url: types::Uri(self_url),
            ..Default::default()
        }],
        entry,
        ..Default::default()
    }
}

//! FHIR `Patient` over the patient records: the handlers call the same domain entry points as
//! `/api/v1/patients` ([`crate::patients`]: access decisions, audit, encryption, blind-index
//! lookups), and only translate between the FHIR model and ours.
//!
//! Mapping: `identifier` = the MRN under the platform's system (`CADUCEUS_FHIR_MRN_SYSTEM`),
//! `name` (official) = family + given, `gender`, `birthDate`, `telecom` = phone and e-mail,
//! `address.text`, `contact` = the emergency contact. Clinical lists are served as
//! AllergyIntolerance / Condition resources, not on Patient.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use fhir_r4::r4::resources::patient::{Patient as FhirPatient, PatientContact};
use fhir_r4::r4::resources::Resource;
use fhir_r4::r4::types;
use uuid::Uuid;

use super::capability::{Interaction, ParamType, ResourceCapability, SearchParam};
use super::search::{Match, Search};
use super::wire::{self, FhirBody, Version};
use crate::auth::{AuthUser, Authorized};
use crate::error::{ApiJson, ApiQuery, Error, FieldError};
use crate::patients::model::{EmergencyContact, NewPatient, Patient, PatientPatch, Sex};
use crate::patients::{self, CallerAndPatient, Narrowing, PatientFilter};
use crate::rbac::perm;
use crate::state::AppState;

/// What `/fhir/R4/Patient` serves.
pub const CAPABILITY: ResourceCapability = ResourceCapability {
    type_name: "Patient",
    interactions: &[
        Interaction::Read,
        Interaction::SearchType,
        Interaction::Create,
        Interaction::Update,
        Interaction::Delete,
    ],
    search: &[
        SearchParam {
            name: "_id",
            kind: ParamType::Token,
            doc: "the logical id",
        },
        SearchParam {
            name: "identifier",
            kind: ParamType::Token,
            doc: "the MRN, `[system|]value` with the platform's MRN system; exact, through the MRN blind index",
        },
        SearchParam {
            name: "family",
            kind: ParamType::String,
            doc: "exact family name (case-insensitive), together with `birthdate`: through the name + birth-date blind index",
        },
        SearchParam {
            name: "birthdate",
            kind: ParamType::Date,
            doc: "exact birth date (`YYYY-MM-DD`, optional prefix `eq`), together with `family` or `name`",
        },
        SearchParam {
            name: "name",
            kind: ParamType::String,
            doc: "as `family` (the family name, exact), together with `birthdate`",
        },
        SearchParam {
            name: "given",
            kind: ParamType::String,
            doc: "exact given name (case-insensitive); narrows an `identifier`, `_id` or family + birth-date search",
        },
        SearchParam {
            name: "gender",
            kind: ParamType::Token,
            doc: "male | female | other | unknown; narrows an `identifier`, `_id` or family + birth-date search",
        },
    ],
    sorts: &[],
    operations: &[super::everything::OPERATION],
    doc: "Patient records: demographics for every role that may see the record, clinical data as AllergyIntolerance and Condition. Lookups go through blind indexes (records are encrypted per field), so searches are exact.",
};

/// The FHIR Patient of a record, with `meta.versionId`/`lastUpdated`. Built in place in its box
/// (the resource is large: moving it costs more than filling it) with typed codes.
pub fn to_fhir(p: &Patient, mrn_system: &str) -> (Box<FhirPatient>, Version) {
    use fhir_r4::r4::coded::Coded::Known;
    use fhir_r4::r4::codes::{AdministrativeGender, ContactPointSystem, IdentifierUse, NameUse};
    let version = Version(p.updated_at);
    let contact_point = |system: ContactPointSystem, value: &str| types::ContactPoint {
        system: Some(Known(system)),
        value: Some(types::String(value.to_string())),
        ..Default::default()
    };
    let mut patient = Box::<FhirPatient>::default();
    let f = &mut *patient;
    f.id = Some(types::String(p.id.to_string()));
    f.meta = Some(version.meta());
    f.identifier = vec![types::Identifier {
        r#use: Some(Known(IdentifierUse::Usual)),
        r#type: Some(types::CodeableConcept {
            coding: vec![types::Coding {
                system: Some(types::Uri(
                    "http://terminology.hl7.org/CodeSystem/v2-0203".into(),
                )),
                code: Some(types::Code("MR".into())),
                ..Default::default()
            }],
            ..Default::default()
        }),
        system: Some(types::Uri(mrn_system.to_string())),
        value: Some(types::String(p.mrn.clone())),
        ..Default::default()
    }];
    f.active = Some(types::Boolean(true));
    f.name = vec![types::HumanName {
        r#use: Some(Known(NameUse::Official)),
        family: Some(types::String(p.family_name.clone())),
        given: vec![types::String(p.given_name.clone())].into(),
        ..Default::default()
    }];
    if let Some(phone) = &p.phone {
        f.telecom
            .push(contact_point(ContactPointSystem::Phone, phone));
    }
    if let Some(email) = &p.email {
        f.telecom
            .push(contact_point(ContactPointSystem::Email, email));
    }
    f.gender = Some(Known(match p.sex {
        Sex::Female => AdministrativeGender::Female,
        Sex::Male => AdministrativeGender::Male,
        Sex::Other => AdministrativeGender::Other,
        Sex::Unknown => AdministrativeGender::Unknown,
    }));
    // NaiveDate's Display is the ISO 8601 date, YYYY-MM-DD (what FHIR's `date` is)
    f.birth_date = Some(types::Date(p.birth_date.to_string()));
    f.address = p
        .address
        .iter()
        .map(|a| types::Address {
            text: Some(types::String(a.clone())),
            ..Default::default()
        })
        .collect();
    f.contact = p
        .emergency_contact
        .iter()
        .map(|c| PatientContact {
            relationship: vec![types::CodeableConcept {
                coding: vec![types::Coding {
                    system: Some(types::Uri(
                        "http://terminology.hl7.org/CodeSystem/v2-0131".into(),
                    )),
                    code: Some(types::Code("C".into())),
                    display: Some(types::String("Emergency Contact".into())),
                    ..Default::default()
                }],
                text: c.relationship.clone().map(types::String),
                ..Default::default()
            }],
            name: Some(types::HumanName {
                text: Some(types::String(c.name.clone())),
                ..Default::default()
            }),
            telecom: c
                .phone
                .iter()
                .map(|ph| contact_point(ContactPointSystem::Phone, ph))
                .collect(),
            ..Default::default()
        })
        .collect();
    (patient, version)
}

/// A Patient as a resource: serialised as it is (a response), with its `resourceType`.
fn resource(p: Box<FhirPatient>) -> Resource {
    Resource::Patient(p)
}

/// The JSON of a Patient with its `resourceType` (a search entry).
fn json(p: Box<FhirPatient>) -> Result<serde_json::Value, Error> {
    serde_json::to_value(resource(p)).map_err(|e| Error::internal(anyhow::Error::new(e)))
}

fn invalid(field: &str, message: &str) -> Error {
    Error::Validation(vec![FieldError::new(field, message)])
}

/// The record of a FHIR Patient sent by a client (create, update). What Caduceus does not keep
/// (photos, links, several names, ...) is refused rather than silently dropped, except
/// `meta`, `text` and `id`.
fn from_fhir(p: &FhirPatient, mrn_system: &str) -> Result<NewPatient, Error> {
    let mut mrns = p
        .identifier
        .iter()
        .filter(|i| i.system.as_ref().map(|s| s.0.as_str()) == Some(mrn_system));
    let mrn = match (mrns.next(), mrns.next()) {
        (Some(i), None) => i.value.as_ref().map(|v| v.0.clone()),
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(invalid(
                "Patient.identifier",
                "give one MRN (one identifier with the platform's MRN system)",
            ))
        }
    }
    .ok_or_else(|| {
        invalid(
            "Patient.identifier",
            &format!("an identifier with system {mrn_system} (the MRN) is required"),
        )
    })?;
    if p.name.len() != 1 {
        return Err(invalid(
            "Patient.name",
            "give exactly one name (family and one given name)",
        ));
    }
    let name = &p.name[0];
    let family = name.family.as_ref().map(|f| f.0.clone());
    let given: Vec<&types::String> = name.given.0.iter().flatten().collect();
    let (Some(family), [given]) = (family, given.as_slice()) else {
        return Err(invalid(
            "Patient.name",
            "needs family and exactly one given name",
        ));
    };
    let birth = p
        .birth_date
        .as_ref()
        .ok_or_else(|| invalid("Patient.birthDate", "is required"))?;
    let birth_date = chrono::NaiveDate::parse_from_str(&birth.0, "%Y-%m-%d")
        .map_err(|_| invalid("Patient.birthDate", "must be a full date (YYYY-MM-DD)"))?;
    let sex: Sex = p
        .gender
        .as_ref()
        .and_then(|g| serde_json::from_value(serde_json::Value::String(g.code())).ok())
        .ok_or_else(|| {
            invalid(
                "Patient.gender",
                "is required: male, female, other or unknown",
            )
        })?;
    let mut phone = None;
    let mut email = None;
    for t in &p.telecom {
        let value = t.value.as_ref().map(|v| v.0.clone());
        match (t.system.as_ref().map(|s| s.code()).as_deref(), value) {
            (Some("phone"), Some(v)) if phone.is_none() => phone = Some(v),
            (Some("email"), Some(v)) if email.is_none() => email = Some(v),
            _ => {
                return Err(invalid(
                    "Patient.telecom",
                    "at most one phone and one email, each with a value",
                ))
            }
        }
    }
    if p.address.len() > 1 {
        return Err(invalid("Patient.address", "at most one address"));
    }
    let address = p.address.first().map(|a| {
        a.text.as_ref().map(|t| t.0.clone()).unwrap_or_else(|| {
            a.line
                .0
                .iter()
                .flatten()
                .map(|l| l.0.as_str())
                .chain(a.city.iter().map(|c| c.0.as_str()))
                .chain(a.postal_code.iter().map(|c| c.0.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        })
    });
    if p.contact.len() > 1 {
        return Err(invalid(
            "Patient.contact",
            "at most one (emergency) contact",
        ));
    }
    let emergency_contact = match p.contact.first() {
        None => None,
        Some(c) => Some(EmergencyContact {
            name: c
                .name
                .as_ref()
                .and_then(|n| {
                    n.text.as_ref().map(|t| t.0.clone()).or_else(|| {
                        let parts: Vec<&str> = n
                            .given
                            .0
                            .iter()
                            .flatten()
                            .map(|g| g.0.as_str())
                            .chain(n.family.iter().map(|f| f.0.as_str()))
                            .collect();
                        (!parts.is_empty()).then(|| parts.join(" "))
                    })
                })
                .ok_or_else(|| invalid("Patient.contact.name", "is required"))?,
            relationship: c
                .relationship
                .first()
                .and_then(|r| r.text.as_ref().map(|t| t.0.clone())),
            phone: c
                .telecom
                .first()
                .and_then(|t| t.value.as_ref().map(|v| v.0.clone())),
        }),
    };
    if !p.photo.is_empty() || !p.link.is_empty() || p.deceased.is_some() {
        return Err(invalid(
            "Patient",
            "photo, link and deceased are not kept by this server",
        ));
    }
    Ok(NewPatient {
        mrn,
        given_name: given.0.clone(),
        family_name: family,
        birth_date,
        sex,
        phone,
        email,
        address,
        allergies: Vec::new(),
        medications: Vec::new(),
        conditions: Vec::new(),
        emergency_contact,
    })
}

/// Parse a Patient body and check its `resourceType`.
fn body(value: serde_json::Value) -> Result<FhirPatient, Error> {
    if value.get("resourceType").and_then(|t| t.as_str()) != Some("Patient") {
        return Err(invalid("resourceType", "must be Patient"));
    }
    serde_json::from_value(value).map_err(|_| invalid("Patient", "is not a valid FHIR R4 Patient"))
}

fn location(headers: &HeaderMap, state: &AppState, p: &Patient) -> String {
    let base = wire::base_url(headers, state.config.tls.is_some());
    format!(
        "{base}/Patient/{}/_history/{}",
        p.id,
        Version(p.updated_at).id()
    )
}

/// `GET /Patient/{id}`: a soft-deleted record is `410 Gone` to those who could open it while
/// it was live ([`patients::deleted_and_visible`]), `404` to everyone else.
pub async fn read(
    State(state): State<AppState>,
    caller: CallerAndPatient<perm::PatientRead>,
) -> Result<Response, Error> {
    let missing = caller.updated_at().is_none().then(|| caller.auth().clone());
    let id = caller.id();
    let p = match patients::read(State(state.clone()), caller).await {
        Ok(axum::Json(p)) => p,
        Err(Error::NotFound) => match missing {
            Some(auth) if patients::deleted_and_visible(&state, &auth, id).await? => {
                return Err(Error::Gone)
            }
            _ => return Err(Error::NotFound),
        },
        Err(e) => return Err(e),
    };
    let (fhir, version) = to_fhir(&p, &state.config.fhir_mrn_system);
    Ok(wire::resource(
        StatusCode::OK,
        &resource(fhir),
        version,
        None,
    ))
}

/// `POST /Patient`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    authorized: Authorized<perm::PatientCreate>,
    FhirBody(value): FhirBody<serde_json::Value>,
) -> Result<Response, Error> {
    let new = from_fhir(&body(value)?, &state.config.fhir_mrn_system)?;
    crate::error::Validate::validate(&new).map_err(Error::Validation)?;
    let (_, axum::Json(p)) =
        patients::create(State(state.clone()), authorized, ApiJson(new)).await?;
    let (fhir, version) = to_fhir(&p, &state.config.fhir_mrn_system);
    let loc = location(&headers, &state, &p);
    Ok(wire::resource(
        StatusCode::CREATED,
        &resource(fhir),
        version,
        Some(loc),
    ))
}

/// `PUT /Patient/{id}`: the whole demographic record (clinical lists unchanged), with
/// `If-Match` on `meta.versionId` (`412` when the record changed since).
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: CallerAndPatient<perm::PatientUpdate>,
    FhirBody(value): FhirBody<serde_json::Value>,
) -> Result<Response, Error> {
    let fhir = body(value)?;
    if fhir.id.as_ref().map(|i| i.0.as_str()) != Some(caller.id().to_string().as_str()) {
        return Err(invalid("Patient.id", "must be the id in the URL"));
    }
    let new = from_fhir(&fhir, &state.config.fhir_mrn_system)?;
    if let (Some(if_match), Some(current)) = (
        headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()),
        caller.updated_at(),
    ) {
        if !Version(current).matches(if_match) {
            return Err(Error::PreconditionFailed(
                "the record changed since that version; read it again".into(),
            ));
        }
    }
    let patch = PatientPatch {
        mrn: Some(new.mrn),
        given_name: Some(new.given_name),
        family_name: Some(new.family_name),
        birth_date: Some(new.birth_date),
        sex: Some(new.sex),
        phone: new.phone,
        email: new.email,
        address: new.address,
        emergency_contact: new.emergency_contact,
        replace_optional: true,
        ..Default::default()
    };
    let axum::Json(p) = patients::update(State(state.clone()), caller, ApiJson(patch)).await?;
    let (fhir, version) = to_fhir(&p, &state.config.fhir_mrn_system);
    Ok(wire::resource(
        StatusCode::OK,
        &resource(fhir),
        version,
        None,
    ))
}

/// `DELETE /Patient/{id}`: the soft delete of `/api/v1` (kept for the retention period).
pub async fn delete(
    State(state): State<AppState>,
    authorized: Authorized<perm::PatientDelete>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    patients::remove(State(state), authorized, Path(id)).await
}

/// `GET /Patient?...`: a searchset through the same list as `GET /api/v1/patients`.
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    auth: AuthUser,
) -> Result<Response, Error> {
    let search = Search::parse(&CAPABILITY, uri.query(), &headers)?;
    let filter = filter(&search, &state.config.fhir_mrn_system)?;
    let given = search.one("given")?.map(str::to_lowercase);
    let gender = search.one("gender")?.map(str::to_string);
    let ids: Vec<Uuid> = match search.one("_id")? {
        None => Vec::new(),
        Some(v) => v
            .split(',')
            .map(|id| {
                id.trim()
                    .parse()
                    .map_err(|_| Error::bad_parameter("_id", "must be ids"))
            })
            .collect::<Result<_, _>>()?,
    };
    let narrowed = filter.mrn.is_some() || filter.family_name.is_some() || !ids.is_empty();
    if (given.is_some() || gender.is_some()) && !narrowed {
        return Err(Error::bad_parameter(
            "given",
            "given and gender narrow an identifier, _id or family + birthdate search (records are found through blind indexes)",
        ));
    }
    let sex = match gender {
        None => None,
        Some(g) => Some(
            serde_json::from_value::<Sex>(serde_json::Value::String(g)).map_err(|_| {
                Error::bad_parameter("gender", "must be male, female, other or unknown")
            })?,
        ),
    };
    let filter = PatientFilter {
        ids,
        narrow: Narrowing {
            given_name: given,
            sex,
        },
        ..filter
    };
    let base = wire::base_url(&headers, state.config.tls.is_some());
    if search.summary_count {
        let total = patients::total(&state, &auth, &filter).await?;
        return Ok(super::search::respond(
            &base,
            "Patient",
            &search,
            Some(total),
            Vec::new(),
            None,
        ));
    }
    let axum::Json(page) = patients::list(
        State(state.clone()),
        auth.clone(),
        ApiQuery(filter.clone()),
        ApiQuery(search.page()),
    )
    .await?;
    // one page with no cursor holds every match; otherwise count them (the same scoped query)
    let total = if search.cursor.is_none() && page.next_cursor.is_none() {
        page.items.len() as i64
    } else {
        patients::total(&state, &auth, &filter).await?
    };
    let mrn_system = &state.config.fhir_mrn_system;
    let mut matches = Vec::with_capacity(page.items.len());
    for p in &page.items {
        let (fhir, _) = to_fhir(p, mrn_system);
        matches.push(Match {
            id: p.id.to_string(),
            resource: json(fhir)?,
        });
    }
    Ok(super::search::respond(
        &base,
        "Patient",
        &search,
        Some(total),
        matches,
        page.next_cursor,
    ))
}

/// The domain filter of a Patient search (`identifier`, `family`/`name` + `birthdate`).
fn filter(search: &Search, mrn_system: &str) -> Result<PatientFilter, Error> {
    let mrn = match search.one("identifier")? {
        None => None,
        Some(token) => Some(match token.split_once('|') {
            Some((system, value)) if system.is_empty() || system == mrn_system => value.to_string(),
            Some(_) => {
                return Err(Error::bad_parameter(
                    "identifier",
                    &format!("only MRNs ({mrn_system}) can be searched"),
                ))
            }
            None => token.to_string(),
        }),
    };
    let family = match (search.one("family")?, search.one("name")?) {
        (Some(f), None) | (None, Some(f)) => Some(f.to_string()),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(Error::bad_parameter(
                "name",
                "give family or name, not both",
            ))
        }
    };
    let birth_date = match search.one("birthdate")? {
        None => None,
        Some(v) => {
            let v = v.strip_prefix("eq").unwrap_or(v);
            Some(
                chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
                    Error::bad_parameter(
                        "birthdate",
                        "must be a full date (YYYY-MM-DD, prefix eq only)",
                    )
                })?,
            )
        }
    };
    if family.is_some() != birth_date.is_some() {
        return Err(Error::bad_parameter(
            "birthdate",
            "family (or name) and birthdate are searched together (one blind index)",
        ));
    }
    Ok(PatientFilter {
        mrn,
        family_name: family,
        birth_date,
        ids: Vec::new(),
        narrow: Narrowing::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patients::model::EmergencyContact;

    fn record(sex: Sex) -> Patient {
        let at = chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        Patient {
            id: Uuid::nil(),
            mrn: "MRN-1".into(),
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            birth_date: chrono::NaiveDate::from_ymd_opt(980, 5, 6).expect("date"),
            sex,
            phone: Some("+1 555 0100".into()),
            email: Some("ada@example.org".into()),
            address: Some("1 Street".into()),
            allergies: None,
            medications: None,
            conditions: None,
            emergency_contact: Some(EmergencyContact {
                name: "Bob".into(),
                relationship: Some("brother".into()),
                phone: Some("+1 555 0199".into()),
            }),
            access: "demographics".into(),
            created_at: at,
            updated_at: at,
        }
    }

    /// The codes are typed values now (no serde round trip): the JSON is the one FHIR defines.
    #[test]
    fn the_fhir_patient_of_a_record() {
        let (p, version) = to_fhir(&record(Sex::Female), "urn:mrn");
        let json = serde_json::to_value(resource(p)).expect("json");
        assert_eq!(version.id(), "1700000000123456");
        assert_eq!(json["resourceType"], "Patient");
        assert_eq!(json["meta"]["versionId"], "1700000000123456");
        assert_eq!(json["identifier"][0]["use"], "usual");
        assert_eq!(json["identifier"][0]["type"]["coding"][0]["code"], "MR");
        assert_eq!(json["identifier"][0]["system"], "urn:mrn");
        assert_eq!(json["identifier"][0]["value"], "MRN-1");
        assert_eq!(json["name"][0]["use"], "official");
        assert_eq!(json["name"][0]["family"], "Lovelace");
        assert_eq!(json["name"][0]["given"][0], "Ada");
        assert_eq!(json["gender"], "female");
        assert_eq!(json["birthDate"], "0980-05-06");
        assert_eq!(json["telecom"][0]["system"], "phone");
        assert_eq!(json["telecom"][1]["system"], "email");
        assert_eq!(json["telecom"][1]["value"], "ada@example.org");
        assert_eq!(json["address"][0]["text"], "1 Street");
        assert_eq!(
            json["contact"][0]["relationship"][0]["coding"][0]["code"],
            "C"
        );
        assert_eq!(json["contact"][0]["relationship"][0]["text"], "brother");
        assert_eq!(json["contact"][0]["telecom"][0]["system"], "phone");
        for (sex, gender) in [
            (Sex::Male, "male"),
            (Sex::Other, "other"),
            (Sex::Unknown, "unknown"),
        ] {
            let (p, _) = to_fhir(&record(sex), "urn:mrn");
            let json = serde_json::to_value(resource(p)).expect("json");
            assert_eq!(json["gender"], gender);
        }
    }
}

//! Prescriptions ↔ FHIR `MedicationRequest` (see the table in [`super`]'s docs and
//! `docs/fhir.md`).

use chrono::SecondsFormat;
use fhir_r4::r4::choice::Primitive;
use fhir_r4::r4::resources::detected_issue::DetectedIssue;
use fhir_r4::r4::resources::medication_request::{
    MedicationRequest, MedicationRequestDispenseRequest, MedicationRequestMedication,
};
use fhir_r4::r4::resources::Resource;
use fhir_r4::r4::types;
use fhir_r4::r4::types::dosage::{DosageDoseAndRate, DosageDoseAndRateDose};
use fhir_r4::r4::types::extension::ExtensionValue;
use serde_json::Value;
use uuid::Uuid;

use super::super::capability::coded;
use super::super::search::reference_id;
use super::super::wire::Version;
use super::route::{route_code, route_name, ROUTES, SNOMED};
use crate::error::{Error, FieldError};
use crate::prescriptions::interactions::{Interaction, Severity, Source};
use crate::prescriptions::{Medication, NewPrescription, Prescription, PrescriptionStatus};

/// The code system of `medicationCodeableConcept.coding`.
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
/// The extension carrying the reason to prescribe despite a major interaction (`valueString`).
pub const OVERRIDE_REASON_URL: &str =
    "https://caduceus.io/fhir/StructureDefinition/interaction-override-reason";
const UCUM: &str = "http://unitsofmeasure.org";

/// The FHIR status of a prescription's status.
pub fn status_code(s: PrescriptionStatus) -> &'static str {
    match s {
        PrescriptionStatus::Active => "active",
        PrescriptionStatus::Completed => "completed",
        PrescriptionStatus::Discontinued => "stopped",
    }
}

fn instant(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn string(s: &str) -> Option<types::String> {
    Some(types::String(s.to_string()))
}

fn reference(target: String) -> types::Reference {
    types::Reference {
        reference: Some(types::String(target)),
        ..Default::default()
    }
}

/// A dose such as `5 mg` or `0.5 ml` as a quantity (`None` for free text like `1-2 tablets`).
fn dose_quantity(dose: &str) -> Option<types::Quantity> {
    let (value, unit) = dose.trim().split_once(' ')?;
    let unit = unit.trim();
    if unit.is_empty() || !value.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value = types::Decimal::new(value).ok()?;
    Some(types::Quantity {
        value: Some(value),
        unit: Some(types::String(unit.to_string())),
        ..Default::default()
    })
}

/// One contained `DetectedIssue` per interaction found when the prescription was made
/// (overridden majors, moderate and minor warnings), as `/api/v1` lists them.
fn detected_issue(n: usize, i: &Interaction, patient: Uuid) -> DetectedIssue {
    let severity = match i.severity {
        Severity::Major => "high",
        Severity::Moderate => "moderate",
        Severity::Minor => "low",
    };
    DetectedIssue {
        id: string(&format!("interaction-{n}")),
        status: coded("final"),
        code: Some(types::CodeableConcept {
            coding: vec![types::Coding {
                system: Some(types::Uri(
                    "http://terminology.hl7.org/CodeSystem/v3-ActCode".into(),
                )),
                code: Some(types::Code(
                    if i.kind == "allergy" { "ALGY" } else { "DRG" }.into(),
                )),
                ..Default::default()
            }],
            text: string(&i.kind),
            ..Default::default()
        }),
        severity: Some(coded(severity)),
        patient: Some(types::Reference {
            reference: Some(types::String(format!("Patient/{patient}"))),
            ..Default::default()
        }),
        implicated: i
            .prescription_id
            .map(|p| reference(format!("MedicationRequest/{p}")))
            .into_iter()
            .collect(),
        detail: string(&interaction_text(i)),
        ..Default::default()
    }
}

/// What one interaction says (reference vocabulary only, as in the JSON `interactions`).
pub fn interaction_text(i: &Interaction) -> String {
    let source = match i.source {
        Source::Prescription => "an active prescription",
        Source::MedicationList => "the record's medication list",
        Source::Allergy => "the record's allergies",
    };
    let severity = match i.severity {
        Severity::Major => "major",
        Severity::Moderate => "moderate",
        Severity::Minor => "minor",
    };
    let with = i
        .prescription_id
        .map(|p| format!(" (MedicationRequest/{p})"))
        .unwrap_or_default();
    format!(
        "{severity} {} interaction: {} with {} from {source}{with}: {}",
        i.kind, i.terms[0], i.terms[1], i.description
    )
}

/// The FHIR MedicationRequest of a prescription, with its version.
pub fn to_fhir(p: &Prescription) -> (MedicationRequest, Version) {
    let version = Version(p.updated_at);
    let (code, display) = route_code(p.route);
    let route = route_name(p.route);
    let dosage = types::Dosage {
        text: string(&format!("{} {route} {}", p.dose, p.frequency)),
        timing: Some(types::Timing {
            code: Some(types::CodeableConcept {
                text: string(&p.frequency),
                ..Default::default()
            }),
            ..Default::default()
        }),
        route: Some(types::CodeableConcept {
            coding: vec![types::Coding {
                system: Some(types::Uri(SNOMED.into())),
                code: Some(types::Code(code.into())),
                display: string(display),
                ..Default::default()
            }],
            text: Some(types::String(route)),
            ..Default::default()
        }),
        dose_and_rate: dose_quantity(&p.dose)
            .map(|q| DosageDoseAndRate {
                dose: Some(DosageDoseAndRateDose::Quantity(Box::new(q))),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let medication = types::CodeableConcept {
        coding: p
            .medication
            .code
            .iter()
            .map(|c| types::Coding {
                system: Some(types::Uri(RXNORM.into())),
                code: Some(types::Code(c.clone())),
                ..Default::default()
            })
            .collect(),
        text: string(&p.medication.name),
        ..Default::default()
    };
    let contained: Vec<Resource> = p
        .interactions
        .iter()
        .enumerate()
        .map(|(n, i)| Resource::DetectedIssue(Box::new(detected_issue(n + 1, i, p.patient_id))))
        .collect();
    let detected = (1..=contained.len())
        .map(|n| types::Reference {
            reference: Some(types::String(format!("#interaction-{n}"))),
            ..Default::default()
        })
        .collect();
    let extension = p
        .override_reason
        .iter()
        .map(|r| types::Extension {
            url: types::String(OVERRIDE_REASON_URL.into()),
            value: Some(ExtensionValue::String(Primitive::new(types::String(
                r.clone(),
            )))),
            ..Default::default()
        })
        .collect();
    let m = MedicationRequest {
        id: string(&p.id.to_string()),
        meta: Some(version.meta()),
        contained,
        extension,
        status: coded(status_code(p.status)),
        intent: coded("order"),
        medication: Some(MedicationRequestMedication::CodeableConcept(Box::new(
            medication,
        ))),
        subject: reference(format!("Patient/{}", p.patient_id)),
        authored_on: Some(types::DateTime(instant(p.created_at))),
        requester: Some(reference(format!("Practitioner/{}", p.prescriber_id))),
        note: p
            .notes
            .iter()
            .map(|n| types::Annotation {
                text: types::Markdown(n.clone()),
                ..Default::default()
            })
            .collect(),
        dosage_instruction: vec![dosage],
        dispense_request: Some(MedicationRequestDispenseRequest {
            validity_period: Some(types::Period {
                start: Some(types::DateTime(instant(p.starts_at))),
                end: Some(types::DateTime(instant(p.ends_at))),
                ..Default::default()
            }),
            expected_supply_duration: Some(types::Duration {
                value: types::Decimal::new(p.duration_days.to_string()).ok(),
                unit: string("days"),
                system: Some(types::Uri(UCUM.into())),
                code: Some(types::Code("d".into())),
                ..Default::default()
            }),
            ..Default::default()
        }),
        detected_issue: detected,
        ..Default::default()
    };
    (m, version)
}

/// The JSON of a MedicationRequest with its `resourceType`.
pub fn json(m: MedicationRequest) -> Result<Value, Error> {
    serde_json::to_value(Resource::MedicationRequest(Box::new(m)))
        .map_err(|e| Error::internal(anyhow::Error::new(e)))
}

fn invalid(field: &str, message: &str) -> Error {
    Error::Validation(vec![FieldError::new(field, message)])
}

/// Elements a client may send on create; anything else is refused rather than dropped.
const ACCEPTED: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "text",
    "status",
    "intent",
    "medicationCodeableConcept",
    "subject",
    "requester",
    "authoredOn",
    "note",
    "dosageInstruction",
    "dispenseRequest",
    "extension",
];

/// Parse a MedicationRequest body: its `resourceType` and the FHIR model.
pub fn body(value: Value) -> Result<MedicationRequest, Error> {
    if value.get("resourceType").and_then(|t| t.as_str()) != Some("MedicationRequest") {
        return Err(invalid("resourceType", "must be MedicationRequest"));
    }
    serde_json::from_value(value).map_err(|_| {
        invalid(
            "MedicationRequest",
            "is not a valid FHIR R4 MedicationRequest",
        )
    })
}

/// The prescription a client asks for (`POST /MedicationRequest`), by `caller` (the prescriber).
pub fn from_fhir(
    value: &Value,
    m: &MedicationRequest,
    caller: Uuid,
) -> Result<NewPrescription, Error> {
    if let Some(obj) = value.as_object() {
        if let Some(k) = obj.keys().find(|k| !ACCEPTED.contains(&k.as_str())) {
            return Err(invalid(
                &format!("MedicationRequest.{k}"),
                "is not kept by this server",
            ));
        }
    }
    if m.status.code() != "active" {
        return Err(invalid(
            "MedicationRequest.status",
            "a new prescription is active",
        ));
    }
    if m.intent.code() != "order" {
        return Err(invalid("MedicationRequest.intent", "must be order"));
    }
    let subject = m
        .subject
        .reference
        .as_ref()
        .ok_or_else(|| invalid("MedicationRequest.subject", "must reference the Patient"))?;
    let patient_id =
        reference_id("MedicationRequest.subject", &subject.0, "Patient").map_err(|_| {
            invalid(
                "MedicationRequest.subject",
                "must reference a Patient by id",
            )
        })?;
    if let Some(r) = &m.requester {
        let ok = r
            .reference
            .as_ref()
            .and_then(|s| reference_id("requester", &s.0, "Practitioner").ok())
            == Some(caller);
        if !ok {
            return Err(invalid(
                "MedicationRequest.requester",
                "the prescriber is the authenticated physician (Practitioner/<own id>) or left out",
            ));
        }
    }
    let Some(MedicationRequestMedication::CodeableConcept(med)) = &m.medication else {
        return Err(invalid(
            "MedicationRequest.medicationCodeableConcept",
            "is required (medicationReference is not supported)",
        ));
    };
    let mut rxnorm = med
        .coding
        .iter()
        .filter(|c| c.system.as_ref().map(|s| s.0.as_str()) == Some(RXNORM));
    let code = match (rxnorm.next(), rxnorm.next()) {
        (None, _) => None,
        (Some(c), None) => c.code.as_ref().map(|c| c.0.clone()),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "MedicationRequest.medicationCodeableConcept.coding",
                "at most one RxNorm code",
            ))
        }
    };
    let name = med
        .text
        .as_ref()
        .map(|t| t.0.clone())
        .or_else(|| {
            med.coding
                .iter()
                .find_map(|c| c.display.as_ref().map(|d| d.0.clone()))
        })
        .ok_or_else(|| {
            invalid(
                "MedicationRequest.medicationCodeableConcept.text",
                "the medication's name is required",
            )
        })?;
    let [dosage] = m.dosage_instruction.as_slice() else {
        return Err(invalid(
            "MedicationRequest.dosageInstruction",
            "give exactly one dosage instruction",
        ));
    };
    let dose = match dosage.dose_and_rate.as_slice() {
        [DosageDoseAndRate {
            dose: Some(DosageDoseAndRateDose::Quantity(q)),
            ..
        }] => match (&q.value, &q.unit) {
            (Some(v), Some(u)) => Some(format!("{} {}", v.as_str(), u.0)),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| {
        invalid(
            "MedicationRequest.dosageInstruction.doseAndRate.doseQuantity",
            "one dose quantity with value and unit is required",
        )
    })?;
    let frequency = dosage
        .timing
        .as_ref()
        .and_then(|t| t.code.as_ref())
        .and_then(|c| c.text.as_ref())
        .map(|t| t.0.clone())
        .ok_or_else(|| {
            invalid(
                "MedicationRequest.dosageInstruction.timing.code.text",
                "the frequency (e.g. once daily) is required",
            )
        })?;
    let route = dosage
        .route
        .as_ref()
        .and_then(|r| {
            let by_code = r.coding.iter().find_map(|c| {
                let code = c.code.as_ref()?;
                (c.system.as_ref().map(|s| s.0.as_str()) == Some(SNOMED))
                    .then(|| ROUTES.into_iter().find(|x| route_code(*x).0 == code.0))
                    .flatten()
            });
            by_code.or_else(|| {
                let text = r.text.as_ref()?.0.trim().to_lowercase();
                ROUTES.into_iter().find(|x| route_name(*x) == text)
            })
        })
        .ok_or_else(|| {
            invalid(
                "MedicationRequest.dosageInstruction.route",
                "a SNOMED CT route code or route text this server knows (oral, intravenous, ...) is required",
            )
        })?;
    let duration = m
        .dispense_request
        .as_ref()
        .and_then(|d| d.expected_supply_duration.as_ref());
    let duration_days = duration
        .filter(|d| match &d.code {
            Some(code) => code.0 == "d",
            None => d
                .unit
                .as_ref()
                .is_some_and(|u| matches!(u.0.as_str(), "d" | "day" | "days")),
        })
        .and_then(|d| d.value.as_ref())
        .and_then(|v| v.as_str().parse::<i32>().ok())
        .ok_or_else(|| {
            invalid(
                "MedicationRequest.dispenseRequest.expectedSupplyDuration",
                "the duration in whole days (unit d) is required",
            )
        })?;
    if m.note.len() > 1 {
        return Err(invalid("MedicationRequest.note", "at most one note"));
    }
    let notes = m.note.first().map(|n| n.text.0.clone());
    let mut override_reason = None;
    for e in &m.extension {
        match (e.url.0.as_str(), &e.value) {
            (OVERRIDE_REASON_URL, Some(ExtensionValue::String(s))) if override_reason.is_none() => {
                override_reason = Some(s.value.0.clone());
            }
            _ => {
                return Err(invalid(
                    "MedicationRequest.extension",
                    &format!(
                        "only one {OVERRIDE_REASON_URL} extension (valueString) is understood"
                    ),
                ))
            }
        }
    }
    Ok(NewPrescription {
        patient_id,
        medication: Medication { name, code },
        dose,
        route,
        frequency,
        duration_days,
        notes,
        override_reason,
    })
}

/// The FHIR element of a field of the JSON prescription body (for validation errors).
pub fn fhir_field(field: &str) -> String {
    let path = match field {
        "patient_id" => "subject",
        "medication.name" => "medicationCodeableConcept.text",
        "medication.code" => "medicationCodeableConcept.coding.code",
        "dose" => "dosageInstruction.doseAndRate.doseQuantity",
        "route" => "dosageInstruction.route",
        "frequency" => "dosageInstruction.timing.code.text",
        "duration_days" => "dispenseRequest.expectedSupplyDuration",
        "notes" => "note",
        "override_reason" => "extension",
        _ => "",
    };
    if path.is_empty() {
        "MedicationRequest".into()
    } else {
        format!("MedicationRequest.{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prescriptions::RouteOfAdministration;

    fn prescription() -> Prescription {
        let t = chrono::Utc::now();
        Prescription {
            id: Uuid::now_v7(),
            patient_id: Uuid::now_v7(),
            prescriber_id: Uuid::now_v7(),
            medication: Medication {
                name: "Metformin 500 mg tablet".into(),
                code: Some("6809".into()),
            },
            dose: "500 mg".into(),
            route: RouteOfAdministration::Oral,
            frequency: "twice daily".into(),
            duration_days: 30,
            notes: Some("with food".into()),
            status: PrescriptionStatus::Active,
            starts_at: t,
            ends_at: t,
            interactions: Vec::new(),
            override_reason: Some("benefit outweighs risk".into()),
            discontinued_at: None,
            discontinued_by: None,
            created_at: t,
            updated_at: t,
        }
    }

    /// What is served can be sent back: the served resource parses into the same prescription.
    #[test]
    fn served_resources_round_trip() {
        let p = prescription();
        let (m, _) = to_fhir(&p);
        let value = json(m).expect("json");
        assert_eq!(value["resourceType"], "MedicationRequest");
        assert_eq!(
            value["medicationCodeableConcept"]["coding"][0]["system"],
            RXNORM
        );
        assert_eq!(
            value["dosageInstruction"][0]["route"]["coding"][0]["code"],
            "26643006"
        );
        assert_eq!(
            value["dispenseRequest"]["expectedSupplyDuration"]["value"],
            30
        );
        let mut sent = value.clone();
        for k in ["contained", "detectedIssue"] {
            sent.as_object_mut().expect("object").remove(k);
        }
        let parsed = body(sent.clone()).expect("parses");
        let new = from_fhir(&sent, &parsed, p.prescriber_id).expect("maps");
        assert_eq!(new.patient_id, p.patient_id);
        assert_eq!(new.medication, p.medication);
        assert_eq!(new.dose, p.dose);
        assert_eq!(new.route, p.route);
        assert_eq!(new.frequency, p.frequency);
        assert_eq!(new.duration_days, 30);
        assert_eq!(new.notes, p.notes);
        assert_eq!(new.override_reason, p.override_reason);
        // another prescriber is refused
        assert!(from_fhir(&sent, &parsed, Uuid::now_v7()).is_err());
    }

    #[test]
    fn doses_are_quantities_when_they_can_be() {
        let q = dose_quantity("0.5 ml").expect("quantity");
        assert_eq!(
            q.value.map(|v| v.as_str().to_string()).as_deref(),
            Some("0.5")
        );
        assert!(dose_quantity("1-2 tablets").is_none());
        assert!(dose_quantity("mg").is_none());
    }

    /// Every route is served with its SNOMED CT code and read back from it.
    #[test]
    fn every_route_round_trips() {
        for r in ROUTES {
            let mut p = prescription();
            p.route = r;
            p.override_reason = None;
            let value = json(to_fhir(&p).0).expect("json");
            let mut sent = value.clone();
            sent["dosageInstruction"][0]["route"]["text"] = Value::Null;
            let parsed = body(sent.clone()).expect("parses");
            let new = from_fhir(&sent, &parsed, p.prescriber_id).expect("maps");
            assert_eq!(new.route, r, "{}", route_name(r));
        }
        let codes: std::collections::BTreeSet<_> =
            ROUTES.iter().map(|r| route_code(*r).0).collect();
        assert_eq!(codes.len(), ROUTES.len(), "codes are distinct");
    }
}

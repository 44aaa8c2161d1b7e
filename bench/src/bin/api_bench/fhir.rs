//! The FHIR R4 workloads of `api_bench` (issue 16): `GET /fhir/R4/Patient/{id}` and
//! `POST /fhir/R4/Patient` over the same patients, users and API process as the JSON routes, so
//! their rows sit beside `GET /api/v1/patients/{id}` and `POST /api/v1/patients` in one run.
//! Targets: the FHIR read's API CPU per request at most 1.2 × the JSON read's, and its p95
//! under 10 ms (the JSON read's target).

use bytes::Bytes;
use serde_json::{json, Value};

/// The identifier system the API runs with (the benchmark leaves `CADUCEUS_FHIR_MRN_SYSTEM`
/// unset, so the API uses the default).
pub const MRN_SYSTEM: &str = caduceus_contract::settings::DEFAULT_FHIR_MRN_SYSTEM;

/// The most FHIR read API CPU per request may cost, relative to the JSON read's.
pub const MAX_READ_CPU_RATIO: f64 = 1.2;

/// The read path of patient `id`.
pub fn read_path(id: &str) -> String {
    format!("/fhir/R4/Patient/{id}")
}

/// A FHIR Patient carrying what [`super::patient_body`] carries for the JSON create
/// (allergies, medications and conditions are not Patient elements: FHIR creates carry none).
pub fn patient(i: u64, run_tag: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": format!("F{run_tag}{i:08}")}],
        "name": [{"use": "official", "family": format!("Family{}", i % 997), "given": [format!("Given{i}")]}],
        "gender": "female",
        "birthDate": format!("19{:02}-{:02}-{:02}", 30 + i % 70, 1 + i % 12, 1 + i % 28),
        "telecom": [
            {"system": "phone", "value": "+1 555 0100"},
            {"system": "email", "value": format!("f{i}@bench.example")}
        ],
        "address": [{"text": format!("{i} Bench Street")}]
    })
}

/// The body of the `n`th FHIR create.
pub fn create_body(n: u64) -> Bytes {
    Bytes::from(patient(n, "C").to_string())
}

/// The FHIR read's API CPU per request over the JSON read's, when both were measured.
pub fn read_cpu_ratio(fhir_api_cpu_ms: Option<f64>, json_api_cpu_ms: Option<f64>) -> Option<f64> {
    match (fhir_api_cpu_ms, json_api_cpu_ms) {
        (Some(f), Some(j)) if j > 0.0 => Some(f / j),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_are_distinct_patients_under_the_mrn_system() {
        let a = patient(1, "C");
        let b = patient(2, "C");
        assert_eq!(a["identifier"][0]["system"], MRN_SYSTEM);
        assert_ne!(a["identifier"][0]["value"], b["identifier"][0]["value"]);
        assert_eq!(a["resourceType"], "Patient");
    }

    #[test]
    fn the_ratio_needs_both_measurements() {
        assert_eq!(read_cpu_ratio(Some(1.2), Some(1.0)), Some(1.2));
        assert_eq!(read_cpu_ratio(None, Some(1.0)), None);
        assert_eq!(read_cpu_ratio(Some(1.0), Some(0.0)), None);
    }
}

//! Tests of the API server, network policy and security checks.

use super::{fields, platform};
use crate::crd::{HealthcarePlatformSpec, ResourcesSpec};
use crate::validate::validate;
use caduceus_contract::settings;
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

#[test]
fn max_below_min_replicas_is_refused_with_path() {
    let mut spec = HealthcarePlatformSpec::default();
    spec.api_server.autoscaling.min_replicas = 5;
    spec.api_server.autoscaling.max_replicas = 3;
    let err = validate(&platform(spec), "default").unwrap_err();
    assert_eq!(
        fields(err.clone()),
        ["spec.apiServer.autoscaling.maxReplicas"]
    );
    assert!(err.to_string().contains("must be >= minReplicas"));
}

#[test]
fn latest_tag_and_reserved_env_are_refused() {
    let mut spec = HealthcarePlatformSpec::default();
    spec.api_server.image.tag = Some("latest".into());
    spec.api_server.env.push(EnvVar {
        name: "DATABASE_URL".into(),
        value: Some("postgres://x".into()),
        ..Default::default()
    });
    let err = validate(&platform(spec), "default").unwrap_err();
    assert_eq!(
        fields(err.clone()),
        ["spec.apiServer.image.tag", "spec.apiServer.env[0].name"]
    );
    // The message names the variable, never its value.
    assert!(!err.to_string().contains("postgres://x"));
}

#[test]
fn the_fhir_mrn_system_is_an_absolute_uri() {
    let mut spec = HealthcarePlatformSpec::default();
    assert_eq!(
        spec.api_server.fhir.mrn_system,
        settings::DEFAULT_FHIR_MRN_SYSTEM
    );
    spec.api_server.fhir.mrn_system = "https://hospital.example/fhir/mrn".into();
    assert!(validate(&platform(spec.clone()), "default").is_ok());
    for bad in ["hospital mrn", "mrn", "https://h.example/a b", ""] {
        spec.api_server.fhir.mrn_system = bad.into();
        let err = validate(&platform(spec.clone()), "default").unwrap_err();
        let text = err.to_string();
        assert_eq!(fields(err), ["spec.apiServer.fhir.mrnSystem"], "{bad:?}");
        assert!(text.contains("must be an absolute URI"), "{text}");
    }
    let mut spec = HealthcarePlatformSpec::default();
    spec.api_server.env.push(EnvVar {
        name: settings::FHIR_MRN_SYSTEM.into(),
        value: Some("urn:x".into()),
        ..Default::default()
    });
    let err = validate(&platform(spec), "default").unwrap_err();
    assert!(err
        .to_string()
        .contains("is set by the operator from spec.apiServer.fhir.mrnSystem"));
}

#[test]
fn settings_from_the_spec_cannot_be_set_by_api_env() {
    let mut spec = HealthcarePlatformSpec::default();
    for name in [
        "CADUCEUS_TRUSTED_PROXIES",
        "CADUCEUS_PATIENT_RETENTION_DAYS",
        "CADUCEUS_CARE_TEAM_ACCESS_DAYS",
    ] {
        spec.api_server.env.push(EnvVar {
            name: name.into(),
            value: Some("0.0.0.0/0".into()),
            ..Default::default()
        });
    }
    let err = validate(&platform(spec), "default").unwrap_err();
    assert_eq!(
        fields(err.clone()),
        [
            "spec.apiServer.env[0].name",
            "spec.apiServer.env[1].name",
            "spec.apiServer.env[2].name"
        ]
    );
    let text = err.to_string();
    assert!(
        text.contains(
            "CADUCEUS_TRUSTED_PROXIES is set by the operator from spec.security.trustedProxies"
        ),
        "{text}"
    );
    assert!(
        text.contains("from spec.security.patientRetentionDays"),
        "{text}"
    );
    assert!(
        text.contains("from spec.security.careTeamAccessDays"),
        "{text}"
    );
    assert!(!text.contains("0.0.0.0/0"), "{text}");
}

#[test]
fn ingress_needs_host() {
    let mut spec = HealthcarePlatformSpec::default();
    spec.api_server.ingress.enabled = true;
    // And the trusted proxies: behind an ingress every client would otherwise share the
    // controller's address (rate limits, lockouts, the audit trail's client_ip).
    let err = validate(&platform(spec.clone()), "default").unwrap_err();
    assert_eq!(
        fields(err.clone()),
        [
            "spec.apiServer.ingress.host",
            "spec.security.trustedProxies"
        ]
    );
    assert!(err.to_string().contains("10.42.0.0/16"), "{err}");
    spec.api_server.ingress.host = Some("api.clinic.example.org".into());
    spec.security.trusted_proxies = vec!["10.42.0.0/16".into()];
    validate(&platform(spec), "default").unwrap();
}

#[test]
fn requests_above_limits_and_bad_quantities_are_refused() {
    let mut spec = HealthcarePlatformSpec::default();
    spec.api_server.resources = ResourcesSpec::new("2", "256Mi", "1", "512Mi");
    spec.database.storage.size = Quantity("ten gigs".into());
    let errs = fields(validate(&platform(spec), "default").unwrap_err());
    assert_eq!(
        errs,
        [
            "spec.apiServer.resources.requests.cpu",
            "spec.database.storage.size"
        ]
    );
}

#[test]
fn an_empty_ingress_from_is_refused() {
    let mut spec = HealthcarePlatformSpec::default();
    spec.network_policy.ingress_from.clear();
    let err = validate(&platform(spec), "default").unwrap_err();
    assert_eq!(fields(err.clone()), ["spec.networkPolicy.ingressFrom"]);
    assert!(err.to_string().contains("podSelector"), "{err}");
}

#[test]
fn patient_retention_and_trusted_proxies() {
    let mut spec = HealthcarePlatformSpec::default();
    assert_eq!(spec.security.patient_retention_days, 3650);
    spec.security.trusted_proxies = vec![
        "10.0.0.0/8".into(),
        "192.168.1.7".into(),
        "fd00::/8".into(),
        "2001:db8::1".into(),
    ];
    assert!(validate(&platform(spec.clone()), "default").is_ok());

    spec.security.patient_retention_days = 2189;
    spec.security.trusted_proxies = vec![
        "10.0.0.0/8".into(),
        "proxy.internal".into(),
        "10.0.0.0/33".into(),
        " 10.1.0.0/16".into(),
        "10.0.0.0/8,10.1.0.0/16".into(),
        String::new(),
    ];
    let err = validate(&platform(spec.clone()), "default").unwrap_err();
    assert_eq!(
        fields(err.clone()),
        [
            "spec.security.patientRetentionDays",
            "spec.security.trustedProxies[1]",
            "spec.security.trustedProxies[2]",
            "spec.security.trustedProxies[3]",
            "spec.security.trustedProxies[4]",
            "spec.security.trustedProxies[5]",
        ]
    );
    let text = err.to_string();
    assert!(
        text.contains("must be between 2190 and 36500, got 2189"),
        "{text}"
    );
    assert!(text.contains("must be a CIDR such as 10.0.0.0/8"), "{text}");

    spec.security.patient_retention_days = 2190;
    for days in [0, 3651] {
        let mut bad = spec.clone();
        bad.security.trusted_proxies = Vec::new();
        bad.security.care_team_access_days = days;
        assert_eq!(
            fields(validate(&platform(bad), "default").unwrap_err()),
            ["spec.security.careTeamAccessDays"]
        );
    }
    spec.security.trusted_proxies = vec!["10.0.0.1".into(); 65];
    assert_eq!(
        fields(validate(&platform(spec), "default").unwrap_err()),
        ["spec.security.trustedProxies"]
    );
}

//! `spec.security.patientRetentionDays` and `spec.security.trustedProxies` against the real control
//! plane (`scripts/cluster.sh`) with the real controller: the CRD's schema and CEL rules refuse bad values and
//! `apiServer.env` overrides at admission, the defaults are stored, and the values reach the API
//! ConfigMap (`CADUCEUS_PATIENT_RETENTION_DAYS`, `CADUCEUS_TRUSTED_PROXIES`). No fixed sleeps.

mod support;

use std::time::Duration;

use caduceus_operator::names::Names;
use serde_json::json;
use support::cluster::{Env, Setup};

#[tokio::test]
async fn patient_retention_and_trusted_proxies_are_checked_at_admission_and_reach_the_api() {
    // The controller starts once admission has been checked.
    let mut env = Env::without_controller(
        Setup::default().controller(|c| c.self_report_timeout = Duration::from_millis(200)),
    )
    .await;

    // Refused at admission, each with a message naming the problem.
    let refused = [
        (
            json!({"security": {"trustedProxies": ["10.0.0.0/8", "proxy.internal"]}}),
            "security.trustedProxies entries must be CIDRs",
        ),
        (
            json!({"security": {"trustedProxies": ["10.0.0.0/33"]}}),
            "security.trustedProxies entries must be CIDRs",
        ),
        (
            json!({"security": {"patientRetentionDays": 30}}),
            "patientRetentionDays",
        ),
        (
            json!({"apiServer": {"env": [{"name": "CADUCEUS_TRUSTED_PROXIES", "value": "0.0.0.0/0"}]}}),
            "must not set CADUCEUS_PATIENT_RETENTION_DAYS or CADUCEUS_TRUSTED_PROXIES",
        ),
        (
            json!({"apiServer": {"env": [{"name": "CADUCEUS_PATIENT_RETENTION_DAYS", "value": "30"}]}}),
            "use spec.security.patientRetentionDays",
        ),
    ];
    for (spec, want) in refused {
        let err = env
            .try_create_platform("bad", spec.clone())
            .await
            .expect_err(&format!("refused: {spec}"));
        assert!(err.to_string().contains(want), "{spec}: {err}");
    }
    assert!(
        env.platforms().get_opt("bad").await.unwrap().is_none(),
        "nothing stored"
    );

    // Accepted: IPv4/IPv6 CIDRs and single addresses; patientRetentionDays defaulted.
    env.try_create_platform(
        "demo",
        json!({"security": {"trustedProxies": ["10.42.0.0/16", "192.168.0.10", "fd00::/8"]}}),
    )
    .await
    .expect("valid platform admitted");
    let stored = env.platforms().get("demo").await.expect("stored");
    assert_eq!(stored.spec.security.patient_retention_days, 3650);

    env.start_controller();

    let data = |key: &str| env.api_config(key);
    let config_map = || env.stored("v1", "ConfigMap", &Names::new("demo").api_config());
    env.wait_for("the settings in the API ConfigMap", |_| {
        data("CADUCEUS_TRUSTED_PROXIES").as_deref() == Some("10.42.0.0/16,192.168.0.10,fd00::/8")
            && data("CADUCEUS_PATIENT_RETENTION_DAYS").as_deref() == Some("3650")
    })
    .await;

    // A change reaches the ConfigMap.
    env.patch_spec(json!({"security": {"patientRetentionDays": 2555, "trustedProxies": []}}))
        .await;
    env.wait_for("the changed settings in the API ConfigMap", |_| {
        data("CADUCEUS_PATIENT_RETENTION_DAYS").as_deref() == Some("2555")
            && data("CADUCEUS_TRUSTED_PROXIES").as_deref() == Some("")
    })
    .await;
    assert!(config_map().is_some());
    let status = env.status();
    assert!(
        status["conditions"]
            .as_array()
            .is_none_or(|cs| !cs.iter().any(|c| c["reason"] == "InvalidSpec")),
        "{status}"
    );

    env.stop().await;
}

#[tokio::test]
async fn image_repositories_are_checked_at_admission_and_reach_the_stateful_sets() {
    let mut env = Env::without_controller(Setup::default()).await;

    // Refused by the CRD: a tag (CEL), a digest or capitals (pattern), in either field.
    let refused = [
        (
            json!({"database": {"imageRepository": "registry.example/mirror/postgres:16.6"}}),
            "database.imageRepository must not contain a tag",
        ),
        (
            json!({"cache": {"imageRepository": "registry.example:5000/mirror/redis:7"}}),
            "cache.imageRepository must not contain a tag",
        ),
        (
            json!({"database": {"imageRepository": "registry.example/postgres@sha256:00"}}),
            "spec.database.imageRepository",
        ),
        (
            json!({"cache": {"imageRepository": "Registry.example/redis"}}),
            "spec.cache.imageRepository",
        ),
    ];
    for (spec, want) in refused {
        let err = env
            .try_create_platform("bad", spec.clone())
            .await
            .expect_err(&format!("refused: {spec}"));
        assert!(err.to_string().contains(want), "{spec}: {err}");
    }
    assert!(
        env.platforms().get_opt("bad").await.unwrap().is_none(),
        "nothing stored"
    );

    // A mirror with a registry port is admitted, stored as given and run by the StatefulSets.
    env.try_create_platform(
        "demo",
        json!({
            "database": {"imageRepository": "registry.clinic.example:5000/mirror/postgres"},
            "cache": {"imageRepository": "registry.clinic.example:5000/mirror/redis"},
        }),
    )
    .await
    .expect("mirrors admitted");
    let stored = env.platforms().get("demo").await.expect("stored");
    assert_eq!(
        stored.spec.database.image_repository.as_deref(),
        Some("registry.clinic.example:5000/mirror/postgres")
    );

    env.start_controller();
    let names = Names::new("demo");
    let image = |e: &Env, name: &str| {
        e.stored("apps/v1", "StatefulSet", name).and_then(|s| {
            s["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .map(str::to_string)
        })
    };
    env.wait_for("the mirrored images in the StatefulSets", |e| {
        image(e, &names.postgres()).as_deref()
            == Some("registry.clinic.example:5000/mirror/postgres:16.6")
            && image(e, &names.redis()).as_deref()
                == Some("registry.clinic.example:5000/mirror/redis:7.4.2")
    })
    .await;

    env.stop().await;
}

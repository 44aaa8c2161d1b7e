//! `spec.security.patientRetentionDays` and `spec.security.trustedProxies` against `kube-standin`
//! over HTTP with the real controller: the CRD's schema and CEL rules refuse bad values and
//! `apiServer.env` overrides at admission, the defaults are stored, and the values reach the API
//! ConfigMap (`CADUCEUS_PATIENT_RETENTION_DAYS`, `CADUCEUS_TRUSTED_PROXIES`). No fixed sleeps.

use std::time::Duration;

use caduceus_operator::{names::Names, run_controller, ControllerConfig};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{Api, Patch, PatchParams, PostParams},
    core::{DynamicObject, GroupVersionKind},
    discovery::ApiResource,
    Client,
};
use kube_standin::StandIn;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const NS: &str = "clinic";

fn hcp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("caduceus.io", "v1alpha1", "HealthcarePlatform"),
        "healthcareplatforms",
    )
}

fn repo_file(rel: &str) -> String {
    let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

async fn install(client: &Client) {
    let crd: CustomResourceDefinition =
        serde_norway::from_str(&repo_file("crds/caduceus.io_healthcareplatforms.yaml"))
            .expect("CRD YAML");
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("CRD installed");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace"),
        )
        .await
        .expect("namespace");
}

async fn create(client: &Client, name: &str, spec: Value) -> Result<DynamicObject, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &hcp_resource());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "caduceus.io/v1alpha1",
        "kind": "HealthcarePlatform",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .expect("platform");
    api.create(&PostParams::default(), &obj).await
}

#[tokio::test]
async fn patient_retention_and_trusted_proxies_are_checked_at_admission_and_reach_the_api() {
    let standin = StandIn::start().await.expect("stand-in starts");
    let client = standin.client().expect("client");
    install(&client).await;

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
        let err = create(&client, "bad", spec.clone())
            .await
            .expect_err(&format!("refused: {spec}"));
        assert!(err.to_string().contains(want), "{spec}: {err}");
    }
    assert!(
        standin
            .get("caduceus.io/v1alpha1", "HealthcarePlatform", NS, "bad")
            .is_none(),
        "nothing stored"
    );

    // Accepted: IPv4/IPv6 CIDRs and single addresses; patientRetentionDays defaulted.
    create(
        &client,
        "demo",
        json!({"security": {"trustedProxies": ["10.42.0.0/16", "192.168.0.10", "fd00::/8"]}}),
    )
    .await
    .expect("valid platform admitted");
    let stored = standin
        .get("caduceus.io/v1alpha1", "HealthcarePlatform", NS, "demo")
        .expect("stored");
    assert_eq!(stored["spec"]["security"]["patientRetentionDays"], 3650);

    let config = ControllerConfig {
        progress_interval: Duration::from_millis(300),
        error_backoff_base: Duration::from_millis(50),
        error_backoff_max: Duration::from_secs(1),
        namespace: Some(NS.into()),
        self_report_timeout: Duration::from_millis(200),
        ..ControllerConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let c = client.clone();
    let controller = tokio::spawn(async move {
        run_controller(c, config, async move {
            let _ = stopped.await;
        })
        .await
        .expect("controller runs");
    });

    let cm_name = Names::new("demo").api_config();
    let data = |key: &str| {
        standin
            .get("v1", "ConfigMap", NS, &cm_name)
            .and_then(|cm| cm["data"][key].as_str().map(str::to_string))
    };
    let ok = standin
        .wait_until(WAIT, |_| {
            data("CADUCEUS_TRUSTED_PROXIES").as_deref()
                == Some("10.42.0.0/16,192.168.0.10,fd00::/8")
                && data("CADUCEUS_PATIENT_RETENTION_DAYS").as_deref() == Some("3650")
        })
        .await;
    assert!(
        ok,
        "ConfigMap: {:?}",
        standin.get("v1", "ConfigMap", NS, &cm_name)
    );

    // A change reaches the ConfigMap.
    Api::<DynamicObject>::namespaced_with(client.clone(), NS, &hcp_resource())
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"security": {"patientRetentionDays": 2555, "trustedProxies": []}}}),
            ),
        )
        .await
        .expect("patch");
    let ok = standin
        .wait_until(WAIT, |_| {
            data("CADUCEUS_PATIENT_RETENTION_DAYS").as_deref() == Some("2555")
                && data("CADUCEUS_TRUSTED_PROXIES").as_deref() == Some("")
        })
        .await;
    assert!(
        ok,
        "ConfigMap: {:?}",
        standin.get("v1", "ConfigMap", NS, &cm_name)
    );
    let status = standin
        .get("caduceus.io/v1alpha1", "HealthcarePlatform", NS, "demo")
        .and_then(|p| p.get("status").cloned())
        .unwrap_or(Value::Null);
    assert!(
        status["conditions"]
            .as_array()
            .is_none_or(|cs| !cs.iter().any(|c| c["reason"] == "InvalidSpec")),
        "{status}"
    );

    let _ = stop.send(());
    tokio::time::timeout(WAIT, controller)
        .await
        .expect("controller stops")
        .expect("controller task");
}

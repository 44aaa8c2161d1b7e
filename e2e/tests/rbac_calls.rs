//! The other half of the RBAC check (`rbac.rs` scans the code): the real controller
//! (`caduceus_operator::run_controller`) runs against `kube-standin` over HTTP and reconciles
//! every example, including drift repair, a scale change and deletion under both deletion
//! policies; every API call it made, as counted by the stand-in by verb and kind, must be granted
//! by the chart's ClusterRole. The test's own calls are counted separately and subtracted.
//! Leader election is not exercised here (it lives in `main.rs`); `rbac.rs` covers the Lease.

use std::collections::BTreeMap;
use std::time::Duration;

use caduceus_e2e::{helm_template, repo_root, yaml_file, yaml_files};
use caduceus_operator::{run_controller, ControllerConfig};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use kube_standin::StandIn;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Kind (as the stand-in counts it) -> (API group, resource).
fn resource_of(kind: &str) -> Option<(&'static str, String)> {
    let (base, sub) = match kind.split_once('/') {
        Some((b, s)) => (b, Some(s)),
        None => (kind, None),
    };
    let (group, resource) = match base {
        "Secret" => ("", "secrets"),
        "ConfigMap" => ("", "configmaps"),
        "Service" => ("", "services"),
        "ServiceAccount" => ("", "serviceaccounts"),
        "PersistentVolumeClaim" => ("", "persistentvolumeclaims"),
        "Pod" => ("", "pods"),
        "Namespace" => ("", "namespaces"),
        // kube-runtime's Recorder writes events.k8s.io/v1 Events.
        "Event" => ("events.k8s.io", "events"),
        "Deployment" => ("apps", "deployments"),
        "StatefulSet" => ("apps", "statefulsets"),
        "Job" => ("batch", "jobs"),
        "CronJob" => ("batch", "cronjobs"),
        "HorizontalPodAutoscaler" => ("autoscaling", "horizontalpodautoscalers"),
        "PodDisruptionBudget" => ("policy", "poddisruptionbudgets"),
        "NetworkPolicy" => ("networking.k8s.io", "networkpolicies"),
        "Ingress" => ("networking.k8s.io", "ingresses"),
        "Lease" => ("coordination.k8s.io", "leases"),
        "HealthcarePlatform" => ("caduceus.io", "healthcareplatforms"),
        "Cluster" => ("postgresql.cnpg.io", "clusters"),
        "ScheduledBackup" => ("postgresql.cnpg.io", "scheduledbackups"),
        "ServiceMonitor" => ("monitoring.coreos.com", "servicemonitors"),
        "PrometheusRule" => ("monitoring.coreos.com", "prometheusrules"),
        "CustomResourceDefinition" => ("apiextensions.k8s.io", "customresourcedefinitions"),
        _ => return None,
    };
    Some((
        group,
        match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource.to_string(),
        },
    ))
}

/// The verbs the default chart grants per (group, resource), ClusterRole and Role together.
fn chart_grants() -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for obj in helm_template(&[]).expect("helm template") {
        if obj["kind"] != "ClusterRole" && obj["kind"] != "Role" {
            continue;
        }
        for rule in obj["rules"].as_array().expect("rules") {
            for g in rule["apiGroups"].as_array().expect("groups") {
                for r in rule["resources"].as_array().expect("resources") {
                    let entry = out
                        .entry((
                            g.as_str().expect("group").to_string(),
                            r.as_str().expect("resource").to_string(),
                        ))
                        .or_default();
                    for v in rule["verbs"].as_array().expect("verbs") {
                        entry.push(v.as_str().expect("verb").to_string());
                    }
                }
            }
        }
    }
    out
}

/// A CRD that serves any object of a kind (for the CloudNativePG and Prometheus Operator kinds).
fn open_crd(group: &str, kind: &str, plural: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                      "listKind": format!("{kind}List")},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object",
                                               "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    }))
    .expect("CRD")
}

/// The test's own API calls, to subtract from the stand-in's counts.
#[derive(Default)]
struct Mine(BTreeMap<(String, String), u64>);

impl Mine {
    fn add(&mut self, verb: &str, kind: &str) {
        *self
            .0
            .entry((verb.to_string(), kind.to_string()))
            .or_default() += 1;
    }
}

fn dynamic_api(client: &Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let (group, version) = match kind {
        "HealthcarePlatform" => ("caduceus.io", "v1alpha1"),
        "Secret" | "Namespace" => ("", "v1"),
        "NetworkPolicy" => ("networking.k8s.io", "v1"),
        other => panic!("no API for {other}"),
    };
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    if kind == "Namespace" {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    }
}

fn phase(standin: &StandIn, ns: &str, name: &str) -> Option<String> {
    standin
        .get("caduceus.io/v1alpha1", "HealthcarePlatform", ns, name)
        .and_then(|p| p["status"]["phase"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_the_controller_makes_is_granted_by_the_chart() {
    let standin = StandIn::start().await.expect("stand-in starts");
    let client = standin.client().expect("client");
    let mut mine = Mine::default();

    // CRDs: ours, and open ones for the optional integrations so those paths run too.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let ours: CustomResourceDefinition = serde_norway::from_str(
        &std::fs::read_to_string(repo_root().join("crds/caduceus.io_healthcareplatforms.yaml"))
            .expect("CRD file"),
    )
    .expect("CRD YAML");
    for crd in [
        ours,
        open_crd("postgresql.cnpg.io", "Cluster", "clusters"),
        open_crd("postgresql.cnpg.io", "ScheduledBackup", "scheduledbackups"),
        open_crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
        open_crd("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
    ] {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD");
        mine.add("create", "CustomResourceDefinition");
    }

    // Every example, in its namespace, with the Secrets it names.
    let mut platforms = Vec::new();
    let mut namespaces = std::collections::BTreeSet::new();
    for file in yaml_files(&repo_root().join("examples")).expect("examples/") {
        for obj in yaml_file(&file).expect("example") {
            if obj["kind"] == "HealthcarePlatform" {
                platforms.push(obj);
            }
        }
    }
    assert!(platforms.len() >= 4, "the four examples");
    for p in &platforms {
        let ns = p["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        if namespaces.insert(ns.clone()) {
            let api = dynamic_api(&client, &ns, "Namespace", "namespaces");
            let obj: DynamicObject = serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .expect("namespace");
            api.create(&PostParams::default(), &obj)
                .await
                .expect("namespace");
            mine.add("create", "Namespace");
        }
        for part in ["database", "cache"] {
            let sref = &p["spec"][part]["secretRef"];
            if let (Some(name), Some(key)) = (sref["name"].as_str(), sref["key"].as_str()) {
                let url = if part == "database" {
                    "postgres://caduceus:pw@db.example:5432/caduceus?sslmode=verify-full"
                } else {
                    "rediss://:pw@cache.example:6379/0"
                };
                let secret: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": ns},
                    "stringData": {key: url}
                }))
                .expect("secret");
                dynamic_api(&client, &ns, "Secret", "secrets")
                    .create(&PostParams::default(), &secret)
                    .await
                    .expect("secret");
                mine.add("create", "Secret");
            }
        }
    }

    standin.set_auto_ready(true);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller_client = client.clone();
    let controller = tokio::spawn(async move {
        let config = ControllerConfig {
            progress_interval: Duration::from_millis(300),
            error_backoff_base: Duration::from_millis(50),
            error_backoff_max: Duration::from_secs(1),
            namespace: None,
            ..ControllerConfig::default()
        };
        run_controller(controller_client, config, async move {
            let _ = stopped.await;
        })
        .await
        .expect("controller runs");
    });

    for p in &platforms {
        let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
        let obj: DynamicObject = serde_json::from_value(p.clone()).expect("platform");
        dynamic_api(&client, ns, "HealthcarePlatform", "healthcareplatforms")
            .create(&PostParams::default(), &obj)
            .await
            .expect("platform created");
        mine.add("create", "HealthcarePlatform");
    }
    let minimal = platforms
        .iter()
        .find(|p| p["spec"]["deletionPolicy"] == "Delete")
        .expect("a platform with deletionPolicy Delete (minimal.yaml)");
    let retained = platforms
        .iter()
        .find(|p| p["spec"]["deletionPolicy"] == "Retain")
        .expect("a platform with deletionPolicy Retain (production.yaml)");
    let name = minimal["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let ns = minimal["metadata"]["namespace"]
        .as_str()
        .expect("namespace")
        .to_string();
    assert!(
        standin
            .wait_until(WAIT, |s| {
                s.mark_workloads_ready();
                phase(s, &ns, &name).as_deref() == Some("Ready")
            })
            .await,
        "{ns}/{name} never became Ready"
    );

    // Drift repair: a deleted NetworkPolicy comes back.
    let policy = format!("{name}-default-deny");
    dynamic_api(&client, &ns, "NetworkPolicy", "networkpolicies")
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    mine.add("delete", "NetworkPolicy");
    assert!(
        standin
            .wait_until(WAIT, |s| s
                .get("networking.k8s.io/v1", "NetworkPolicy", &ns, &policy)
                .is_some())
            .await,
        "NetworkPolicy {policy} not restored"
    );

    // Scaling through the CR.
    dynamic_api(&client, &ns, "HealthcarePlatform", "healthcareplatforms")
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"apiServer": {"autoscaling": {
                "enabled": true, "minReplicas": 2, "maxReplicas": 4}}}})),
        )
        .await
        .expect("patch platform");
    mine.add("patch", "HealthcarePlatform");
    assert!(
        standin
            .wait_until(WAIT, |s| s
                .get(
                    "autoscaling/v2",
                    "HorizontalPodAutoscaler",
                    &ns,
                    &format!("{name}-api")
                )
                .is_some_and(|h| h["spec"]["minReplicas"] == 2))
            .await,
        "the HPA did not follow the CR"
    );

    // Deletion under both policies.
    for p in [minimal, retained] {
        let pns = p["metadata"]["namespace"]
            .as_str()
            .expect("namespace")
            .to_string();
        let pname = p["metadata"]["name"].as_str().expect("name").to_string();
        dynamic_api(&client, &pns, "HealthcarePlatform", "healthcareplatforms")
            .delete(&pname, &DeleteParams::default())
            .await
            .expect("delete platform");
        mine.add("delete", "HealthcarePlatform");
        assert!(
            standin
                .wait_until(WAIT, |s| s
                    .get("caduceus.io/v1alpha1", "HealthcarePlatform", &pns, &pname)
                    .is_none())
                .await,
            "{pns}/{pname} was not deleted (finalizer stuck?)"
        );
    }

    let _ = stop.send(());
    let _ = controller.await;
    let calls = standin.calls();
    standin.shutdown().await;

    let grants = chart_grants();
    let mut problems = Vec::new();
    let mut checked = 0;
    for ((verb, kind), count) in &calls.0 {
        let own = mine
            .0
            .get(&(verb.clone(), kind.clone()))
            .copied()
            .unwrap_or(0);
        if *count <= own || verb == "discovery" {
            continue;
        }
        let verb = if verb == "apply" {
            "patch"
        } else {
            verb.as_str()
        };
        let Some((group, resource)) = resource_of(kind) else {
            problems.push(format!(
                "{verb} {kind}: unknown kind (add it to resource_of)"
            ));
            continue;
        };
        checked += 1;
        let granted = grants
            .get(&(group.to_string(), resource.clone()))
            .is_some_and(|v| v.iter().any(|g| g == verb));
        if !granted {
            problems.push(format!(
                "the operator called {verb} on {group}/{resource} ({} time(s)); the chart does not grant it",
                count - own
            ));
        }
    }
    println!(
        "{checked} (verb, resource) pairs used by the controller, all checked against the chart"
    );
    assert!(checked >= 10, "too few calls observed: {calls:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

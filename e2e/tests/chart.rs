//! The Helm chart `charts/caduceus-operator`: CRDs in step with `crds/`, version in step with the
//! crates, `helm lint --strict`, `helm template` (default values: `rbac.scope` Cluster; full
//! values and `rbac.scope` Namespaced) validated for Kubernetes 1.33 and 1.37, hardened
//! Deployment, values schema. The RBAC rules themselves: `e2e/tests/rbac.rs`.

use std::fs;
use std::process::Command;

use caduceus_e2e::{
    cargo_metadata, helm_template, of_kind, package, repo_root, run, tool, validate_objects,
    yaml_file,
};
use serde_json::Value;

const FULL_VALUES: &str = "charts/caduceus-operator/ci/full-values.yaml";

fn full_values_args() -> Vec<String> {
    vec![
        "-f".to_string(),
        repo_root().join(FULL_VALUES).display().to_string(),
    ]
}

fn template_full() -> Vec<Value> {
    let args = full_values_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    helm_template(&refs).expect("helm template with full values")
}

#[test]
fn chart_crds_are_byte_identical_to_repo_crds() {
    let root = repo_root();
    let mut repo: Vec<String> = fs::read_dir(root.join("crds"))
        .expect("crds/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let mut chart: Vec<String> = fs::read_dir(root.join("charts/caduceus-operator/crds"))
        .expect("charts/caduceus-operator/crds/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    repo.sort();
    chart.sort();
    assert!(!repo.is_empty(), "crds/ is empty");
    assert_eq!(
        repo, chart,
        "chart crds/ and crds/ hold different files: run scripts/sync-crds.sh"
    );
    for name in &repo {
        let a = fs::read(root.join("crds").join(name)).expect("read crds file");
        let b = fs::read(root.join("charts/caduceus-operator/crds").join(name))
            .expect("read chart crds file");
        assert!(
            a == b,
            "charts/caduceus-operator/crds/{name} differs from crds/{name}: run scripts/sync-crds.sh"
        );
    }
}

#[test]
fn chart_version_and_app_version_follow_the_operator_crate() {
    let metadata = cargo_metadata().expect("cargo metadata");
    let version = package(&metadata, "caduceus-operator").expect("operator package")["version"]
        .as_str()
        .expect("version")
        .to_string();
    let chart = yaml_file(&repo_root().join("charts/caduceus-operator/Chart.yaml"))
        .expect("Chart.yaml")
        .remove(0);
    assert_eq!(chart["version"], version.as_str(), "Chart.yaml version");
    assert_eq!(
        chart["appVersion"],
        version.as_str(),
        "Chart.yaml appVersion"
    );
}

#[test]
fn helm_lint_strict_passes_with_default_and_full_values() {
    let helm = tool("helm").expect("helm");
    let chart = repo_root().join("charts/caduceus-operator");
    let out = run(Command::new(&helm).args(["lint", "--strict"]).arg(&chart)).expect("helm lint");
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let out = run(Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(&chart)
        .args(full_values_args()))
    .expect("helm lint with full values");
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn default_render_validates_and_is_hardened() {
    let objects = helm_template(&[]).expect("helm template");
    let report = validate_objects("chart (default values)", &objects).expect("validation");
    assert!(
        report.skipped.is_empty(),
        "default values render no CRD-backed kinds"
    );
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(
            objects.iter().any(|o| o["kind"] == kind),
            "default render lacks a {kind}"
        );
    }
    let deployment = of_kind(&objects, "apps", "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2, "two replicas by default");
    check_hardened(deployment);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_array().expect("env");
    assert!(
        env.iter()
            .any(|e| e["name"] == "CADUCEUS_LEADER_ELECTION" && e["value"] == "true"),
        "leader election on by default"
    );
    assert_eq!(
        container["image"],
        format!(
            "ghcr.io/caduceus-health/caduceus-operator:{}",
            env!("CARGO_PKG_VERSION")
        ),
        "image tag defaults to the crate version"
    );
    // Nothing to do with monitoring.coreos.com unless asked for.
    assert!(!objects.iter().any(|o| o["kind"] == "ServiceMonitor"));
}

#[test]
fn full_values_render_validates() {
    let objects = template_full();
    let report = validate_objects("chart (full values)", &objects).expect("validation");
    assert_eq!(
        report.skipped.len(),
        1,
        "only the ServiceMonitor is skipped"
    );
    let deployment = of_kind(&objects, "apps", "Deployment")[0];
    check_hardened(deployment);
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "registry.example.com/caduceus/caduceus-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "a digest wins over the tag"
    );
    let monitor = of_kind(&objects, "monitoring.coreos.com", "ServiceMonitor");
    assert_eq!(monitor.len(), 1);
    assert_eq!(monitor[0]["spec"]["endpoints"][0]["port"], "http-metrics");
    let policy = of_kind(&objects, "networking.k8s.io", "NetworkPolicy")[0];
    assert_eq!(
        policy["spec"]["egress"][1]["to"][0]["ipBlock"]["cidr"],
        "10.96.0.1/32"
    );
    let pdb = of_kind(&objects, "policy", "PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["minAvailable"], 2);
}

const NAMESPACED: [&str; 4] = [
    "--set",
    "rbac.scope=Namespaced",
    "--set",
    "watchNamespace=clinical",
];

#[test]
fn namespaced_rbac_lints_renders_and_validates() {
    let helm = tool("helm").expect("helm");
    let chart = repo_root().join("charts/caduceus-operator");
    let out = run(Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(&chart)
        .args(NAMESPACED))
    .expect("helm lint with rbac.scope Namespaced");
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let objects = helm_template(&NAMESPACED).expect("helm template with rbac.scope Namespaced");
    let report = validate_objects("chart (rbac.scope Namespaced)", &objects).expect("validation");
    assert!(report.skipped.is_empty());
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(
            !objects.iter().any(|o| o["kind"] == kind),
            "rbac.scope Namespaced renders a {kind}"
        );
    }
    let namespaces = |kind: &str| -> Vec<String> {
        let mut ns: Vec<String> = objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .map(|o| {
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        ns.sort();
        ns
    };
    // The operator's Role in the watched namespace, leader election in the release namespace.
    assert_eq!(namespaces("Role"), ["caduceus-system", "clinical"]);
    assert_eq!(namespaces("RoleBinding"), ["caduceus-system", "clinical"]);
    let deployment = of_kind(&objects, "apps", "Deployment")[0];
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    assert!(
        env.iter()
            .any(|e| e["name"] == "CADUCEUS_WATCH_NAMESPACE" && e["value"] == "clinical"),
        "the operator watches the namespace its Role is in"
    );
}

/// Pod Security Standard "restricted", probes and resources.
fn check_hardened(deployment: &Value) {
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert!(
        pod["hostNetwork"].is_null() && pod["hostPID"].is_null(),
        "no host namespaces"
    );
}

#[test]
fn values_schema_and_template_guards_reject_bad_values() {
    let cases: [(&[&str], &str); 7] = [
        (&["--set", "replicaCount=0"], "replicaCount"),
        (&["--set", "rbac.scope=Namespace"], "rbac/scope"),
        // Namespaced RBAC is granted in watchNamespace: the schema wants one...
        (&["--set", "rbac.scope=Namespaced"], "/watchNamespace"),
        // ...and so does the template (`--skip-schema-validation`).
        (
            &["--set", "rbac.scope=Namespaced", "--skip-schema-validation"],
            "rbac.scope Namespaced needs watchNamespace",
        ),
        (&["--set", "image.tag=latest"], "image/tag"),
        (&["--set", "metrics.port=70000"], "metrics/port"),
        (
            &["--set", "leaderElection.enabled=false"],
            "leaderElection.enabled must be true",
        ),
    ];
    for (args, expected) in cases {
        let err = helm_template(args).expect_err(&format!("{args:?} must be rejected"));
        let text = format!("{err:#}");
        assert!(
            text.contains(expected),
            "{args:?}: expected `{expected}` in:\n{text}"
        );
    }
    // One replica without leader election is allowed.
    helm_template(&[
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicaCount=1",
    ])
    .expect("single replica without leader election");
}

/// The value of `pub const NAME: TYPE = VALUE;` in operator/src/names.rs (quotes removed).
fn names_const(name: &str) -> String {
    let text = fs::read_to_string(repo_root().join("operator/src/names.rs")).expect("names.rs");
    let prefix = format!("pub const {name}: ");
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&prefix)
                .and_then(|r| r.split_once(" = "))
                .map(|(_, v)| v.trim_end_matches(';').trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("{name} not found in operator/src/names.rs"))
}

#[test]
fn operator_pods_can_reach_the_platforms_compliance_endpoint() {
    // Each platform's NetworkPolicy admits pods labelled app.kubernetes.io/name=OPERATOR_APP_NAME
    // on the API's admin port; the chart's pods must carry that label and be allowed out to it.
    let operator_name = names_const("OPERATOR_APP_NAME");
    let port = i64::from(caduceus_contract::settings::API_ADMIN_PORT);
    for objects in [helm_template(&[]).expect("default"), template_full()] {
        let deployment = of_kind(&objects, "apps", "Deployment")[0];
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
            operator_name.as_str()
        );
        let policy = of_kind(&objects, "networking.k8s.io", "NetworkPolicy")[0];
        let egress = policy["spec"]["egress"].as_array().expect("egress");
        assert!(
            egress.iter().any(|rule| {
                rule["ports"][0]["port"] == port
                    && rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                        == "caduceus-api"
            }),
            "the operator's NetworkPolicy must allow egress to the API admin port {port}"
        );
    }
}

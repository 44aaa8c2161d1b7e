//! The ArgoCD integration in `examples/argocd/`: the Lua health check for
//! `caduceus.io/HealthcarePlatform` run by real Lua interpreters (5.1, what ArgoCD embeds, and
//! 5.4) against the samples listed in `health_test.yaml` (ArgoCD's own test format), the copy in
//! `argocd-cm-patch.yaml`, and the Applications' sync waves.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use caduceus_e2e::{repo_root, run, tool, validate_objects, yaml_file};
use serde_json::Value;

const CUSTOMIZATION: &str =
    "examples/argocd/resource-customizations/caduceus.io/HealthcarePlatform";

/// A JSON value as a Lua expression (nulls become nil, as in ArgoCD's conversion).
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(b as char),
            other => out.push_str(&format!("\\{other:03}")),
        }
    }
    out.push('"');
    out
}

/// Runs an ArgoCD health script against an object: returns (status, message).
fn run_health(interpreter: &Path, script: &Path, obj: &Value) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let harness = dir.path().join("harness.lua");
    fs::write(
        &harness,
        format!(
            "obj = {}\nlocal chunk = assert(loadfile({}))\nlocal hs = chunk()\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message))\n",
            lua_literal(obj),
            lua_string(&script.display().to_string())
        ),
    )
    .expect("write harness");
    let out = run(Command::new(interpreter).arg(&harness)).expect("lua runs the health check");
    let (status, message) = out.split_once('\n').expect("status and message lines");
    (status.to_string(), message.to_string())
}

fn interpreters() -> Vec<PathBuf> {
    vec![
        tool("lua5.1").expect("lua5.1 (scripts/tools.sh)"),
        tool("lua").expect("lua 5.4 (scripts/tools.sh)"),
    ]
}

#[test]
fn health_check_passes_every_case_in_health_test_yaml() {
    let dir = repo_root().join(CUSTOMIZATION);
    let script = dir.join("health.lua");
    let tests = yaml_file(&dir.join("health_test.yaml"))
        .expect("health_test.yaml")
        .remove(0);
    let cases = tests["tests"].as_array().expect("tests list");
    assert!(cases.len() >= 7, "every health status is covered");
    let mut seen = std::collections::BTreeSet::new();
    for interpreter in interpreters() {
        for case in cases {
            let input = case["inputPath"].as_str().expect("inputPath");
            let obj = yaml_file(&dir.join(input)).expect("testdata").remove(0);
            let (status, message) = run_health(&interpreter, &script, &obj);
            assert_eq!(
                status,
                case["healthStatus"]["status"].as_str().expect("status"),
                "{input} with {}",
                interpreter.display()
            );
            assert_eq!(
                message,
                case["healthStatus"]["message"].as_str().expect("message"),
                "{input} with {}",
                interpreter.display()
            );
            seen.insert(status);
        }
    }
    for status in ["Healthy", "Progressing", "Degraded", "Suspended"] {
        assert!(seen.contains(status), "no case ends {status}");
    }
}

#[test]
fn samples_match_the_crd_schema() {
    // The samples must look like what the operator really writes (field names, condition shape).
    let dir = repo_root().join(CUSTOMIZATION).join("testdata");
    let mut objects = Vec::new();
    for entry in fs::read_dir(&dir).expect("testdata/") {
        objects.extend(yaml_file(&entry.expect("entry").path()).expect("sample"));
    }
    let report = validate_objects("argocd testdata", &objects).expect("samples validate");
    assert_eq!(report.custom.len(), objects.len());
}

#[test]
fn observed_generation_compares_numbers_not_strings() {
    // A float generation (how ArgoCD's JSON decoding hands numbers to Lua) equals an integer one.
    let script = repo_root().join(CUSTOMIZATION).join("health.lua");
    let obj: Value = serde_json::json!({
        "metadata": {"generation": 7.0},
        "spec": {},
        "status": {"observedGeneration": 7,
                   "conditions": [{"type": "Ready", "status": "True", "message": "ok"}]}
    });
    for interpreter in interpreters() {
        assert_eq!(
            run_health(&interpreter, &script, &obj),
            ("Healthy".to_string(), "ok".to_string())
        );
    }
}

#[test]
fn argocd_cm_patch_embeds_the_tested_script() {
    let root = repo_root();
    let script =
        fs::read_to_string(root.join(CUSTOMIZATION).join("health.lua")).expect("health.lua");
    let cm = yaml_file(&root.join("examples/argocd/argocd-cm-patch.yaml"))
        .expect("argocd-cm-patch.yaml")
        .remove(0);
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    assert_eq!(
        cm["data"]["resource.customizations.health.caduceus.io_HealthcarePlatform"],
        script.as_str(),
        "argocd-cm-patch.yaml must embed health.lua unchanged"
    );
    // The Application health check the sync waves rely on.
    let app_script = cm["data"]["resource.customizations.health.argoproj.io_Application"]
        .as_str()
        .expect("Application health check");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.lua");
    fs::write(&path, app_script).expect("write");
    let app = serde_json::json!({"status": {"health": {"status": "Healthy"}}});
    let syncing = serde_json::json!({"status": {}});
    for interpreter in interpreters() {
        assert_eq!(run_health(&interpreter, &path, &app).0, "Healthy");
        assert_eq!(run_health(&interpreter, &path, &syncing).0, "Progressing");
    }
    validate_objects("argocd-cm-patch", &[cm]).expect("ConfigMap validates");
}

fn wave(app: &Value) -> i64 {
    app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
        .as_str()
        .expect("sync-wave annotation")
        .parse()
        .expect("numeric wave")
}

#[test]
fn applications_sync_crds_and_operator_before_the_platform() {
    let root = repo_root();
    let operator = yaml_file(&root.join("examples/argocd/operator-application.yaml"))
        .expect("operator app")
        .remove(0);
    let platform = yaml_file(&root.join("examples/argocd/platform-application.yaml"))
        .expect("platform app")
        .remove(0);
    for app in [&operator, &platform] {
        assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1");
        assert_eq!(app["kind"], "Application");
        assert_eq!(
            app["spec"]["source"]["repoURL"],
            "https://github.com/caduceus-health/caduceus.git"
        );
    }
    assert!(
        wave(&operator) < wave(&platform),
        "the operator Application must sync in an earlier wave"
    );
    let chart_path = operator["spec"]["source"]["path"].as_str().expect("path");
    assert!(
        root.join(chart_path).join("Chart.yaml").is_file(),
        "{chart_path} is the chart"
    );
    let examples = platform["spec"]["source"]["path"].as_str().expect("path");
    let include = platform["spec"]["source"]["directory"]["include"]
        .as_str()
        .expect("include");
    let platform_file = root.join(examples).join(include);
    let objects = yaml_file(&platform_file).expect("the platform example");
    assert!(
        objects.iter().any(|o| o["kind"] == "HealthcarePlatform"),
        "{} holds a HealthcarePlatform",
        platform_file.display()
    );
    let options: Vec<&str> = platform["spec"]["syncPolicy"]["syncOptions"]
        .as_array()
        .expect("syncOptions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(options.contains(&"SkipDryRunOnMissingResource=true"));
    assert!(options.contains(&"ServerSideDiff=true"));
    assert_eq!(
        platform["spec"]["syncPolicy"]["automated"]["prune"], false,
        "never prune a platform automatically"
    );
}

#[test]
fn lua_literal_escapes_strings() {
    assert_eq!(lua_string("a\"b\\c\nd\u{7}"), "\"a\\\"b\\\\c\\nd\\007\"");
    let v = serde_json::json!({"k": [1, null, "x"], "n": null});
    assert_eq!(lua_literal(&v), "{[\"k\"] = {1, nil, \"x\"}}");
}

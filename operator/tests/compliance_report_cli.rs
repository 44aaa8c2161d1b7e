//! `caduceus-operator compliance-report` as a GitOps pre-merge check: exit codes and output.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_caduceus-operator");

fn run(yaml: &str, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("platform.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["compliance-report", "-f", file.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"apiVersion: caduceus.io/v1alpha1
kind: HealthcarePlatform
metadata: {name: demo, namespace: clinic}
spec:
  compliance:
    profiles: [HIPAA, SOC2]
    exceptions:
      - rule: database-tls
        justification: operator-issued Postgres TLS lands in CHG-42
        expires: "2099-01-01T00:00:00Z"
"#;

#[test]
fn compliant_spec_exits_zero() {
    let (code, out, err) = run(GOOD, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("HealthcarePlatform clinic/demo"), "{out}");
    assert!(out.contains("session-idle-timeout"), "{out}");
    assert!(
        out.contains("NotEvaluated"),
        "cluster-only rules are not passed: {out}"
    );
}

#[test]
fn violation_exits_one_and_names_the_rule() {
    let lax = GOOD.replace(
        "spec:\n",
        "spec:\n  security: {accessTokenTtlMinutes: 120}\n",
    );
    let (code, out, _) = run(&lax, &["-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rules = v["platforms"][0]["rules"].as_array().unwrap();
    let ttl = rules
        .iter()
        .find(|r| r["rule"] == "access-token-ttl")
        .unwrap();
    assert_eq!(ttl["result"], "Fail");
    assert_eq!(v["platforms"][0]["compliant"], false);
}

#[test]
fn invalid_input_exits_two_with_a_message() {
    let (code, out, err) = run("apiVersion: v1\nkind: Pod\n", &[]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("HealthcarePlatform"), "{err}");
    let (code, _, err) = run(GOOD, &["-o", "yaml"]);
    assert_eq!(code, 2, "clap refuses unknown formats: {err}");
}

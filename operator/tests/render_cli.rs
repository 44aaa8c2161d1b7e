//! `caduceus-operator render` and `crd` as a user runs them: real process, exit codes, stderr.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_caduceus-operator");

fn render_stdin(input: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["render", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn render_prints_children_of_an_example() {
    let example = format!("{}/../examples/minimal.yaml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .args(["render", "-f", &example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("kind: Deployment") && text.contains("kind: NetworkPolicy"));
    assert!(text.contains("PLACEHOLDER-generated-by-caduceus-operator-at-apply-time"));
}

#[test]
fn render_includes_monitoring_objects_unless_told_the_crds_are_absent() {
    let example = format!("{}/../examples/production.yaml", env!("CARGO_MANIFEST_DIR"));
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["render", "-f", &example])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // What the operator applies where the Prometheus Operator CRDs are served.
    let with = run(&[]);
    assert_eq!(with.matches("kind: ServiceMonitor").count(), 2, "{with}");
    assert_eq!(with.matches("kind: PrometheusRule").count(), 1);
    assert!(with.contains("apiVersion: monitoring.coreos.com/v1"));
    assert!(with.contains("name: clinic-dashboard"));
    // Without those CRDs the operator applies none of them.
    let without = run(&["--without-prometheus-operator"]);
    assert!(!without.contains("monitoring.coreos.com"));
    assert!(!without.contains("name: clinic-dashboard"));
    assert!(without.contains("kind: Deployment"));
}

#[test]
fn invalid_input_names_the_field_and_fails() {
    let bad = "apiVersion: caduceus.io/v1alpha1\nkind: HealthcarePlatform\nmetadata:\n  name: demo\nspec:\n  apiServer:\n    autoscaling:\n      minReplicas: 5\n      maxReplicas: 2\n";
    let out = render_stdin(bad);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("spec.apiServer.autoscaling.maxReplicas"),
        "{err}"
    );

    let wrong_type = "apiVersion: caduceus.io/v1alpha1\nkind: HealthcarePlatform\nmetadata:\n  name: demo\nspec:\n  cache:\n    provider: Memcached\n";
    let out = render_stdin(wrong_type);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("spec.cache.provider"), "{err}");
}

#[test]
fn missing_file_fails_with_a_message() {
    let out = Command::new(BIN)
        .args(["render", "-f", "/nonexistent/platform.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn crd_command_prints_the_committed_crd() {
    let out = Command::new(BIN).arg("crd").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(format!(
        "{}/../crds/caduceus.io_healthcareplatforms.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

//! Prometheus rules: every PrometheusRule the operator renders for an example, and every
//! `*.rules.yaml` file in the repository, passes `promtool check rules`; every `*.test.yaml` rule
//! unit test in the repository passes `promtool test rules`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use caduceus_e2e::{of_kind, render_example, repo_root, run, tool, yaml_files};

fn rule_files(dir: &Path, out: &mut Vec<PathBuf>) {
    files_ending(dir, &[".rules.yaml", ".rules.yml"], out);
}

fn files_ending(dir: &Path, suffixes: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                files_ending(&path, suffixes, out);
            }
        } else if suffixes.iter().any(|s| name.ends_with(s)) {
            out.push(path);
        }
    }
}

#[test]
fn rules_pass_promtool() {
    let promtool = tool("promtool").expect("promtool (scripts/tools.sh)");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    rule_files(&repo_root(), &mut files);
    for example in yaml_files(&repo_root().join("examples")).expect("examples/") {
        let rendered = render_example(&example).expect("render");
        for (i, rule) in of_kind(&rendered, "monitoring.coreos.com", "PrometheusRule")
            .into_iter()
            .enumerate()
        {
            // promtool reads the `groups:` document that PrometheusRule.spec carries.
            let path = dir.path().join(format!(
                "{}-{i}.rules.yaml",
                example.file_stem().expect("stem").to_string_lossy()
            ));
            fs::write(
                &path,
                // JSON is YAML that keeps every string quoted.
                serde_json::to_string_pretty(&rule["spec"]).expect("rules as JSON"),
            )
            .expect("write rules");
            files.push(path);
        }
    }
    if files.is_empty() {
        println!("prometheus-rules: SKIPPED: no example renders a PrometheusRule and no *.rules.yaml exists");
        return;
    }
    for file in &files {
        let out = run(Command::new(&promtool).arg("check").arg("rules").arg(file))
            .unwrap_or_else(|e| panic!("promtool check rules {}: {e:#}", file.display()));
        println!("{}", out.trim_end());
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

#[test]
fn rule_unit_tests_pass_promtool() {
    let promtool = tool("promtool").expect("promtool (scripts/tools.sh)");
    let mut tests = Vec::new();
    files_ending(&repo_root(), &[".test.yaml", ".test.yml"], &mut tests);
    // Only promtool rule tests (they name their rule files).
    tests.retain(|p| fs::read_to_string(p).is_ok_and(|t| t.contains("rule_files:")));
    if tests.is_empty() {
        println!("prometheus-rules: SKIPPED: no promtool rule unit tests in the repository");
        return;
    }
    for test in &tests {
        let dir = test.parent().expect("parent");
        let out = run(Command::new(&promtool)
            .current_dir(dir)
            .args(["test", "rules"])
            .arg(test.file_name().expect("name")))
        .unwrap_or_else(|e| panic!("promtool test rules {}: {e:#}", test.display()));
        println!("{}", out.trim_end());
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

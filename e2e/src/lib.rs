//! Helpers shared by the shipping checks in `tests/`: repository paths, the tools installed by
//! `scripts/tools.sh`, running commands, multi-document YAML, and validation of rendered objects
//! (`kubernetes-validate --strict` for built-in kinds, the repository's CRD schema for
//! `caduceus.io` objects).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// Kubernetes versions every rendered object is validated against.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// Kinds `kubernetes-validate` has no schema for and whose CRD schemas this repository does not
/// ship: they are skipped by name (and each skip is printed), never silently.
pub const NO_SCHEMA_KINDS: [(&str, &str); 5] = [
    ("monitoring.coreos.com", "ServiceMonitor"),
    ("monitoring.coreos.com", "PrometheusRule"),
    ("postgresql.cnpg.io", "Cluster"),
    ("postgresql.cnpg.io", "ScheduledBackup"),
    ("argoproj.io", "Application"),
];

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A tool installed by `scripts/tools.sh` (`.tools/bin`, `.tools/venv/bin`), else from `PATH`.
pub fn tool(name: &str) -> Result<PathBuf> {
    let root = repo_root();
    for dir in [root.join(".tools/bin"), root.join(".tools/venv/bin")] {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("`{name}` not found in .tools/ or on PATH: run scripts/tools.sh")
}

/// Runs a command and returns its stdout; a non-zero exit is an error carrying stdout and stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}\n{}",
            out.status,
            stdout.trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(stdout)
}

/// Every non-empty document of a multi-document YAML text, as JSON values.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).with_context(|| format!("YAML document {i}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Reads a YAML file into its documents.
pub fn yaml_file(path: &Path) -> Result<Vec<Value>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    yaml_documents(&text).with_context(|| format!("in {}", path.display()))
}

/// `group/version` split into the API group ("" for the core group).
pub fn api_group(obj: &Value) -> &str {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    match api_version.split_once('/') {
        Some((group, _)) => group,
        None => "",
    }
}

/// `Kind/name` of an object, for messages.
pub fn describe(obj: &Value) -> String {
    format!(
        "{}/{} ({})",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["name"].as_str().unwrap_or("?"),
        obj["apiVersion"].as_str().unwrap_or("?")
    )
}

/// Objects of one kind (matching `apiVersion` group and `kind`).
pub fn of_kind<'a>(objects: &'a [Value], group: &str, kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|o| api_group(o) == group && o["kind"] == kind)
        .collect()
}

/// What `validate_objects` did with each object.
#[derive(Debug, Default)]
pub struct Validation {
    /// Validated by `kubernetes-validate --strict` against every version in `KUBERNETES_VERSIONS`.
    pub kubernetes: Vec<String>,
    /// Validated against the repository's CRD schema.
    pub custom: Vec<String>,
    /// Skipped by name (`NO_SCHEMA_KINDS`).
    pub skipped: Vec<String>,
}

/// Validates rendered objects: built-in kinds with `kubernetes-validate --strict` for Kubernetes
/// 1.33 and 1.37, `caduceus.io` objects against `crds/`, and the kinds in `NO_SCHEMA_KINDS`
/// skipped by name. Any failure, or any object of a kind nobody has a schema for, is an error.
pub fn validate_objects(label: &str, objects: &[Value]) -> Result<Validation> {
    let mut report = Validation::default();
    let mut builtin = Vec::new();
    let mut custom = Vec::new();
    for obj in objects {
        let group = api_group(obj);
        let kind = obj["kind"].as_str().unwrap_or_default();
        if obj["apiVersion"].as_str().is_none() || kind.is_empty() {
            bail!("{label}: an object without apiVersion/kind: {obj}");
        }
        if NO_SCHEMA_KINDS.contains(&(group, kind)) {
            println!(
                "{label}: skipped {} (no schema for {group}/{kind} is shipped here)",
                describe(obj)
            );
            report.skipped.push(describe(obj));
        } else if group == "caduceus.io" {
            custom.push(obj.clone());
        } else {
            builtin.push(obj.clone());
        }
    }
    if !builtin.is_empty() {
        kubernetes_validate(label, &builtin)?;
        report.kubernetes = builtin.iter().map(describe).collect();
    }
    if !custom.is_empty() {
        validate_custom_resources(label, &custom)?;
        report.custom = custom.iter().map(describe).collect();
    }
    Ok(report)
}

fn kubernetes_validate(label: &str, objects: &[Value]) -> Result<()> {
    let kv = tool("kubernetes-validate")?;
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for (i, obj) in objects.iter().enumerate() {
        let path = dir.path().join(format!(
            "{i:03}-{}-{}.yaml",
            obj["kind"].as_str().unwrap_or("object").to_lowercase(),
            obj["metadata"]["name"].as_str().unwrap_or("unnamed")
        ));
        // JSON (a subset of YAML) keeps every string quoted: re-emitted YAML would leave `no` or
        // `on` bare, which YAML 1.1 readers (PyYAML, kubectl) take for booleans.
        fs::write(&path, serde_json::to_string_pretty(obj)?)?;
        files.push(path);
    }
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(&kv)
            .args(["--strict", "--quiet", "-k", version])
            .args(&files)
            .output()
            .with_context(|| format!("cannot run {}", kv.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || !text.trim().is_empty() {
            // --quiet prints only warnings and failures: a missing schema is a warning there,
            // and it means an object of an unexpected kind or apiVersion.
            bail!(
                "{label}: kubernetes-validate --strict -k {version} reported ({}):\n{}",
                out.status,
                text.replace(&format!("{}/", dir.path().display()), "")
            );
        }
    }
    println!(
        "{label}: {} object(s) pass kubernetes-validate --strict for {}",
        objects.len(),
        KUBERNETES_VERSIONS.join(" and ")
    );
    Ok(())
}

/// Validates `caduceus.io` objects against the openAPIV3Schema of the CRDs in `crds/`, with
/// unknown fields rejected like the API server's structural-schema pruning would drop them.
fn validate_custom_resources(label: &str, objects: &[Value]) -> Result<()> {
    let crds = crd_schemas()?;
    let python = tool("python")?;
    let dir = tempfile::tempdir()?;
    for obj in objects {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let version = obj["apiVersion"]
            .as_str()
            .and_then(|v| v.split_once('/'))
            .map(|(_, v)| v)
            .unwrap_or_default();
        let schema = crds
            .get(&(kind.to_string(), version.to_string()))
            .ok_or_else(|| anyhow!("{label}: no CRD in crds/ serves {}", describe(obj)))?;
        let schema_path = dir.path().join("schema.json");
        let obj_path = dir.path().join("object.json");
        fs::write(&schema_path, serde_json::to_vec(schema)?)?;
        fs::write(&obj_path, serde_json::to_vec(obj)?)?;
        run(Command::new(&python)
            .arg("-c")
            .arg(VALIDATE_CR_PY)
            .arg(&schema_path)
            .arg(&obj_path))
        .with_context(|| format!("{label}: {} does not match its CRD schema", describe(obj)))?;
    }
    println!(
        "{label}: {} caduceus.io object(s) match the CRD schema in crds/",
        objects.len()
    );
    Ok(())
}

/// `(kind, version) -> openAPIV3Schema` of every CRD in `crds/`.
pub fn crd_schemas() -> Result<BTreeMap<(String, String), Value>> {
    let mut out = BTreeMap::new();
    for path in yaml_files(&repo_root().join("crds"))? {
        for crd in yaml_file(&path)? {
            let kind = crd["spec"]["names"]["kind"]
                .as_str()
                .ok_or_else(|| anyhow!("{}: CRD without spec.names.kind", path.display()))?;
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let name = version["name"].as_str().unwrap_or_default();
                out.insert(
                    (kind.to_string(), name.to_string()),
                    version["schema"]["openAPIV3Schema"].clone(),
                );
            }
        }
    }
    if out.is_empty() {
        bail!("crds/ holds no CustomResourceDefinition");
    }
    Ok(out)
}

/// `*.yaml` / `*.yml` files directly in `dir`, sorted by name.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file()
            && matches!(
                path.extension().and_then(OsStr::to_str),
                Some("yaml" | "yml")
            )
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The operator binary built by `cargo build -p caduceus-operator` (scripts/test.sh does that
/// first; `CADUCEUS_OPERATOR_BIN` overrides the path).
pub fn operator_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CADUCEUS_OPERATOR_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "CADUCEUS_OPERATOR_BIN={} does not exist: run `cargo build -p caduceus-operator`",
            path.display()
        );
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("target"),
    };
    let path = target.join("debug/caduceus-operator");
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{} does not exist: run `cargo build -p caduceus-operator` (scripts/test.sh does)",
            path.display()
        )
    }
}

/// `caduceus-operator render -f FILE`: the objects the operator would create for a platform.
pub fn render_example(path: &Path) -> Result<Vec<Value>> {
    let out = run(Command::new(operator_bin()?)
        .arg("render")
        .arg("-f")
        .arg(path))?;
    yaml_documents(&out).with_context(|| format!("render output of {}", path.display()))
}

/// `helm template` of the operator chart (CRDs included) with extra arguments.
pub fn helm_template(extra: &[&str]) -> Result<Vec<Value>> {
    let chart = repo_root().join("charts/caduceus-operator");
    let out = run(Command::new(tool("helm")?)
        .args([
            "template",
            "caduceus",
            "--namespace",
            "caduceus-system",
            "--include-crds",
        ])
        .arg(&chart)
        .args(extra))?;
    yaml_documents(&out)
}

/// Validates one object (argv[2]) against a CRD openAPIV3Schema (argv[1]). Properties not in the
/// schema are errors unless the schema says x-kubernetes-preserve-unknown-fields; `metadata` is
/// left to the API server, as in a CRD.
const VALIDATE_CR_PY: &str = r#"
import json, sys
import jsonschema

def strict(s):
    if not isinstance(s, dict):
        return s
    s = dict(s)
    if s.get("nullable"):
        t = s.get("type")
        if isinstance(t, str):
            s["type"] = [t, "null"]
    for key in ("properties",):
        if key in s:
            s[key] = {k: strict(v) for k, v in s[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(s.get(key), dict):
            s[key] = strict(s[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            s[key] = [strict(x) for x in s[key]]
    if "properties" in s and "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
        s["additionalProperties"] = False
    return s

schema = json.load(open(sys.argv[1]))
obj = json.load(open(sys.argv[2]))
schema = strict(schema)
# The API server always accepts these at the root (metadata is validated by the API server).
schema.setdefault("properties", {})
schema["properties"]["apiVersion"] = {"type": "string"}
schema["properties"]["kind"] = {"type": "string"}
schema["properties"]["metadata"] = {"type": "object"}
validator = jsonschema.Draft7Validator(schema)
errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
for e in errors:
    path = "/".join(str(p) for p in e.absolute_path) or "(root)"
    print(f"  {path}: {e.message}", file=sys.stderr)
sys.exit(1 if errors else 0)
"#;

/// `cargo metadata --no-deps` of the workspace.
pub fn cargo_metadata() -> Result<Value> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run(Command::new(cargo).current_dir(repo_root()).args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
    ]))?;
    Ok(serde_json::from_str(&out)?)
}

/// The workspace package with this name, from `cargo metadata`.
pub fn package<'a>(metadata: &'a Value, name: &str) -> Result<&'a Value> {
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .ok_or_else(|| anyhow!("package {name} is not in the workspace"))
}

/// Names of the binary targets of a workspace package.
pub fn binaries(package: &Value) -> Vec<String> {
    package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

//! `crds/caduceus.io_healthcareplatforms.yaml` must be exactly what `caduceus-operator crd`
//! prints. Regenerate with:
//! `cargo run -p caduceus-operator -- crd > crds/caduceus.io_healthcareplatforms.yaml`

use std::path::PathBuf;

#[test]
fn committed_crd_matches_the_rust_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crds/caduceus.io_healthcareplatforms.yaml");
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let generated = caduceus_operator::crd::crd_yaml().expect("CRD serialises");
    assert!(
        committed == generated,
        "{} is stale; regenerate it with `cargo run -p caduceus-operator -- crd > crds/caduceus.io_healthcareplatforms.yaml`",
        path.display()
    );
}

#[test]
fn crd_has_the_documented_shape() {
    use kube::CustomResourceExt;
    let crd = caduceus_operator::HealthcarePlatform::crd();
    assert_eq!(crd.spec.group, "caduceus.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names.clone().unwrap(), ["hcp"]);
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<String> = v
        .additional_printer_columns
        .clone()
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(columns, ["Phase", "Compliant", "API", "Version", "Age"]);
    let yaml = caduceus_operator::crd::crd_yaml().unwrap();
    for rule in [
        "self.maxReplicas >= self.minReplicas",
        "self.provider != 'External' || has(self.secretRef)",
        "self.provider == oldSelf.provider",
        "self != 'latest'",
    ] {
        assert!(yaml.contains(rule), "CEL rule {rule} missing");
    }
}

/// The schema of `spec.<path>` (dot-separated) in the generated CRD.
fn spec_property(path: &str) -> serde_json::Value {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(caduceus_operator::HealthcarePlatform::crd()).unwrap();
    let mut node = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for key in path.split('.') {
        node = &node["properties"][key];
    }
    assert!(!node.is_null(), "spec.{path} missing from the CRD");
    node.clone()
}

/// `database.imageRepository` and `cache.imageRepository` carry the rules of
/// `backup.image.repository` (the pattern refuses a digest and capitals, the CEL rule a tag);
/// `cluster_api_settings` sends such values to a real API server.
#[test]
fn image_repository_fields_carry_the_backup_repository_rules() {
    use caduceus_operator::crd::{
        DEFAULT_BACKUP_IMAGE, DEFAULT_CNPG_POSTGRES_IMAGE, DEFAULT_POSTGRES_IMAGE,
        DEFAULT_REDIS_IMAGE,
    };
    let backup = spec_property("backup.image.repository");
    for (path, tag_from) in [
        ("database.imageRepository", "database.version"),
        ("cache.imageRepository", "cache.version"),
    ] {
        let schema = spec_property(path);
        // The same pattern (lowercase, no `@`: no digest) and length as backup.image.repository.
        for key in ["pattern", "minLength", "maxLength", "type"] {
            assert_eq!(schema[key], backup[key], "{path}.{key}");
        }
        // Optional: unset means the provider's default repository, so no schema default.
        assert!(schema.get("default").is_none(), "{path}: {schema}");
        let rules = schema["x-kubernetes-validations"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "{path}: {rules:?}");
        assert_eq!(rules[0]["rule"], "!self.matches(':[^/]*$')");
        let message = rules[0]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{path} must not contain a tag"))
                && message.contains(tag_from),
            "{message}"
        );
    }
    // The descriptions name the default repositories (the constants the builders use).
    let database = spec_property("database.imageRepository")["description"].to_string();
    assert!(database.contains(DEFAULT_POSTGRES_IMAGE), "{database}");
    assert!(database.contains(DEFAULT_CNPG_POSTGRES_IMAGE), "{database}");
    let cache = spec_property("cache.imageRepository")["description"].to_string();
    assert!(cache.contains(DEFAULT_REDIS_IMAGE), "{cache}");
    assert_eq!(backup["default"], DEFAULT_BACKUP_IMAGE);
}

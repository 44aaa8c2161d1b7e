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

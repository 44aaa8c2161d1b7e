//! Every HealthcarePlatform in `examples/` deserializes, validates, and renders to the committed
//! snapshot (`tests/snapshots/`). Generated secret values are placeholders, so output is
//! deterministic. Update snapshots after an intended change with `cargo insta review` or
//! `INSTA_UPDATE=always cargo test -p caduceus-operator --test examples`.

use std::path::PathBuf;

use caduceus_operator::render::{parse_platforms, render};
use caduceus_operator::validate::validate;

const EXAMPLES: [&str; 4] = [
    "minimal",
    "production",
    "external-database",
    "cloudnative-pg",
];

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.yaml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_example_deserializes_and_validates() {
    for name in EXAMPLES {
        let platforms = parse_platforms(&example(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(platforms.len(), 1, "{name}");
        let hp = &platforms[0];
        assert!(
            hp.metadata.namespace.is_some(),
            "{name} names its namespace"
        );
        validate(hp, "default").unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn production_example_uses_the_documented_features() {
    let hp = &parse_platforms(&example("production")).unwrap()[0];
    let s = &hp.spec;
    assert!(s.api_server.autoscaling.enabled);
    assert!(s.api_server.ingress.enabled && s.api_server.ingress.tls_secret_name.is_some());
    assert!(s.backup.enabled && s.backup.destination.s3.is_some());
    assert!(s.monitoring.enabled);
    assert_eq!(
        s.compliance.profiles,
        [caduceus_operator::crd::ComplianceProfile::HIPAA]
    );
}

#[test]
fn render_snapshots() {
    for name in EXAMPLES {
        let out = render(&example(name), "default").unwrap_or_else(|e| panic!("{name}: {e}"));
        insta::assert_snapshot!(format!("render_{name}"), out);
    }
}

//! Tests of the database, cache, backup and restore-bootstrap checks.

use super::{fields, platform};
use crate::crd::{
    CacheProvider, DatabaseProvider, HealthcarePlatformSpec, SecretKeyRef,
    DEFAULT_CNPG_POSTGRES_IMAGE,
};
use crate::validate::validate;

#[test]
fn external_database_requires_secret_ref() {
    let mut spec = HealthcarePlatformSpec::default();
    spec.database.provider = DatabaseProvider::External;
    let err = validate(&platform(spec.clone()), "default").unwrap_err();
    // With network policies, the CIDRs the API may reach are required too: an empty list
    // would let it reach any address.
    assert_eq!(
        fields(err.clone()),
        ["spec.database.secretRef", "spec.database.externalCidrs"]
    );
    assert!(err.to_string().contains("0.0.0.0/0"), "{err}");
    spec.database.secret_ref = Some(SecretKeyRef {
        name: "db".into(),
        key: "url".into(),
    });
    spec.database.external_cidrs = vec!["10.40.0.0/16".into()];
    validate(&platform(spec.clone()), "default").unwrap();
    // Without network policies nothing restricts egress anyway: no CIDRs needed.
    spec.database.external_cidrs.clear();
    spec.network_policy.enabled = false;
    validate(&platform(spec), "default").unwrap();
}

#[test]
fn an_external_cache_needs_its_cidrs() {
    let mut spec = HealthcarePlatformSpec::default();
    spec.cache.provider = CacheProvider::External;
    spec.cache.secret_ref = Some(SecretKeyRef {
        name: "r".into(),
        key: "url".into(),
    });
    assert_eq!(
        fields(validate(&platform(spec.clone()), "default").unwrap_err()),
        ["spec.cache.externalCidrs"]
    );
    spec.cache.external_cidrs = vec!["10.41.0.0/16".into(), "not a cidr".into()];
    assert_eq!(
        fields(validate(&platform(spec.clone()), "default").unwrap_err()),
        ["spec.cache.externalCidrs[1]"]
    );
    spec.cache.external_cidrs.pop();
    validate(&platform(spec), "default").unwrap();
}

#[test]
fn secret_ref_without_external_is_refused() {
    let mut spec = HealthcarePlatformSpec::default();
    spec.cache.secret_ref = Some(SecretKeyRef {
        name: "r".into(),
        key: "url".into(),
    });
    assert_eq!(
        fields(validate(&platform(spec), "default").unwrap_err()),
        ["spec.cache.secretRef"]
    );
}

#[test]
fn database_and_cache_image_repositories_are_checked() {
    let check = |f: &dyn Fn(&mut HealthcarePlatformSpec)| {
        let mut spec = HealthcarePlatformSpec::default();
        f(&mut spec);
        validate(&platform(spec), "default")
    };
    // Unset (the defaults) and mirrors, a registry port included, are fine.
    assert!(check(&|_| {}).is_ok());
    assert!(check(&|s| {
        s.database.image_repository = Some("registry.clinic.example:5000/mirror/postgres".into());
        s.cache.image_repository = Some("registry.clinic.example/mirror/redis".into());
    })
    .is_ok());
    assert!(check(&|s| {
        s.database.provider = DatabaseProvider::CloudNativePG;
        s.database.image_repository = Some("harbor.local/cnpg/postgresql".into());
    })
    .is_ok());

    for (field, set) in [
        (
            "spec.database.imageRepository",
            (|s, v| s.database.image_repository = Some(v))
                as fn(&mut HealthcarePlatformSpec, String),
        ),
        ("spec.cache.imageRepository", |s, v| {
            s.cache.image_repository = Some(v)
        }),
    ] {
        let tag_from = if field.contains("database") {
            "the tag is spec.database.version"
        } else {
            "the tag is spec.cache.version"
        };
        for (value, says) in [
            (
                "docker.io/library/postgres:16.6".to_string(),
                "must not contain a tag",
            ),
            (
                "registry:5000/mirror/redis:7".to_string(),
                "must not contain a tag",
            ),
            (
                "docker.io/library/redis@sha256:abc".to_string(),
                "must not contain a digest",
            ),
            ("Registry.example/Mirror".to_string(), "lowercase"),
            (
                "registry.example/mirror ".to_string(),
                "must be an image repository",
            ),
            (String::new(), "must be an image repository"),
            (
                "registry.example//redis".to_string(),
                "must be an image repository",
            ),
            (format!("r/{}", "a".repeat(254)), "at most 255"),
        ] {
            let err = check(&|s| set(s, value.clone())).unwrap_err();
            assert_eq!(fields(err.clone()), [field], "{value}: {err}");
            let text = err.to_string();
            assert!(text.contains(says), "{value}: {text}");
            if says.starts_with("must not contain") {
                assert!(text.contains(tag_from), "{value}: {text}");
            }
        }
    }
    // The message suggests the provider's own default.
    let err = check(&|s| {
        s.database.provider = DatabaseProvider::CloudNativePG;
        s.database.image_repository = Some("Bad".into());
    })
    .unwrap_err();
    assert!(
        err.to_string().contains(DEFAULT_CNPG_POSTGRES_IMAGE),
        "{err}"
    );
    // Checked whatever the provider, as the CRD's rules are.
    let err = check(&|s| {
        s.cache.provider = CacheProvider::Disabled;
        s.cache.image_repository = Some("redis:7".into());
    })
    .unwrap_err();
    assert_eq!(fields(err), ["spec.cache.imageRepository"]);
}

#[test]
fn backup_schedules_are_checked_by_a_cron_parser() {
    for ok in [
        "0 * * * *",
        "*/15 2 * * MON-FRI",
        "30 3 1,15 * *",
        "0 0 * JAN SUN",
    ] {
        let mut spec = HealthcarePlatformSpec::default();
        spec.backup.schedule = ok.into();
        assert!(validate(&platform(spec), "default").is_ok(), "{ok}");
    }
    for bad in [
        "0 99 * * *",
        "61 * * * *",
        "0 * * *",
        "0 0 * * * *",
        "@hourly",
        "x * * * *",
    ] {
        let mut spec = HealthcarePlatformSpec::default();
        spec.backup.schedule = bad.into();
        let err = validate(&platform(spec), "default").unwrap_err();
        assert_eq!(fields(err), ["spec.backup.schedule"], "{bad}");
    }
}

#[test]
fn backup_image_is_checked() {
    let ok = |f: fn(&mut HealthcarePlatformSpec)| {
        let mut spec = HealthcarePlatformSpec::default();
        f(&mut spec);
        validate(&platform(spec), "default")
    };
    assert!(ok(|s| {
        s.backup.image.repository = "registry.example.org:5000/mirror/caduceus-backup".into();
        s.backup.image.tag = Some("0.1.0-pg16".into());
    })
    .is_ok());
    for (f, field, says) in [
        (
            (|s| s.backup.image.tag = Some("latest".into())) as fn(&mut HealthcarePlatformSpec),
            "spec.backup.image.tag",
            "latest",
        ),
        (
            |s| s.backup.image.tag = Some("0.1.0 pg16".into()),
            "spec.backup.image.tag",
            "valid image tag",
        ),
        (
            |s| s.backup.image.repository = "ghcr.io/caduceus-health/caduceus-backup:0.1.0".into(),
            "spec.backup.image.repository",
            "must not contain a tag",
        ),
        (
            |s| s.backup.image.repository = "ghcr.io/x/caduceus-backup@sha256:abc".into(),
            "spec.backup.image.repository",
            "digest",
        ),
        (
            |s| s.backup.image.repository = "GHCR.io/x".into(),
            "spec.backup.image.repository",
            "lowercase",
        ),
        (
            |s| s.backup.image.repository = String::new(),
            "spec.backup.image.repository",
            "image repository",
        ),
    ] {
        let err = ok(f).unwrap_err();
        assert_eq!(fields(err.clone()), [field], "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[test]
fn from_backup_is_checked() {
    use crate::crd::{BackupSource, DatabaseBootstrap, FromBackup, S3Destination};
    let from = |name: &str, source: BackupSource, secret: &str| {
        let mut spec = HealthcarePlatformSpec::default();
        spec.database.bootstrap = Some(DatabaseBootstrap {
            from_backup: Some(FromBackup {
                name: name.into(),
                source,
                secret_ref: secret.into(),
            }),
        });
        spec
    };
    let claim = BackupSource {
        s3: None,
        claim_name: Some("old-backups".into()),
    };
    assert!(validate(&platform(from("latest", claim.clone(), "k")), "d").is_ok());
    assert!(validate(
        &platform(from("backup-20261122T030000.000Z", claim.clone(), "k")),
        "d"
    )
    .is_ok());
    let s3 = S3Destination {
        endpoint: None,
        bucket: "b".into(),
        prefix: String::new(),
        region: "us-east-1".into(),
        credentials_secret_ref: "c".into(),
        force_path_style: false,
    };
    let both = BackupSource {
        s3: Some(s3),
        claim_name: Some("x".into()),
    };
    let err = validate(&platform(from("../etc", both, "")), "d").unwrap_err();
    assert_eq!(
        fields(err),
        [
            "spec.database.bootstrap.fromBackup.name",
            "spec.database.bootstrap.fromBackup.secretRef",
            "spec.database.bootstrap.fromBackup.source"
        ]
    );
    let mut cnpg = from("latest", claim, "k");
    cnpg.database.provider = DatabaseProvider::CloudNativePG;
    let err = validate(&platform(cnpg), "d").unwrap_err();
    assert_eq!(fields(err), ["spec.database.bootstrap.fromBackup"]);
}

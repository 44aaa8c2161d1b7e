//! Tests of the encryption and connection rules: `phi-key-valid`, `field-encryption-active`,
//! `ingress-tls`, `database-tls` and `redis-auth`.

use super::*;

#[test]
fn phi_key_valid_passes_fails_and_needs_the_cluster() {
    let a = run(&audit(|_| {}), no_change);
    assert_verdict(&a, RuleId::PhiKeyValid, Verdict::Pass);

    let p = audit(|_| {});
    let mut existing = ExistingSecrets::default();
    existing.insert(
        p.names.api_secrets(),
        BTreeMap::from([(
            crate::names::PHI_KEYS.to_string(),
            ByteString(format!(r#"{{"version":1,"active_key_id":"k-2","keys":{{"k-1":"{KEY32}"}},"blind_index_key":"{KEY32}"}}"#).into_bytes()),
        )]),
    );
    let children = build_children(&p, &existing, &mut SecretGenerator::random());
    let a = assess(&p, &children, Some(&live(&children)), vec![], now());
    let m = assert_verdict(&a, RuleId::PhiKeyValid, Verdict::Fail);
    assert!(m.contains("active key id"), "{m}");

    // A key that is not 32 bytes (the API would refuse to start with it).
    existing.insert(
        p.names.api_secrets(),
        BTreeMap::from([(
            crate::names::PHI_KEYS.to_string(),
            ByteString(format!(r#"{{"version":1,"active_key_id":"k-1","keys":{{"k-1":"AAAA"}},"blind_index_key":"{KEY32}"}}"#).into_bytes()),
        )]),
    );
    let children = build_children(&p, &existing, &mut SecretGenerator::random());
    let a = assess(&p, &children, Some(&live(&children)), vec![], now());
    let m = assert_verdict(&a, RuleId::PhiKeyValid, Verdict::Fail);
    assert!(m.contains("k-1") && m.contains("32 bytes"), "{m}");

    let offline = assess_static(&p, now());
    assert_verdict(&offline, RuleId::PhiKeyValid, Verdict::NotEvaluated);
}

#[test]
fn field_encryption_from_the_self_report() {
    let a = run(&audit(|_| {}), no_change);
    assert_verdict(&a, RuleId::FieldEncryptionActive, Verdict::Pass);
    let a = run(&audit(|_| {}), |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.encryption.active = false;
        }
    });
    assert_verdict(&a, RuleId::FieldEncryptionActive, Verdict::Fail);
    let a = run(&audit(|_| {}), |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.encryption.active_key_id = "k-9".into();
        }
    });
    assert_verdict(&a, RuleId::FieldEncryptionActive, Verdict::Fail);
    let a = run(&audit(|_| {}), |_, ev| {
        ev.self_report = Err("connection refused".into())
    });
    let m = assert_verdict(&a, RuleId::FieldEncryptionActive, Verdict::NotEvaluated);
    assert!(m.contains("connection refused"));
}

#[test]
fn ingress_tls() {
    assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::IngressTls,
        Verdict::Pass,
    );
    let with_ingress = audit(|s| {
        s.api_server.ingress.enabled = true;
        s.api_server.ingress.host = Some("api.example.org".into());
    });
    assert_verdict(
        &run(&with_ingress, no_change),
        RuleId::IngressTls,
        Verdict::Pass,
    );
    let a = run(&with_ingress, |c, _| {
        if let Some(spec) = c.api_ingress.as_mut().and_then(|i| i.spec.as_mut()) {
            spec.tls = None;
        }
    });
    let m = assert_verdict(&a, RuleId::IngressTls, Verdict::Fail);
    assert!(m.contains("api.example.org"));
}

#[test]
fn database_tls_embedded_external_and_reported() {
    // The embedded database: operator-issued certificate, ssl=on, API with verify-full.
    let m = assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::DatabaseTls,
        Verdict::Pass,
    );
    assert!(m.contains("verify-full"), "{m}");
    // A URL of the API's role without verification fails ...
    let a = run(&audit(|_| {}), |c, _| {
        if let Some(data) = c.postgres_app.as_mut().and_then(|s| s.data.as_mut()) {
            data.insert(
                crate::names::PG_URL_KEY.into(),
                ByteString(b"postgres://u:p@h:5432/db?sslmode=prefer".to_vec()),
            );
        }
    });
    let m = assert_verdict(&a, RuleId::DatabaseTls, Verdict::Fail);
    assert!(m.contains("verify-full"), "{m}");
    // ... and so does a server without ssl=on.
    let a = run(&audit(|_| {}), |c, _| {
        if let Some(pg) = c.postgres.as_mut() {
            let spec = pg
                .stateful_set
                .spec
                .as_mut()
                .unwrap()
                .template
                .spec
                .as_mut()
                .unwrap();
            spec.containers[0].args = None;
        }
    });
    let m = assert_verdict(&a, RuleId::DatabaseTls, Verdict::Fail);
    assert!(m.contains("ssl=on"), "{m}");
    // ... and so does an expired server certificate (renewal impossible) or none at all.
    let a = run(&audit(|_| {}), |c, _| {
        let old = crate::desired::postgres_tls::issue(
            "demo",
            &["demo-postgres.clinic.svc".to_string()],
            now() - SignedDuration::from_hours(24 * 400),
        )
        .unwrap();
        if let Some(data) = c.postgres_tls.as_mut().and_then(|s| s.data.as_mut()) {
            data.insert("ca.crt".into(), ByteString(old.ca_cert.into_bytes()));
            data.insert("tls.crt".into(), ByteString(old.server_cert.into_bytes()));
        }
    });
    let m = assert_verdict(&a, RuleId::DatabaseTls, Verdict::Fail);
    assert!(m.contains("expired at"), "{m}");
    let a = run(&audit(|_| {}), |c, _| {
        if let Some(data) = c.postgres_tls.as_mut().and_then(|s| s.data.as_mut()) {
            data.remove("tls.crt");
        }
    });
    let m = assert_verdict(&a, RuleId::DatabaseTls, Verdict::Fail);
    assert!(m.contains("no valid CA and server certificate"), "{m}");

    let external = audit(|s| {
        s.database.provider = DatabaseProvider::External;
        s.database.secret_ref = Some(SecretKeyRef {
            name: "db".into(),
            key: "url".into(),
        });
    });
    assert_verdict(
        &run(&external, no_change),
        RuleId::DatabaseTls,
        Verdict::Pass,
    );
    let a = run(&external, |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.database_tls = false;
        }
    });
    assert_verdict(&a, RuleId::DatabaseTls, Verdict::Fail);
    let a = run(&external, |_, ev| ev.self_report = Err("timeout".into()));
    assert_verdict(&a, RuleId::DatabaseTls, Verdict::NotEvaluated);
}

#[test]
fn redis_auth() {
    assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::RedisAuth,
        Verdict::Pass,
    );
    let disabled = audit(|s| s.cache.provider = CacheProvider::Disabled);
    assert_verdict(&run(&disabled, no_change), RuleId::RedisAuth, Verdict::Pass);
    let external = audit(|s| {
        s.cache.provider = CacheProvider::External;
        s.cache.secret_ref = Some(SecretKeyRef {
            name: "redis".into(),
            key: "url".into(),
        });
    });
    assert_verdict(
        &run(&external, no_change),
        RuleId::RedisAuth,
        Verdict::NotEvaluated,
    );
    let a = run(&audit(|_| {}), |c, _| {
        if let Some(data) = c.redis_credentials.as_mut().and_then(|s| s.data.as_mut()) {
            data.insert(
                crate::names::REDIS_AUTH_CONF_KEY.into(),
                ByteString(b"# nothing\n".to_vec()),
            );
        }
    });
    assert_verdict(&a, RuleId::RedisAuth, Verdict::Fail);
}

//! Tests of the `no-secrets-in-config` rule.

use super::*;

#[test]
fn no_secrets_in_config() {
    assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::NoSecretsInConfig,
        Verdict::Pass,
    );
    let leaky = |s: &mut HealthcarePlatformSpec| {
        s.api_server.env = vec![k8s_openapi::api::core::v1::EnvVar {
            name: "SMTP_PASSWORD".into(),
            value: Some("hunter2".into()),
            ..Default::default()
        }];
    };
    let a = run(&audit(leaky), no_change);
    let m = assert_verdict(&a, RuleId::NoSecretsInConfig, Verdict::Fail);
    assert!(m.contains("SMTP_PASSWORD") && !m.contains("hunter2"), "{m}");
    let a = run(&enforce(leaky), no_change);
    assert_verdict(&a, RuleId::NoSecretsInConfig, Verdict::Pass);
    let a = run(&audit(|_| {}), |c, _| {
        c.api_config
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert("UPSTREAM".into(), "https://user:pw@example.org".into());
    });
    assert_verdict(&a, RuleId::NoSecretsInConfig, Verdict::Fail);
}

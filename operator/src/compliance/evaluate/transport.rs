//! Rule `api-tls`: the API serves HTTPS inside the platform (HIPAA 45 CFR 164.312(e)(1),
//! (e)(2)(ii)). Evidence: the API container gets `CADUCEUS_TLS_CERT_FILE` and
//! `CADUCEUS_TLS_KEY_FILE` (no `apiServer.env` entry blanking them), its probes use HTTPS, and
//! `<platform>-api-internal-tls` holds an unexpired serving certificate; when the self-report is
//! available, its `api_tls` must not be false (reports of older APIs without the field are judged
//! on the built objects alone).

use caduceus_contract::settings;

use super::{api_container, api_setting, fail, pass, self_report, tls_secret_problem};
use super::{Check, Inputs};

pub(super) fn api_tls(i: &Inputs<'_>) -> Check {
    if let Ok(r) = self_report(i) {
        if r.api_tls == Some(false) {
            return fail("the API reports that it serves plain HTTP");
        }
    }
    let Some(api) = api_container(i.children) else {
        return fail("the API Deployment has no api container");
    };
    for name in [settings::TLS_CERT_FILE, settings::TLS_KEY_FILE] {
        if api_setting(i.children, name).is_none_or(|v| v.trim().is_empty()) {
            return fail(format!(
                "{name} is not set for the API: it would serve plain HTTP"
            ));
        }
    }
    let plain_probe = [
        &api.startup_probe,
        &api.liveness_probe,
        &api.readiness_probe,
    ]
    .into_iter()
    .flatten()
    .filter_map(|p| p.http_get.as_ref())
    .any(|get| get.scheme.as_deref() != Some("HTTPS"));
    if plain_probe {
        return fail("an API probe uses plain HTTP");
    }
    match tls_secret_problem(&i.children.api_tls, "API", i.now) {
        Some(problem) => fail(problem),
        None => pass(format!(
            "the API serves HTTPS on its ports with the certificate of {}",
            i.platform.names.api_internal_tls()
        )),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::EnvVar;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    use super::super::{check, LiveEvidence, Verdict};
    use super::*;
    use crate::compliance::catalogue::RuleId;
    use crate::desired::test_support::platform;
    use crate::desired::{build_children, Children, ExistingSecrets, SecretGenerator};
    use crate::validate::ValidatedPlatform;

    fn t0() -> Timestamp {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    fn children(p: &ValidatedPlatform) -> Children {
        build_children(
            p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::random_at(t0()),
        )
    }

    fn live(api_tls: Option<bool>) -> LiveEvidence {
        let field = api_tls.map_or(String::new(), |b| format!(r#","api_tls":{b}"#));
        let report = crate::compliance::self_report::parse(
            format!(
                r#"{{"version":"0.1.0","schema_version":7,
                "encryption":{{"active":true,"active_key_id":"k-1","key_ids":["k-1"]}},
                "audit":{{"chain_head_id":1,"chain_head_hash":"ab","write_failures":0,"retention_days":2190}},
                "sessions":{{"idle_timeout_minutes":15,"access_token_ttl_minutes":15}},
                "rate_limit":{{"enabled":true,"backend":"redis","requests_per_minute":600,"login_attempts_per_minute":5}},
                "database_tls":true{field}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        LiveEvidence {
            network_policies: Vec::new(),
            backup: None,
            backup_jobs: Vec::new(),
            self_report: Ok(report),
            previous_chain_head: None,
        }
    }

    fn verdict(
        p: &ValidatedPlatform,
        c: &Children,
        live: Option<&LiveEvidence>,
        now: Timestamp,
    ) -> (Verdict, String) {
        check(
            RuleId::ApiTls,
            &Inputs {
                platform: p,
                children: c,
                live,
                now,
            },
        )
    }

    #[test]
    fn the_built_api_serves_https_offline_and_as_reported() {
        let p = platform(|_| {});
        let c = children(&p);
        let (v, m) = verdict(&p, &c, None, t0());
        assert_eq!(v, Verdict::Pass, "{m}");
        assert!(m.contains("demo-api-internal-tls"), "{m}");
        for report in [Some(true), None] {
            let (v, m) = verdict(&p, &c, Some(&live(report)), t0());
            assert_eq!(v, Verdict::Pass, "{report:?}: {m}");
        }
        // `render`'s placeholders: nothing to say about the certificate.
        let offline = build_children(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        assert_eq!(verdict(&p, &offline, None, t0()).0, Verdict::Pass);
    }

    #[test]
    fn plain_http_reported_blanked_settings_plain_probes_or_an_expired_certificate_fail() {
        let p = platform(|_| {});
        let c = children(&p);
        let (v, m) = verdict(&p, &c, Some(&live(Some(false))), t0());
        assert_eq!(v, Verdict::Fail);
        assert!(m.contains("plain HTTP"), "{m}");

        // An apiServer.env entry blanking the certificate (Audit mode keeps it).
        let blanked = platform(|s| {
            s.api_server.env.push(EnvVar {
                name: settings::TLS_CERT_FILE.into(),
                value: Some(String::new()),
                ..Default::default()
            })
        });
        let (v, m) = verdict(&blanked, &children(&blanked), None, t0());
        assert_eq!(v, Verdict::Fail);
        assert!(m.contains("CADUCEUS_TLS_CERT_FILE"), "{m}");

        let mut plain_probe = c.clone();
        let pod = plain_probe
            .api_deployment
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap();
        let probe = pod.containers[0].readiness_probe.as_mut().unwrap();
        probe.http_get.as_mut().unwrap().scheme = Some("HTTP".into());
        let (v, m) = verdict(&p, &plain_probe, None, t0());
        assert_eq!(
            (v, m.as_str()),
            (Verdict::Fail, "an API probe uses plain HTTP")
        );

        let much_later = t0()
            .checked_add(SignedDuration::from_hours(24 * 400))
            .unwrap();
        let (v, m) = verdict(&p, &c, None, much_later);
        assert_eq!(v, Verdict::Fail);
        assert!(m.contains("expired"), "{m}");
    }

    #[test]
    fn enforce_removes_env_entries_that_override_the_certificate() {
        let p = platform(|s| {
            s.api_server.env.push(EnvVar {
                name: settings::TLS_KEY_FILE.into(),
                value: Some(String::new()),
                ..Default::default()
            })
        });
        let mut spec = p.spec.clone();
        let overrides = crate::compliance::enforce::enforce(&mut spec, |_| true);
        assert!(spec.api_server.env.is_empty());
        assert!(overrides
            .iter()
            .any(|o| o.rule == RuleId::ApiTls
                && o.field == "spec.apiServer.env[CADUCEUS_TLS_KEY_FILE]"));
    }
}

//! The operator's API certificate on the REAL `caduceus-api serve`, and the operator's
//! self-report client trusting only the CA it issued.
//!
//! The CA and serving certificate come from `caduceus_operator::desired::certs` with the API's
//! [`api_tls::SERVICE`] (the code that fills `<platform>-api-internal-tls`), SAN `localhost`; the
//! API gets `CADUCEUS_TLS_CERT_FILE`/`CADUCEUS_TLS_KEY_FILE` as the Deployment names them
//! ([`api_tls::env_vars`]), the files in a temporary directory with the Deployment's mode (0440).
//! Then:
//! - the operator's client, trusting the issued `ca.crt`, reads the self-report on the admin
//!   port over HTTPS and it says `api_tls: true`; the public port answers the probes' paths over
//!   HTTPS;
//! - a client trusting another CA, the operator's client without a CA, and plain HTTP on either
//!   port read nothing;
//! - the rule `api-tls` passes on that report (and fails on one saying plain HTTP);
//! - a key file other accounts may read keeps the API from starting.
//!
//! Needs Postgres for `serve` (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`;
//! a fresh database is created and dropped), the Redis of `REDIS_URL` and the API binary
//! (`cargo build -p caduceus-api` first, or `CADUCEUS_API_BIN`).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use caduceus_operator::compliance::self_report::{SelfReport, SelfReportClient, SelfReportError};
use caduceus_operator::compliance::{assess, LiveEvidence, RuleId, Verdict};
use caduceus_operator::crd::{HealthcarePlatform, HealthcarePlatformSpec};
use caduceus_operator::desired::api_tls;
use caduceus_operator::desired::certs::{self, TlsMaterial};
use caduceus_operator::desired::{build_children, ExistingSecrets, SecretGenerator};
use caduceus_operator::validate::validate;
use support::api_process::{free_port, serve_command};
use support::database::Database;

/// The serving certificate and key as the Deployment mounts them (mode 0440).
struct Mounted {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn mount(tls: &TlsMaterial, key_mode: u32) -> Mounted {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        path
    };
    let cert = write(certs::SERVER_CERT_KEY, &tls.server_cert);
    let key = write(certs::SERVER_KEY_KEY, &tls.server_key);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(key_mode)).unwrap();
    Mounted {
        _dir: dir,
        cert,
        key,
    }
}

/// `caduceus-api serve` with the operator's TLS settings pointed at `files`.
struct Api {
    child: Child,
    http_port: u16,
    admin_port: u16,
}

impl Api {
    fn start(db: &Database, files: &Mounted) -> Self {
        let (http_port, admin_port) = (free_port(), free_port());
        let mut cmd = serve_command(&db.app_url, db.keys.path(), http_port, admin_port);
        let [cert_env, key_env] = api_tls::env_vars();
        cmd.env(&cert_env.name, &files.cert)
            .env(&key_env.name, &files.key)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Self {
            child: cmd.spawn().unwrap(),
            http_port,
            admin_port,
        }
    }

    /// Stderr once the process has exited by itself (`None` while it runs).
    fn exited(&mut self) -> Option<String> {
        let Ok(Some(_)) = self.child.try_wait() else {
            return None;
        };
        let mut err = String::new();
        if let Some(mut s) = self.child.stderr.take() {
            use std::io::Read as _;
            let _ = s.read_to_string(&mut err);
        }
        Some(err)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn report_url(port: u16) -> String {
    format!("https://localhost:{port}/internal/compliance")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_and_the_operator_trusts_only_the_issued_ca() {
    let now = k8s_openapi::jiff::Timestamp::now();
    let localhost = ["localhost".to_string()];
    let tls = certs::issue(api_tls::SERVICE, "demo", &localhost, now).unwrap();
    let other = certs::issue(api_tls::SERVICE, "other", &localhost, now).unwrap();
    let db = Database::create("caduceus_api_tls");
    let files = mount(&tls, 0o440);
    let mut api = Api::start(&db, &files);

    let base = SelfReportClient::new(Duration::from_secs(3)).unwrap();
    let operator = base.trusting(tls.ca_cert.as_bytes()).unwrap();
    let start = Instant::now();
    let report = loop {
        match operator.fetch(&report_url(api.admin_port)).await {
            Ok(r) => break r,
            Err(e) => {
                if let Some(err) = api.exited() {
                    panic!("caduceus-api serve exited: {err}");
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the API did not serve its self-report over HTTPS: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(report.api_tls, Some(true));
    // The rule `api-tls` passes on the built platform and this report, and fails when the
    // report says plain HTTP.
    let verdict = |report: SelfReport| {
        let mut hp = HealthcarePlatform::new("demo", HealthcarePlatformSpec::default());
        hp.metadata.namespace = Some("clinic".into());
        let p = validate(&hp, "clinic").unwrap();
        let children = build_children(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::random_at(now),
        );
        let live = LiveEvidence {
            network_policies: children.network_policies.clone(),
            backup: None,
            backup_jobs: Vec::new(),
            self_report: Ok(report),
            previous_chain_head: None,
        };
        let a = assess(&p, &children, Some(&live), Vec::new(), now);
        let r = a
            .results
            .iter()
            .find(|r| r.rule.rule == RuleId::ApiTls)
            .unwrap();
        (r.verdict, r.message.clone())
    };
    let (v, m) = verdict(report.clone());
    assert_eq!(v, Verdict::Pass, "{m}");
    let plain = SelfReport {
        api_tls: Some(false),
        ..report.clone()
    };
    assert_eq!(verdict(plain).0, Verdict::Fail);

    // The probes' paths on the public port, over HTTPS with the issued CA.
    let https = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(tls.ca_cert.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for path in ["/health/live", "/health/ready"] {
        let r = https
            .get(format!("https://localhost:{}{path}", api.http_port))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    // Another platform's CA, no CA at all, and plain HTTP: nothing is read.
    let foreign = base.trusting(other.ca_cert.as_bytes()).unwrap();
    let err = foreign
        .fetch(&report_url(api.admin_port))
        .await
        .unwrap_err();
    assert!(matches!(err, SelfReportError::Unreachable { .. }), "{err}");
    assert!(base.fetch(&report_url(api.admin_port)).await.is_err());
    let err = base
        .fetch(&format!(
            "http://127.0.0.1:{}/internal/compliance",
            api.admin_port
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, SelfReportError::Unreachable { .. }), "{err}");
    // The operator's trusting client never downgrades to plain HTTP.
    assert!(operator
        .fetch(&format!(
            "http://localhost:{}/internal/compliance",
            api.admin_port
        ))
        .await
        .is_err());
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(plain
        .get(format!("http://127.0.0.1:{}/health/live", api.http_port))
        .send()
        .await
        .is_err());
    assert!(
        api.exited().is_none(),
        "failed handshakes do not stop the API"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_other_accounts_may_read_keeps_the_api_from_starting() {
    let now = k8s_openapi::jiff::Timestamp::now();
    let tls = certs::issue(api_tls::SERVICE, "demo", &["localhost".to_string()], now).unwrap();
    let db = Database::create("caduceus_api_tls");
    let files = mount(&tls, 0o644);
    let mut api = Api::start(&db, &files);
    let start = Instant::now();
    let err = loop {
        if let Some(err) = api.exited() {
            break err;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "serve kept running with a world-readable key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        err.contains("CADUCEUS_TLS_KEY_FILE") && err.contains("0644"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

//! The operator reading a REAL running API's compliance self-report.
//!
//! Starts the `caduceus-api` binary (built by `cargo build -p caduceus-api` into the same target
//! directory, or `CADUCEUS_API_BIN`) against a fresh database on the Postgres of
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and the Redis of
//! `REDIS_URL` (default `redis://127.0.0.1:6379`), with keys from `caduceus-api keys generate`
//! after `caduceus-api migrate`. The operator's client fetches `GET /internal/compliance` from the
//! admin port, and the compliance rules evaluate it. The API's `/metrics` goes through
//! `promtool check metrics`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use caduceus_operator::compliance::self_report::{CacheReport, SelfReportClient};
use caduceus_operator::compliance::{assess, LiveEvidence, RuleId, Verdict};
use caduceus_operator::crd::{
    AuditChainHead, BackupStatus, ComplianceMode, DatabaseProvider, HealthcarePlatform,
    HealthcarePlatformSpec, SecretKeyRef,
};
use caduceus_operator::desired::{build_children, ExistingSecrets, SecretGenerator};
use caduceus_operator::validate::validate;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use support::api_process::{api_binary, db_setup, free_port, serve_command, wait_for_self_report};

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `admin_url` with another database name.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .arg(admin_url())
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Api {
    child: Child,
    database: String,
    _keys: tempfile::TempDir,
    keys_dir: PathBuf,
    admin_port: u16,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("psql")
            .arg(admin_url())
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database),
            ])
            .output();
    }
}

fn start_api(idle_timeout_minutes: u32) -> Api {
    let bin = api_binary();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let database = format!("caduceus_compliance_{}_{nanos}", std::process::id());
    psql(&format!("CREATE DATABASE \"{database}\""));
    let db_url = with_database(&admin_url(), &database);
    let keys = tempfile::tempdir().unwrap();
    let keys_dir = keys.path().to_path_buf();

    let run = |args: &[&str]| {
        let out = Command::new(&bin)
            .args(args)
            .env_clear()
            .env("DATABASE_URL", &db_url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "caduceus-api {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["keys", "generate", "--out", keys_dir.to_str().unwrap()]);
    let app_url = db_setup(&db_url);

    let (http_port, admin_port) = (free_port(), free_port());
    let child = serve_command(&app_url, &keys_dir, http_port, admin_port)
        .env(
            "CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES",
            idle_timeout_minutes.to_string(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Api {
        child,
        database,
        _keys: keys,
        keys_dir,
        admin_port,
    }
}

fn platform(
    f: impl FnOnce(&mut HealthcarePlatformSpec),
) -> caduceus_operator::validate::ValidatedPlatform {
    let mut spec = HealthcarePlatformSpec::default();
    spec.compliance.mode = ComplianceMode::Audit;
    // The test API talks to a plain local Postgres: model it as an External database.
    spec.database.provider = DatabaseProvider::External;
    spec.database.secret_ref = Some(SecretKeyRef {
        name: "db".into(),
        key: "url".into(),
    });
    spec.database.external_cidrs = vec!["127.0.0.0/8".into()];
    f(&mut spec);
    let mut hp = HealthcarePlatform::new("demo", spec);
    hp.metadata.namespace = Some("clinic".into());
    validate(&hp, "clinic").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reads_a_running_api_self_report_and_evaluates_it() {
    let mut api = start_api(30);
    let admin_port = api.admin_port;
    let report = wait_for_self_report(&mut api.child, admin_port)
        .await
        .unwrap_or_else(|err| panic!("the API {err}"));

    // The report describes the running server as configured.
    let ring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(api.keys_dir.join("phi-keys.json")).unwrap())
            .unwrap();
    assert_eq!(report.encryption.active_key_id, ring["active_key_id"]);
    assert!(report.encryption.active);
    assert_eq!(report.sessions.idle_timeout_minutes, 30);
    assert_eq!(report.sessions.access_token_ttl_minutes, 15);
    assert_eq!(report.audit.retention_days, 2190);
    assert_eq!(report.audit.write_failures, 0);
    assert!(report.rate_limit.enabled);
    assert!(!report.database_tls, "the local test database has no TLS");
    assert!(report.schema_version > 0);
    // The API pinged the Redis of REDIS_URL for the report (CacheReady of an External cache).
    assert_eq!(
        report.cache,
        Some(CacheReport {
            configured: true,
            reachable: true
        })
    );

    // The rules evaluate it.
    let p = platform(|_| {});
    let children = build_children(
        &p,
        &ExistingSecrets::default(),
        &mut SecretGenerator::random(),
    );
    let now = k8s_openapi::jiff::Timestamp::now();
    let live = LiveEvidence {
        network_policies: children.network_policies.clone(),
        backup: Some(BackupStatus {
            last_successful_time: Some(Time(now)),
            ..Default::default()
        }),
        backup_jobs: Vec::new(),
        self_report: Ok(report.clone()),
        previous_chain_head: None,
    };
    let a = assess(&p, &children, Some(&live), Vec::new(), now);
    let verdict = |rule: RuleId| {
        let r = a.results.iter().find(|r| r.rule.rule == rule).unwrap();
        (r.verdict, r.message.clone())
    };
    assert_eq!(verdict(RuleId::FieldEncryptionActive).0, Verdict::Pass);
    assert_eq!(verdict(RuleId::AuditWriteFailures).0, Verdict::Pass);
    assert_eq!(verdict(RuleId::AuditChainIntact).0, Verdict::Pass);
    assert_eq!(verdict(RuleId::AccessTokenTtl).0, Verdict::Pass);
    assert_eq!(verdict(RuleId::AuditRetention).0, Verdict::Pass);
    let (v, m) = verdict(RuleId::RateLimiting);
    assert_eq!(v, Verdict::Pass, "{m}");
    assert!(m.contains(&report.rate_limit.backend), "{m}");
    // The spec says 15 but the running API logs users off after 30 minutes: a violation.
    let (v, m) = verdict(RuleId::SessionIdleTimeout);
    assert_eq!(v, Verdict::Fail, "{m}");
    assert!(m.contains("API reports") && m.contains("30"), "{m}");
    // The API connects to its database without verified TLS: a violation.
    assert_eq!(verdict(RuleId::DatabaseTls).0, Verdict::Fail);
    let head = a.chain_head.clone().expect("chain head recorded");
    assert_eq!(head.id, report.audit.chain_head_id);

    // A later evaluation with a rewritten head (same id, other hash) is tamper evidence.
    let tampered = LiveEvidence {
        previous_chain_head: Some(AuditChainHead {
            id: head.id,
            hash: "f".repeat(64),
        }),
        ..live.clone()
    };
    let a = assess(&p, &children, Some(&tampered), Vec::new(), now);
    let r = a
        .results
        .iter()
        .find(|r| r.rule.rule == RuleId::AuditChainIntact)
        .unwrap();
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.message);

    // promtool check metrics on the API's /metrics output.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", api.admin_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on the API: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_stopped_api_is_not_evaluated_never_passed() {
    let port = free_port();
    let client = SelfReportClient::new(Duration::from_millis(500)).unwrap();
    let err = client
        .fetch(&format!("http://127.0.0.1:{port}/internal/compliance"))
        .await
        .unwrap_err();
    let p = platform(|_| {});
    let children = build_children(
        &p,
        &ExistingSecrets::default(),
        &mut SecretGenerator::random(),
    );
    let live = LiveEvidence {
        network_policies: children.network_policies.clone(),
        backup: None,
        backup_jobs: Vec::new(),
        self_report: Err(err.to_string()),
        previous_chain_head: None,
    };
    let a = assess(
        &p,
        &children,
        Some(&live),
        Vec::new(),
        k8s_openapi::jiff::Timestamp::now(),
    );
    for rule in [
        RuleId::FieldEncryptionActive,
        RuleId::AuditChainIntact,
        RuleId::AuditWriteFailures,
        RuleId::DatabaseTls,
    ] {
        let r = a.results.iter().find(|r| r.rule.rule == rule).unwrap();
        assert_eq!(r.verdict, Verdict::NotEvaluated, "{rule:?}: {}", r.message);
        assert!(r.message.contains("unreachable"), "{}", r.message);
    }
}

fn promtool() -> PathBuf {
    if let Ok(p) = std::env::var("PROMTOOL") {
        return PathBuf::from(p);
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    }) {
        return found;
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/promtool");
    assert!(
        tools.is_file(),
        "promtool not found: set PROMTOOL, put it on PATH, or run scripts/tools.sh"
    );
    tools
}

//! The OpenAPI document against the real server: schemathesis (PyPI, installed into
//! `.tools/venv` by `scripts/tools.sh`) generates requests from `/api/v1/openapi.json` and runs
//! all its checks on the answers (no 5xx; every status, content type, header and body as
//! declared; requests the schema forbids refused, requests it allows accepted; 401 without the
//! token; ...), once per role with that role's bearer token, against the API on a real TCP
//! listener over real PostgreSQL and Redis.
//!
//! Bounded and deterministic: `--max-examples` per operation (default 10,
//! `CADUCEUS_SCHEMATHESIS_MAX_EXAMPLES` overrides), a fixed `--seed`, one worker.
//! `CADUCEUS_SCHEMATHESIS_ROLES=admin,nurse` runs only those roles; `SCHEMATHESIS_BIN` points at
//! another schemathesis. Without schemathesis the test prints `schemathesis: SKIPPED` and passes,
//! except under `CI=true`, where it fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestUser};
use sqlx::PgPool;

mod common;

/// The pinned schemathesis (`scripts/tools.sh`), or `SCHEMATHESIS_BIN`, or one on `PATH`.
fn schemathesis_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SCHEMATHESIS_BIN") {
        return Some(bin.into());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/schemathesis");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("schemathesis"))
            .find(|p| p.is_file())
    })
}

const SEED: &str = "20260514";

fn roles() -> Vec<Role> {
    let all = [
        Role::Admin,
        Role::Physician,
        Role::Nurse,
        Role::Receptionist,
        Role::Patient,
    ];
    match std::env::var("CADUCEUS_SCHEMATHESIS_ROLES") {
        Ok(only) if !only.trim().is_empty() => all
            .into_iter()
            .filter(|r| only.split(',').any(|o| o.trim() == r.as_str()))
            .collect(),
        _ => all.to_vec(),
    }
}

/// Users of every role, with records to find: a patient registered by the physician (so the
/// physician and nurse's care teams are not empty) and linked to the patient account.
async fn seed(app: &TestApp) -> Vec<TestUser> {
    let physician = app.user(Role::Physician).await;
    let patient_id = common::create_patient(app, &physician, "SCHEMA1").await;
    let mut users = Vec::new();
    for role in roles() {
        let user = match role {
            Role::Physician => physician.clone(),
            Role::Patient => app.patient_user(patient_id.parse().expect("uuid")).await,
            other => app.user(other).await,
        };
        users.push(user);
    }
    users
}

#[sqlx::test]
async fn schemathesis_finds_no_failure_for_any_role(pool: PgPool) {
    let Some(bin) = schemathesis_bin() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("schemathesis is not installed (scripts/tools.sh installs it into .tools/venv); CI must run this test");
        }
        eprintln!(
            "schemathesis: SKIPPED (not installed; scripts/tools.sh installs it into .tools/venv)"
        );
        return;
    };
    // the server's errors (a 500 logs its category) in the test output
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_test_writer()
        .try_init();
    let app = TestApp::new(pool).await;
    let users = seed(&app).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let max_examples =
        std::env::var("CADUCEUS_SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "10".into());
    let reports = tempfile::tempdir().expect("tempdir");
    let base = format!("http://{addr}");
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut failed = Vec::new();
    for user in &users {
        let role = user.role.as_str();
        // Everything but logout first (a logout ends the session the token belongs to), then
        // logout alone.
        for (run, filter) in [
            ("all", ["--exclude-path", "/api/v1/auth/logout"]),
            ("logout", ["--include-path", "/api/v1/auth/logout"]),
        ] {
            let started = Instant::now();
            let junit = reports.path().join(format!("{role}-{run}.xml"));
            let mut cmd = tokio::process::Command::new(&bin);
            cmd.arg("--config-file")
                .arg(tests.join("schemathesis.toml"))
                .arg("run")
                .arg(format!("{base}/api/v1/openapi.json"))
                .args(["--url", &base])
                .args(["--checks", "all"])
                .args(filter)
                .args(["--max-examples", &max_examples])
                .args(["--seed", SEED])
                .args(["--workers", "1"])
                .args(["--request-timeout", "30"])
                .args(["-H", &format!("Authorization: Bearer {}", user.token)])
                .args(["--report", "junit"])
                .arg("--report-junit-path")
                .arg(&junit)
                .args(["--output-truncate", "false"])
                .current_dir(reports.path())
                .env("NO_COLOR", "1")
                .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
                .env("PYTHONPATH", &tests)
                .kill_on_drop(true);
            let out = tokio::time::timeout(Duration::from_secs(900), cmd.output())
                .await
                .unwrap_or_else(|_| panic!("schemathesis as {role} took longer than 15 minutes"))
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let summary = stdout
                .lines()
                .rev()
                .find(|l| l.contains(" in ") && l.starts_with('='))
                .unwrap_or("")
                .trim_matches(|c: char| c == '=' || c.is_whitespace())
                .to_string();
            if out.status.success() {
                eprintln!(
                    "schemathesis as {role} ({run}): passed in {:.0?}: {summary}",
                    started.elapsed()
                );
            } else {
                eprintln!("{stdout}\n{stderr}");
                eprintln!("schemathesis as {role} ({run}): FAILED: {summary}");
                failed.push(format!("{role} ({run})"));
            }
            if run == "all" {
                // the token still worked at the end: the run was not 401s throughout
                let me = app.get("/api/v1/me", &user.token).await;
                assert_eq!(
                    me.status, 200,
                    "{role}'s session ended during the run: {}",
                    me.text
                );
            }
        }
    }
    server.abort();
    assert!(
        failed.is_empty(),
        "schemathesis reported failures as {failed:?} (output above)"
    );
}

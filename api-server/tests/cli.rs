//! The `caduceus-api` binary: version, keys generate, config refusal, migrate, create-admin,
//! rotate-keys, and `serve` over real TCP with graceful shutdown on SIGTERM.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use caduceus_api::crypto::{self, KeyRing};
use caduceus_api::testing::TestApp;
use sqlx::PgPool;

const BIN: &str = env!("CARGO_BIN_EXE_caduceus-api");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("binary runs")
}

async fn db_url(pool: &PgPool) -> String {
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let (server, _) = base.rsplit_once('/').expect("url with database");
    format!("{server}/{db}")
}

/// `url` with another user and password.
fn as_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("url with scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}")
}

/// `db-setup` of a runtime role of its own (roles are shared by the server's databases); the URL
/// `serve` connects with.
fn db_setup(owner_url: &str) -> String {
    let role = format!("caduceus_app_t{}", uuid::Uuid::new_v4().simple());
    let out = run(
        &["db-setup"],
        &[
            ("DATABASE_URL", owner_url),
            ("CADUCEUS_APP_DB_USER", &role),
            ("CADUCEUS_APP_DB_PASSWORD", "runtime-Pa55"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("runtime role {role:?} Created")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    as_user(owner_url, &role, "runtime-Pa55")
}

#[test]
fn version_and_key_generation() {
    let out = run(&["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("caduceus-api {}", env!("CARGO_PKG_VERSION"))
    );

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = run(&["keys", "generate", "--out", keys.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["jwt.key", "phi-keys.json"] {
        let mode = std::fs::metadata(keys.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // exactly the formats serve reads
    let ring = KeyRing::load(&keys.join("phi-keys.json")).unwrap();
    assert!(ring.active_key_id().starts_with("k-"));
    assert_eq!(
        crypto::load_jwt_key(&keys.join("jwt.key")).unwrap().len(),
        64
    );
    // never overwrites
    let again = run(&["keys", "generate", "--out", keys.to_str().unwrap()], &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("jwt.key"));
}

#[test]
fn serve_refuses_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    crypto::write_key_files(dir.path()).unwrap();
    let jwt = dir.path().join("jwt.key").display().to_string();
    let phi = dir.path().join("phi-keys.json").display().to_string();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "c2hvcnQ=\n").unwrap();
    let bad_ring = dir.path().join("bad.json");
    std::fs::write(
        &bad_ring,
        "{\"version\":1,\"active_key_id\":\"k-x\",\"keys\":{},\"blind_index_key\":\"AAAA\"}",
    )
    .unwrap();
    let private = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    private(&short, 0o600);
    private(&bad_ring, 0o600);
    // Readable by every account: refused before it is even parsed.
    let open_to_all = dir.path().join("open.key");
    std::fs::copy(dir.path().join("jwt.key"), &open_to_all).unwrap();
    private(&open_to_all, 0o644);
    let db = "postgres://postgres@127.0.0.1:5432/postgres";
    for (env, needle) in [
        (
            vec![
                ("REDIS_URL", ""),
                ("CADUCEUS_JWT_KEY_FILE", jwt.as_str()),
                ("CADUCEUS_PHI_KEYS_FILE", phi.as_str()),
            ],
            "DATABASE_URL",
        ),
        (
            vec![
                ("DATABASE_URL", db),
                ("REDIS_URL", ""),
                ("CADUCEUS_PHI_KEYS_FILE", phi.as_str()),
            ],
            "CADUCEUS_JWT_KEY_FILE",
        ),
        (
            vec![
                ("DATABASE_URL", db),
                ("REDIS_URL", ""),
                ("CADUCEUS_JWT_KEY_FILE", short.to_str().unwrap()),
                ("CADUCEUS_PHI_KEYS_FILE", phi.as_str()),
            ],
            "at least 32",
        ),
        (
            vec![
                ("DATABASE_URL", db),
                ("REDIS_URL", ""),
                ("CADUCEUS_JWT_KEY_FILE", jwt.as_str()),
                ("CADUCEUS_PHI_KEYS_FILE", bad_ring.to_str().unwrap()),
            ],
            "CADUCEUS_PHI_KEYS_FILE",
        ),
        (
            vec![
                ("DATABASE_URL", db),
                ("REDIS_URL", ""),
                ("CADUCEUS_JWT_KEY_FILE", open_to_all.to_str().unwrap()),
                ("CADUCEUS_PHI_KEYS_FILE", phi.as_str()),
            ],
            "mode 0644",
        ),
        (
            vec![
                ("DATABASE_URL", db),
                ("CADUCEUS_JWT_KEY_FILE", jwt.as_str()),
                ("CADUCEUS_PHI_KEYS_FILE", phi.as_str()),
            ],
            "REDIS_URL",
        ),
    ] {
        let out = run(&["serve"], &env);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[sqlx::test(migrations = false)]
async fn migrate_create_admin_rotate(pool: PgPool) {
    let url = db_url(&pool).await;
    let out = run(&["migrate"], &[("DATABASE_URL", &url)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema version"));
    // idempotent
    assert!(run(&["migrate"], &[("DATABASE_URL", &url)])
        .status
        .success());

    let dir = tempfile::tempdir().unwrap();
    crypto::write_key_files(&dir.path().join("k")).unwrap();
    let ring_path = dir.path().join("k/phi-keys.json");
    let ring = ring_path.to_str().unwrap();
    let keys = KeyRing::load(&ring_path).unwrap();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CADUCEUS_PHI_KEYS_FILE", ring),
    ];
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "admin password long enough\n").unwrap();
    let args = [
        "create-admin",
        "--email",
        "root@test.example",
        "--password-file",
        pw.to_str().unwrap(),
    ];
    // the e-mail is encrypted: the PHI key ring is required
    let out = run(&args, &[("DATABASE_URL", &url)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CADUCEUS_PHI_KEYS_FILE"));
    let out = run(&args, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created admin"));
    let row = || async {
        sqlx::query_as::<
            _,
            (
                uuid::Uuid,
                Vec<u8>,
                String,
                String,
                chrono::DateTime<chrono::Utc>,
            ),
        >("SELECT id, email_enc, password_hash, role, updated_at FROM users")
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let before = row().await;
    assert_eq!(before.len(), 1);
    // idempotent: again (other case, other password) → exit 0, "already exists", nothing changed
    std::fs::write(&pw, "another password long enough\n").unwrap();
    let again = run(
        &[
            "create-admin",
            "--email",
            " Root@Test.Example",
            "--password-file",
            pw.to_str().unwrap(),
        ],
        &env,
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("already exists"), "{stdout}");
    assert!(stdout.contains("nothing changed"), "{stdout}");
    assert_eq!(row().await, before);
    // an existing NON-admin account with that e-mail: clear error, non-zero, nothing changed
    caduceus_api::users::insert(
        &pool,
        &keys,
        "doc@test.example",
        "doctor password long enough".into(),
        caduceus_api::rbac::Role::Physician,
        "Doc",
        None,
    )
    .await
    .unwrap();
    let users_before = sqlx::query_scalar::<_, String>(
        "SELECT string_agg(id::text || role || password_hash, ',' ORDER BY id) FROM users",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let clash = run(
        &[
            "create-admin",
            "--email",
            "DOC@test.example",
            "--password-file",
            pw.to_str().unwrap(),
        ],
        &env,
    );
    assert!(!clash.status.success());
    let stderr = String::from_utf8_lossy(&clash.stderr);
    assert!(
        stderr.starts_with("caduceus-api: error:") && stderr.contains("role physician (not admin)"),
        "{stderr}"
    );
    assert_eq!(
        sqlx::query_scalar::<_, String>(
            "SELECT string_agg(id::text || role || password_hash, ',' ORDER BY id) FROM users"
        )
        .fetch_one(&pool)
        .await
        .unwrap(),
        users_before
    );
    std::fs::write(&pw, "short\n").unwrap();
    let weak = run(
        &[
            "create-admin",
            "--email",
            "x@test.example",
            "--password-file",
            pw.to_str().unwrap(),
        ],
        &env,
    );
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("12"));

    let mut cfg = caduceus_api::testing::test_config();
    cfg.phi_keys = std::sync::Arc::new(keys.clone());
    let app = TestApp::with_config(pool.clone(), cfg).await;
    // the first password still works: the re-run changed nothing
    let login = app
        .login("root@test.example", "admin password long enough")
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    let me = app
        .get("/api/v1/me", login.json["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.json["role"], "admin");
    assert_eq!(me.json["email"], "root@test.example");

    // rotate-keys over the CLI: nothing to do when everything is under the active key
    let out = run(&["rotate-keys"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rotation complete: 0 rows"));
    // ... and it encrypts an account e-mail still in plaintext (written before migration 0102)
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, role, display_name) \
         VALUES (gen_random_uuid(), 'legacy@test.example', 'x', 'nurse', 'Legacy')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let out = run(&["rotate-keys"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rotation complete: 1 rows"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let plain: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(plain, 0);
    let audited: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT action, resource_id FROM audit_events WHERE actor_id IS NULL ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let actions: Vec<&str> = audited.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "user.create").count(),
        1,
        "only the real creation is audited: {audited:?}"
    );
    assert!(actions.contains(&"keys.rotate"), "{audited:?}");
    assert!(
        caduceus_api::audit::verify_chain(&pool, keys.audit_key())
            .await
            .unwrap()
            .valid
    );
    let out = run(&["rotate-keys"], &[("DATABASE_URL", &url)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CADUCEUS_PHI_KEYS_FILE"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[sqlx::test]
async fn serve_over_tcp_and_shut_down_gracefully(pool: PgPool) {
    let url = db_url(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    crypto::write_key_files(dir.path()).unwrap();
    // an account from before migration 0102 (plaintext e-mail): serve encrypts it before serving
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, role, display_name) \
         VALUES (gen_random_uuid(), 'Before.0102@test.example', 'x', 'nurse', 'Legacy')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (api, admin) = (free_port(), free_port());
    let serve_env = |database_url: &str| -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), database_url.into()),
            ("REDIS_URL".into(), "redis://127.0.0.1:6379".into()),
            (
                "CADUCEUS_JWT_KEY_FILE".into(),
                dir.path().join("jwt.key").display().to_string(),
            ),
            (
                "CADUCEUS_PHI_KEYS_FILE".into(),
                dir.path().join("phi-keys.json").display().to_string(),
            ),
            ("CADUCEUS_HTTP_ADDR".into(), format!("127.0.0.1:{api}")),
            ("CADUCEUS_ADMIN_ADDR".into(), format!("127.0.0.1:{admin}")),
        ]
    };
    // Never as the owner (here a superuser): refused with a message saying what to do.
    let env = serve_env(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let refused = run(&["serve"], &env);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("superuser") && err.contains("db-setup"),
        "{err}"
    );
    let url = db_setup(&url);
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("CADUCEUS_JWT_KEY_FILE", dir.path().join("jwt.key"))
        .env("CADUCEUS_PHI_KEYS_FILE", dir.path().join("phi-keys.json"))
        .env("CADUCEUS_HTTP_ADDR", format!("127.0.0.1:{api}"))
        .env("CADUCEUS_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let ready = loop {
        if let Some(r) = http_get(api, "/health/ready") {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let (plain, enc, bidx): (Option<String>, Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT email, email_enc, email_bidx FROM users")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(plain, None);
    let keys = KeyRing::load(&dir.path().join("phi-keys.json")).unwrap();
    assert_eq!(
        bidx,
        caduceus_api::users::email_index(&keys, "before.0102@test.example")
    );
    assert!(!String::from_utf8_lossy(&enc).contains("Before"));
    assert!(ready.to_lowercase().contains("x-request-id"));
    let metrics = http_get(admin, "/metrics").unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(
        http_get(api, "/metrics")
            .unwrap()
            .starts_with("HTTP/1.1 404"),
        "metrics only on the admin port"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut logs = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(exit.success(), "exit {exit:?}; logs: {logs}");
    // JSON logs, route templates only
    let line = logs
        .lines()
        .find(|l| l.contains("\"request\""))
        .expect("access log line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(v["fields"]["route"], "/health/ready");
    assert!(logs.contains("draining"));
}

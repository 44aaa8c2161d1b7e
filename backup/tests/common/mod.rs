//! Shared helpers for the agent's integration tests: real Postgres, real pg_dump/pg_restore,
//! the real `caduceus-backup` binary, and S3 through `moto_server`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};

pub const BIN: &str = env!("CARGO_BIN_EXE_caduceus-backup");

/// Base server URL: `BACKUP_TEST_DATABASE_URL`, else `DATABASE_URL`, else local trust auth.
pub fn server_url() -> String {
    std::env::var("BACKUP_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

pub fn db_url(db: &str) -> String {
    let mut url = url::Url::parse(&server_url()).expect("server URL");
    url.set_path(&format!("/{db}"));
    url.to_string()
}

pub async fn connect(db: &str) -> PgConnection {
    PgConnectOptions::from_str(&db_url(db))
        .expect("options")
        .connect()
        .await
        .expect("connect to Postgres (is it running at DATABASE_URL / 127.0.0.1:5432?)")
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

async fn exec(conn: &mut PgConnection, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .expect("sql");
}

/// A database dropped (with every `<name>_…` database the restore created) when the guard drops.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn create(prefix: &str) -> Self {
        let name = unique(prefix);
        let mut admin = connect("postgres").await;
        exec(&mut admin, format!("CREATE DATABASE \"{name}\"")).await;
        admin.close().await.ok();
        Self { name }
    }

    /// A name for a database that does not exist yet (dropped like the others).
    pub fn absent(prefix: &str) -> Self {
        Self {
            name: unique(prefix),
        }
    }

    pub fn url(&self) -> String {
        db_url(&self.name)
    }

    pub async fn conn(&self) -> PgConnection {
        connect(&self.name).await
    }

    /// A new database holding [`seed`]'s data, and its [`fingerprint`].
    pub async fn seeded(prefix: &str) -> (Self, Fingerprint) {
        let db = Self::create(prefix).await;
        let mut conn = db.conn().await;
        seed(&mut conn).await;
        conn.close().await.ok();
        let before = db.fingerprint().await;
        (db, before)
    }

    /// The [`fingerprint`] of the database as it is now.
    pub async fn fingerprint(&self) -> Fingerprint {
        let mut conn = self.conn().await;
        let print = fingerprint(&mut conn).await;
        conn.close().await.ok();
        print
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let url = db_url("postgres");
        // Drop in a separate thread with its own runtime: Drop may run inside a tokio runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let Ok(mut conn) = PgConnectOptions::from_str(&url)
                    .expect("options")
                    .connect()
                    .await
                else {
                    return;
                };
                let rows = sqlx::query(
                    "SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2",
                )
                .bind(&name)
                .bind(format!("{}\\_%", name.replace('_', "\\_")))
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
                for row in rows {
                    let db: String = row.get(0);
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Clinical-looking data of several types, plus a sqlx migrations table at version 7.
pub async fn seed(conn: &mut PgConnection) {
    exec(
        conn,
        r#"
        CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
            installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
            checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL);
        INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
            SELECT v, 'migration ' || v, v <= 7, '\x00'::bytea, 1 FROM generate_series(1, 8) v;
        CREATE TABLE patients (id BIGSERIAL PRIMARY KEY, mrn TEXT UNIQUE NOT NULL,
            name_ciphertext BYTEA NOT NULL, birth_date DATE, tags JSONB, created_at TIMESTAMPTZ NOT NULL);
        INSERT INTO patients (mrn, name_ciphertext, birth_date, tags, created_at)
            SELECT 'MRN-' || g, decode(md5('name' || g), 'hex'), DATE '1950-01-01' + g,
                   jsonb_build_object('g', g, 'flag', g % 3 = 0), TIMESTAMPTZ '2026-01-01' + g * interval '1 minute'
            FROM generate_series(1, 3000) g;
        CREATE TABLE appointments (id UUID PRIMARY KEY, patient_id BIGINT REFERENCES patients(id),
            starts_at TIMESTAMPTZ NOT NULL, note TEXT);
        INSERT INTO appointments
            SELECT md5('appt' || g)::uuid, 1 + g % 3000, TIMESTAMPTZ '2026-06-01' + g * interval '1 hour',
                   repeat('note ', g % 20)
            FROM generate_series(1, 5000) g;
        CREATE INDEX appointments_patient ON appointments (patient_id);
        CREATE VIEW upcoming AS SELECT * FROM appointments WHERE starts_at > TIMESTAMPTZ '2026-07-01';
        "#
        .to_string(),
    )
    .await;
}

/// Row count and content checksum of every user table, sorted by table name.
pub type Fingerprint = Vec<(String, i64, String)>;

/// The [`Fingerprint`] of the database `conn` is connected to.
pub async fn fingerprint(conn: &mut PgConnection) -> Fingerprint {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("tables");
    let mut out = Vec::new();
    for t in tables {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM \"{t}\" x"
        )))
        .fetch_one(&mut *conn)
        .await
        .expect("checksum");
        out.push((t, row.get::<i64, _>(0), row.get::<String, _>(1)));
    }
    out
}

pub async fn database_exists(name: &str) -> bool {
    let mut admin = connect("postgres").await;
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await
        .expect("query");
    admin.close().await.ok();
    found.is_some()
}

pub async fn databases_like(prefix: &str) -> Vec<String> {
    let mut admin = connect("postgres").await;
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
    )
    .bind(prefix)
    .fetch_all(&mut admin)
    .await
    .expect("query");
    admin.close().await.ok();
    rows
}

/// A key file in `dir`, created with `caduceus-backup keygen`.
pub fn keygen(dir: &Path, file: &str) -> (PathBuf, serde_json::Value) {
    let out = Command::new(BIN)
        .arg("keygen")
        .output()
        .expect("run keygen");
    assert!(
        out.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let value: serde_json::Value = serde_json::from_str(text.trim()).expect("keygen prints JSON");
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write key");
    // Key files others can read are refused: as Kubernetes mounts them (0440) or tighter.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    (path, value)
}

/// Where a test keeps its backups: a `file://` destination (or, with [`Store::s3`], a prefix in
/// moto's S3) and a key file made by `keygen`, both in a temporary directory.
pub struct Store {
    pub dir: tempfile::TempDir,
    pub key_file: String,
    /// The key file's contents.
    pub key: serde_json::Value,
    pub dest: String,
    endpoint: Option<String>,
}

impl Store {
    /// A `file://` destination: `<temporary directory>/backups`.
    pub fn file() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = format!("file://{}", dir.path().join("backups").display());
        Self::new(dir, dest, None)
    }

    /// The destination `dest` (`s3://bucket/prefix`) on `moto`.
    pub fn s3(moto: &Moto, dest: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::new(dir, dest.to_string(), Some(moto.endpoint.clone()))
    }

    fn new(dir: tempfile::TempDir, dest: String, endpoint: Option<String>) -> Self {
        let (key_file, key) = keygen(dir.path(), "k.json");
        let key_file = key_file.to_str().expect("path").to_string();
        Self {
            dir,
            key_file,
            key,
            dest,
            endpoint,
        }
    }

    /// The directory of a `file://` destination.
    pub fn backups(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// The archive of backup `name` in a `file://` destination.
    pub fn archive(&self, name: &str) -> PathBuf {
        self.backups().join(format!("{name}.cbk"))
    }

    /// The manifest of backup `name` in a `file://` destination.
    pub fn manifest(&self, name: &str) -> PathBuf {
        self.backups().join(format!("{name}.json"))
    }

    /// `args` followed by this destination, its S3 endpoint and the key file.
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(["--destination", &self.dest, "--key-file", &self.key_file]);
        if let Some(endpoint) = &self.endpoint {
            all.extend(["--s3-endpoint", endpoint]);
        }
        all
    }

    /// A backup of the database at `url` (must succeed): the result line.
    pub fn backup(&self, url: &str) -> serde_json::Value {
        run_ok(&self.args(&["backup", "--database-url", url]))
    }

    /// The name of a new backup of the database at `url`.
    pub fn backup_name(&self, url: &str) -> String {
        name_of(&self.backup(url))
    }
}

/// The `name` of a result line or manifest.
pub fn name_of(result: &serde_json::Value) -> String {
    result["name"].as_str().expect("name").to_string()
}

/// A pool on the database at `url`, migrated to the API's schema (what the API's start-up does).
pub async fn api_pool(url: &str) -> sqlx::PgPool {
    let pool = pool(url).await;
    caduceus_api::health::MIGRATOR
        .run(&pool)
        .await
        .expect("migrate");
    pool
}

/// A pool on the database at `url`.
pub async fn pool(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .expect("pool")
}

/// Environment for the agent: S3 credentials for moto.
pub fn agent(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("DATABASE_URL")
        .env_remove("CADUCEUS_BACKUP_DESTINATION")
        .env_remove("CADUCEUS_BACKUP_KEY_FILE")
        .env_remove("CADUCEUS_BACKUP_S3_ENDPOINT");
    cmd
}

pub fn run(args: &[&str]) -> Output {
    agent(args).output().expect("run caduceus-backup")
}

/// Run and expect success; returns the last stdout line parsed as JSON.
pub fn run_ok(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "caduceus-backup {} failed: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).expect("last line is JSON")
}

/// Run and expect failure with a single stderr line; returns it.
pub fn run_err(args: &[&str]) -> String {
    let out = run(args);
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert!(
        !out.status.success(),
        "expected failure, got success; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one-line error expected: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr.trim_end().to_string()
}

/// `moto_server` on a free port with one bucket; killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start(bucket: &str) -> Self {
        let exe = std::env::var("MOTO_SERVER")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|p| p.join("moto_server"))
                        .find(|p| p.is_file())
                        .map(|p| p.display().to_string())
                })
            });
        let Some(exe) = exe else {
            panic!(
                "moto_server not found: the S3 tests need it. Install with `bash scripts/tools.sh` \
                 (puts it in .tools/ and on PATH via `source scripts/env.sh`) or `pip install 'moto[server]'`, \
                 or point MOTO_SERVER at the executable"
            );
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server ({exe}): {e}"));
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut moto = Self { child, endpoint };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start within 60s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.create_bucket(bucket);
        moto
    }

    fn create_bucket(&mut self, bucket: &str) {
        // moto accepts unsigned requests; a plain HTTP/1.1 PUT creates the bucket.
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect moto");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "create bucket: {response}"
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the agent while sampling its peak resident set (VmHWM, KiB) from /proc.
pub fn run_measuring_peak_rss(args: &[&str]) -> (Output, u64) {
    let mut child = agent(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (output, peak_kib)
}

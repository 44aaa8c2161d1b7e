//! The operator's database certificates on a REAL PostgreSQL with `ssl=on`, and the REAL
//! `caduceus-api` connecting with `sslmode=verify-full`.
//!
//! The CA and server certificate come from `caduceus_operator::desired::postgres_tls` (the code
//! that fills `<platform>-postgres-tls`), with the SAN `localhost`. A throw-away PostgreSQL is
//! started with `initdb` / `pg_ctl` (as `scripts/services.sh` does; binaries from `.tools/bin`
//! or `/usr/lib/postgresql/*/bin`, or `PG_BINDIR`) on a free port, with `ssl=on`, the issued
//! certificate and key (0600) and a `pg_hba.conf` that admits TCP clients only over TLS. Then:
//! `caduceus-api migrate` and `serve` connect with `verify-full` (and `/internal/compliance`
//! reports `database_tls: true`); a CA bundle with an extra CA (as during a CA renewal) is
//! accepted; another CA, or a host name the certificate does not cover, is refused with a clear
//! error. The API binary is found by `tests/support/api_process.rs` (`cargo build -p
//! caduceus-api` first, or `CADUCEUS_API_BIN`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use caduceus_operator::desired::postgres;
use caduceus_operator::desired::postgres_tls::{self, TlsMaterial};

/// The superuser password of the test server (TCP needs it: SCRAM).
const PASSWORD: &str = "pg-Secret-1";
use support::api_process::{
    api_binary, db_setup, free_port, generate_keys, output_text, serve_command,
    wait_for_self_report, write_file,
};

fn pg_bindir() -> PathBuf {
    if let Ok(d) = std::env::var("PG_BINDIR") {
        return PathBuf::from(d);
    }
    let repo_tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin");
    let mut candidates = vec![repo_tools];
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .expect("initdb and pg_ctl (run scripts/tools.sh, or set PG_BINDIR)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// initdb and postgres refuse to run as root: run them as `postgres` (or `nobody`) then.
fn pg_user() -> Option<&'static str> {
    if !is_root() {
        return None;
    }
    let exists = |u: &str| {
        Command::new("id")
            .arg(u)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    Some(if exists("postgres") {
        "postgres"
    } else {
        "nobody"
    })
}

fn pg_command(bin: &Path) -> Command {
    match pg_user() {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

fn chown_to_pg_user(path: &Path) {
    if let Some(user) = pg_user() {
        let ok = Command::new("chown")
            .arg(user)
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {user} {}", path.display());
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A throw-away PostgreSQL serving TLS with the given certificate; stopped on drop.
struct Postgres {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    fn start(tls: &TlsMaterial) -> Self {
        let bindir = pg_bindir();
        let dir = tempfile::tempdir().unwrap();
        chown_to_pg_user(dir.path());
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, &tls.server_cert).unwrap();
        std::fs::write(&key, &tls.server_key).unwrap();
        // Postgres refuses a key readable by others.
        set_mode(&key, 0o600);
        chown_to_pg_user(&cert);
        chown_to_pg_user(&key);

        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        chown_to_pg_user(&pwfile);
        let out = pg_command(&bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", output_text(&out));
        // The operator's pg_hba.conf: TCP clients only over TLS, with SCRAM; the Unix socket
        // (this test's own checks) as the image has it.
        std::fs::write(data.join("pg_hba.conf"), postgres::PG_HBA).unwrap();

        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=localhost -c fsync=off -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c ssl_min_protocol_version=TLSv1.2",
            dir.path().display(),
            cert.display(),
            key.display()
        );
        let out = pg_command(&bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("postgres.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{log}",
            output_text(&out)
        );
        Self { bindir, dir, port }
    }

    fn url(&self, host: &str, ca_file: &Path) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres?sslmode=verify-full&sslrootcert={}",
            self.port,
            ca_file.display()
        )
    }

    /// Runs SQL over the Unix socket (not through TLS).
    fn sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-XtAq", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {sql}: {}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_command(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn migrate(database_url: &str) -> Output {
    Command::new(api_binary())
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_connects_verify_full_to_postgres_serving_the_operator_certificate() {
    let now = k8s_openapi::jiff::Timestamp::now();
    let tls = postgres_tls::issue("demo", &["localhost".to_string()], now).unwrap();
    let pg = Postgres::start(&tls);
    let files = tempfile::tempdir().unwrap();
    let ca = write_file(files.path(), "ca.crt", &tls.ca_cert);

    // The server really runs TLS with the issued certificate.
    assert_eq!(pg.sql("SHOW ssl"), "on");

    // migrate over verify-full.
    let url = pg.url("localhost", &ca);
    let out = migrate(&url);
    assert!(out.status.success(), "migrate: {}", output_text(&out));
    assert!(
        pg.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .parse::<u32>()
            .unwrap()
            > 0,
        "migrate created the schema"
    );

    // A bundle with a second CA (ca.crt during a CA renewal) is accepted too.
    let other = postgres_tls::issue("demo", &["localhost".to_string()], now).unwrap();
    let bundle = write_file(
        files.path(),
        "bundle.crt",
        &format!("{}{}", other.ca_cert, tls.ca_cert),
    );
    let out = migrate(&pg.url("localhost", &bundle));
    assert!(
        out.status.success(),
        "migrate with a two-CA bundle: {}",
        output_text(&out)
    );

    // serve: the self-report says the database connection is verified TLS, and every TCP
    // connection of the API is encrypted (pg_hba admits nothing else).
    let keys = generate_keys();
    let (http_port, admin_port) = (free_port(), free_port());
    let app_url = db_setup(&url);
    let mut serve = serve_command(&app_url, keys.path(), http_port, admin_port)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let report = wait_for_self_report(&mut serve, admin_port)
        .await
        .unwrap_or_else(|err| panic!("the API {err}"));
    let encrypted = pg.sql(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s \
         JOIN pg_stat_activity a USING (pid) WHERE a.client_addr IS NOT NULL",
    );
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(report.database_tls, "{report:?}");
    let (tls_conns, all_conns) = encrypted.split_once('|').unwrap();
    assert!(
        all_conns.parse::<u32>().unwrap() > 0,
        "the API holds connections"
    );
    assert_eq!(tls_conns, all_conns, "every API connection is TLS");
}

#[test]
fn another_ca_or_a_name_outside_the_certificate_is_refused() {
    let now = k8s_openapi::jiff::Timestamp::now();
    let tls = postgres_tls::issue("demo", &["localhost".to_string()], now).unwrap();
    let pg = Postgres::start(&tls);
    let files = tempfile::tempdir().unwrap();
    let ca = write_file(files.path(), "ca.crt", &tls.ca_cert);
    // Sanity: the right CA and name work.
    let out = migrate(&pg.url("localhost", &ca));
    assert!(out.status.success(), "migrate: {}", output_text(&out));

    let refused = |out: &Output, what: &str| {
        assert!(
            !out.status.success(),
            "{what} must be refused: {}",
            output_text(out)
        );
        eprintln!("{what}: {}", output_text(out).trim());
        let msg = output_text(out).to_ascii_lowercase();
        assert!(
            msg.contains("certificate") || msg.contains("tls") || msg.contains("ssl"),
            "{what}: the error names the TLS problem: {msg}"
        );
        assert!(!msg.contains("private key"), "{msg}");
        assert!(!msg.contains("begin certificate"), "{msg}");
    };

    // A CA that did not sign the server certificate.
    let other = postgres_tls::issue("demo", &["localhost".to_string()], now).unwrap();
    let other_ca = write_file(files.path(), "other.crt", &other.ca_cert);
    refused(&migrate(&pg.url("localhost", &other_ca)), "another CA");

    // The right CA, but a host the certificate does not name (127.0.0.1 is not in its SANs).
    refused(
        &migrate(&pg.url("127.0.0.1", &ca)),
        "a host outside the SANs",
    );

    // Without TLS the server admits nobody over TCP, not even with the right password.
    let out = migrate(&format!(
        "postgres://postgres:{PASSWORD}@localhost:{}/postgres?sslmode=disable",
        pg.port
    ));
    assert!(
        !out.status.success(),
        "plaintext must be refused: {}",
        output_text(&out)
    );
}

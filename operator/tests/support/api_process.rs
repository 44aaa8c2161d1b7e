//! The real `caduceus-api` binary for tests that run it as a process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use caduceus_operator::compliance::self_report::{SelfReport, SelfReportClient};

/// The `caduceus-api` binary: `CADUCEUS_API_BIN`, or the one `cargo build -p caduceus-api` put
/// next to this test's target directory.
pub fn api_binary() -> PathBuf {
    if let Ok(p) = std::env::var("CADUCEUS_API_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<this test> → target/<profile>/caduceus-api
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("caduceus-api"))
        .unwrap();
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build -p caduceus-api` with the same CARGO_TARGET_DIR first (or set CADUCEUS_API_BIN)",
        bin.display()
    );
    bin
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `caduceus-api serve` with a clean environment: the database, the Redis of `REDIS_URL`
/// (default `redis://127.0.0.1:6379`), the keys of `caduceus-api keys generate --out keys_dir`
/// and both listeners on 127.0.0.1. The caller adds its own settings and stdio, then spawns.
pub fn serve_command(
    database_url: &str,
    keys_dir: &Path,
    http_port: u16,
    admin_port: u16,
) -> Command {
    let mut serve = Command::new(api_binary());
    serve
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env(
            "REDIS_URL",
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        )
        .env("CADUCEUS_JWT_KEY_FILE", keys_dir.join("jwt.key"))
        .env("CADUCEUS_PHI_KEYS_FILE", keys_dir.join("phi-keys.json"))
        .env("CADUCEUS_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("CADUCEUS_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"));
    serve
}

/// `url` with another user and password (host, database and parameters kept).
pub fn as_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("url with scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}")
}

/// `caduceus-api db-setup` as the owner of `owner_url` with a runtime role of its own (roles are
/// shared by a server's databases); returns the URL `serve` connects with.
pub fn db_setup(owner_url: &str) -> String {
    let role = format!("caduceus_app_{}", free_port());
    let out = Command::new(api_binary())
        .arg("db-setup")
        .env_clear()
        .env("DATABASE_URL", owner_url)
        .env("CADUCEUS_APP_DB_USER", &role)
        .env("CADUCEUS_APP_DB_PASSWORD", "runtime-Pa55")
        .output()
        .expect("caduceus-api runs");
    assert!(
        out.status.success(),
        "caduceus-api db-setup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    as_user(owner_url, &role, "runtime-Pa55")
}

/// stdout and stderr of a finished command (for assertion messages).
pub fn output_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Writes `content` to `dir/name`; the path.
pub fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// A temporary directory with the keys of `caduceus-api keys generate --out`.
pub fn generate_keys() -> tempfile::TempDir {
    let keys = tempfile::tempdir().unwrap();
    let out = Command::new(api_binary())
        .args(["keys", "generate", "--out"])
        .arg(keys.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "keys generate: {}", output_text(&out));
    keys
}

/// The self-report of a spawned `caduceus-api serve` with its admin listener on `admin_port`,
/// once it serves it; `Err(its stderr)` (when piped) if it exits first. Panics, stopping it,
/// when it serves none within 30 s.
pub async fn wait_for_self_report(
    serve: &mut Child,
    admin_port: u16,
) -> Result<SelfReport, String> {
    let client = SelfReportClient::new(Duration::from_secs(5)).unwrap();
    let url = format!("http://127.0.0.1:{admin_port}/internal/compliance");
    let start = Instant::now();
    loop {
        match client.fetch(&url).await {
            Ok(report) => return Ok(report),
            Err(e) => {
                if let Ok(Some(status)) = serve.try_wait() {
                    let mut err = format!("exited ({status}): ");
                    if let Some(mut s) = serve.stderr.take() {
                        use std::io::Read as _;
                        let _ = s.read_to_string(&mut err);
                    }
                    return Err(err);
                }
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = serve.kill();
                    panic!("the API did not serve its self-report: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

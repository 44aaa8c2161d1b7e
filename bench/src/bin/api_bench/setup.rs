//! Process and services set-up of `api_bench`: the environment, `psql`, the benchmark
//! database, and the `caduceus-api` process (keys, `db-setup`, admin, `serve`) with its seed data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

pub const BENCH_DB: &str = "caduceus_bench";
pub const PGBENCH_DB: &str = "caduceus_pgbench";
pub const PASSWORD: &str = "benchmark-password-123";
/// The API's runtime role in the benchmark database (`db-setup`).
const BENCH_ROLE: &str = "caduceus_app_bench";

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

pub fn env_num(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .with_context(|| format!("{name} must be a positive integer")),
        _ => Ok(default),
    }
}

/// Same server, another database.
pub fn with_database(url: &str, db: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .ok_or_else(|| anyhow!("DATABASE_URL is not a URL"))?
        + 3;
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

pub fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn psql(url: &str, sql: &str) -> Result<String> {
    run(
        Command::new("psql")
            .args([url, "-XqAt", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null()),
        "psql",
    )
}

pub fn recreate_db(admin_url: &str, db: &str) -> Result<()> {
    psql(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    )?;
    psql(admin_url, &format!("CREATE DATABASE {db}"))?;
    Ok(())
}

pub struct Api {
    pub child: Child,
    pub base: String,
}

impl Drop for Api {
    fn drop(&mut self) {
        // SIGTERM: graceful drain, then make sure it is gone
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn api_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("CADUCEUS_API_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .ok_or_else(|| anyhow!("no parent of the bench executable"))?
        .join("caduceus-api");
    if !p.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p caduceus-api` or set CADUCEUS_API_BIN",
            p.display()
        );
    }
    Ok(p)
}

pub async fn start_api(bin: &Path, db_url: &str, redis_url: &str, dir: &Path) -> Result<Api> {
    let keys = dir.join("keys");
    run(
        Command::new(bin)
            .args(["keys", "generate", "--out"])
            .arg(&keys),
        "caduceus-api keys generate",
    )?;
    // The owner migrates and sets up the runtime role; serve connects as that role.
    run(
        Command::new(bin)
            .arg("db-setup")
            .env("DATABASE_URL", db_url)
            .env("CADUCEUS_APP_DB_USER", BENCH_ROLE)
            .env("CADUCEUS_APP_DB_PASSWORD", PASSWORD),
        "caduceus-api db-setup",
    )?;
    let app_url = {
        let (scheme, rest) = db_url
            .split_once("://")
            .ok_or_else(|| anyhow!("DATABASE_URL is not a URL"))?;
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{BENCH_ROLE}:{PASSWORD}@{host}")
    };
    let pw = dir.join("admin-password");
    std::fs::write(&pw, PASSWORD)?;
    run(
        Command::new(bin)
            .args([
                "create-admin",
                "--email",
                "admin@bench.local",
                "--password-file",
            ])
            .arg(&pw)
            .env("DATABASE_URL", db_url)
            .env("CADUCEUS_PHI_KEYS_FILE", keys.join("phi-keys.json")),
        "caduceus-api create-admin",
    )?;
    let (port, admin_port) = (free_port()?, free_port()?);
    let child = Command::new(bin)
        .arg("serve")
        .env("DATABASE_URL", &app_url)
        .env("REDIS_URL", redis_url)
        .env("CADUCEUS_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CADUCEUS_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env("CADUCEUS_JWT_KEY_FILE", keys.join("jwt.key"))
        .env("CADUCEUS_PHI_KEYS_FILE", keys.join("phi-keys.json"))
        .env("CADUCEUS_RATE_LIMIT_REQUESTS_PER_MINUTE", "100000000")
        .env("CADUCEUS_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start caduceus-api serve")?;
    let api = Api {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client
            .get(format!("{}/health/ready", api.base))
            .send()
            .await
        {
            if r.status().is_success() {
                return Ok(api);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("caduceus-api did not become ready")
}

pub async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Value> {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url}: {status}: {v}");
    }
    Ok(v)
}

pub fn patient_body(i: u64, run_tag: &str) -> Value {
    json!({
        "mrn": format!("B{run_tag}{i:08}"),
        "given_name": format!("Given{i}"),
        "family_name": format!("Family{}", i % 997),
        "birth_date": format!("19{:02}-{:02}-{:02}", 30 + i % 70, 1 + i % 12, 1 + i % 28),
        "sex": "female",
        "phone": "+1 555 0100",
        "email": format!("p{i}@bench.example"),
        "address": format!("{i} Bench Street"),
        "allergies": ["Penicillin"],
        "medications": ["Metformin 500 mg"],
        "conditions": ["Type 2 diabetes"],
    })
}

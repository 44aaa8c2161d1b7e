//! API benchmark: PHI read (`GET /api/v1/patients/{id}`: session check, decryption, durable
//! group-committed audit) and patient create (`POST /api/v1/patients`: encryption, blind indexes,
//! audit) at 64 concurrent connections against the release `caduceus-api serve`, printed side by
//! side with `pgbench -S` (select-only) and `pgbench` (TPC-B) on the same Postgres in the same run.
//!
//! ```sh
//! cargo build --release -p caduceus-api -p caduceus-bench
//! target/release/api_bench            # or: CARGO_TARGET_DIR=... $CARGO_TARGET_DIR/release/api_bench
//! ```
//!
//! Environment: `DATABASE_URL` (server to use; default `postgres://postgres@127.0.0.1:5432/postgres`;
//! the bench creates and drops the databases `caduceus_bench` and `caduceus_pgbench` there),
//! `REDIS_URL` (default `redis://127.0.0.1:6379/0`), `CADUCEUS_API_BIN` (default: `caduceus-api`
//! next to this executable), `BENCH_SECONDS` (per workload, default 20), `BENCH_CONNECTIONS`
//! (default 64), `PGBENCH` (default `pgbench` on PATH, else /usr/lib/postgresql/*/bin/pgbench),
//! `PGBENCH_SCALE` (default 10).
//!
//! Targets (issue 3): read p95 < 10 ms, read req/s ≥ 20 % of `pgbench -S` TPS, create p95 < 25 ms.
//! The API runs with its normal configuration except the per-user/IP rate limit, which is raised
//! so the limiter (still consulted in Redis on every request) never refuses the load generator.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

const BENCH_DB: &str = "caduceus_bench";
const PGBENCH_DB: &str = "caduceus_pgbench";
const PASSWORD: &str = "benchmark-password-123";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn env_num(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .with_context(|| format!("{name} must be a positive integer")),
        _ => Ok(default),
    }
}

/// Same server, another database.
fn with_database(url: &str, db: &str) -> Result<String> {
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

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn psql(url: &str, sql: &str) -> Result<String> {
    run(
        Command::new("psql")
            .args([url, "-XqAt", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null()),
        "psql",
    )
}

fn recreate_db(admin_url: &str, db: &str) -> Result<()> {
    psql(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    )?;
    psql(admin_url, &format!("CREATE DATABASE {db}"))?;
    Ok(())
}

fn find_pgbench() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PGBENCH") {
        return Ok(PathBuf::from(p));
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v pgbench"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin/pgbench"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().ok_or_else(|| {
        anyhow!("pgbench not found (Debian: postgresql-15 / postgresql-contrib; or set PGBENCH)")
    })
}

/// One pgbench result.
struct PgbenchResult {
    tps: f64,
    latency_avg_ms: f64,
}

fn parse_pgbench(out: &str) -> Result<PgbenchResult> {
    let num_after = |prefix: &str| -> Option<f64> {
        out.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Ok(PgbenchResult {
        tps: num_after("tps").ok_or_else(|| anyhow!("no tps in pgbench output"))?,
        latency_avg_ms: num_after("latency average").unwrap_or(f64::NAN),
    })
}

fn pgbench(
    bin: &Path,
    url: &str,
    select_only: bool,
    conns: u64,
    secs: u64,
) -> Result<PgbenchResult> {
    let mut cmd = Command::new(bin);
    if select_only {
        cmd.arg("-S");
    }
    cmd.args([
        "-n",
        "-c",
        &conns.to_string(),
        "-j",
        "2",
        "-T",
        &secs.to_string(),
        url,
    ]);
    parse_pgbench(&run(&mut cmd, "pgbench")?)
}

/// Latency samples and errors of one workload.
struct Stats {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[idx] as f64 / 1000.0
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

struct Api {
    child: Child,
    base: String,
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

fn api_bin() -> Result<PathBuf> {
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

async fn start_api(bin: &Path, db_url: &str, redis_url: &str, dir: &Path) -> Result<Api> {
    let keys = dir.join("keys");
    run(
        Command::new(bin)
            .args(["keys", "generate", "--out"])
            .arg(&keys),
        "caduceus-api keys generate",
    )?;
    run(
        Command::new(bin).arg("migrate").env("DATABASE_URL", db_url),
        "caduceus-api migrate",
    )?;
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
        .env("DATABASE_URL", db_url)
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

async fn call(
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

fn patient_body(i: u64, run_tag: &str) -> Value {
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

/// Run `conns` workers for `secs` (after a 2 s warm-up that is not measured).
async fn load<F, Fut>(conns: u64, secs: u64, make: F) -> Stats
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let make = Arc::new(make);
    let counter = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(2);
    let measure = Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conns {
        let make = make.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            loop {
                let now = Instant::now();
                if now - start >= warmup + measure {
                    break;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let ok = make(w, n).await;
                if now - start >= warmup {
                    lat.push(now.elapsed().as_micros() as u64);
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    all.sort_unstable();
    Stats {
        requests: all.len() as u64,
        errors,
        elapsed: measure,
        latencies_us: all,
    }
}

fn row(name: &str, conns: u64, s: &Stats) {
    println!(
        "{name:<34} {conns:>5} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8}",
        s.rps(),
        s.pct(0.50),
        s.pct(0.95),
        s.pct(0.99),
        s.errors
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let server = env_or(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let redis = env_or("REDIS_URL", "redis://127.0.0.1:6379/0");
    let secs = env_num("BENCH_SECONDS", 20)?;
    let conns = env_num("BENCH_CONNECTIONS", 64)?;
    let scale = env_num("PGBENCH_SCALE", 10)?;
    let bin = api_bin()?;
    let pgbench_bin = find_pgbench()?;
    let bench_url = with_database(&server, BENCH_DB)?;
    let pgbench_url = with_database(&server, PGBENCH_DB)?;
    let dir = std::env::temp_dir().join(format!("caduceus-api-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "caduceus api_bench: {conns} connections, {secs} s per workload, {} CPUs, pgbench scale {scale}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // --- pgbench baseline on the same server ------------------------------------------------
    recreate_db(&server, PGBENCH_DB)?;
    eprintln!("pgbench -i -s {scale} ...");
    run(
        Command::new(&pgbench_bin).args(["-i", "-q", "-s", &scale.to_string(), &pgbench_url]),
        "pgbench -i",
    )?;
    eprintln!("pgbench -S ...");
    let pg_s = pgbench(&pgbench_bin, &pgbench_url, true, conns, secs)?;
    eprintln!("pgbench (TPC-B) ...");
    let pg_b = pgbench(&pgbench_bin, &pgbench_url, false, conns, secs)?;
    psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {PGBENCH_DB} WITH (FORCE)"),
    )?;

    // --- the API -------------------------------------------------------------------------------
    recreate_db(&server, BENCH_DB)?;
    let api = start_api(&bin, &bench_url, &redis, &dir).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns as usize)
        .build()?;
    let base = format!("{}/api/v1", api.base);
    let login = |email: &'static str| {
        let client = client.clone();
        let url = format!("{base}/auth/login");
        async move {
            call(
                &client,
                reqwest::Method::POST,
                &url,
                None,
                Some(&json!({"email": email, "password": PASSWORD})),
            )
            .await
            .map(|v| v["access_token"].as_str().unwrap_or_default().to_string())
        }
    };
    let admin = login("admin@bench.local").await?;
    call(
        &client,
        reqwest::Method::POST,
        &format!("{base}/users"),
        Some(admin.as_str()),
        Some(&json!({"email": "doc@bench.local", "password": PASSWORD, "role": "physician", "display_name": "Bench Doc"})),
    )
    .await?;
    let token = Arc::new(login("doc@bench.local").await?);
    eprintln!("seeding 500 patients ...");
    let mut ids = Vec::new();
    for i in 0..500 {
        let v = call(
            &client,
            reqwest::Method::POST,
            &format!("{base}/patients"),
            Some(token.as_str()),
            Some(&patient_body(i, "S")),
        )
        .await?;
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    let ids = Arc::new(ids);

    eprintln!("PHI read ...");
    let read = {
        let (client, base, token, ids) = (client.clone(), base.clone(), token.clone(), ids.clone());
        load(conns, secs, move |_, n| {
            let url = format!("{base}/patients/{}", ids[(n as usize * 7919) % ids.len()]);
            let (client, token) = (client.clone(), token.clone());
            async move {
                match client.get(&url).bearer_auth(token.as_str()).send().await {
                    Ok(r) => r.status().as_u16() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    };
    eprintln!("patient create ...");
    let create = {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        load(conns, secs, move |_, n| {
            let url = format!("{base}/patients");
            let body = patient_body(n, "C");
            let (client, token) = (client.clone(), token.clone());
            async move {
                match client
                    .post(&url)
                    .bearer_auth(token.as_str())
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16() == 201 && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    };
    let audited: String = psql(
        &bench_url,
        "SELECT count(*) FROM audit_events WHERE action IN ('patient.read', 'patient.create')",
    )?;
    drop(api);
    psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"),
    )?;
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!(
        "{:<34} {:>5} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "workload", "conns", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"
    );
    row("API GET /patients/{id} (PHI read)", conns, &read);
    row("API POST /patients (create)", conns, &create);
    println!(
        "{:<34} {conns:>5} {:>10.0} {:>8} {:>8} {:>8}   avg {:.2} ms",
        "pgbench -S (select only)", pg_s.tps, "-", "-", "-", pg_s.latency_avg_ms
    );
    println!(
        "{:<34} {conns:>5} {:>10.0} {:>8} {:>8} {:>8}   avg {:.2} ms",
        "pgbench (TPC-B)", pg_b.tps, "-", "-", "-", pg_b.latency_avg_ms
    );
    println!("audit rows written for these requests: {}", audited.trim());
    let ratio = read.rps() / pg_s.tps * 100.0;
    println!();
    println!(
        "read p95 {:.2} ms < 10 ms: {}",
        read.pct(0.95),
        verdict(read.pct(0.95) < 10.0)
    );
    println!(
        "read throughput {ratio:.1} % of pgbench -S >= 20 %: {}",
        verdict(ratio >= 20.0)
    );
    println!(
        "create p95 {:.2} ms < 25 ms: {}",
        create.pct(0.95),
        verdict(create.pct(0.95) < 25.0)
    );
    if read.errors > 0 || create.errors > 0 {
        bail!("some requests failed");
    }
    Ok(())
}

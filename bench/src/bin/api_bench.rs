//! API benchmark: PHI read (`GET /api/v1/patients/{id}`: session check, decryption, durable
//! group-committed audit) and patient create (`POST /api/v1/patients`: encryption, blind indexes,
//! audit), and the same two through FHIR R4 (`GET`/`POST /fhir/R4/Patient`, `api_bench/fhir.rs`),
//! at 64 concurrent connections against the release `caduceus-api serve`, printed side by
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
//! Targets (issue 3): read p95 < 10 ms, read req/s ≥ 20 % of `pgbench -S` TPS, create p95 < 25 ms;
//! (issue 16) FHIR read p95 < 10 ms and API CPU per FHIR read ≤ 1.2 × per JSON read.
//! A third workload, `GET /no-op-floor` (a path no route serves: the public router's `404`
//! problem+json through every common layer, with no auth, database, Redis, audit or rate limit),
//! is a reference: the floor the HTTP stack and the load generator set on this machine at the
//! same concurrency. (Until issue 15 it was `GET /health/live`; the probes are rate-limited per
//! client since then, which refused the load generator with `429`.)
//! The API runs with its normal configuration except the per-user/IP rate limit, which is raised
//! so the limiter (still consulted in Redis on every request) never refuses the load generator.

use std::path::{Path, PathBuf};

/// The no-op floor's path: served by no route (the public router's fallback answers `404`).
const FLOOR_PATH: &str = "/no-op-floor";
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

#[path = "api_bench/fhir.rs"]
mod fhir;

const BENCH_DB: &str = "caduceus_bench";
const PGBENCH_DB: &str = "caduceus_pgbench";
const PASSWORD: &str = "benchmark-password-123";
/// The API's runtime role in the benchmark database (`db-setup`).
const BENCH_ROLE: &str = "caduceus_app_bench";

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

/// Latency samples and errors of one workload, plus the resources it used.
struct Stats {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    usage: Option<Usage>,
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

// --- resource accounting (robust to a loaded machine: per request, not per second) ----------

/// CPU seconds (user + system) of a process from `/proc/<pid>/stat`.
fn proc_cpu_secs(pid: u32, ticks_per_sec: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the parenthesised command name: state is field 3, utime 14, stime 15
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec)
}

/// Busy and total CPU seconds of the whole machine (`/proc/stat`).
fn machine_cpu_secs(ticks_per_sec: f64) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    Some(((total - idle) / ticks_per_sec, total / ticks_per_sec))
}

/// One established TCP socket as reported by `ss -tinp`.
struct Sock {
    local_port: u16,
    peer_port: u16,
    pid: Option<u32>,
    data_segs_out: u64,
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

/// Established TCP sockets with owner pid and `data_segs_out` (iproute2 `ss`).
fn sockets() -> Vec<Sock> {
    let Ok(out) = Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .output()
    else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut socks: Vec<Sock> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let (Some(last), Some(v)) = (
                socks.last_mut(),
                line.split_whitespace()
                    .find_map(|t| t.strip_prefix("data_segs_out:")),
            ) {
                last.data_segs_out = v.parse().unwrap_or(0);
            }
            continue;
        }
        let addrs: Vec<&str> = line
            .split_whitespace()
            .filter(|t| t.contains(':') && !t.starts_with("users:"))
            .collect();
        let (Some(local), Some(peer)) = (
            addrs.first().and_then(|a| port_of(a)),
            addrs.get(1).and_then(|a| port_of(a)),
        ) else {
            continue;
        };
        let pid = line
            .split("pid=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok());
        socks.push(Sock {
            local_port: local,
            peer_port: peer,
            pid,
            data_segs_out: 0,
        });
    }
    socks
}

/// What the resource snapshots look at.
#[derive(Clone, Copy)]
struct Probe {
    api_pid: u32,
    db_port: u16,
    redis_port: u16,
    ticks_per_sec: f64,
}

/// Cumulative counters at one instant.
struct Snapshot {
    api_cpu: f64,
    bench_cpu: f64,
    /// CPU of the Postgres backends serving the API, by pid.
    pg_cpu: Vec<(u32, f64)>,
    redis_cpu: f64,
    machine: (f64, f64),
    /// TCP data segments Postgres / Redis sent to the API: ≈ round trips (a server flushes its
    /// answer once per request batch; counting the client side would count sqlx's separate
    /// `Sync` write twice).
    db_segs: u64,
    redis_segs: u64,
}

impl Probe {
    fn snapshot(&self) -> Snapshot {
        let socks = sockets();
        let api_ports = |server_port: u16| -> Vec<u16> {
            socks
                .iter()
                .filter(|s| s.pid == Some(self.api_pid) && s.peer_port == server_port)
                .map(|s| s.local_port)
                .collect()
        };
        // the server ends of the API's connections
        let server_side = |server_port: u16| -> Vec<&Sock> {
            let ports = api_ports(server_port);
            socks
                .iter()
                .filter(|s| s.local_port == server_port && ports.contains(&s.peer_port))
                .collect()
        };
        let pg = server_side(self.db_port);
        let redis = server_side(self.redis_port);
        let pids = |side: &[&Sock]| -> Vec<u32> {
            let mut p: Vec<u32> = side.iter().filter_map(|s| s.pid).collect();
            p.sort_unstable();
            p.dedup();
            p
        };
        let cpu = |pid: u32| proc_cpu_secs(pid, self.ticks_per_sec).unwrap_or(0.0);
        Snapshot {
            api_cpu: cpu(self.api_pid),
            bench_cpu: cpu(std::process::id()),
            pg_cpu: pids(&pg).iter().map(|&p| (p, cpu(p))).collect(),
            redis_cpu: pids(&redis).iter().map(|&p| cpu(p)).sum(),
            machine: machine_cpu_secs(self.ticks_per_sec).unwrap_or((0.0, 0.0)),
            db_segs: pg.iter().map(|s| s.data_segs_out).sum(),
            redis_segs: redis.iter().map(|s| s.data_segs_out).sum(),
        }
    }
}

/// Resources used per request between two snapshots.
struct Usage {
    api_cpu_ms: f64,
    pg_cpu_ms: f64,
    redis_cpu_ms: f64,
    bench_cpu_ms: f64,
    machine_busy_ms: f64,
    machine_util: f64,
    db_round_trips: f64,
    redis_round_trips: f64,
}

fn usage(a: &Snapshot, b: &Snapshot, requests: u64) -> Option<Usage> {
    if requests == 0 {
        return None;
    }
    let n = requests as f64;
    // backends present in both snapshots (connections opened in between are not counted)
    let pg: f64 = b
        .pg_cpu
        .iter()
        .filter_map(|(pid, t)| {
            a.pg_cpu
                .iter()
                .find(|(p, _)| p == pid)
                .map(|(_, t0)| t - t0)
        })
        .sum();
    let busy = b.machine.0 - a.machine.0;
    let total = b.machine.1 - a.machine.1;
    Some(Usage {
        api_cpu_ms: (b.api_cpu - a.api_cpu) * 1000.0 / n,
        pg_cpu_ms: pg * 1000.0 / n,
        redis_cpu_ms: (b.redis_cpu - a.redis_cpu) * 1000.0 / n,
        bench_cpu_ms: (b.bench_cpu - a.bench_cpu) * 1000.0 / n,
        machine_busy_ms: busy * 1000.0 / n,
        machine_util: if total > 0.0 { busy / total } else { 0.0 },
        db_round_trips: b.db_segs.saturating_sub(a.db_segs) as f64 / n,
        redis_round_trips: b.redis_segs.saturating_sub(a.redis_segs) as f64 / n,
    })
}

fn ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn url_port(url: &str, default: u16) -> u16 {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
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

/// One keep-alive HTTP/1.1 connection per worker: a bare hyper client (no pool, no URL
/// parsing, no header maps built per request), so the load generator takes as little of the
/// shared CPU as possible. Reconnects after an error.
struct Conn {
    addr: std::net::SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn connect(addr: std::net::SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Send one request and drain the response; the status code, or an error.
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<StatusCode> {
        let sender = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => self.sender.insert(Self::connect(self.addr).await?),
        };
        let result = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            anyhow::Ok(status)
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

/// A request template: method, path, the shared `Host` and `Authorization` values, a body.
fn request(
    method: Method,
    path: &str,
    host: &HeaderValue,
    auth: &HeaderValue,
    body: Option<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host.clone())
        .header(hyper::header::AUTHORIZATION, auth.clone());
    if body.is_some() {
        b = b.header(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    // method, path and header values are valid by construction
    b.body(Full::new(body.unwrap_or_default()))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

/// Run `conns` workers (one connection each) for `secs` after a 2 s warm-up that is not
/// measured; `probe` snapshots CPU time and round trips at the start and end of the
/// measured window.
async fn load<F>(
    addr: std::net::SocketAddr,
    conns: u64,
    secs: u64,
    expect: StatusCode,
    probe: Probe,
    make: F,
) -> Stats
where
    F: Fn(u64) -> Request<Full<Bytes>> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let counter = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(2);
    let measure = Duration::from_secs(secs);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let make = make.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn { addr, sender: None };
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            loop {
                let now = tokio::time::Instant::now();
                if now - start >= warmup + measure {
                    break;
                }
                let req = make(counter.fetch_add(1, Ordering::Relaxed));
                let ok = matches!(conn.send(req).await, Ok(s) if s == expect);
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
    tokio::time::sleep_until(start + warmup).await;
    let before = tokio::task::spawn_blocking(move || probe.snapshot())
        .await
        .ok();
    tokio::time::sleep_until(start + warmup + measure).await;
    let after = tokio::task::spawn_blocking(move || probe.snapshot())
        .await
        .ok();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    all.sort_unstable();
    let requests = all.len() as u64;
    Stats {
        requests,
        errors,
        elapsed: measure,
        latencies_us: all,
        usage: match (before, after) {
            (Some(a), Some(b)) => usage(&a, &b, requests),
            _ => None,
        },
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
    let load_start = load_average();
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

    let addr: std::net::SocketAddr = api
        .base
        .trim_start_matches("http://")
        .parse()
        .context("API address")?;
    let host = HeaderValue::from_str(&addr.to_string())?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))?;
    let probe = Probe {
        api_pid: api.child.id(),
        db_port: url_port(&server, 5432),
        redis_port: url_port(&redis, 6379),
        ticks_per_sec: ticks_per_sec(),
    };

    eprintln!("PHI read ...");
    let read = {
        let paths: Vec<String> = ids
            .iter()
            .map(|id| format!("/api/v1/patients/{id}"))
            .collect();
        let (host, auth) = (host.clone(), auth.clone());
        load(addr, conns, secs, StatusCode::OK, probe, move |n| {
            let path = &paths[(n as usize * 7919) % paths.len()];
            request(Method::GET, path, &host, &auth, None)
        })
        .await
    };
    eprintln!("FHIR Patient read ...");
    let fhir_read = {
        let paths: Vec<String> = ids.iter().map(|id| fhir::read_path(id.as_str())).collect();
        let (host, auth) = (host.clone(), auth.clone());
        load(addr, conns, secs, StatusCode::OK, probe, move |n| {
            let path = &paths[(n as usize * 7919) % paths.len()];
            request(Method::GET, path, &host, &auth, None)
        })
        .await
    };
    eprintln!("patient create ...");
    let create = {
        let (host, auth) = (host.clone(), auth.clone());
        load(addr, conns, secs, StatusCode::CREATED, probe, move |n| {
            let body = Bytes::from(patient_body(n, "C").to_string());
            request(Method::POST, "/api/v1/patients", &host, &auth, Some(body))
        })
        .await
    };
    eprintln!("FHIR Patient create ...");
    let fhir_create = {
        let (host, auth) = (host.clone(), auth.clone());
        load(addr, conns, secs, StatusCode::CREATED, probe, move |n| {
            request(
                Method::POST,
                "/fhir/R4/Patient",
                &host,
                &auth,
                Some(fhir::create_body(n)),
            )
        })
        .await
    };
    // reference, not a target: the same harness against a handler that does nothing (no auth,
    // no database, no Redis, no audit) shows what the HTTP stack and the load generator alone
    // cost on this machine at this concurrency
    eprintln!("no-op floor (GET {FLOOR_PATH}) ...");
    let floor = {
        let (host, auth) = (host.clone(), auth.clone());
        load(addr, conns, secs, StatusCode::NOT_FOUND, probe, move |_| {
            request(Method::GET, FLOOR_PATH, &host, &auth, None)
        })
        .await
    };
    // JSON and FHIR requests alike: the FHIR routes audit the same actions
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
    row("FHIR GET /Patient/{id} (read)", conns, &fhir_read);
    row("FHIR POST /Patient (create)", conns, &fhir_create);
    row("API GET /no-op-floor (404, floor)", conns, &floor);
    println!(
        "{:<34} {conns:>5} {:>10.0} {:>8} {:>8} {:>8}   avg {:.2} ms",
        "pgbench -S (select only)", pg_s.tps, "-", "-", "-", pg_s.latency_avg_ms
    );
    println!(
        "{:<34} {conns:>5} {:>10.0} {:>8} {:>8} {:>8}   avg {:.2} ms",
        "pgbench (TPC-B)", pg_b.tps, "-", "-", "-", pg_b.latency_avg_ms
    );
    println!("audit rows written for these requests: {}", audited.trim());
    println!();
    println!("latency distribution, ms:          p10      p25      p50      p75      p90      p95      p99      max");
    for (name, s) in [
        ("PHI read", &read),
        ("create", &create),
        ("FHIR read", &fhir_read),
        ("FHIR create", &fhir_create),
        ("no-op floor", &floor),
    ] {
        let max = s
            .latencies_us
            .last()
            .map_or(f64::NAN, |v| *v as f64 / 1000.0);
        println!(
            "{name:<29} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {max:>8.2}",
            s.pct(0.10),
            s.pct(0.25),
            s.pct(0.50),
            s.pct(0.75),
            s.pct(0.90),
            s.pct(0.95),
            s.pct(0.99),
        );
    }
    println!();
    println!(
        "per request: CPU ms = user+sys from /proc/<pid>/stat (PG = the backends serving the API, \
         redis = redis-server, client = this load generator, machine = all busy CPU incl. other \
         processes); rt = round trips = TCP data segments Postgres/Redis sent on the API's \
         connections (ss -ti; sqlx also pings each connection when it returns to the pool)"
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}",
        "workload", "API cpu", "PG cpu", "redis", "client", "machine", "PG rt", "redis rt"
    );
    for (name, s) in [
        ("PHI read", &read),
        ("create", &create),
        ("FHIR read", &fhir_read),
        ("FHIR create", &fhir_create),
        ("no-op floor", &floor),
    ] {
        match &s.usage {
            Some(u) => println!(
                "{name:<34} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>8.2} {:>8.2}   (machine {:.0} % busy)",
                u.api_cpu_ms,
                u.pg_cpu_ms,
                u.redis_cpu_ms,
                u.bench_cpu_ms,
                u.machine_busy_ms,
                u.db_round_trips,
                u.redis_round_trips,
                u.machine_util * 100.0
            ),
            None => println!("{name:<34} (not measured)"),
        }
    }
    println!(
        "load average at start: {load_start}; at end: {}",
        load_average()
    );
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
    println!(
        "FHIR read p95 {:.2} ms < 10 ms: {}",
        fhir_read.pct(0.95),
        verdict(fhir_read.pct(0.95) < 10.0)
    );
    let cpu_ratio = fhir::read_cpu_ratio(
        fhir_read.usage.as_ref().map(|u| u.api_cpu_ms),
        read.usage.as_ref().map(|u| u.api_cpu_ms),
    );
    match cpu_ratio {
        Some(r) => println!(
            "FHIR read API CPU per request {r:.2} x the JSON read's <= {:.1}: {}",
            fhir::MAX_READ_CPU_RATIO,
            verdict(r <= fhir::MAX_READ_CPU_RATIO)
        ),
        None => println!("FHIR read API CPU per request: not measured"),
    }
    println!(
        "FHIR create p95 {:.2} ms < 25 ms: {}",
        fhir_create.pct(0.95),
        verdict(fhir_create.pct(0.95) < 25.0)
    );
    if read.errors > 0
        || create.errors > 0
        || fhir_read.errors > 0
        || fhir_create.errors > 0
        || floor.errors > 0
    {
        bail!("some requests failed");
    }
    Ok(())
}

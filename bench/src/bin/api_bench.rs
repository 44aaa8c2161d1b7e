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

use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use serde_json::json;

#[path = "api_bench/fhir.rs"]
mod fhir;
#[path = "api_bench/load.rs"]
mod load;
#[path = "api_bench/pgbench.rs"]
mod pgbench;
#[path = "api_bench/probe.rs"]
mod probe;
#[path = "api_bench/report.rs"]
mod report;
#[path = "api_bench/setup.rs"]
mod setup;

use load::{load, request};
use pgbench::{find_pgbench, pgbench};
use probe::{load_average, ticks_per_sec, url_port, Probe};
use report::{row, verdict};
use setup::{
    api_bin, call, env_num, env_or, patient_body, psql, recreate_db, run, start_api, with_database,
    BENCH_DB, PASSWORD, PGBENCH_DB,
};

/// The no-op floor's path: served by no route (the public router's fallback answers `404`).
const FLOOR_PATH: &str = "/no-op-floor";

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

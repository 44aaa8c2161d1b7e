//! Backup and restore throughput of the Caduceus backup agent beside raw `pg_dump -Fc` /
//! `pg_restore` of the same database in the same run. Target: agent ≥ 80% of raw.
//!
//! ```sh
//! cargo run --release -p caduceus-bench --bin backup_bench -- [--size-mb 200] \
//!     [--runs 3] [--database-url postgres://postgres@127.0.0.1:5432/postgres] \
//!     [--destination file:///tmp/x | s3://bucket/prefix --s3-endpoint http://...]
//! ```
//! Throughput is the plaintext dump size (bytes `pg_dump -Fc` writes) per second of wall time.
//! The agent's backup includes encryption, hashing and the write to the destination plus its
//! manifest; its restore includes download, decryption, checksum, restore into a fresh database,
//! verification and the swap.

use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use caduceus_backup::key::BackupKey;
use caduceus_backup::ops;
use caduceus_backup::pg::PgTarget;
use caduceus_backup::store::Store;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    size_mb: u64,
    runs: u32,
    server_url: String,
    destination: Option<String>,
    s3_endpoint: Option<String>,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        size_mb: 200,
        runs: 3,
        server_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        destination: None,
        s3_endpoint: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--size-mb" => args.size_mb = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--database-url" => args.server_url = value()?,
            "--destination" => args.destination = Some(value()?),
            "--s3-endpoint" => args.s3_endpoint = Some(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

async fn connect(url: &str) -> Result<PgConnection, BoxError> {
    Ok(PgConnectOptions::from_str(url)?.connect().await?)
}

fn with_db(url: &str, db: &str) -> Result<String, BoxError> {
    let mut u = url::Url::parse(url)?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

async fn exec(conn: &mut PgConnection, sql: String) -> Result<(), BoxError> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1_000_000.0 / d.as_secs_f64()
}

async fn run_tool(mut cmd: tokio::process::Command, what: &str) -> Result<(), BoxError> {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )
        .into());
    }
    Ok(())
}

async fn bench(args: &Args, work: &std::path::Path, dbs: &mut Vec<String>) -> Result<(), BoxError> {
    let pid = std::process::id();
    let src = format!("bench_backup_{pid}");
    let admin_url = with_db(&args.server_url, "postgres")?;
    let mut admin = connect(&admin_url).await?;
    exec(&mut admin, format!("CREATE DATABASE \"{src}\"")).await?;
    dbs.push(src.clone());

    // Half incompressible bytes, half compressible clinical-looking rows.
    let src_url = with_db(&args.server_url, &src)?;
    let mut conn = connect(&src_url).await?;
    let half_rows = args.size_mb * 1_000_000 / 2 / 1024;
    let seed = Instant::now();
    exec(
        &mut conn,
        format!(
            "CREATE EXTENSION IF NOT EXISTS pgcrypto;
             CREATE TABLE blobs AS SELECT g AS id, gen_random_bytes(1024) AS payload
               FROM generate_series(1, {half_rows}) g;
             CREATE TABLE notes AS SELECT g AS id, 'MRN-' || g AS mrn,
               repeat(md5(g::text) || ' follow-up in 2 weeks; ', 24) AS note,
               now() - g * interval '1 minute' AS written_at
               FROM generate_series(1, {half_rows}) g;
             CREATE INDEX notes_mrn ON notes (mrn);"
        ),
    )
    .await?;
    conn.close().await?;
    eprintln!(
        "seeded {} MB in {:.1}s",
        args.size_mb,
        seed.elapsed().as_secs_f64()
    );

    let target = PgTarget::parse(&src_url)?;

    let destination = args
        .destination
        .clone()
        .unwrap_or_else(|| format!("file://{}", work.join("dest").display()));
    let store = Store::open(&destination, args.s3_endpoint.as_deref())?;
    let key = BackupKey::generate();
    let raw_file = work.join("raw.dump");
    // Interleaved runs; the best time of each operation counts (the machine is shared).
    let mut raw_dump = Duration::MAX;
    let mut agent_backup = Duration::MAX;
    let mut raw_restore = Duration::MAX;
    let mut agent_restore = Duration::MAX;
    let mut dump_bytes = 0;
    let mut manifest = None;
    for run in 0..args.runs {
        // Raw pg_dump -Fc to a file.
        let mut cmd = tokio::process::Command::new("pg_dump");
        cmd.arg("--format=custom")
            .arg("--file")
            .arg(&raw_file)
            .arg("--dbname")
            .arg(&src_url);
        let t = Instant::now();
        run_tool(cmd, "pg_dump").await?;
        raw_dump = raw_dump.min(t.elapsed());
        dump_bytes = std::fs::metadata(&raw_file)?.len();

        // Agent backup.
        let t = Instant::now();
        let m = ops::backup(&store, &target, &key, chrono::Utc::now()).await?;
        agent_backup = agent_backup.min(t.elapsed());

        // Raw pg_restore into a fresh database (same flags the agent uses).
        let raw_db = format!("bench_backup_{pid}_raw{run}");
        exec(
            &mut admin,
            format!("CREATE DATABASE \"{raw_db}\" TEMPLATE template0"),
        )
        .await?;
        dbs.push(raw_db.clone());
        let mut cmd = tokio::process::Command::new("pg_restore");
        cmd.args([
            "--exit-on-error",
            "--no-owner",
            "--no-privileges",
            "--dbname",
        ])
        .arg(with_db(&args.server_url, &raw_db)?)
        .arg(&raw_file);
        let t = Instant::now();
        run_tool(cmd, "pg_restore").await?;
        raw_restore = raw_restore.min(t.elapsed());

        // Agent restore into a new database (fresh db + verify + swap).
        let agent_db = format!("bench_backup_{pid}_agent{run}");
        dbs.push(agent_db.clone());
        let agent_target = PgTarget::parse(&with_db(&args.server_url, &agent_db)?)?;
        let t = Instant::now();
        ops::restore(
            &store,
            &key,
            &m.name,
            &agent_target,
            &ops::RestoreOptions::default(),
            chrono::Utc::now(),
        )
        .await?;
        agent_restore = agent_restore.min(t.elapsed());
        for db in [raw_db, agent_db] {
            exec(
                &mut admin,
                format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
            )
            .await?;
        }
        manifest = Some(m);
    }
    admin.close().await?;
    let manifest = manifest.ok_or("--runs must be at least 1")?;

    let rows = [
        ("pg_dump -Fc (raw)", raw_dump, 1.0),
        (
            "caduceus-backup backup",
            agent_backup,
            raw_dump.as_secs_f64() / agent_backup.as_secs_f64(),
        ),
        ("pg_restore (raw)", raw_restore, 1.0),
        (
            "caduceus-backup restore",
            agent_restore,
            raw_restore.as_secs_f64() / agent_restore.as_secs_f64(),
        ),
    ];
    println!(
        "backup_bench: database {} MB seeded, dump {:.1} MB, archive {:.1} MB, destination {}, best of {} run(s)",
        args.size_mb,
        dump_bytes as f64 / 1e6,
        manifest.size as f64 / 1e6,
        if args.destination.is_some() {
            "custom"
        } else {
            "file"
        },
        args.runs
    );
    println!(
        "{:<26} {:>9} {:>9} {:>9}",
        "operation", "seconds", "MB/s", "of raw"
    );
    for (name, d, ratio) in rows {
        println!(
            "{:<26} {:>9.2} {:>9.1} {:>8.0}%",
            name,
            d.as_secs_f64(),
            mbps(dump_bytes, d),
            ratio * 100.0
        );
    }
    let backup_ratio = raw_dump.as_secs_f64() / agent_backup.as_secs_f64();
    let restore_ratio = raw_restore.as_secs_f64() / agent_restore.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "backup",
            "dump_mb": dump_bytes as f64 / 1e6,
            "raw_dump_mbps": mbps(dump_bytes, raw_dump),
            "backup_mbps": mbps(dump_bytes, agent_backup),
            "raw_restore_mbps": mbps(dump_bytes, raw_restore),
            "restore_mbps": mbps(dump_bytes, agent_restore),
            "backup_ratio": backup_ratio,
            "restore_ratio": restore_ratio,
            "target_ratio": 0.8,
            "meets_target": backup_ratio >= 0.8 && restore_ratio >= 0.8,
        })
    );
    Ok(())
}

async fn drop_databases(server_url: &str, dbs: &[String]) {
    let Ok(url) = with_db(server_url, "postgres") else {
        return;
    };
    let Ok(opts) = PgConnectOptions::from_str(&url) else {
        return;
    };
    let Ok(mut admin) = opts.connect().await else {
        return;
    };
    for db in dbs {
        let _ = exec(
            &mut admin,
            format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
        )
        .await;
    }
    let _ = admin.close().await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    caduceus_backup::install_tls_provider();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let work = match tempfile::tempdir() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: cannot create a work directory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut dbs = Vec::new();
    let result = bench(&args, work.path(), &mut dbs).await;
    drop_databases(&args.server_url, &dbs).await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! Streaming keeps the agent's memory bounded: a >200 MB dump of incompressible data goes through
//! backup (S3 multipart via moto) and verify while the agent's peak RSS (VmHWM) stays under 64 MiB.

mod common;

use common::*;
use sqlx::Connection;

const BOUND_KIB: u64 = 64 * 1024;

/// Runs the agent with `args` (must succeed) while sampling its peak RSS, which must stay under
/// [`BOUND_KIB`]: its stdout.
fn run_bounded(what: &str, args: &[&str]) -> String {
    let (out, peak_kib) = run_measuring_peak_rss(args);
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{what}: agent peak RSS {peak_kib} KiB");
    assert!(peak_kib > 0, "could not sample the agent's RSS");
    assert!(
        peak_kib < BOUND_KIB,
        "{what} peak RSS {peak_kib} KiB exceeds {BOUND_KIB} KiB"
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[tokio::test]
async fn backup_and_verify_of_a_large_dump_stay_under_64_mib() {
    let moto = Moto::start("big");
    let store = Store::s3(&moto, "s3://big/x");
    let db = TestDb::create("bk_mem").await;
    let mut conn = db.conn().await;
    // ~215 MB of random (incompressible) bytes: pg_dump's compression cannot shrink it.
    sqlx::raw_sql(
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;
         CREATE TABLE blobs AS SELECT g AS id, gen_random_bytes(1024) AS payload
         FROM generate_series(1, 210000) g;",
    )
    .execute(&mut conn)
    .await
    .expect("seed big table");
    conn.close().await.ok();

    let url = db.url();
    let stdout = run_bounded("backup", &store.args(&["backup", "--database-url", &url]));
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("line")).expect("json");
    let size = result["size"].as_u64().expect("size");
    assert!(
        size > 200 * 1024 * 1024,
        "dump only {size} bytes: test needs > 200 MiB"
    );
    println!("backup: archive {size} bytes");

    let name = name_of(&result);
    run_bounded("verify", &store.args(&["verify", &name]));
}

//! Authenticated manifests and `latest` pointer, and the expiry of pre-restore databases: the
//! real binary, real Postgres and pg_dump/pg_restore, a file destination edited the way someone
//! who can write the bucket (but does not hold the backup key) could.

mod common;

use std::path::Path;

use common::*;
use sqlx::Connection;

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, value.to_string()).expect("write");
}

/// Restores that must fail, leaving the target and the server as they were.
async fn refused(args: &[&str], db: &TestDb, before: &Fingerprint, expect: &str) {
    let err = run_err(args);
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert_eq!(
        &db.fingerprint().await,
        before,
        "target changed by a refused restore"
    );
    for infix in ["_restore_", "_pre_restore_"] {
        assert!(databases_like(&format!("{}{infix}", db.name))
            .await
            .is_empty());
    }
}

#[tokio::test]
async fn forged_manifests_and_rolled_back_or_dangling_pointers_are_refused() {
    let store = Store::file();
    let (db, _) = TestDb::seeded("bk_auth").await;
    let url = db.url();
    let first = store.backup_name(&url);
    let pointer_path = store.backups().join("latest.pointer");
    let first_pointer = read_json(&pointer_path);
    assert_eq!(first_pointer["name"], first.as_str());
    let mut conn = db.conn().await;
    sqlx::raw_sql("DELETE FROM appointments WHERE id IN (SELECT id FROM appointments LIMIT 10)")
        .execute(&mut conn)
        .await
        .expect("change");
    conn.close().await.ok();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let second = store.backup_name(&url);
    let second_pointer = read_json(&pointer_path);
    assert_eq!(second_pointer["name"], second.as_str());

    let manifest_path = |name: &str| store.manifest(name);
    let first_manifest = read_json(&manifest_path(&first));
    let second_manifest = read_json(&manifest_path(&second));
    assert_eq!(second_manifest["manifest_version"], 2);
    assert_eq!(
        second_manifest["mac"].as_str().expect("mac").len(),
        64,
        "{second_manifest}"
    );

    let before = db.fingerprint().await;
    let restore_latest = store.args(&["restore", "latest", "--database-url", &url]);

    // The newest manifest pointed at the older archive (size and checksum adjusted): refused.
    let mut forged = second_manifest.clone();
    for field in ["archive", "size", "sha256"] {
        forged[field] = first_manifest[field].clone();
    }
    write_json(&manifest_path(&second), &forged);
    refused(&restore_latest, &db, &before, "fails authentication").await;
    let err = run_err(&store.args(&["verify", &second]));
    assert!(err.contains("fails authentication"), "{err}");
    // ... also with the MAC removed, and also with --allow-unauthenticated next to a pointer.
    forged.as_object_mut().expect("object").remove("mac");
    write_json(&manifest_path(&second), &forged);
    refused(
        &restore_latest,
        &db,
        &before,
        "has no authenticated manifest",
    )
    .await;
    let mut with_flag = restore_latest.to_vec();
    with_flag.push("--allow-unauthenticated");
    refused(&with_flag, &db, &before, "has no authenticated manifest").await;
    // An old manifest copied under a new, newer name: its MAC binds the old name and time.
    write_json(&manifest_path(&second), &second_manifest);
    let mut copied = first_manifest.clone();
    copied["name"] = serde_json::json!("backup-29991231T000000.000Z");
    copied["time"] = serde_json::json!("2999-12-31T00:00:00.000Z");
    write_json(&manifest_path("backup-29991231T000000.000Z"), &copied);
    refused(&restore_latest, &db, &before, "fails authentication").await;
    std::fs::remove_file(manifest_path("backup-29991231T000000.000Z")).expect("remove");

    // The pointer rolled back to its older genuine version.
    write_json(&pointer_path, &first_pointer);
    refused(&restore_latest, &db, &before, "rolled back").await;
    // The pointer edited to name the older backup.
    let mut edited = second_pointer.clone();
    edited["name"] = serde_json::json!(first);
    write_json(&pointer_path, &edited);
    refused(
        &restore_latest,
        &db,
        &before,
        "latest pointer fails authentication",
    )
    .await;
    // The pointer deleted.
    std::fs::remove_file(&pointer_path).expect("remove");
    refused(&restore_latest, &db, &before, "no latest pointer").await;
    // The newest backup deleted.
    write_json(&pointer_path, &second_pointer);
    let second_archive = store.archive(&second);
    let archive_bytes = std::fs::read(&second_archive).expect("archive");
    std::fs::remove_file(manifest_path(&second)).expect("remove");
    std::fs::remove_file(&second_archive).expect("remove");
    refused(&restore_latest, &db, &before, "backups were deleted").await;

    // Put back as written, `latest` is the second backup again.
    write_json(&manifest_path(&second), &second_manifest);
    std::fs::write(&second_archive, archive_bytes).expect("archive");
    let verified = run_ok(&store.args(&["verify", "latest"]));
    assert_eq!(verified["name"], second.as_str());
    assert_eq!(verified["authenticated"], true);
    let restored = run_ok(&restore_latest);
    assert_eq!(restored["name"], second.as_str());
    assert_eq!(restored["authenticated"], true);
}

#[tokio::test]
async fn backups_before_manifest_macs_restore_only_with_the_explicit_flag() {
    let store = Store::file();
    let (db, before) = TestDb::seeded("bk_legacy").await;
    let name = store.backup_name(&db.url());
    // What an agent before manifest MACs wrote: version 1, no MAC, no audit head, no pointer.
    let manifest_path = store.manifest(&name);
    let mut legacy = read_json(&manifest_path);
    let object = legacy.as_object_mut().expect("object");
    object.remove("mac");
    object.remove("audit_head");
    legacy["manifest_version"] = serde_json::json!(1);
    write_json(&manifest_path, &legacy);
    std::fs::remove_file(store.backups().join("latest.pointer")).expect("pointer");

    let target = TestDb::absent("bk_legacy_target");
    let url = target.url();
    let mut args = store.args(&["restore", "latest", "--database-url", &url]);
    let err = run_err(&args);
    assert!(
        err.contains("is not authenticated") && err.contains("--allow-unauthenticated"),
        "{err}"
    );
    assert!(!database_exists(&target.name).await);
    args[1] = &name;
    let err = run_err(&args);
    assert!(err.contains("is not authenticated"), "{err}");
    args.push("--allow-unauthenticated");
    let restored = run_ok(&args);
    assert_eq!(restored["name"], name.as_str());
    assert_eq!(restored["authenticated"], false);
    assert_eq!(target.fingerprint().await, before);
}

async fn comment(db: &str) -> Option<String> {
    let mut admin = connect("postgres").await;
    let c: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(db)
    .fetch_optional(&mut admin)
    .await
    .expect("query");
    admin.close().await.ok();
    c.flatten()
}

async fn create_db(name: &str, comment: Option<&str>) {
    let mut admin = connect("postgres").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .expect("create");
    if let Some(c) = comment {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "COMMENT ON DATABASE \"{name}\" IS '{c}'"
        )))
        .execute(&mut admin)
        .await
        .expect("comment");
    }
    admin.close().await.ok();
}

#[tokio::test]
async fn pre_restore_databases_are_dropped_after_the_grace_period() {
    let store = Store::file();
    let (db, _) = TestDb::seeded("bk_pre").await;
    let url = db.url();
    let backup = store.args(&["backup", "--database-url", &url]);
    run_ok(&backup);
    let restore = store.args(&["restore", "latest", "--database-url", &url]);
    let restored = run_ok(&restore);
    let kept = restored["previous_database"]
        .as_str()
        .expect("previous")
        .to_string();
    // The restore marks the database it moved aside with the time.
    let marker = comment(&kept).await.expect("marked");
    assert!(
        marker.starts_with("caduceus-backup pre-restore 20"),
        "{marker}"
    );

    // Moved aside long ago: by an older agent (name only), and marked long ago (the marker wins
    // over a recent-looking name); and one whose old-looking name has a recent marker.
    let old_by_name = format!("{}_pre_restore_20200101000000", db.name);
    let old_by_marker = format!("{}_pre_restore_20991231000000", db.name);
    let recent_by_marker = format!("{}_pre_restore_20200101000001", db.name);
    create_db(&old_by_name, None).await;
    create_db(
        &old_by_marker,
        Some("caduceus-backup pre-restore 2020-01-01T00:00:00.000Z"),
    )
    .await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    create_db(
        &recent_by_marker,
        Some(&format!("caduceus-backup pre-restore {now}")),
    )
    .await;

    // The scheduled backup drops what is past the default grace period (7 days).
    let out = run(&backup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = vec![kept.clone(), recent_by_marker.clone()];
    expected.sort();
    assert_eq!(
        databases_like(&format!("{}_pre_restore_", db.name)).await,
        expected
    );

    // A restore with a grace period of 0 days drops the ones moved aside before it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut args = restore.to_vec();
    args.extend(["--pre-restore-retention-days", "0"]);
    let restored = run_ok(&args);
    let mut dropped: Vec<String> =
        serde_json::from_value(restored["expired_pre_restore_databases"].clone()).expect("list");
    dropped.sort();
    assert_eq!(dropped, expected);
    let newest = restored["previous_database"].as_str().expect("previous");
    assert_eq!(
        databases_like(&format!("{}_pre_restore_", db.name)).await,
        vec![newest.to_string()]
    );
}

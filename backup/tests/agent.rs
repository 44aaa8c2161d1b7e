//! End-to-end tests of the `caduceus-backup` binary against real Postgres, real
//! pg_dump/pg_restore, a file destination and S3 (moto_server).

mod common;

use common::*;
use sqlx::Connection;

#[tokio::test]
async fn keygen_prints_the_contract_key_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, key) = keygen(dir.path(), "k.json");
    assert_eq!(key["version"], 1);
    let id = key["key_id"].as_str().expect("key_id");
    assert!(id.starts_with("bk-") && id.len() == 15, "{id}");
    let raw = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        key["key"].as_str().expect("key"),
    )
    .expect("base64");
    assert_eq!(raw.len(), 32);
}

#[tokio::test]
async fn round_trip_through_a_file_destination_restores_identical_data() {
    let store = Store::file();
    let (db, before) = TestDb::seeded("bk_rt_file").await;
    assert!(before.iter().any(|(t, n, _)| t == "patients" && *n == 3000));

    let tlog = store.dir.path().join("termination-log");
    let url = db.url();
    let result = run_ok(&store.args(&[
        "backup",
        "--database-url",
        &url,
        "--termination-log",
        tlog.to_str().expect("path"),
    ]));
    let name = name_of(&result);
    assert_eq!(result["key_id"], store.key["key_id"]);
    let mut fields: Vec<_> = result
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    fields.sort();
    assert_eq!(fields, ["key_id", "name", "sha256", "size", "time"]);
    // The termination log holds the same line for the operator.
    let logged: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&tlog)
            .expect("termination log")
            .trim(),
    )
    .expect("json");
    assert_eq!(logged, result);
    // The archive on disk is exactly what the result line describes, and not a plain dump.
    let archive = std::fs::read(store.archive(&name)).expect("archive");
    assert_eq!(archive.len() as u64, result["size"].as_u64().expect("size"));
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&archive)),
        result["sha256"].as_str().expect("sha")
    );
    assert!(archive.starts_with(b"CADUBKUP"));
    assert!(
        !archive.windows(5).any(|w| w == b"PGDMP"),
        "dump magic visible: not encrypted"
    );
    assert!(
        !archive.windows(8).any(|w| w == b"MRN-1234"),
        "plaintext visible"
    );

    // Manifest: Postgres version and API schema version (highest successful migration = 7).
    let listed = run(&["list", "--destination", &store.dest]);
    assert!(listed.status.success());
    let manifest: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&listed.stdout).trim()).expect("one manifest");
    assert_eq!(manifest["name"], name.as_str());
    assert_eq!(manifest["schema_version"], 7);
    assert!(manifest["postgres_version"]
        .as_str()
        .expect("pg version")
        .starts_with(char::is_numeric));
    assert_eq!(manifest["database"], db.name.as_str());

    let verified = run_ok(&store.args(&["verify", &name]));
    assert!(
        verified["toc_entries"].as_u64().expect("toc") >= 5,
        "{verified}"
    );

    // Damage the live database, then restore the backup over it.
    let mut conn = db.conn().await;
    sqlx::raw_sql("DELETE FROM appointments WHERE note = ''; UPDATE patients SET mrn = mrn || 'x' WHERE id < 10")
        .execute(&mut conn)
        .await
        .expect("damage");
    conn.close().await.ok();
    let damaged = db.fingerprint().await;
    assert_ne!(damaged, before);

    let restored = run_ok(&store.args(&["restore", "latest", "--database-url", &url]));
    assert_eq!(restored["name"], name.as_str());
    assert_eq!(restored["schema_version"], 7);
    assert_eq!(db.fingerprint().await, before, "restored data differs");
    // The old database was kept, renamed, with its (damaged) contents.
    let previous = restored["previous_database"]
        .as_str()
        .expect("previous db")
        .to_string();
    assert!(
        previous.starts_with(&format!("{}_pre_restore_", db.name)),
        "{previous}"
    );
    let mut old = connect(&previous).await;
    assert_eq!(fingerprint(&mut old).await, damaged);
    old.close().await.ok();
    // No half-restored leftovers.
    assert!(databases_like(&format!("{}_restore_", db.name))
        .await
        .is_empty());
}

#[tokio::test]
async fn round_trip_through_s3_into_a_new_database() {
    let moto = Moto::start("backups");
    let store = Store::s3(&moto, "s3://backups/platform-a/db");
    let (src, before) = TestDb::seeded("bk_rt_s3").await;

    let name = store.backup_name(&src.url());
    run_ok(&store.args(&["verify", &name]));

    // Restore into a database that does not exist yet (a new platform's bootstrap).
    let target = TestDb::absent("bk_rt_s3_new");
    let target_url = target.url();
    let restored = run_ok(&store.args(&["restore", "latest", "--database-url", &target_url]));
    assert_eq!(restored["name"], name.as_str());
    assert!(restored["previous_database"].is_null());
    assert_eq!(target.fingerprint().await, before);

    // Bootstrap mode: a populated database is left alone (every API pod may run this).
    let skipped = run_ok(&store.args(&[
        "restore",
        "latest",
        "--if-empty",
        "--database-url",
        &target_url,
    ]));
    assert_eq!(skipped["skipped"], true);
    assert!(skipped["name"].is_null());
    assert!(
        databases_like(&format!("{}_", target.name))
            .await
            .is_empty(),
        "nothing renamed or created"
    );
    // ... and an empty (just created) database is restored.
    let empty = TestDb::create("bk_rt_s3_empty").await;
    let empty_url = empty.url();
    let restored = run_ok(&store.args(&[
        "restore",
        "latest",
        "--if-empty",
        "--database-url",
        &empty_url,
    ]));
    assert_eq!(restored["skipped"], false);
    assert_eq!(restored["name"], name.as_str());
    assert_eq!(empty.fingerprint().await, before);
}

#[tokio::test]
async fn tampered_archive_is_detected_and_the_target_is_untouched() {
    let store = Store::file();
    let (db, before) = TestDb::seeded("bk_tamper").await;
    let url = db.url();
    let name = store.backup_name(&url);

    let path = store.archive(&name);
    let mut bytes = std::fs::read(&path).expect("archive");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).expect("tamper");

    let err = run_err(&store.args(&["verify", &name]));
    assert!(err.contains("failed authentication"), "{err}");

    let err = run_err(&store.args(&["restore", &name, "--database-url", &url]));
    assert!(err.contains("failed authentication"), "{err}");
    assert_eq!(
        db.fingerprint().await,
        before,
        "target changed by a failed restore"
    );
    assert!(
        databases_like(&format!("{}_restore_", db.name))
            .await
            .is_empty(),
        "half-restored database left behind"
    );
    assert!(databases_like(&format!("{}_pre_restore_", db.name))
        .await
        .is_empty());
}

#[tokio::test]
async fn truncated_archive_is_detected() {
    let store = Store::file();
    let (db, _) = TestDb::seeded("bk_trunc").await;
    let mut conn = db.conn().await;
    // About 1 MB of incompressible data so the archive spans several 256 KiB chunks.
    sqlx::raw_sql(
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;
         CREATE TABLE blobs AS SELECT g AS id, gen_random_bytes(1024) AS payload FROM generate_series(1, 1000) g;",
    )
    .execute(&mut conn)
    .await
    .expect("seed blobs");
    conn.close().await.ok();
    let name = store.backup_name(&db.url());
    let path = store.archive(&name);
    let bytes = std::fs::read(&path).expect("archive");

    // Plain truncation: the size no longer matches the manifest.
    std::fs::write(&path, &bytes[..bytes.len() - 100]).expect("truncate");
    let err = run_err(&store.args(&["verify", &name]));
    assert!(err.contains("truncated"), "{err}");

    // Truncation with a forged manifest (size and checksum adjusted): the STREAM construction
    // still refuses it, because the remaining final chunk was not sealed as the last one.
    let header_len = 37;
    let chunk = 256 * 1024 + 16;
    let cut = header_len + chunk; // exactly one full chunk
    assert!(
        bytes.len() > cut + chunk / 2,
        "seeded dump too small for this test"
    );
    std::fs::write(&path, &bytes[..cut]).expect("truncate at chunk boundary");
    let manifest_path = store.manifest(&name);
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("json");
    manifest["size"] = serde_json::json!(cut);
    manifest["sha256"] = serde_json::json!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        &bytes[..cut]
    )));
    std::fs::write(&manifest_path, manifest.to_string()).expect("forge manifest");
    // The manifest's MAC refuses the forged manifest first.
    let err = run_err(&store.args(&["verify", &name]));
    assert!(err.contains("fails authentication"), "{err}");
    // Even accepted as unauthenticated (MAC removed, explicit flag), the archive itself fails.
    manifest
        .as_object_mut()
        .expect("object")
        .remove("mac")
        .expect("manifests carry a MAC");
    std::fs::write(&manifest_path, manifest.to_string()).expect("forge manifest");
    let err = run_err(&store.args(&["verify", &name, "--allow-unauthenticated"]));
    assert!(err.contains("failed authentication at chunk 0"), "{err}");
}

#[tokio::test]
async fn wrong_key_is_refused_without_leaking_it() {
    let store = Store::file();
    let (other_file, other) = keygen(store.dir.path(), "other.json");
    let (db, _) = TestDb::seeded("bk_wrongkey").await;
    let url = db.url();
    let name = store.backup_name(&url);
    let other_file = other_file.to_str().expect("path");
    let verify_with = |key_file: &str| {
        run_err(&[
            "verify",
            &name,
            "--destination",
            &store.dest,
            "--key-file",
            key_file,
        ])
    };
    let err = verify_with(other_file);
    assert!(err.contains("wrong key"), "{err}");
    assert!(!err.contains(other["key"].as_str().expect("key")));

    // Same key id, different key material: authentication fails on the first chunk.
    let forged =
        serde_json::json!({"version": 1, "key_id": store.key["key_id"], "key": other["key"]});
    let forged_file = store.dir.path().join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&forged_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    let forged_file = forged_file.to_str().expect("path");
    // The manifest's MAC (under a key derived from the backup key) already fails.
    let err = verify_with(forged_file);
    assert!(err.contains("fails authentication"), "{err}");
    let err = run_err(&[
        "restore",
        &name,
        "--database-url",
        &url,
        "--destination",
        &store.dest,
        "--key-file",
        forged_file,
    ]);
    assert!(err.contains("fails authentication"), "{err}");
    assert!(databases_like(&format!("{}_restore_", db.name))
        .await
        .is_empty());
}

#[tokio::test]
async fn pruning_keeps_min_count_on_s3() {
    let moto = Moto::start("prune");
    let store = Store::s3(&moto, "s3://prune/p");
    let db = TestDb::create("bk_prune").await;
    let url = db.url();
    // Listing and pruning are given no key.
    let common = [
        "--destination",
        &store.dest[..],
        "--s3-endpoint",
        &moto.endpoint[..],
    ];
    let names: Vec<String> = (0..3).map(|_| store.backup_name(&url)).collect();
    let list = |_: ()| -> Vec<String> {
        let mut args = vec!["list"];
        args.extend_from_slice(&common);
        let out = run(&args);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["name"]
                    .as_str()
                    .expect("name")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        list(()),
        vec![names[2].clone(), names[1].clone(), names[0].clone()]
    );

    // Within retention: nothing goes, whatever minCount says.
    let mut args = vec!["prune", "--retention-days", "30", "--min-count", "0"];
    args.extend_from_slice(&common);
    let pruned = run_ok(&args);
    assert_eq!(pruned["deleted"], serde_json::json!([]));
    assert_eq!(list(()).len(), 3);

    // Everything is past a 0-day retention, but minCount = 2 keeps the two newest.
    let mut args = vec!["prune", "--retention-days", "0", "--min-count", "2"];
    args.extend_from_slice(&common);
    let pruned = run_ok(&args);
    assert_eq!(pruned["deleted"], serde_json::json!([names[0]]));
    assert_eq!(pruned["kept"], 2);
    assert_eq!(list(()), vec![names[2].clone(), names[1].clone()]);
    let err = run_err(&store.args(&["verify", &names[0]]));
    assert!(err.contains("not found"), "{err}");

    // `backup --retention-days/--min-count` (what the CronJob runs) prunes after backing up.
    let newest = name_of(&run_ok(&store.args(&[
        "backup",
        "--database-url",
        &url,
        "--retention-days",
        "0",
        "--min-count",
        "2",
    ])));
    assert_eq!(list(()), vec![newest, names[2].clone()]);
}

#[tokio::test]
async fn failed_dump_leaves_no_backup_and_no_secret_in_errors() {
    let store = Store::file();
    let mut url = url::Url::parse(&db_url(&unique("bk_missing"))).expect("url");
    url.set_password(Some("hunter2-secret")).expect("password");
    let err = run_err(&store.args(&["backup", "--database-url", url.as_str()]));
    assert!(!err.contains("hunter2-secret"), "{err}");
    let out = run(&["list", "--destination", &store.dest]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "a failed backup was listed");

    let err = run_err(&store.args(&["verify", "latest"]));
    assert!(err.contains("no backups"), "{err}");
    let err = run_err(&store.args(&["verify", "../etc/passwd"]));
    assert!(err.contains("invalid backup name"), "{err}");
    let err = run_err(&["list", "--destination", "ftp://x/y"]);
    assert!(err.contains("invalid destination"), "{err}");
    let bad_key = store.dir.path().join("bad.json");
    std::fs::write(&bad_key, "{}").expect("write");
    let verify_latest_with_bad_key = || {
        run_err(&[
            "verify",
            "latest",
            "--destination",
            &store.dest,
            "--key-file",
            bad_key.to_str().expect("path"),
        ])
    };
    // Readable by every account: refused before it is parsed.
    let err = verify_latest_with_bad_key();
    assert!(
        err.contains("mode 0644") && err.contains("chmod 0600"),
        "{err}"
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad_key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = verify_latest_with_bad_key();
    assert!(err.contains("key file"), "{err}");
}

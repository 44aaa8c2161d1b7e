//! The audit chain head travels in the manifest, and a restore ends up in the API's audit trail:
//! the real agent backs up and restores an API database, then the API's start-up maintenance
//! (`restores::audit_restores`, what `serve` runs) turns the agent's `backup_restores` row into a
//! `backup.restore` event that chains onto the restored head, which verifies as a checkpoint.

mod common;

use caduceus_api::audit::{verify_chain_with, CheckpointState};
use caduceus_api::rbac::Role;
use caduceus_api::testing::{test_config, TestApp};
use caduceus_contract::self_report::AuditCheckpoint;
use common::*;
use serde_json::json;

#[test]
fn the_agent_reads_the_chain_head_the_way_the_api_defines_it() {
    assert_eq!(
        caduceus_backup::pg::AUDIT_HEAD_SQL,
        caduceus_api::audit::HEAD_SQL
    );
}

async fn head(pool: &sqlx::PgPool) -> (i64, String) {
    let (id, hash): (i64, Vec<u8>) = sqlx::query_as(caduceus_api::audit::HEAD_SQL)
        .fetch_one(pool)
        .await
        .expect("head");
    (id, hex::encode(hash))
}

#[tokio::test]
async fn the_manifest_carries_the_audit_head_and_the_api_audits_the_restore() {
    let store = Store::file();
    let src = TestDb::create("bk_audit").await;
    let config = test_config();
    let src_pool = api_pool(&src.url()).await;
    let app = TestApp::with_config(src_pool.clone(), config.clone()).await;
    let admin = app.user(Role::Admin).await;
    let listed = app.get("/api/v1/users", &admin.token).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let (head_id, head_hash) = head(&src_pool).await;
    assert!(head_id > 0, "the API audited something");
    src_pool.close().await;

    let name = store.backup_name(&src.url());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.manifest(&name)).expect("manifest"))
            .expect("json");
    assert_eq!(
        manifest["audit_head"],
        json!({"id": head_id, "hash": head_hash})
    );

    let target = TestDb::absent("bk_audit_restored");
    let target_url = target.url();
    let restored = run_ok(&store.args(&["restore", &name, "--database-url", &target_url]));
    let checkpoint = format!("{head_id}:{head_hash}");
    assert_eq!(restored["audit_checkpoint"], checkpoint.as_str());
    assert_eq!(
        restored["audit_head"],
        json!({"id": head_id, "hash": head_hash})
    );
    assert_eq!(restored["restore_recorded"], true);
    assert_eq!(restored["authenticated"], true);

    let restored_pool = pool(&target.url()).await;
    // The restored chain ends exactly at the manifest's head, and the agent's record waits.
    assert_eq!(head(&restored_pool).await, (head_id, head_hash.clone()));
    let pending: Vec<(String, Option<i64>, Option<String>, bool)> = sqlx::query_as(
        "SELECT backup_name, audit_head_id, audit_head_hash, manifest_authenticated \
         FROM backup_restores WHERE audited_at IS NULL",
    )
    .fetch_all(&restored_pool)
    .await
    .expect("backup_restores");
    assert_eq!(
        pending,
        vec![(name.clone(), Some(head_id), Some(head_hash.clone()), true)]
    );

    // What `serve` runs at start: one event, once.
    let audit_key = config.phi_keys.audit_key();
    let n = caduceus_api::restores::audit_restores(&restored_pool, audit_key)
        .await
        .expect("audit restores");
    assert_eq!(n, 1);
    assert_eq!(
        caduceus_api::restores::audit_restores(&restored_pool, audit_key)
            .await
            .expect("again"),
        0
    );
    type Event = (i64, Option<String>, Option<String>, Option<String>);
    let events: Vec<Event> = sqlx::query_as(
        "SELECT id, resource_id, purpose, actor_id::text FROM audit_events \
         WHERE action = 'backup.restore'",
    )
    .fetch_all(&restored_pool)
    .await
    .expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    let (id, resource, purpose, actor) = &events[0];
    assert_eq!(*id, head_id + 1, "chained right after the restored head");
    assert_eq!(resource.as_deref(), Some(name.as_str()));
    let purpose = purpose.as_deref().expect("purpose");
    assert!(purpose.contains(&checkpoint), "{purpose}");
    assert!(
        purpose.contains(store.key["key_id"].as_str().expect("key id")),
        "{purpose}"
    );
    assert!(actor.is_none());

    // The chain verifies against the manifest's head as a checkpoint.
    let verified = verify_chain_with(
        &restored_pool,
        audit_key,
        &[AuditCheckpoint::parse(&checkpoint).expect("checkpoint")],
    )
    .await
    .expect("verify");
    assert!(verified.valid, "{verified:?}");
    assert_eq!(verified.checkpoints.len(), 1);
    assert_eq!(verified.checkpoints[0].status, CheckpointState::Match);
    restored_pool.close().await;
}

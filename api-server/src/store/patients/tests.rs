//! Tests of the patient store (`store/patients.rs`) against Postgres.
#![cfg(test)]

use sqlx::PgPool;

use super::*;
use crate::batch::Lookup;
use crate::patients::model::{self, NewPatient};

async fn a_user(pool: &PgPool) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO users (id, email, password_hash, role, display_name) \
         VALUES (gen_random_uuid(), 'rec@example.org', 'x', 'receptionist', 'r') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("user")
}

fn pending(keys: &crate::crypto::KeyRing, by: Uuid, mrn: &str) -> PendingPatient {
    let body: NewPatient = serde_json::from_value(serde_json::json!({
        "mrn": mrn, "given_name": "G", "family_name": "F", "birth_date": "1970-01-02",
        "sex": "other", "allergies": [], "medications": [], "conditions": []
    }))
    .expect("patient body");
    let id = Uuid::now_v7();
    PendingPatient {
        id,
        created_by: by,
        enc: model::encrypt(keys, id, &body),
        event: AuditEvent::cli(crate::audit::actions::PATIENT_CREATE, "patient")
            .resource(id)
            .patient(id),
    }
}

/// Run one grouped insert; the outcome of each row, in batch order.
async fn insert(conn: &mut sqlx::PgConnection, batch: &[PendingPatient]) -> Vec<Inserted> {
    let key = crate::testing::test_config().phi_keys.audit_key().clone();
    let mut rows = PatientInsert::new(key)
        .fetch(conn, batch)
        .await
        .expect("insert");
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

/// The batcher re-runs a batch whose connection broke, possibly after the first run
/// committed: the second run must report the same patients as created, not as MRN clashes.
#[sqlx::test]
async fn a_grouped_insert_keeps_the_first_of_an_mrn_and_can_run_twice(pool: PgPool) {
    let keys = crate::testing::test_config().phi_keys;
    let by = a_user(&pool).await;
    let batch = [
        pending(&keys, by, "MRN-1"),
        pending(&keys, by, "MRN-2"),
        pending(&keys, by, "mrn 1"), // normalises to MRN-1: loses to the first row
    ];
    let mut conn = pool.acquire().await.expect("connection");
    let first = insert(&mut conn, &batch).await;
    assert!(matches!(first[0], Inserted::Created(_)), "{first:?}");
    assert!(matches!(first[1], Inserted::Created(_)), "{first:?}");
    assert_eq!(first[2], Inserted::MrnTaken);
    let again = insert(&mut conn, &batch).await;
    assert_eq!(again, first, "a re-run reports the same outcome");
    let stored: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM patients ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("ids");
    let mut expect = vec![batch[0].id, batch[1].id];
    expect.sort();
    assert_eq!(stored, expect);
}

/// A ring of data key `k-1` and blind-index keys `legacy` and `b-2`, `active` active.
fn rotating_ring(active: &str) -> crate::crypto::KeyRing {
    use caduceus_contract::key_files::encode_key;
    let json = serde_json::json!({"version": 1, "active_key_id": "k-1",
        "keys": {"k-1": encode_key(&[1; 32])},
        "blind_index_keys": {"legacy": encode_key(&[2; 32]), "b-2": encode_key(&[3; 32])},
        "active_blind_index_key_id": active, "audit_key": encode_key(&[2; 32])});
    crate::crypto::KeyRing::from_json(&json.to_string()).expect("ring")
}

/// During a blind-index rotation a grouped insert refuses a row whose MRN is stored under the
/// other key (the unique index cannot see it), inserts the rest of its batch, audits only what
/// it inserted, and reports the same outcome when it runs again.
#[sqlx::test]
async fn a_grouped_insert_sees_an_mrn_stored_under_another_blind_index_key(pool: PgPool) {
    let by = a_user(&pool).await;
    let mut conn = pool.acquire().await.expect("connection");
    let old = rotating_ring("legacy");
    let first = insert(&mut conn, &[pending(&old, by, "MRN-old")]).await;
    assert!(matches!(first[0], Inserted::Created(_)), "{first:?}");
    let new = rotating_ring("b-2");
    let batch = [
        pending(&new, by, "mrn old"), // the stored MRN, under the other key
        pending(&new, by, "MRN-new"),
    ];
    let got = insert(&mut conn, &batch).await;
    assert_eq!(got[0], Inserted::MrnTaken);
    assert!(matches!(got[1], Inserted::Created(_)), "{got:?}");
    assert_eq!(
        insert(&mut conn, &batch).await,
        got,
        "a re-run reports the same"
    );
    let stored: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, bidx_key_id FROM patients ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1], (batch[1].id, "b-2".to_string()));
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'patient.create'")
            .fetch_one(&pool)
            .await
            .expect("audit rows");
    assert_eq!(audited, 2, "one record per stored patient");
}

#[sqlx::test]
async fn one_failing_row_does_not_fail_the_rest_of_its_batch(pool: PgPool) {
    let keys = crate::testing::test_config().phi_keys;
    let by = a_user(&pool).await;
    // created_by names no user: a foreign-key violation for that row alone
    let batch = [
        pending(&keys, by, "MRN-a"),
        pending(&keys, Uuid::new_v4(), "MRN-b"),
        pending(&keys, by, "MRN-c"),
    ];
    let mut conn = pool.acquire().await.expect("connection");
    let got = insert(&mut conn, &batch).await;
    assert!(matches!(got[0], Inserted::Created(_)), "{got:?}");
    assert_eq!(got[1], Inserted::Failed);
    assert!(matches!(got[2], Inserted::Created(_)), "{got:?}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM patients")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stored, 2);
}

/// The grouped insert looks in `patients` only for rows the insert skipped (a re-run batch's
/// or an MRN clash): a correlated subquery, evaluated only when needed. It used to be a join,
/// which Postgres planned as a hash join over a sequential scan of every patient, per batch,
/// when the plan was made while the table was small: most of Postgres' CPU in the create
/// benchmark. (A small table is seeded so that the planner prefers such scans.)
#[sqlx::test]
async fn the_grouped_insert_reads_patients_only_for_skipped_rows(pool: PgPool) {
    let by = a_user(&pool).await;
    sqlx::query(
        "INSERT INTO patients (id, mrn_bidx, name_dob_bidx, phi_key_id, mrn, given_name, \
             family_name, birth_date, sex, allergies, medications, conditions, created_by) \
         SELECT gen_random_uuid(), int4send(g), '\\x00', 'k', '\\x00', '\\x00', '\\x00', \
             '\\x00', '\\x00', '\\x00', '\\x00', '\\x00', $1 FROM generate_series(1, 300) g",
    )
    .bind(by)
    .execute(&pool)
    .await
    .expect("seed");
    sqlx::query("ANALYZE patients")
        .execute(&pool)
        .await
        .expect("analyze");
    let mut conn = pool.acquire().await.expect("connection");
    let uuids = "ARRAY[gen_random_uuid()]";
    let bytes = "ARRAY['\\x01'::bytea]";
    let mut args = vec![
        uuids.to_string(),
        bytes.into(),
        bytes.into(),
        "ARRAY['k']".into(),
        format!("ARRAY['{by}'::uuid]"),
    ];
    args.extend(ENC_COLUMNS.iter().map(|_| bytes.to_string()));
    args.push("ARRAY['legacy']".into());
    let plan =
        crate::testing::generic_plan(&mut conn, "insert", &PATIENT_INSERT_SQL, &args.join(", "))
            .await;
    // the only read of `patients` (besides the INSERT itself) is inside the subplan
    let subplan = plan.find("SubPlan").expect("a subplan");
    for (at, _) in plan.match_indices("on patients p") {
        assert!(at > subplan, "patients is joined:\n{plan}");
    }
}

//! Database roles (#15): `db-setup`'s runtime role is neither superuser nor owner, can run the
//! whole API, and cannot rewrite the audit trail; `serve` refuses any other connection.

mod common;

use caduceus_api::rbac::Role;
use caduceus_api::store::roles::{check_runtime_role, setup_runtime_role, RoleAction, RoleError};
use caduceus_api::testing::TestApp;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// A role name of its own per test (roles are shared by every database of the server).
fn role_name() -> String {
    format!("caduceus_app_t{}", uuid::Uuid::new_v4().simple())
}

async fn connect_as(owner: &PgPool, role: &str, password: &str) -> PgPool {
    let options: PgConnectOptions = (*owner.connect_options())
        .clone()
        .username(role)
        .password(password);
    PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options)
        .await
        .expect("the runtime role can log in")
}

/// The SQLSTATE of a refused statement.
async fn refused(pool: &PgPool, sql: &str) -> String {
    let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .expect_err(sql);
    let db = err.as_database_error().expect("a database error");
    let message = db.message().to_string();
    // A missing privilege, not the append-only trigger (the second line).
    assert!(
        message.contains("permission denied") || message.contains("must be owner"),
        "{sql}: {message}"
    );
    db.code().unwrap_or_default().to_string()
}

#[sqlx::test]
async fn the_runtime_role_appends_to_the_audit_trail_and_cannot_rewrite_it(owner: PgPool) {
    let role = role_name();
    let action = setup_runtime_role(&owner, &role, "s3cret-Pa55")
        .await
        .expect("db-setup as the owner");
    assert_eq!(action, RoleAction::Created);
    // Idempotent: a second run updates the role and the grants.
    assert_eq!(
        setup_runtime_role(&owner, &role, "s3cret-Pa55")
            .await
            .unwrap(),
        RoleAction::Updated
    );
    let app_pool = connect_as(&owner, &role, "s3cret-Pa55").await;
    check_runtime_role(&app_pool)
        .await
        .expect("serve accepts the runtime role");

    // The whole API works as the runtime role, and its accesses are audited.
    let app = TestApp::new(app_pool.clone()).await;
    let admin = app.user(Role::Admin).await;
    let doc = app.user(Role::Physician).await;
    let id = common::create_patient(&app, &doc, "roles").await;
    let r = app.get(&format!("/api/v1/patients/{id}"), &doc.token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&app_pool)
        .await
        .unwrap();
    assert!(audited >= 2, "{audited} audit rows");
    let r = app.get("/api/v1/audit-events/verify", &admin.token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["valid"], true, "{}", r.text);

    // Everything that would rewrite the trail is refused by the grants.
    for sql in [
        "UPDATE audit_events SET action = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete",
        "ALTER TABLE audit_events ADD COLUMN x int",
        "DROP TRIGGER audit_events_no_update_delete ON audit_events",
        "INSERT INTO audit_purges (through_id, through_hash, rows_deleted, retention_days) VALUES (1000000, '\\x00', 0, 2190)",
        "DELETE FROM audit_purges",
        "UPDATE _sqlx_migrations SET success = false",
        "CREATE TABLE shadow (x int)",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ] {
        let code = refused(&app_pool, sql).await;
        assert_eq!(code, "42501", "{sql}");
    }
    // The trail is intact.
    let r = app.get("/api/v1/audit-events/verify", &admin.token).await;
    assert_eq!(r.json["valid"], true, "{}", r.text);
}

#[sqlx::test]
async fn the_runtime_role_purges_expired_audit_rows_only_through_the_owners_function(
    owner: PgPool,
) {
    let role = role_name();
    setup_runtime_role(&owner, &role, "pw-1").await.unwrap();
    let app_pool = connect_as(&owner, &role, "pw-1").await;
    let app = TestApp::new(app_pool.clone()).await;
    let doc = app.user(Role::Physician).await;
    let id = common::create_patient(&app, &doc, "purge").await;
    for _ in 0..2 {
        let r = app.get(&format!("/api/v1/patients/{id}"), &doc.token).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&owner)
        .await
        .unwrap();
    // Age the first two rows past six years (as the owner, around the trigger).
    sqlx::raw_sql(
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete; \
         UPDATE audit_events SET occurred_at = now() - interval '2200 days' WHERE id IN (SELECT id FROM audit_events ORDER BY id LIMIT 2); \
         ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete;",
    )
    .execute(&owner)
    .await
    .unwrap();
    let deleted = caduceus_api::audit::purge_expired(&app_pool, 2190)
        .await
        .expect("the runtime role may run the purge");
    assert_eq!(deleted, 2, "{total} rows before");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(left, total - 2);
    // Nothing younger can be purged, whatever the argument.
    assert_eq!(
        caduceus_api::audit::purge_expired(&app_pool, 0)
            .await
            .unwrap(),
        0
    );
}

#[sqlx::test]
async fn serve_refuses_a_superuser_and_the_owner(owner: PgPool) {
    // The test database's own connection is a superuser.
    assert!(matches!(
        check_runtime_role(&owner).await,
        Err(RoleError::Superuser(_))
    ));
    // A role that owns the tables (but is no superuser).
    let owner_role = role_name();
    let setup = format!(
        "CREATE ROLE {owner_role} LOGIN PASSWORD 'pw' NOSUPERUSER; \
         ALTER TABLE patients OWNER TO {owner_role};"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&owner)
        .await
        .unwrap();
    let as_owner = connect_as(&owner, &owner_role, "pw").await;
    match check_runtime_role(&as_owner).await {
        Err(RoleError::Owner { tables, .. }) => assert!(tables.contains("patients"), "{tables}"),
        other => panic!("expected an owner refusal, got {other:?}"),
    }
    // A role with UPDATE on the audit trail (grants set by hand).
    let loose = role_name();
    let setup = format!(
        "CREATE ROLE {loose} LOGIN PASSWORD 'pw' NOSUPERUSER; \
         GRANT SELECT, UPDATE ON audit_events TO {loose};"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&owner)
        .await
        .unwrap();
    let as_loose = connect_as(&owner, &loose, "pw").await;
    assert!(matches!(
        check_runtime_role(&as_loose).await,
        Err(RoleError::AuditWritable(_))
    ));
    // db-setup refuses to make the owner its own runtime role, and bad names.
    let me: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&owner)
        .await
        .unwrap();
    assert!(matches!(
        setup_runtime_role(&owner, &me, "pw").await,
        Err(RoleError::SameAsOwner(_))
    ));
    assert!(matches!(
        setup_runtime_role(&owner, "Robert'); DROP TABLE patients;--", "pw").await,
        Err(RoleError::InvalidName(_))
    ));
}

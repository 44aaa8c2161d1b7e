//! After a backup and restore, PHI written through the API still decrypts through the API: the
//! restored database carries the ciphertext, the users, sessions and the migration history intact.

mod common;

use caduceus_api::rbac::Role;
use caduceus_api::testing::{test_config, TestApp};
use common::*;
use serde_json::json;

#[tokio::test]
async fn phi_still_decrypts_through_the_api_after_restore() {
    let store = Store::file();
    let src = TestDb::create("bk_phi").await;

    // One config (PHI key ring, JWT key) for the original and the restored deployment.
    let config = test_config();
    let src_pool = api_pool(&src.url()).await;
    let app = TestApp::with_config(src_pool.clone(), config.clone()).await;
    let doc = app.user(Role::Physician).await;
    let body = json!({
        "mrn": "MRN-restore-1",
        "given_name": "Ada",
        "family_name": "Lovelace-Restored",
        "birth_date": "1970-03-04",
        "sex": "female",
        "phone": "+1 555 0100",
        "email": "ada@mail.example",
        "address": "12 Secret Street, Springfield",
        "allergies": ["Penicillin"],
        "medications": ["Metformin"],
        "conditions": ["Diabetes"],
        "emergency_contact": {"name": "Byron", "relationship": "father", "phone": "+1 555 0199"}
    });
    let created = app.post("/api/v1/patients", &doc.token, body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().expect("id").to_string();
    let original = app.get(&format!("/api/v1/patients/{id}"), &doc.token).await;
    assert_eq!(original.status, 200, "{}", original.text);
    // PHI is encrypted at rest: the family name is not stored in clear.
    let clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM patients p WHERE p::text LIKE '%Lovelace-Restored%'",
    )
    .fetch_one(&src_pool)
    .await
    .expect("scan");
    assert_eq!(clear, 0, "PHI stored in clear");
    src_pool.close().await;

    let name = store.backup_name(&src.url());
    let manifest_line = run(&["list", "--destination", &store.dest]);
    let manifest: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&manifest_line.stdout).trim())
            .expect("manifest");
    let applied = caduceus_api::health::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .expect("migrations");
    assert_eq!(
        manifest["schema_version"], applied,
        "manifest records the API schema version"
    );

    let target = TestDb::absent("bk_phi_restored");
    let target_url = target.url();
    let restored = run_ok(&store.args(&["restore", &name, "--database-url", &target_url]));
    assert_eq!(restored["schema_version"], applied);

    let restored_pool = pool(&target.url()).await;
    let app2 = TestApp::with_config(restored_pool.clone(), config).await;
    // The physician's session and token survive the restore; the PHI decrypts to the same values.
    let after = app2
        .get(&format!("/api/v1/patients/{id}"), &doc.token)
        .await;
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(after.json["family_name"], "Lovelace-Restored");
    assert_eq!(after.json["allergies"], json!(["Penicillin"]));
    for field in [
        "mrn",
        "given_name",
        "family_name",
        "birth_date",
        "phone",
        "email",
        "address",
        "medications",
        "conditions",
        "emergency_contact",
    ] {
        assert_eq!(
            after.json[field], original.json[field],
            "{field} differs after restore"
        );
    }
    restored_pool.close().await;
}

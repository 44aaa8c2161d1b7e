//! A real third-party FHIR client against the running API: `tests/fhir_client.py` drives fhirpy
//! (PyPI, `.tools/fhir-venv`) over HTTP against the API's router on a real TCP listener (real
//! PostgreSQL and Redis), with a physician's bearer token: create, read, update (PUT), search
//! (identifier, family+birthdate) and paging through `next` links for patients, and the same for
//! appointments and medication requests once `GET /fhir/R4/metadata` lists them.

mod common;
mod fhir_tools;

use std::net::SocketAddr;

use caduceus_api::rbac::Role;
use caduceus_api::testing::TestApp;
use fhir_tools::{output_text, Tools};
use sqlx::PgPool;

const MRN_SYSTEM: &str = caduceus_contract::settings::DEFAULT_FHIR_MRN_SYSTEM;

#[sqlx::test]
async fn fhirpy_creates_reads_searches_and_pages(pool: PgPool) {
    let Some(tools) = Tools::find("fhir_client") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_test_writer()
        .try_init();
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let base = format!("http://{addr}/fhir/R4");
    let practitioner = doc.id.to_string();
    let out = tools
        .python(
            "fhir_client.py",
            &[&base, &doc.token, MRN_SYSTEM, &practitioner, "cl1"],
        )
        .await;
    server.abort();
    let text = output_text(&out);
    eprintln!("{text}");
    assert!(out.status.success(), "fhirpy failed:\n{text}");
    assert!(text.contains("steps passed"), "{text}");
    // what the client did is on the audit trail like any other request
    assert_eq!(common::audit_count(&app, "patient.create", None).await, 5);
}

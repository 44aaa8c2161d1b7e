//! # caduceus-api — the Caduceus clinical REST API
//!
//! ## Layout (adding a resource = new directory + one line in [`app`])
//!
//! | module | what it owns |
//! |---|---|
//! | [`config`] | env configuration (`docs/contracts.md`), refuses bad keys |
//! | [`state`] | [`state::AppState`]: pool, config, key ring, metrics, audit writer, limiter |
//! | [`error`] | the one [`error::Error`] → RFC 9457 problem+json; [`error::ApiJson`] body extractor + [`error::Validate`] |
//! | [`auth`] | the [`auth::AuthUser`] extractor (JWT + live session check) and [`auth::Authorized`] (+ role check, before the body); [`auth::routes`]: login/refresh/logout/me/register |
//! | [`rbac`] | THE permission matrix ([`rbac::allows`]) and record-level rules ([`rbac::patient_access`]) |
//! | [`access`] | who may see which patient's what: decisions, the one refusal, break-glass, audit of access |
//! | [`store`] | SQL of the hot paths and the grouped lookups/writes the state holds |
//! | [`audit`] | chain verification, retention of the trail, `/audit-events` ([`audit::routes`]); re-exports [`audit::AuditEvent`] and the group-commit [`audit::AuditWriter`] (in [`store::audit`]) |
//! | [`crypto`] | PHI key ring: AES-256-GCM with AAD (table,row,column), HMAC blind indexes |
//! | [`pagination`] | [`pagination::PageParams`] (`limit` ≤ 100, `cursor`: opaque, authenticated for caller, list and filters) and [`pagination::Page`] |
//! | [`patients`] | patient records and care teams (handlers; `extract.rs`: the session-and-record extractor; `model.rs`: types and PHI encryption) |
//! | [`appointments`] | scheduling, status transitions, no double booking (exclusion constraint) |
//! | [`prescriptions`] | prescribing, interaction check (reference data in migration 0101) |
//! | [`users`] | accounts (admin) |
//! | [`health`] | probes, admin router (`/metrics`, `/health/detailed`, `/internal/compliance`), [`health::MIGRATOR`] |
//! | [`ratelimit`] | Redis GCRA limiter + local `governor` fallback (applied by [`middleware::rate_limit`]) |
//! | [`middleware`] | request id, security headers, problem normalisation, HTTP metrics, logs, rate limiting |
//! | [`request`] | what a request says about its client: request id, client IP, [`request::RequestMeta`] |
//! | [`retention`] | daily purge of soft-deleted patients past `CADUCEUS_PATIENT_RETENTION_DAYS` |
//! | [`rotate`] | `rotate-keys` (add new encrypted tables to [`rotate::ENCRYPTED_TABLES`]) |
//! | [`openapi`] | OpenAPI 3.1 document + docs page (add handlers to its `paths(...)`) |
//! | [`testing`] | test helpers (fresh app on a `#[sqlx::test]` pool + Redis, users of every role) |
//!
//! ## Layers (imports run one way; `tests/layers.rs` fails on an import against them or a circle)
//!
//! routes ([`patients`], [`appointments`], [`prescriptions`], [`users`], [`auth::routes`], [`audit::routes`],
//! [`health`], [`openapi`], [`rotate`]) → domain ([`access`], [`audit`], [`auth`], [`middleware`],
//! [`retention`]) → [`state`] → store ([`store`], [`batch`], [`ratelimit`]) → base ([`config`],
//! [`crypto`], [`error`], [`metrics`], [`rbac`], [`pagination`], [`request`]). The state sits
//! above the store because it holds the store's handles (batchers, audit writer, limiter); the
//! store takes pools and connections, never the state. A new module gets its line in
//! `tests/layers.rs`.
//!
//! ## Writing a resource module (e.g. `src/appointments/mod.rs`)
//!
//! ```ignore
//! pub fn router() -> Router<AppState> {
//!     Router::new().route("/appointments", get(list).post(create))
//! }
//! async fn create(State(state): State<AppState>,
//!                 Authorized(auth, _): Authorized<perm::AppointmentBook>,  // 401/403 before the body
//!                 ApiJson(body): ApiJson<NewAppointment>) -> Result<(StatusCode, Json<Appointment>), Error> {
//!     let reason = state.keys.encrypt_str(Aad { table: "appointments", row: id, column: "reason" }, &body.reason);
//!     // ... runtime sqlx::query_as + FromRow; 23P01 (exclusion) maps to 409 via From<sqlx::Error>
//!     state.audit.record(AuditEvent::by(&auth, "appointment.create", "appointment")
//!         .resource(id).patient(body.patient_id)).await?;               // fail closed: before returning PHI
//!     Ok((StatusCode::CREATED, Json(appointment)))
//! }
//! ```
//! then add `.merge(appointments::router())` in [`app`], handlers to `openapi.rs`, the table to
//! [`rotate::ENCRYPTED_TABLES`] if it has ciphertexts, and migrations `0100_...sql` and up.
//! Record-level checks for a patient go through [`access`], never around it: implement
//! [`access::PatientScoped`] for the row type (its [`access::Resource`]: columns, `FROM` joining
//! `patients p`, [`access::Need`]), then [`access::load`] reads one row with the caller's access
//! (404/403 and the denial's audit included) and [`access::list_query`] starts a list narrowed to
//! the caller's scope; [`access::visible`] decides each listed row; [`access::check`] decides for
//! a bare patient id (no row read). Log what was opened with [`access::AccessLog`] (break-glass
//! included) and `?` its `write` before answering. Lists: [`pagination::PageParams::open`] with
//! the list's [`pagination::ListScope`] (route, caller, filters) + [`pagination::Paging::page`].
//!
//! ## Tests
//!
//! ```ignore
//! #[sqlx::test]   // fresh database, migrations applied
//! async fn books(pool: PgPool) {
//!     let app = caduceus_api::testing::TestApp::new(pool).await;
//!     let doc = app.user(Role::Physician).await;                  // user + access token
//!     let res = app.post("/api/v1/patients", &doc.token, json!({...})).await;
//!     assert_eq!(res.status, 201);
//! }
//! ```
//!
//! [`testing::TestApp`] also offers `with_config` (e.g. two replicas sharing a
//! [`testing::test_config`] and its Redis prefix), `patient_user(patient_id)` (a linked patient
//! account), `session_for(user, role)`, `login`, `send` (raw requests, e.g. with
//! `X-Break-Glass-Reason`), `admin_get` (admin router) and `client_ip` (the peer address the
//! requests come from). Every app gets a unique Redis key prefix; `REDIS_URL` overrides the
//! default `redis://127.0.0.1:6379`.

pub mod access;
pub mod appointments;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod config;
pub mod crypto;
pub mod error;
pub mod fhir;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pagination;
pub mod patients;
pub mod prescriptions;
pub mod ratelimit;
pub mod rbac;
pub mod request;
pub mod restores;
pub mod retention;
pub mod rotate;
pub mod state;
pub mod store;
pub mod testing;
pub mod tls;
pub mod users;

use axum::http::{header, HeaderName, Method, StatusCode};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use config::Config;
pub use error::error_kind;
pub use state::AppState;

fn cors(config: &Config) -> CorsLayer {
    if config.cors_allowed_origins.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(config.cors_allowed_origins.clone()))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-break-glass-reason"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The public API router (port 8080).
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .merge(auth::routes::router(state.config.self_registration))
        .merge(users::router())
        .merge(patients::router())
        .merge(appointments::router())
        .merge(prescriptions::router())
        .merge(audit::routes::router())
        .merge(openapi::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::rate_limit,
        ));
    let router = Router::new()
        .nest("/api/v1", api)
        .nest(fhir::BASE, fhir::router(&state))
        .merge(health::router().layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::probe_rate_limit,
        )))
        .fallback(middleware::not_found);
    with_common_layers(router, &state).with_state(state)
}

/// The public router's cross-cutting layers (innermost first): panic → 500 problem, body
/// limit, timeout, CORS, client IP ([`middleware::resolve_client_ip`]), then [`middleware::observe`] (request id, security headers,
/// problem+json normalisation, metrics, access log).
pub fn with_common_layers(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router
        .layer(axum::middleware::from_fn(middleware::catch_panic))
        .layer(RequestBodyLimitLayer::new(state.config.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.request_timeout,
        ))
        .layer(cors(&state.config))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::resolve_client_ip,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            middleware::observe,
        ))
}

/// The admin router (port 9090): metrics, detailed health, compliance.
pub fn admin_app(state: AppState) -> Router {
    health::admin_router()
        .fallback(middleware::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            middleware::observe,
        ))
        .with_state(state)
}

async fn shutdown_signal(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Run both listeners until SIGTERM/SIGINT, then drain in-flight requests and close the pool.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let pool = state::connect_db(&config.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to DATABASE_URL: {}", error_kind(&e)))?;
    // The runtime role cannot migrate: the schema must be current (db-setup ran) before serving.
    match health::schema_state(&pool).await {
        Ok((_, true)) => {}
        Ok((version, false)) => anyhow::bail!(
            "the database schema is at version {version} and migrations of this release are missing: run `caduceus-api db-setup` with the owner's credentials first"
        ),
        Err(e) => anyhow::bail!(
            "cannot read the schema version ({}): run `caduceus-api db-setup` with the owner's credentials first",
            error_kind(&e)
        ),
    }
    // Never as a superuser or the owner: the runtime role cannot rewrite the audit trail.
    store::roles::check_runtime_role(&pool)
        .await
        .map_err(|e| match e {
            store::roles::RoleError::Database(db) => {
                anyhow::anyhow!("cannot check the database role: {}", error_kind(&db))
            }
            other => anyhow::anyhow!("{other}"),
        })?;
    // account e-mails written before migration 0102 are encrypted before serving
    let n = users::encrypt_legacy_emails(&pool, &config.phi_keys, 500)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot encrypt the plaintext account e-mails: {}",
                error_kind(&e)
            )
        })?;
    if n > 0 {
        tracing::info!(rows = n, "encrypted plaintext account e-mails");
    }
    let (http_addr, admin_addr) = (config.http_addr, config.admin_addr);
    let tls = config.tls.clone();
    let state = AppState::new(config, pool.clone())?;
    // the dummy hash of unknown e-mails, computed before the first login needs it
    tokio::task::spawn_blocking(|| {
        std::sync::LazyLock::force(&auth::password::DUMMY_HASH);
    });
    let api_listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {http_addr}: {e}"))?;
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {admin_addr}: {e}"))?;
    if tls.is_some() {
        tracing::info!(%http_addr, %admin_addr, "caduceus-api listening (HTTPS)");
    } else {
        tracing::warn!(
            %http_addr,
            %admin_addr,
            "caduceus-api listening over plain HTTP: CADUCEUS_TLS_CERT_FILE and CADUCEUS_TLS_KEY_FILE are not set (local use only)"
        );
    }

    // retention and conversions, at startup and then daily: backup restores not yet audited,
    // the expired prefix of the audit chain, patients soft-deleted longer than their retention,
    // and account e-mails still in plaintext (written by an older release during a rolling
    // upgrade)
    let purge_pool = pool.clone();
    let retention = state.config.audit_retention_days;
    let patient_retention = state.config.patient_retention_days;
    let purge_keys = state.keys.clone();
    let purge_audit = state.audit.clone();
    let purge = tokio::spawn(async move {
        loop {
            // restores recorded by the backup agent (restores::audit_restores)
            match restores::audit_restores(&purge_pool, purge_keys.audit_key()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(restores = n, "audited backup restores"),
                Err(e) => {
                    tracing::warn!(error = %error_kind(&e), "auditing backup restores failed")
                }
            }
            match audit::purge_expired(&purge_pool, retention).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(rows = n, "purged audit events past retention");
                    // a keyed row after the new anchor vouches for it (audit::verify_chain_with)
                    let event =
                        audit::AuditEvent::system(audit::actions::AUDIT_PURGE, "audit_event")
                            .purpose(&format!(
                                "retention: {n} audit rows older than {retention} days"
                            ));
                    if let Err(e) = purge_audit.record(event).await {
                        tracing::warn!(error = %e, "the audit purge could not be audited");
                    }
                }
                Err(e) => tracing::warn!(error = %error_kind(&e), "audit retention purge failed"),
            }
            match retention::purge_deleted_patients(
                &purge_pool,
                purge_keys.audit_key(),
                patient_retention,
            )
            .await
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(patients = n, "purged soft-deleted patients past retention")
                }
                Err(e) => tracing::warn!(error = %error_kind(&e), "patient retention purge failed"),
            }
            if let Err(e) = auth::routes::purge_login_attempts(&purge_pool).await {
                tracing::warn!(error = %error_kind(&e), "login attempt purge failed");
            }
            match users::encrypt_legacy_emails(&purge_pool, &purge_keys, 500).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "encrypted plaintext account e-mails"),
                Err(e) => {
                    tracing::warn!(error = %error_kind(&e), "account e-mail encryption failed")
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)).await;
        }
    });

    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        let _ = tx.send(true);
    });
    let api = tls::serve_router(
        api_listener,
        tls.clone(),
        app(state.clone()),
        shutdown_signal(rx.clone()),
    );
    let admin = tls::serve_router(
        admin_listener,
        tls,
        admin_app(state.clone()),
        shutdown_signal(rx),
    );
    let (a, b) = tokio::join!(api, admin);
    purge.abort();
    a?;
    b?;
    drop(state);
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

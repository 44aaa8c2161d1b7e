//! Health endpoints (public port) and the admin router (`/metrics`, `/health/detailed`,
//! `/internal/compliance`; admin port only).

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use caduceus_contract::self_report::{
    AuditCheckpoint, AuditReport, CacheReport, CheckpointCheck, EncryptionReport, RateLimitReport,
    SelfReport, SessionsReport,
};

use crate::state::{AppState, CachedProbe, READY_CACHE_TTL};

/// Embedded migrations (`api-server/migrations`), used by `migrate`, readiness and tests.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Public health routes (not under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health", get(ready))
}

/// Admin routes, served on `CADUCEUS_ADMIN_ADDR` only.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/detailed", get(detailed))
        .route("/internal/compliance", get(compliance))
}

/// Liveness: the process answers (touches nothing).
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "alive"),
    (status = 429, description = "more probes from one client than any kubelet sends", body = crate::error::Problem)))]
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `degraded` (Redis down: local rate limiter in use) or `unavailable`.
    pub status: String,
    pub postgres: String,
    pub redis: String,
    pub migrations: String,
}

/// Applied schema version and whether every embedded migration is applied.
pub async fn schema_state(pool: &sqlx::PgPool) -> Result<(i64, bool), sqlx::Error> {
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?;
    let version = applied
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(v, _)| *v)
        .max()
        .unwrap_or(0);
    let complete = MIGRATOR
        .iter()
        .all(|m| applied.iter().any(|(v, ok)| *v == m.version && *ok));
    Ok((version, complete))
}

pub async fn readiness(state: &AppState) -> Readiness {
    let pg_ok = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
    let migrations = if pg_ok {
        match schema_state(&state.pool).await {
            Ok((_, true)) => "ok",
            Ok((_, false)) => "pending",
            Err(_) => "unknown",
        }
    } else {
        "unknown"
    };
    let redis = match state.limiter.ping().await {
        None => "disabled",
        Some(true) => "ok",
        Some(false) => "down",
    };
    let status = if !pg_ok || migrations != "ok" {
        "unavailable"
    } else if redis == "down" {
        "degraded"
    } else {
        "ready"
    };
    Readiness {
        status: status.into(),
        postgres: if pg_ok { "ok" } else { "down" }.into(),
        redis: redis.into(),
        migrations: migrations.into(),
    }
}

/// Readiness: Postgres reachable, migrations applied; Redis down = `degraded` (still 200).
/// Answered from the last check when it is younger than [`READY_CACHE_TTL`] (a flood of probes
/// runs one check per second, not one per probe, and takes no pool connections meanwhile).
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness),
              (status = 429, description = "more probes from one client than any kubelet sends", body = crate::error::Problem)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let mut cache = state.ready_cache.lock().await;
    let fresh = cache
        .as_ref()
        .filter(|c| c.at.elapsed() < READY_CACHE_TTL)
        .cloned();
    let probe = match fresh {
        Some(c) => c,
        None => {
            let r = readiness(&state).await;
            let status = if r.status == "unavailable" {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let c = CachedProbe {
                at: std::time::Instant::now(),
                status,
                body: serde_json::to_vec(&r).unwrap_or_default().into(),
            };
            *cache = Some(c.clone());
            c
        }
    };
    drop(cache);
    (
        probe.status,
        [(header::CONTENT_TYPE, "application/json")],
        probe.body,
    )
        .into_response()
}

async fn refresh_gauges(state: &AppState) {
    let size = i64::from(state.pool.size());
    let idle = state.pool.num_idle() as i64;
    state
        .metrics
        .db_pool_connections
        .with_label_values(&["idle"])
        .set(idle);
    state
        .metrics
        .db_pool_connections
        .with_label_values(&["in_use"])
        .set((size - idle).max(0));
    // the grouped-statement workers' and the audit writer's own connections
    state
        .metrics
        .db_pool_connections
        .with_label_values(&["worker"])
        .set(crate::batch::open_worker_connections());
    let idle_minutes = (state.config.session_idle_timeout.as_secs() / 60) as i32;
    if let Ok(n) = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM sessions WHERE revoked_at IS NULL \
         AND last_seen_at > now() - make_interval(mins => $1)",
    )
    .bind(idle_minutes)
    .fetch_one(&state.pool)
    .await
    {
        state.metrics.active_sessions.set(n);
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    refresh_gauges(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn chain_head(pool: &sqlx::PgPool) -> (i64, String) {
    match sqlx::query_as::<_, (i64, Vec<u8>)>(crate::audit::HEAD_SQL)
        .fetch_optional(pool)
        .await
    {
        Ok(Some((id, hash))) => (id, hex::encode(hash)),
        _ => (0, hex::encode([0u8; 32])),
    }
}

async fn detailed(State(state): State<AppState>) -> Response {
    let r = readiness(&state).await;
    let pg_version: Option<String> = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&state.pool)
        .await
        .ok();
    let schema = schema_state(&state.pool).await.ok();
    let (head_id, head_hash) = chain_head(&state.pool).await;
    Json(json!({
        "status": r.status,
        "version": env!("CARGO_PKG_VERSION"),
        "components": {
            "postgres": {"status": r.postgres, "server_version": pg_version},
            "redis": {"status": r.redis, "rate_limit_backend": state.limiter.backend(), "degraded": state.limiter.degraded()},
            "migrations": {"status": r.migrations, "schema_version": schema.map(|s| s.0)},
        },
        "encryption": {"active_key_id": state.keys.active_key_id(), "key_ids": state.keys.key_ids()},
        "audit": {"chain_head_id": head_id, "chain_head_hash": head_hash,
                  "write_failures": state.metrics.audit_write_failures_total.get()},
    }))
    .into_response()
}

/// `cache` of the self-report: whether a Redis URL is configured and Redis answered a `PING`
/// just now (`/health/ready` cannot tell: Redis down only degrades it, the rate limiter falls
/// back to per-process limits). The operator's `CacheReady` of an External cache comes from it.
pub async fn cache_report(state: &AppState) -> CacheReport {
    let (configured, reachable) = match state.limiter.ping().await {
        None => (false, false),
        Some(ok) => (true, ok),
    };
    CacheReport {
        configured,
        reachable,
    }
}

/// The compliance self-report (the contract crate's type, which the operator parses), with
/// `checkpoints` (recorded by the reader outside the database) compared with the audit chain.
pub async fn self_report(state: &AppState, checkpoints: &[AuditCheckpoint]) -> SelfReport {
    let schema_version = schema_state(&state.pool).await.map(|s| s.0).unwrap_or(0);
    let (chain_head_id, chain_head_hash) = chain_head(&state.pool).await;
    let checkpoints = match compare_checkpoints(&state.pool, checkpoints).await {
        Ok(c) => c,
        Err(e) => {
            // reported as not compared (empty); the reader then cannot pass the rule on them
            tracing::warn!(error = %crate::error::error_kind(&e), "comparing audit checkpoints failed");
            Vec::new()
        }
    };
    let c = &state.config;
    SelfReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        schema_version,
        encryption: EncryptionReport {
            active: true,
            active_key_id: state.keys.active_key_id().to_string(),
            key_ids: state.keys.key_ids(),
        },
        audit: AuditReport {
            chain_head_id,
            chain_head_hash,
            write_failures: state.metrics.audit_write_failures_total.get(),
            retention_days: i64::from(c.audit_retention_days),
            checkpoints,
        },
        sessions: SessionsReport {
            idle_timeout_minutes: minutes(c.session_idle_timeout),
            access_token_ttl_minutes: minutes(c.access_token_ttl),
        },
        rate_limit: RateLimitReport {
            enabled: true,
            backend: state.limiter.backend().to_string(),
            requests_per_minute: i64::from(c.rate_limit_per_minute),
            login_attempts_per_minute: i64::from(c.login_rate_limit_per_minute),
        },
        database_tls: c.database_tls(),
        api_tls: Some(c.tls.is_some()),
        cache: Some(cache_report(state).await),
    }
}

/// Whole minutes of a duration (settings are whole minutes).
fn minutes(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs() / 60).unwrap_or(i64::MAX)
}

async fn compare_checkpoints(
    pool: &sqlx::PgPool,
    checkpoints: &[AuditCheckpoint],
) -> Result<Vec<CheckpointCheck>, sqlx::Error> {
    if checkpoints.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = pool.acquire().await?;
    crate::audit::check_checkpoints(&mut conn, checkpoints).await
}

/// `GET /internal/compliance[?checkpoint=<id>:<hex hash>...]`: `400` for a malformed checkpoint.
async fn compliance(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    match crate::audit::checkpoints_from_query(query.as_deref()) {
        Ok(checkpoints) => Json(self_report(&state, &checkpoints).await).into_response(),
        Err(m) => (StatusCode::BAD_REQUEST, format!("checkpoint: {m}")).into_response(),
    }
}

//! Shared application state handed to every handler (`State<AppState>`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgPool};

use crate::batch::Batcher;
use crate::config::Config;
use crate::crypto::{CursorKey, KeyRing};
use crate::metrics::Metrics;
use crate::ratelimit::Limiter;
use crate::store::audit::AuditWriter;
use crate::store::patients::{PatientInsert, SessionPatientLookup};
use crate::store::sessions::SessionLookup;

/// Everything a request may need, behind one `Arc`: axum clones the state for every layer and
/// extractor of every request, so a clone is one reference-count increment (a struct of a dozen
/// `Arc`s and channel senders cost ~2 % of the API's CPU in clones and drops under load).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub keys: Arc<KeyRing>,
    /// The key of the list cursors' MAC ([`crate::pagination`]), derived from `keys`.
    pub cursor_key: CursorKey,
    pub metrics: Metrics,
    pub audit: AuditWriter,
    /// Grouped session checks (every authenticated request).
    pub sessions: Batcher<SessionLookup>,
    /// Grouped session checks with patient reads (`GET`/`PATCH /patients/{id}`): one statement
    /// for both.
    pub patient_reads: Batcher<SessionPatientLookup>,
    /// Grouped patient registrations (`POST /patients`): one statement and one commit per batch.
    pub patient_inserts: Batcher<PatientInsert>,
    pub limiter: Arc<Limiter>,
    /// The last readiness answer (`/health/ready`, `/health`), reused for
    /// [`READY_CACHE_TTL`]; its lock makes concurrent probes wait for one check instead of each
    /// taking a pool connection.
    pub ready_cache: tokio::sync::Mutex<Option<CachedProbe>>,
}

/// How long a readiness answer is reused.
pub const READY_CACHE_TTL: Duration = Duration::from_secs(1);

/// A readiness answer as sent: status and JSON body.
#[derive(Clone)]
pub struct CachedProbe {
    pub at: std::time::Instant,
    pub status: http::StatusCode,
    pub body: axum::body::Bytes,
}

impl FromRef<AppState> for Metrics {
    fn from_ref(s: &AppState) -> Self {
        s.metrics.clone()
    }
}

/// Pooled database connections per process. With the grouped workers' own connections
/// ([`crate::batch::WORKERS`] per kind, [`BATCH_KINDS`] kinds) and the audit writer's, a replica
/// holds at most 16 Postgres connections in all, as before the lookups were grouped. The hot path
/// (session check, patient read and create, audit) takes no pooled connections; the pool serves
/// every other query. (On the 2-core bench machine 8, 16 and 32 pooled connections could not be told apart;
/// see README, bench.)
pub const POOL_SIZE: u32 = caduceus_contract::settings::API_CONNECTIONS_PER_POD
    - BATCH_KINDS * crate::batch::WORKERS as u32
    - AUDIT_CONNECTIONS;

/// The audit writer's own connection ([`crate::audit::AuditWriter`]).
pub const AUDIT_CONNECTIONS: u32 = 1;

/// Kinds of grouped statements, each with its own workers: session check, patient read, patient
/// insert.
pub const BATCH_KINDS: u32 = 3;

/// Connections idle longer than this are pinged before use (see [`connect_db`]).
const PING_IDLE_AFTER: Duration = Duration::from_secs(10);

/// Open the Postgres pool used by `serve` and the CLI.
///
/// sqlx pings every connection on acquire by default, one extra round trip before each query;
/// here only connections that sat idle for [`PING_IDLE_AFTER`] are pinged (a dead one is
/// replaced before use). (sqlx 0.9 also pings each connection when it goes back to the pool;
/// that one cannot be turned off, but it runs after the query's caller has its result.)
/// `synchronous_commit` is pinned on for the session so an audit row is durable when its INSERT
/// or COMMIT returns, whatever the database default.
pub async fn connect_db(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .min_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("SET synchronous_commit = on").await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}

/// A lazily connecting, auto-reconnecting Redis handle (never fails at startup on a down Redis).
/// With `ca` (a PEM bundle, `CADUCEUS_REDIS_CA_FILE`) the `rediss://` server's certificate is
/// verified against it alone, host name included; a `rediss://` URL without it is verified
/// against the system roots. redis-rs's rustls client; the handshake fails on any other CA.
pub fn redis_manager(url: &str, ca: Option<&[u8]>) -> anyhow::Result<ConnectionManager> {
    // TCP_NODELAY: the multiplexed connection pipelines requests, and with Nagle a command
    // written while an earlier one is unanswered waits for that answer's ACK.
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|_| anyhow::anyhow!("REDIS_URL is not a valid Redis URL"))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = match ca {
        // The error names the bundle's problem, never the URL (it carries the password).
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        )
        .map_err(|e| anyhow::anyhow!("CADUCEUS_REDIS_CA_FILE cannot be used: {e}"))?,
        None => redis::Client::open(info)
            .map_err(|_| anyhow::anyhow!("REDIS_URL is not a valid Redis URL"))?,
    };
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, cfg)
        .map_err(|_| anyhow::anyhow!("cannot set up the Redis connection manager"))
}

/// Longest a worker's statement may run (Postgres `statement_timeout` on the workers' own
/// connections). One worker serves every request of its kind, so a statement stuck behind a lock
/// would otherwise stall them all until their HTTP timeout; cancelled, its batch fails (`500`, or
/// `503` for the audit: fail closed) and the worker goes on with the next.
pub const WORKER_STATEMENT_TIMEOUT_MS: u64 = 10_000;

/// Connect options of the workers that keep their own connection (audit writer, grouped
/// statements): the pool's, plus durable commits whatever the database default (an audit row or
/// a new patient is acknowledged only once it is on disk) and [`WORKER_STATEMENT_TIMEOUT_MS`].
pub fn worker_options(pool: &PgPool) -> Arc<sqlx::postgres::PgConnectOptions> {
    Arc::new((*pool.connect_options()).clone().options([
        ("synchronous_commit", "on".to_string()),
        ("statement_timeout", WORKER_STATEMENT_TIMEOUT_MS.to_string()),
    ]))
}

impl AppState {
    /// Build the state from a config and an open pool; spawns the audit writer.
    pub fn new(config: Config, pool: PgPool) -> anyhow::Result<Self> {
        let metrics = Metrics::new()?;
        let redis = match &config.redis_url {
            Some(url) => Some(redis_manager(url, config.redis_ca.as_deref())?),
            None => None,
        };
        let limiter = Arc::new(Limiter::new(
            redis,
            &config.redis_key_prefix,
            config.rate_limit_per_minute,
            config.login_rate_limit_per_minute,
        ));
        let options = worker_options(&pool);
        let audit = AuditWriter::spawn(
            options.clone(),
            metrics.clone(),
            config.phi_keys.audit_key().clone(),
        );
        Ok(Self(Arc::new(Shared {
            sessions: Batcher::spawn(options.clone(), SessionLookup),
            patient_reads: Batcher::spawn(
                options.clone(),
                SessionPatientLookup {
                    care_team_access_days: config.care_team_access_days,
                },
            ),
            patient_inserts: Batcher::spawn(options, PatientInsert::new(audit.key().clone())),
            cursor_key: config.phi_keys.cursor_key(),
            keys: config.phi_keys.clone(),
            config: Arc::new(config),
            pool,
            metrics,
            audit,
            limiter,
            ready_cache: tokio::sync::Mutex::new(None),
        })))
    }
}

#[cfg(test)]
mod tests {
    /// docs/contracts.md: an API pod opens at most 16 Postgres connections; the operator sizes the
    /// database's `max_connections` from that number (`API_CONNECTIONS_PER_POD`).
    #[test]
    fn a_pod_opens_at_most_16_postgres_connections() {
        assert_eq!(
            super::POOL_SIZE
                + super::BATCH_KINDS * crate::batch::WORKERS as u32
                + super::AUDIT_CONNECTIONS,
            16
        );
    }

    /// The client-side limit of a worker's statement leaves the server's own timeout 5 s to
    /// answer first.
    #[test]
    fn the_client_side_statement_timeout_follows_the_servers() {
        assert_eq!(
            crate::batch::CLIENT_STATEMENT_TIMEOUT,
            std::time::Duration::from_millis(super::WORKER_STATEMENT_TIMEOUT_MS + 5_000)
        );
    }

    /// The workers' own connections commit durably even where the database default is
    /// `synchronous_commit = off` (they acknowledge audit rows and new patients), and cancel a
    /// statement after [`super::WORKER_STATEMENT_TIMEOUT_MS`].
    #[sqlx::test(migrations = false)]
    async fn worker_connections_commit_durably_and_time_out_stuck_statements(pool: sqlx::PgPool) {
        use sqlx::Connection;
        let db: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&pool)
            .await
            .expect("database");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{db}\" SET synchronous_commit = off"
        )))
        .execute(&pool)
        .await
        .expect("alter database");
        let mut plain = sqlx::PgConnection::connect_with(&pool.connect_options())
            .await
            .expect("connect");
        let off: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut plain)
            .await
            .expect("show");
        assert_eq!(off, "off", "the database default applies");
        let mut worker = crate::batch::connect(&super::worker_options(&pool))
            .await
            .expect("connect");
        let on: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut *worker)
            .await
            .expect("show");
        assert_eq!(on, "on");
        let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(&mut *worker)
            .await
            .expect("show");
        assert_eq!(timeout, "10s");
    }
}

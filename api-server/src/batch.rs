//! Grouped lookups: the read-side twin of the audit group commit ([`crate::audit::AuditWriter`]).
//!
//! Every authenticated request looks up its session, and every PHI read looks up one patient
//! row. Run one query each, those lookups cost Postgres far more in round trips (wake-ups,
//! syscalls, and sqlx's ping when a connection goes back to the pool) than in the index probe
//! itself. A [`Batcher`] queues lookups of one kind; [`WORKERS`] task(s) take whatever is
//! queued (up to [`MAX_BATCH`]) and answer all of it with ONE query over arrays
//! (`unnest(...) WITH ORDINALITY`), then hand every caller its own row. While a batch is in
//! flight the next one queues, so under load one round trip serves many requests; when idle a
//! lookup runs at once on its own (no timer, nothing added to the wait).
//!
//! Each lookup is still answered from the database at the moment it is asked (no cache), so a
//! logout, a revoked session or a deactivated account takes effect for the very next request.
//!
//! Each worker keeps its own connection instead of taking one from the pool per batch: a pooled
//! connection costs a ping round trip every time it goes back (sqlx 0.9 cannot turn that off),
//! which at ~5 lookups per batch was half of all Postgres round trips of a PHI read. The
//! connection is opened with the pool's options on first use and again after it breaks; a
//! batch that failed because its connection broke is retried once on a new one (lookups are
//! reads, and a grouped write must be idempotent — see [`crate::store::patients::PatientInsert`] — so a
//! retry is safe).

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::error::Error;

/// Lookups answered by one query.
pub const MAX_BATCH: usize = 256;
/// Tasks per kind, each with its own connection (outside the pool's count). One: while its
/// statement runs the next batch queues, so batches grow with the load. (Two per kind split each
/// queue into batches half as big: on the bench machine 25 % more Postgres round trips per PHI
/// read, ~20 % more CPU per request and ~15 % fewer requests per second; README, bench.)
pub const WORKERS: usize = 1;
const QUEUE: usize = 4096;

/// One kind of grouped statement: how to answer a batch of keys with one query. A batch may run
/// twice (after its connection broke, possibly once it had committed): a statement that writes
/// must give the same answers when run again.
pub trait Lookup: Send + Sync + 'static {
    type Key: Send + Sync + 'static;
    type Row: Send + 'static;
    /// What the lookup is called in logs.
    const NAME: &'static str;

    /// Answer `keys` with one query: `(i, row)` pairs where `i` indexes `keys`; keys without a
    /// row are simply absent.
    fn fetch(
        &self,
        conn: &mut PgConnection,
        keys: &[Self::Key],
    ) -> impl Future<Output = Result<Vec<(usize, Self::Row)>, sqlx::Error>> + Send;
}

/// Why a batch failed, shared by every caller in it (an `sqlx::Error` cannot be cloned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No connection could be had: `503`.
    Unavailable,
    /// The query failed: `500` (details are logged by the worker, without values).
    Failed,
}

type Reply<R> = oneshot::Sender<Result<Option<R>, Failure>>;
type Job<L> = (<L as Lookup>::Key, Reply<<L as Lookup>::Row>);

/// Handle to the workers of one lookup kind; cheap to clone.
pub struct Batcher<L: Lookup> {
    tx: mpsc::Sender<Job<L>>,
}

impl<L: Lookup> Clone for Batcher<L> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<L: Lookup> Batcher<L> {
    /// Spawn [`WORKERS`] tasks on the current runtime; they connect with `options` (the pool's).
    pub fn spawn(options: Arc<PgConnectOptions>, lookup: L) -> Self {
        Self::spawn_with_timeout(options, lookup, CLIENT_STATEMENT_TIMEOUT)
    }

    /// [`Batcher::spawn`] with another client-side statement timeout (tests).
    pub fn spawn_with_timeout(
        options: Arc<PgConnectOptions>,
        lookup: L,
        statement_timeout: std::time::Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let lookup = Arc::new(lookup);
        for _ in 0..WORKERS {
            tokio::spawn(worker(
                options.clone(),
                lookup.clone(),
                rx.clone(),
                statement_timeout,
            ));
        }
        Self { tx }
    }

    /// The row for `key`, `None` when there is none.
    pub async fn get(&self, key: L::Key) -> Result<Option<L::Row>, Error> {
        let (reply, wait) = oneshot::channel();
        if self.tx.send((key, reply)).await.is_err() {
            return Err(Error::Unavailable("database unavailable".into()));
        }
        match wait.await {
            Ok(Ok(row)) => Ok(row),
            Ok(Err(Failure::Unavailable)) | Err(_) => {
                Err(Error::Unavailable("database unavailable".into()))
            }
            Ok(Err(Failure::Failed)) => Err(Error::internal(anyhow::anyhow!(
                "grouped {} lookup failed",
                L::NAME
            ))),
        }
    }
}

async fn worker<L: Lookup>(
    options: Arc<PgConnectOptions>,
    lookup: Arc<L>,
    rx: Arc<Mutex<mpsc::Receiver<Job<L>>>>,
    statement_timeout: std::time::Duration,
) {
    let mut batch: Vec<Job<L>> = Vec::with_capacity(MAX_BATCH);
    let mut conn: Option<WorkerConnection> = None;
    loop {
        {
            // one worker collects while any others run their queries
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return; // all handles gone: app shut down
            }
        }
        let (keys, replies): (Vec<L::Key>, Vec<Reply<L::Row>>) = batch.drain(..).unzip();
        match fetch(&options, &mut conn, &*lookup, &keys, statement_timeout).await {
            Ok(rows) => {
                let mut slots: Vec<Option<L::Row>> = replies.iter().map(|_| None).collect();
                for (i, row) in rows {
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = Some(row);
                    }
                }
                for (reply, row) in replies.into_iter().zip(slots) {
                    let _ = reply.send(Ok(row));
                }
            }
            Err(e) => {
                let failure = if broken(&e) {
                    Failure::Unavailable
                } else {
                    Failure::Failed
                };
                let code = match &e {
                    sqlx::Error::Database(db) => db.code().map(|c| c.to_string()),
                    _ => None,
                };
                tracing::error!(lookup = L::NAME, keys = keys.len(), sqlstate = ?code, ?failure, "grouped lookup failed");
                for reply in replies {
                    let _ = reply.send(Err(failure));
                }
            }
        }
    }
}

/// Answer `keys` on the worker's connection, opening it when there is none; a connection that
/// broke is dropped and the batch tried once more on a fresh one.
async fn fetch<L: Lookup>(
    options: &PgConnectOptions,
    conn: &mut Option<WorkerConnection>,
    lookup: &L,
    keys: &[L::Key],
    statement_timeout: std::time::Duration,
) -> Result<Vec<(usize, L::Row)>, sqlx::Error> {
    let mut retried = false;
    loop {
        let c = open(conn, options).await?;
        let Ok(fetched) = tokio::time::timeout(statement_timeout, lookup.fetch(c, keys)).await
        else {
            // no answer, not even the server's own statement timeout: the connection is dead
            // (or the server is); drop it and fail the batch rather than wait on
            *conn = None;
            return Err(timed_out("the statement"));
        };
        match fetched {
            Err(e) if broken(&e) => {
                *conn = None;
                if retried {
                    return Err(e);
                }
                retried = true;
            }
            done => return done,
        }
    }
}

/// Client-side limit of one grouped statement (or audit write): the server's own
/// `statement_timeout` on the workers' connections (`state::WORKER_STATEMENT_TIMEOUT_MS`, 10 s)
/// plus 5 s (a test in `state.rs` keeps them in step). It fires only when the server does not answer at all (a dead connection whose
/// peer vanished without closing it, a frozen server): the connection is dropped, the batch
/// fails (`503`), the next one opens a new connection.
pub const CLIENT_STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The error of an operation the client gave up on (counts as [`broken`]).
pub fn timed_out(what: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out on the client side"),
    ))
}

/// Give up opening a worker's connection after this long (the pool's acquire timeout).
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Worker connections open in this process: `db_pool_connections{state="worker"}`.
static OPEN_WORKER_CONNECTIONS: AtomicI64 = AtomicI64::new(0);

/// How many worker connections (grouped statements, audit writer) this process holds open.
pub fn open_worker_connections() -> i64 {
    OPEN_WORKER_CONNECTIONS.load(Ordering::Relaxed)
}

/// A worker's own connection, counted in [`open_worker_connections`] until dropped.
pub struct WorkerConnection(PgConnection);

impl std::ops::Deref for WorkerConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.0
    }
}

impl std::ops::DerefMut for WorkerConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0
    }
}

impl Drop for WorkerConnection {
    fn drop(&mut self) {
        OPEN_WORKER_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Open a worker's own connection, within [`CONNECT_TIMEOUT`] (a timeout counts as [`broken`]).
pub async fn connect(options: &PgConnectOptions) -> Result<WorkerConnection, sqlx::Error> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => {
            OPEN_WORKER_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            Ok(WorkerConnection(conn))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting to Postgres timed out",
        ))),
    }
}

/// The worker's connection, opened with `options` when it has none (first use, or after it
/// broke and was dropped).
pub async fn open<'c>(
    conn: &'c mut Option<WorkerConnection>,
    options: &PgConnectOptions,
) -> Result<&'c mut PgConnection, sqlx::Error> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(connect(options).await?),
    };
    Ok(&mut c.0)
}

/// The connection (not the query) failed: it cannot be used again. Besides I/O and protocol
/// errors that is SQLSTATE class 08 (connection exception) and 57P (the server ended the session:
/// shutdown, restart, `pg_terminate_backend`), which Postgres reports as a FATAL error on the
/// next query.
pub fn broken(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => is_broken_code(db.code().as_deref()),
        _ => false,
    }
}

/// SQLSTATE of an error that ended the connection (see [`broken`]).
pub fn is_broken_code(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
}

/// Row positions from Postgres' 1-based `WITH ORDINALITY` numbers.
pub fn index(ordinality: i64) -> usize {
    usize::try_from(ordinality.saturating_sub(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use sqlx::PgPool;

    use super::*;

    /// Key `k` has the row `k * 10` when `k` is even, none when odd; a negative key fails the
    /// whole query (division by zero in Postgres). Counts the queries it runs.
    struct Tens(Arc<AtomicUsize>);

    impl Lookup for Tens {
        type Key = i32;
        type Row = i32;
        const NAME: &'static str = "tens";

        async fn fetch(
            &self,
            conn: &mut PgConnection,
            keys: &[i32],
        ) -> Result<Vec<(usize, i32)>, sqlx::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let rows: Vec<(i64, i32)> = sqlx::query_as(
                "SELECT q.ord, q.k * 10 / (CASE WHEN q.k < 0 THEN 0 ELSE 1 END) \
                 FROM unnest($1::int[]) WITH ORDINALITY AS q(k, ord) WHERE q.k % 2 = 0",
            )
            .bind(keys)
            .fetch_all(conn)
            .await?;
            Ok(rows.into_iter().map(|(o, v)| (index(o), v)).collect())
        }
    }

    #[sqlx::test(migrations = false)]
    async fn every_caller_gets_its_own_row_from_shared_queries(pool: PgPool) {
        let queries = Arc::new(AtomicUsize::new(0));
        let b = Batcher::spawn(pool.connect_options(), Tens(queries.clone()));
        let answers = futures::future::join_all((0..200).map(|k| {
            let b = b.clone();
            async move { (k, b.get(k).await) }
        }))
        .await;
        for (k, got) in answers {
            let got = got.expect("lookup");
            assert_eq!(got, (k % 2 == 0).then_some(k * 10), "key {k}");
        }
        let n = queries.load(Ordering::SeqCst);
        assert!(
            (1..10).contains(&n),
            "200 concurrent lookups took {n} queries"
        );
        // idle again: a single lookup is answered on its own
        assert_eq!(b.get(4).await.expect("lookup"), Some(40));
    }

    #[sqlx::test(migrations = false)]
    async fn a_failed_query_fails_every_caller_in_it_and_the_workers_go_on(pool: PgPool) {
        let b = Batcher::spawn(pool.connect_options(), Tens(Arc::new(AtomicUsize::new(0))));
        let answers = futures::future::join_all([2, -2, 4].map(|k| b.get(k))).await;
        for got in answers {
            assert!(matches!(got, Err(Error::Internal(_))), "{got:?}");
        }
        assert_eq!(b.get(6).await.expect("lookup"), Some(60));
    }

    /// A TCP proxy to `target` that forwards until `frozen` is set, then holds both directions
    /// without closing (a server gone without a FIN). Returns its port.
    async fn freezing_proxy(
        target: (String, u16),
        frozen: Arc<std::sync::atomic::AtomicBool>,
    ) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect((target.0.as_str(), target.1))
                    .await
                    .expect("connect to postgres");
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to, frozen) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                        frozen.clone(),
                    ),
                    (Box::new(sr), Box::new(cw), frozen.clone()),
                ] {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            while frozen.load(Ordering::SeqCst) {
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        // keep the other half open: frozen, not closed
                        std::future::pending::<()>().await;
                    });
                }
            }
        });
        port
    }

    /// A server that stops answering without closing the connection: the batch fails after the
    /// client-side statement timeout (503) instead of waiting forever, and the next batch runs
    /// on a new connection.
    #[sqlx::test(migrations = false)]
    async fn a_silent_server_fails_the_batch_after_the_client_timeout(pool: PgPool) {
        let opts = pool.connect_options();
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let port = freezing_proxy(
            (opts.get_host().to_string(), opts.get_port()),
            frozen.clone(),
        )
        .await;
        let via_proxy = Arc::new((*opts).clone().host("127.0.0.1").port(port));
        let b = Batcher::spawn_with_timeout(
            via_proxy,
            Tens(Arc::new(AtomicUsize::new(0))),
            std::time::Duration::from_millis(500),
        );
        assert_eq!(b.get(2).await.expect("lookup"), Some(20));
        frozen.store(true, Ordering::SeqCst);
        let t = std::time::Instant::now();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), b.get(4))
            .await
            .expect("the worker gave up on its own");
        assert!(matches!(got, Err(Error::Unavailable(_))), "{got:?}");
        assert!(t.elapsed() >= std::time::Duration::from_millis(500));
        frozen.store(false, Ordering::SeqCst);
        assert_eq!(
            b.get(6).await.expect("lookup on a new connection"),
            Some(60)
        );
    }

    #[sqlx::test(migrations = false)]
    async fn an_unreachable_database_answers_unavailable(pool: PgPool) {
        // nothing listens on port 1
        let dead = Arc::new((*pool.connect_options()).clone().port(1));
        let b = Batcher::spawn(dead, Tens(Arc::new(AtomicUsize::new(0))));
        assert!(matches!(b.get(2).await, Err(Error::Unavailable(_))));
    }

    #[sqlx::test(migrations = false)]
    async fn a_broken_connection_is_replaced_and_the_batch_retried(pool: PgPool) {
        let b = Batcher::spawn(pool.connect_options(), Tens(Arc::new(AtomicUsize::new(0))));
        // one lookup after the other: the workers take turns (a fair mutex), so each opens its
        // own connection
        for k in 0..WORKERS as i32 {
            assert_eq!(b.get(2 * k).await.expect("lookup"), Some(20 * k));
        }
        // kill the workers' connections (every backend of this test database but our own)
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
        )
        .fetch_one(&pool)
        .await
        .expect("terminate");
        assert!(
            killed >= WORKERS as i64,
            "the workers' connections were not found"
        );
        for k in 0..WORKERS as i32 {
            assert_eq!(
                b.get(2 * k).await.expect("lookup after reconnect"),
                Some(20 * k)
            );
        }
    }

    /// The grouped lookups run on Postgres' cached generic plan; it must reach the big tables
    /// through their primary keys (a sequential scan reads every session or patient per batch).
    #[sqlx::test]
    async fn grouped_lookups_use_the_primary_keys_on_their_generic_plans(pool: PgPool) {
        let mut conn = pool.acquire().await.expect("connection");
        sqlx::raw_sql(
            "INSERT INTO users (id, email, password_hash, role, display_name) \
             SELECT gen_random_uuid(), 'u' || g || '@example.org', 'x', 'physician', 'u' \
             FROM generate_series(1, 20000) g; \
             INSERT INTO sessions (id, user_id) SELECT gen_random_uuid(), id FROM users; \
             INSERT INTO patients (id, mrn_bidx, name_dob_bidx, phi_key_id, mrn, given_name, \
                 family_name, birth_date, sex, allergies, medications, conditions, created_by) \
             SELECT gen_random_uuid(), int4send(n::int), '\\x00', 'k', '\\x00', '\\x00', '\\x00', \
                 '\\x00', '\\x00', '\\x00', '\\x00', '\\x00', id \
             FROM (SELECT id, row_number() OVER () AS n FROM users) u; \
             INSERT INTO care_team (patient_id, user_id, added_by) \
             SELECT id, created_by, created_by FROM patients; \
             INSERT INTO appointments (id, patient_id, practitioner_id, start_at, end_at, \
                 phi_key_id, created_by) \
             SELECT gen_random_uuid(), id, created_by, now(), now() + interval '1 hour', 'k', \
                 created_by FROM patients; \
             ANALYZE",
        )
        .execute(&mut *conn)
        .await
        .expect("seed");
        for (name, sql, tables, args) in [
            (
                "session",
                crate::store::sessions::SESSION_LOOKUP_SQL.clone(),
                &["sessions"][..],
                2,
            ),
            (
                "session_patient",
                crate::store::patients::SESSION_PATIENT_LOOKUP_SQL.clone(),
                &["sessions", "patients"][..],
                3,
            ),
        ] {
            let ids = format!(
                "ARRAY[{}]::uuid[]",
                (0..5)
                    .map(|_| format!("'{}'", uuid::Uuid::new_v4()))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let mut args = vec![ids; args].join(", ");
            if name == "session_patient" {
                args.push_str(", 30"); // the appointment access window in days
            }
            let plan = crate::testing::generic_plan(&mut conn, name, &sql, &args).await;
            for table in tables {
                assert!(plan.contains(&format!("{table}_pkey")), "{name}:\n{plan}");
            }
            for big in ["sessions", "users", "patients", "care_team", "appointments"] {
                assert!(
                    !plan.contains(&format!("Seq Scan on {big}")),
                    "{name}:\n{plan}"
                );
            }
        }
    }
}

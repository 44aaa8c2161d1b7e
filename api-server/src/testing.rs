//! Test helpers: a fresh app on a `#[sqlx::test]` pool and the development Redis, users of every
//! role with access tokens, and a small request client over `tower::ServiceExt::oneshot`.
//!
//! Redis: `REDIS_URL` (default `redis://127.0.0.1:6379`); every [`TestApp`] uses a unique key
//! prefix, so tests never share rate-limit buckets unless they share a prefix on purpose
//! ([`TestApp::with_config`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

use crate::config::Config;
use crate::crypto::{self, KeyRing};
use crate::rbac::Role;
use crate::state::AppState;

/// The plan Postgres caches for `sql` once it settles on a generic plan, as text: `sql` is
/// prepared as `name` and explained for the SQL literals `args` under
/// `plan_cache_mode = force_generic_plan` (set for the rest of `conn`'s session).
pub async fn generic_plan(
    conn: &mut sqlx::PgConnection,
    name: &str,
    sql: &str,
    args: &str,
) -> String {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE {name} AS {sql}"
    )))
    .execute(&mut *conn)
    .await
    .expect("prepare");
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (COSTS OFF) EXECUTE {name}({args})"
    )))
    .fetch_all(&mut *conn)
    .await
    .expect("explain");
    plan.join("\n")
}

/// Password every test user gets.
pub const TEST_PASSWORD: &str = "correct-horse-battery-staple";

/// A config for tests: fresh keys, development Redis, unique Redis prefix, generous limits.
pub fn test_config() -> Config {
    let keys =
        KeyRing::from_json(&crypto::generate_key_ring_json()).expect("generated key ring parses");
    let jwt = crypto::parse_jwt_key(&crypto::generate_jwt_key()).expect("generated JWT key parses");
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Config {
        database_url: "postgres://test@127.0.0.1/test".into(),
        redis_url: if redis.is_empty() { None } else { Some(redis) },
        redis_ca: None,
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: None,
        jwt_key: Arc::new(jwt),
        phi_keys: Arc::new(keys),
        session_idle_timeout: Duration::from_secs(15 * 60),
        max_session_age: Duration::from_secs(12 * 3600),
        access_token_ttl: Duration::from_secs(15 * 60),
        rate_limit_per_minute: 100_000,
        login_rate_limit_per_minute: 10_000,
        audit_retention_days: 2190,
        patient_retention_days: 3650,
        care_team_access_days: 30,
        cors_allowed_origins: Vec::new(),
        trusted_proxies: Vec::new(),
        self_registration: false,
        fhir_mrn_system: caduceus_contract::settings::DEFAULT_FHIR_MRN_SYSTEM.to_string(),
        mfa: crate::config::MfaPolicy::Optional,
        mfa_required_roles: vec![Role::Admin, Role::Physician],
        log_level: "info".into(),
        redis_key_prefix: format!("caduceus-test:{}:", Uuid::new_v4()),
        body_limit_bytes: 256 * 1024,
        request_timeout: Duration::from_secs(30),
    }
}

/// A response, body parsed as JSON when possible.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A user with a live session.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub token: String,
    pub session_id: Uuid,
}

/// The app under test.
#[derive(Clone)]
pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub admin: Router,
    pub pool: PgPool,
    /// Client IP the requests appear to come from.
    pub client_ip: std::net::IpAddr,
}

impl TestApp {
    pub async fn new(pool: PgPool) -> Self {
        Self::with_config(pool, test_config()).await
    }

    pub async fn with_config(pool: PgPool, config: Config) -> Self {
        let state = AppState::new(config, pool.clone()).expect("app state");
        Self {
            router: crate::app(state.clone()),
            admin: crate::admin_app(state.clone()),
            state,
            pool,
            client_ip: [127, 0, 0, 1].into(),
        }
    }

    async fn run(&self, router: &Router, mut req: Request<Body>) -> TestResponse {
        if req.extensions().get::<ConnectInfo<SocketAddr>>().is_none() {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(self.client_ip, 40000)));
        }
        let resp = router
            .clone()
            .oneshot(req)
            .await
            .expect("infallible router");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            text,
            json,
        }
    }

    /// Send a raw request to the public router.
    pub async fn send(&self, req: Request<Body>) -> TestResponse {
        self.run(&self.router, req).await
    }

    /// Send a GET to the admin router.
    pub async fn admin_get(&self, uri: &str) -> TestResponse {
        let req = Request::builder()
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        self.run(&self.admin, req).await
    }

    /// JSON request with an optional bearer token.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> TestResponse {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .expect("request");
        self.send(req).await
    }

    pub async fn get(&self, uri: &str, token: &str) -> TestResponse {
        self.call(Method::GET, uri, Some(token), None).await
    }

    pub async fn post(&self, uri: &str, token: &str, body: Value) -> TestResponse {
        self.call(Method::POST, uri, Some(token), Some(body)).await
    }

    pub async fn patch(&self, uri: &str, token: &str, body: Value) -> TestResponse {
        self.call(Method::PATCH, uri, Some(token), Some(body)).await
    }

    pub async fn delete(&self, uri: &str, token: &str) -> TestResponse {
        self.call(Method::DELETE, uri, Some(token), None).await
    }

    /// Log in through the API.
    pub async fn login(&self, email: &str, password: &str) -> TestResponse {
        self.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(serde_json::json!({"email": email, "password": password})),
        )
        .await
    }

    /// Create a user of `role` (password [`TEST_PASSWORD`]) with a session and access token
    /// minted directly (no login round trip, no login rate limit).
    pub async fn user(&self, role: Role) -> TestUser {
        self.user_linked(role, None).await
    }

    /// A patient account linked to `patient_id`.
    pub async fn patient_user(&self, patient_id: Uuid) -> TestUser {
        self.user_linked(Role::Patient, Some(patient_id)).await
    }

    async fn user_linked(&self, role: Role, patient_id: Option<Uuid>) -> TestUser {
        let email = format!("{}-{}@test.example", role.as_str(), Uuid::new_v4().simple());
        let user = crate::users::insert(
            &self.pool,
            &self.state.keys,
            &email,
            TEST_PASSWORD.into(),
            role,
            "Test User",
            patient_id,
        )
        .await
        .expect("insert user");
        let (session_id, token) = self.session_for(user.id, role).await;
        TestUser {
            id: user.id,
            email,
            role,
            token,
            session_id,
        }
    }

    /// Open a session for an existing user and mint its access token.
    pub async fn session_for(&self, user: Uuid, role: Role) -> (Uuid, String) {
        let session = Uuid::now_v7();
        sqlx::query("INSERT INTO sessions (id, user_id) VALUES ($1, $2)")
            .bind(session)
            .bind(user)
            .execute(&self.pool)
            .await
            .expect("insert session");
        let ttl = self.state.config.access_token_ttl.as_secs() as i64;
        let token = crate::auth::tokens::issue_access(
            &self.state.config.jwt_key,
            user,
            session,
            role.as_str(),
            ttl,
        )
        .expect("sign token");
        (session, token)
    }

    /// One user per role.
    pub async fn users(&self) -> Vec<TestUser> {
        let mut out = Vec::new();
        for role in [
            Role::Admin,
            Role::Physician,
            Role::Nurse,
            Role::Receptionist,
            Role::Patient,
        ] {
            out.push(self.user(role).await);
        }
        out
    }
}

//! Cross-cutting behaviour: problem+json for malformed input, security headers, request ids,
//! CORS, health, metrics, compliance, OpenAPI, rate limiting (shared through Redis and local
//! fallback), key rotation.

mod common;

use axum::body::Body;
use axum::http::{Method, Request};
use caduceus_api::crypto::KeyRing;
use caduceus_api::rbac::Role;
use caduceus_api::testing::{test_config, TestApp};
use common::{assert_problem, create_patient};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn malformed_input_is_problem_json(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let auth = format!("Bearer {}", rec.token);
    let raw = |method: Method, uri: &str, ct: Option<&str>, body: &str| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", auth.clone());
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(body.to_string())).unwrap()
    };
    // 400 malformed JSON
    assert_problem(
        &app.send(raw(
            Method::POST,
            "/api/v1/patients",
            Some("application/json"),
            "{\"mrn\": ",
        ))
        .await,
        400,
    );
    // 415 wrong / missing content type
    assert_problem(
        &app.send(raw(
            Method::POST,
            "/api/v1/patients",
            Some("text/plain"),
            "{}",
        ))
        .await,
        415,
    );
    assert_problem(
        &app.send(raw(Method::POST, "/api/v1/patients", None, "{}"))
            .await,
        415,
    );
    // 422 wrong shape: missing field, wrong type, unknown field
    let r = app
        .send(raw(
            Method::POST,
            "/api/v1/patients",
            Some("application/json"),
            "{}",
        ))
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.json["errors"][0]["field"], "mrn");
    let r = app
        .send(raw(
            Method::POST,
            "/api/v1/auth/login",
            Some("application/json"),
            "{\"email\": 5, \"password\": \"x\"}",
        ))
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.json["errors"][0]["field"], "email");
    let r = app
        .send(raw(
            Method::POST,
            "/api/v1/patients/00000000-0000-0000-0000-000000000000/care-team",
            Some("application/json"),
            "{\"user_id\": \"x\", \"nope\": 1}",
        ))
        .await;
    assert_problem(&r, 422);
    // 413 body too large
    let big = format!("{{\"mrn\": \"{}\"}}", "x".repeat(300 * 1024));
    assert_problem(
        &app.send(raw(
            Method::POST,
            "/api/v1/patients",
            Some("application/json"),
            &big,
        ))
        .await,
        413,
    );
    // 400 bad path parameter, 404 unknown route, 405 wrong method
    assert_problem(
        &app.send(raw(Method::GET, "/api/v1/patients/not-a-uuid", None, ""))
            .await,
        400,
    );
    assert_problem(
        &app.send(raw(Method::GET, "/api/v1/nothing-here", None, ""))
            .await,
        404,
    );
    assert_problem(
        &app.send(raw(Method::PUT, "/api/v1/patients", None, ""))
            .await,
        405,
    );
    // 422 bad query parameter, named in `errors` (like a parameter the handler refuses)
    let r = app
        .send(raw(
            Method::GET,
            "/api/v1/patients?birth_date=yesterday&family_name=x",
            None,
            "",
        ))
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.json["errors"][0]["field"], "birth_date", "{}", r.text);
    // 401 without a token
    let r = app.call(Method::GET, "/api/v1/patients", None, None).await;
    assert_problem(&r, 401);
}

#[sqlx::test]
async fn internal_errors_hide_sql(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let id = create_patient(&app, &doc, "internal").await;
    sqlx::query("ALTER TABLE care_team RENAME TO care_team_gone")
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app.get(&format!("/api/v1/patients/{id}"), &doc.token).await;
    assert_problem(&r, 500);
    let lower = r.text.to_lowercase();
    for leak in [
        "select",
        "care_team",
        "relation",
        "sqlx",
        "internal/",
        "panicked",
        "givenname",
    ] {
        assert!(!lower.contains(leak), "{leak} leaked: {}", r.text);
    }
}

#[sqlx::test]
async fn request_id_and_security_headers(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let req = Request::builder()
        .uri("/health/live")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    // invalid incoming ids are replaced
    let req = Request::builder()
        .uri("/health/live")
        .header("x-request-id", "bad id with spaces")
        .body(Body::empty())
        .unwrap();
    let r = app.send(req).await;
    let id = r.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    for (h, v) in [
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(r.header(h), Some(v), "{h}");
    }
    assert!(r
        .header("strict-transport-security")
        .unwrap()
        .contains("max-age="));
}

#[sqlx::test]
async fn cors_allow_list(pool: PgPool) {
    let mut cfg = test_config();
    cfg.cors_allowed_origins = vec!["https://ehr.example".parse().unwrap()];
    let app = TestApp::with_config(pool, cfg).await;
    let pre = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/v1/patients")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .body(Body::empty())
            .unwrap()
    };
    let ok = app.send(pre("https://ehr.example")).await;
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://ehr.example")
    );
    let no = app.send(pre("https://evil.example")).await;
    assert_eq!(no.header("access-control-allow-origin"), None);
}

#[sqlx::test]
async fn health_metrics_compliance(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let id = create_patient(&app, &doc, "metrics").await;
    assert_eq!(
        app.get(&format!("/api/v1/patients/{id}"), &doc.token)
            .await
            .status,
        200
    );

    let r = app.call(Method::GET, "/health/live", None, None).await;
    assert_eq!(r.json["status"], "ok");
    for path in ["/health/ready", "/health"] {
        let r = app.call(Method::GET, path, None, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["status"], "ready", "{}", r.text);
        assert_eq!(r.json["postgres"], "ok");
        assert_eq!(r.json["redis"], "ok");
        assert_eq!(r.json["migrations"], "ok");
    }
    // admin endpoints are not on the public router
    assert_problem(&app.call(Method::GET, "/metrics", None, None).await, 404);
    assert_problem(
        &app.call(Method::GET, "/internal/compliance", None, None)
            .await,
        404,
    );

    let m = app.admin_get("/metrics").await;
    assert_eq!(m.status, 200);
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "patient_operations_total",
        "appointment_bookings_total",
        "prescriptions_created_total",
        "active_sessions",
        "db_pool_connections",
        "audit_events_total",
        "audit_write_failures_total",
        "phi_access_denied_total",
        "rate_limited_total",
        "break_glass_access_total",
    ] {
        assert!(
            m.text.contains(&format!("# TYPE {name} ")),
            "metric {name} missing"
        );
    }
    assert!(
        m.text.contains("route=\"/api/v1/patients/{id}\""),
        "route label is the template"
    );
    assert!(!m.text.contains(&id), "raw ids never appear in labels");
    assert!(m.text.contains("patient_operations_total{op=\"read\"} 1"));
    assert!(m.text.contains("active_sessions 1"));
    // the workers' own connections (session check, patient read, audit writer at least; other
    // tests in this process may hold more) are counted beside the pool's
    let workers: i64 = m
        .text
        .lines()
        .find_map(|l| l.strip_prefix("db_pool_connections{state=\"worker\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("db_pool_connections{state=\"worker\"}");
    assert!(workers >= 3, "worker connections: {workers}");

    let c = app.admin_get("/internal/compliance").await;
    assert_eq!(c.status, 200);
    let j = &c.json;
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
    assert!(j["schema_version"].as_i64().unwrap() >= 4);
    assert_eq!(j["encryption"]["active"], true);
    assert_eq!(
        j["encryption"]["active_key_id"],
        app.state.keys.active_key_id()
    );
    assert_eq!(j["encryption"]["key_ids"], json!(app.state.keys.key_ids()));
    assert_eq!(j["audit"]["chain_head_id"], 2);
    assert_eq!(j["audit"]["chain_head_hash"].as_str().unwrap().len(), 64);
    assert_eq!(j["audit"]["write_failures"], 0);
    assert_eq!(j["audit"]["retention_days"], 2190);
    assert_eq!(
        j["sessions"],
        json!({"idle_timeout_minutes": 15, "access_token_ttl_minutes": 15})
    );
    assert_eq!(
        j["rate_limit"],
        json!({"enabled": true, "backend": "redis", "requests_per_minute": 100000, "login_attempts_per_minute": 10000})
    );
    assert_eq!(j["database_tls"], false);
    assert_eq!(j["cache"], json!({"configured": true, "reachable": true}));

    let d = app.admin_get("/health/detailed").await;
    assert_eq!(d.json["components"]["postgres"]["status"], "ok");
    assert_eq!(
        d.json["encryption"]["active_key_id"],
        app.state.keys.active_key_id()
    );
    assert_eq!(d.json["audit"]["chain_head_id"], 2);
    assert!(!d.text.contains("base64"), "no key material");
}

#[sqlx::test]
async fn openapi_document_and_docs_page(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let r = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/auth/login",
        "/api/v1/patients/{id}",
        "/api/v1/patients/{id}/care-team",
        "/api/v1/audit-events/verify",
        "/api/v1/users/{id}",
        "/api/v1/me",
    ] {
        assert!(
            r.json["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    assert!(r.json["components"]["securitySchemes"]["bearer"].is_object());
    let d = app.call(Method::GET, "/api/v1/docs", None, None).await;
    assert_eq!(d.status, 200);
    assert!(d.header("content-type").unwrap().starts_with("text/html"));
    assert!(d.text.contains("openapi.json") && !d.text.contains("https://cdn"));
}

#[sqlx::test]
async fn rate_limit_shared_by_two_instances(pool: PgPool) {
    let mut cfg = test_config();
    cfg.rate_limit_per_minute = 4;
    let prefix = cfg.redis_key_prefix.clone();
    let a = TestApp::with_config(pool.clone(), cfg).await;
    let mut cfg = test_config();
    cfg.rate_limit_per_minute = 4;
    cfg.redis_key_prefix = prefix;
    let b = TestApp::with_config(pool, cfg).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let app = if i % 2 == 0 { &a } else { &b };
        let r = app
            .call(Method::GET, "/api/v1/openapi.json", None, None)
            .await;
        statuses.push(r.status);
        if i < 4 {
            assert_eq!(r.header("ratelimit-limit"), Some("4"));
            assert_eq!(
                r.header("ratelimit-remaining"),
                Some((3 - i).to_string().as_str()),
                "request {i}"
            );
        } else {
            assert_problem(&r, 429);
            let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=16).contains(&retry), "{retry}");
            assert!(r.header("ratelimit-reset").is_some());
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 429]);
    assert_eq!(b.state.metrics.rate_limited_total.get(), 0);
    assert_eq!(a.state.metrics.rate_limited_total.get(), 1);
    // another client IP has its own bucket
    let mut other = b.clone();
    other.client_ip = [10, 0, 0, 9].into();
    assert_eq!(
        other
            .call(Method::GET, "/api/v1/openapi.json", None, None)
            .await
            .status,
        200
    );
}

#[sqlx::test]
async fn login_is_limited_more_strictly(pool: PgPool) {
    let mut cfg = test_config();
    cfg.login_rate_limit_per_minute = 2;
    let app = TestApp::with_config(pool, cfg).await;
    let body = json!({"email": "nobody@test.example", "password": "whatever password"});
    for _ in 0..2 {
        assert_eq!(
            app.call(Method::POST, "/api/v1/auth/login", None, Some(body.clone()))
                .await
                .status,
            401
        );
    }
    let r = app
        .call(Method::POST, "/api/v1/auth/login", None, Some(body))
        .await;
    assert_problem(&r, 429);
    assert!(r.header("retry-after").is_some());
    // other routes still work for this client
    assert_eq!(
        app.call(Method::GET, "/api/v1/openapi.json", None, None)
            .await
            .status,
        200
    );
}

/// IPv6 clients are limited by their /64: a new address from the same /64 does not get a new
/// allowance; another /64 does.
#[sqlx::test]
async fn ipv6_clients_are_limited_per_64(pool: PgPool) {
    let mut cfg = test_config();
    cfg.login_rate_limit_per_minute = 2;
    let mut app = TestApp::with_config(pool, cfg).await;
    let body = json!({"email": "nobody@test.example", "password": "whatever password"});
    for host in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        app.client_ip = host.parse().unwrap();
        let r = app
            .call(Method::POST, "/api/v1/auth/login", None, Some(body.clone()))
            .await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    app.client_ip = "2001:db8:1:2:ffff:1234:5678:9abc".parse().unwrap();
    let r = app
        .call(Method::POST, "/api/v1/auth/login", None, Some(body.clone()))
        .await;
    assert_problem(&r, 429);
    app.client_ip = "2001:db8:1:3::1".parse().unwrap();
    let r = app
        .call(Method::POST, "/api/v1/auth/login", None, Some(body))
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[sqlx::test]
async fn local_fallback_when_redis_is_down(pool: PgPool) {
    let mut cfg = test_config();
    cfg.redis_url = Some("redis://127.0.0.1:1".into());
    cfg.rate_limit_per_minute = 3;
    let app = TestApp::with_config(pool, cfg).await;
    let r = app.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "degraded");
    assert_eq!(r.json["redis"], "down");
    // the self-report tells the operator what readiness cannot: Redis does not answer
    let c = app.admin_get("/internal/compliance").await;
    assert_eq!(c.status, 200);
    assert_eq!(
        c.json["cache"],
        json!({"configured": true, "reachable": false})
    );
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                app.call(Method::GET, "/api/v1/openapi.json", None, None)
                    .await
                    .status,
            );
        }
        v
    };
    // neither open nor closed: the local limiter enforces the same limit
    assert_eq!(statuses, vec![200, 200, 200, 429]);
}

#[sqlx::test]
async fn compliance_reports_no_cache_when_redis_is_not_configured(pool: PgPool) {
    let mut cfg = test_config();
    cfg.redis_url = None;
    let app = TestApp::with_config(pool, cfg).await;
    let c = app.admin_get("/internal/compliance").await;
    assert_eq!(c.status, 200);
    assert_eq!(
        c.json["cache"],
        json!({"configured": false, "reachable": false})
    );
    assert_eq!(c.json["rate_limit"]["backend"], "local");
}

#[sqlx::test]
async fn key_rotation_reencrypts_everything(pool: PgPool) {
    use base64::Engine as _;
    let b64 = |k: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
    let ring = |active: &str, keys: serde_json::Value| {
        KeyRing::from_json(&json!({"version": 1, "active_key_id": active, "keys": keys, "blind_index_key": b64([5; 32])}).to_string()).unwrap()
    };
    let old = ring("k-old", json!({"k-old": b64([1; 32])}));
    let both = ring(
        "k-new",
        json!({"k-old": b64([1; 32]), "k-new": b64([2; 32])}),
    );
    let new_only = ring("k-new", json!({"k-new": b64([2; 32])}));

    let mut cfg = test_config();
    cfg.phi_keys = std::sync::Arc::new(old);
    let app = TestApp::with_config(pool.clone(), cfg).await;
    let doc = app.user(Role::Physician).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(create_patient(&app, &doc, &format!("rot{i}")).await);
    }
    let before: Vec<u8> = sqlx::query_scalar("SELECT given_name FROM patients WHERE id = $1::uuid")
        .bind(&ids[0])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(KeyRing::key_id_of(&before).unwrap(), "k-old");

    // batches of 3: progress is reported per batch; a second run has nothing left to do
    let mut batches = 0;
    let report = caduceus_api::rotate::rotate_keys(&pool, &both, 3, |_, _| batches += 1)
        .await
        .unwrap();
    // 7 patients (3 batches) + the physician's account e-mail (1 batch)
    assert_eq!(report.total(), 8);
    assert_eq!(batches, 4);
    assert!(report.rows.contains(&("users", 1)), "{report:?}");
    assert_eq!(
        caduceus_api::rotate::rotate_keys(&pool, &both, 3, |_, _| {})
            .await
            .unwrap()
            .total(),
        0
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM patients WHERE phi_key_id <> 'k-new'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let after: Vec<u8> = sqlx::query_scalar("SELECT given_name FROM patients WHERE id = $1::uuid")
        .bind(&ids[0])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(KeyRing::key_id_of(&after).unwrap(), "k-new");

    // the old key can now be retired: an app holding only the new key reads and searches everything
    let mut cfg = test_config();
    cfg.phi_keys = std::sync::Arc::new(new_only);
    let app2 = TestApp::with_config(pool, cfg).await;
    let (_, token) = app2.session_for(doc.id, Role::Physician).await;
    let r = app2
        .get(&format!("/api/v1/patients/{}", ids[0]), &token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["given_name"], "Givennamerot0");
    let r = app2.get("/api/v1/patients?mrn=MRN-rot6", &token).await;
    assert_eq!(r.json["items"][0]["id"], ids[6].as_str());
    // the account e-mail too: decrypts under the new key, and login (blind index) still works
    let user_key: String = sqlx::query_scalar("SELECT phi_key_id FROM users WHERE id = $1")
        .bind(doc.id)
        .fetch_one(&app2.pool)
        .await
        .unwrap();
    assert_eq!(user_key, "k-new");
    assert_eq!(
        app2.get("/api/v1/me", &token).await.json["email"],
        doc.email
    );
    assert_eq!(
        app2.login(&doc.email, caduceus_api::testing::TEST_PASSWORD)
            .await
            .status,
        200
    );
}

#[sqlx::test]
async fn per_user_limit_spans_client_ips(pool: PgPool) {
    let mut cfg = test_config();
    cfg.rate_limit_per_minute = 3;
    let app = TestApp::with_config(pool, cfg).await;
    let user = app.user(Role::Nurse).await;
    let mut from_b = app.clone();
    from_b.client_ip = [10, 1, 2, 3].into();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let a = if i % 2 == 0 { &app } else { &from_b };
        statuses.push(a.get("/api/v1/me", &user.token).await.status);
    }
    // each IP made only two requests; the user's own bucket (3/min) refuses the fourth
    assert_eq!(statuses, vec![200, 200, 200, 429]);
}

#[tokio::test]
async fn not_ready_when_postgres_is_down() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let app = TestApp::with_config(pool, test_config()).await;
    let r = app.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["status"], "unavailable");
    assert_eq!(r.json["postgres"], "down");
    assert_eq!(
        app.call(Method::GET, "/health/live", None, None)
            .await
            .status,
        200
    );
    // authenticated requests cannot be checked against the session table: 503, not a guess
    let token = caduceus_api::auth::tokens::issue_access(
        &app.state.config.jwt_key,
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        "admin",
        60,
    )
    .unwrap();
    assert_problem(&app.get("/api/v1/me", &token).await, 503);
}

#[sqlx::test]
async fn panics_become_problem_500(pool: PgPool) {
    use tower::ServiceExt;
    let app = TestApp::new(pool).await;
    let boom = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            panic!("Givenname-in-a-panic");
            #[allow(unreachable_code)]
            ""
        }),
    );
    let router = caduceus_api::with_common_layers(boom, &app.state).with_state(app.state.clone());
    let resp = router
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(resp.headers().contains_key("x-request-id"));
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("Givenname"), "{text}");
    assert!(text.contains("\"status\":500"), "{text}");
}

#[sqlx::test]
async fn hung_redis_costs_one_timeout_not_one_per_request(pool: PgPool) {
    // a "Redis" that accepts connections and never answers
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = test_config();
    cfg.redis_url = Some(format!("redis://{}", silent.local_addr().unwrap()));
    let app = TestApp::with_config(pool, cfg).await;
    let t = std::time::Instant::now();
    for _ in 0..8 {
        let r = app
            .call(Method::GET, "/api/v1/openapi.json", None, None)
            .await;
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit-remaining").is_some());
    }
    // one 250 ms Redis timeout, then the circuit breaker uses the local limiter directly
    assert!(
        t.elapsed() < std::time::Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    assert!(app.state.limiter.degraded());
    drop(silent);
}

/// `CADUCEUS_TRUSTED_PROXIES`: `X-Forwarded-For` decides the client IP (audit `client_ip`, rate
/// limit bucket) only when the direct peer is a trusted proxy.
#[sqlx::test]
async fn forwarded_for_is_trusted_only_from_trusted_proxies(pool: PgPool) {
    let mut cfg = test_config();
    cfg.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    cfg.rate_limit_per_minute = 2;
    let mut via_proxy = TestApp::with_config(pool, cfg).await;
    via_proxy.client_ip = [10, 0, 0, 2].into();
    let mut direct = via_proxy.clone();
    direct.client_ip = [198, 51, 100, 7].into();
    let req = |xff: &str| {
        axum::http::Request::builder()
            .uri("/api/v1/auth/login")
            .method("POST")
            .header("content-type", "application/json")
            .header("x-forwarded-for", xff)
            .body(axum::body::Body::from(
                json!({"email": "nobody@test.example", "password": "wrong password"}).to_string(),
            ))
            .unwrap()
    };
    let failures_from = |ip: &'static str| {
        let pool = via_proxy.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM audit_events WHERE action = 'auth.login_failed' AND client_ip = $1",
            )
            .bind(ip)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // trusted peer: the rightmost untrusted address is the client (the spoofed one left of it is not)
    let r = via_proxy.send(req("6.6.6.6, 203.0.113.9, 10.1.1.1")).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(failures_from("203.0.113.9").await, 1);
    // untrusted peer: the header is ignored
    let r = direct.send(req("203.0.113.50")).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(failures_from("198.51.100.7").await, 1);
    assert_eq!(failures_from("203.0.113.50").await, 0);
    assert_eq!(failures_from("6.6.6.6").await, 0);

    // rate limit (2 per minute per client IP): behind the proxy every client has its own bucket
    let get = |xff: &str| {
        axum::http::Request::builder()
            .uri("/api/v1/openapi.json")
            .header("x-forwarded-for", xff)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let mut statuses = Vec::new();
    for xff in ["192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2"] {
        statuses.push(via_proxy.send(get(xff)).await.status);
    }
    assert_eq!(statuses, vec![200, 200, 429, 200]);
    // a direct client cannot escape its bucket by inventing X-Forwarded-For values (its first
    // request above already used one of its two)
    let mut statuses = Vec::new();
    for xff in ["192.0.2.3", "192.0.2.4"] {
        statuses.push(direct.send(get(xff)).await.status);
    }
    assert_eq!(statuses, vec![200, 429]);
}

/// A NUL character in any text that would reach the database — a query parameter, the login
/// e-mail, a body string at any depth — is a 422 naming the field, never a 500 (Postgres refuses
/// NUL in text with SQLSTATE 22021).
#[sqlx::test]
async fn nul_characters_are_refused_naming_the_field(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let rec = app.user(Role::Receptionist).await;
    let field_of = |r: &caduceus_api::testing::TestResponse| {
        assert_problem(r, 422);
        assert_eq!(
            r.json["errors"][0]["message"], "must not contain NUL characters",
            "{}",
            r.text
        );
        r.json["errors"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let r = app
        .get("/api/v1/audit-events?action=auth.login%00x", &admin.token)
        .await;
    assert_eq!(field_of(&r), "action");
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "a\u{0}b@test.example", "password": "whatever password"})),
        )
        .await;
    assert_eq!(field_of(&r), "email");
    let r = app
        .post(
            "/api/v1/users",
            &admin.token,
            json!({"email": "nul@test.example", "password": "a long enough password",
                   "role": "nurse", "display_name": "Nurse \u{0}Nul"}),
        )
        .await;
    assert_eq!(field_of(&r), "display_name");
    let mut body = common::patient_body("nul");
    body["emergency_contact"]["name"] = json!("Con\u{0}tact");
    let r = app.post("/api/v1/patients", &rec.token, body).await;
    assert_eq!(field_of(&r), "emergency_contact.name");
    let mut body = common::patient_body("nul2");
    body["allergies"] = json!(["ok", "pea\u{0}nut"]);
    let r = app.post("/api/v1/patients", &rec.token, body).await;
    assert_eq!(field_of(&r), "allergies[1]");
    // the text "\\u0000" (a backslash, then u0000) is not a NUL
    let r = app
        .post(
            "/api/v1/users",
            &admin.token,
            json!({"email": "backslash@test.example", "password": "a long enough password",
                   "role": "nurse", "display_name": "Back\\u0000slash"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// `/health/ready` answers from a check at most a second old: a flood of probes costs one check
/// per second (no pool connection per probe); a change shows after the second.
#[sqlx::test]
async fn readiness_is_answered_from_a_one_second_cache(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let r = app.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["migrations"], "ok");
    // a migration goes missing: the cached answer stands for up to a second
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let probes = (0..50).map(|_| app.call(Method::GET, "/health/ready", None, None));
    for r in futures::future::join_all(probes).await {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = app.call(Method::GET, "/health", None, None).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["migrations"], "pending");
}

/// Probes are rate limited per client address, generously: a burst of 100 (far more than any
/// kubelet sends) passes, a flood beyond it gets 429 problems; other clients are not affected.
#[sqlx::test]
async fn probes_are_rate_limited_per_client(pool: PgPool) {
    let mut app = TestApp::new(pool).await;
    app.client_ip = [10, 1, 2, 3].into();
    for i in 0..caduceus_api::ratelimit::PROBE_BURST {
        let uri = if i % 2 == 0 {
            "/health/live"
        } else {
            "/health/ready"
        };
        let r = app.call(Method::GET, uri, None, None).await;
        assert_eq!(r.status, 200, "probe {i}: {}", r.text);
    }
    let r = app.call(Method::GET, "/health/live", None, None).await;
    assert_problem(&r, 429);
    assert!(r.header("retry-after").is_some());
    let mut kubelet = app.clone();
    kubelet.client_ip = [10, 9, 9, 9].into();
    assert_eq!(
        kubelet
            .call(Method::GET, "/health/ready", None, None)
            .await
            .status,
        200
    );
}

//! Rate limiting shared by all replicas through Redis, with a local fallback.
//!
//! Algorithm: GCRA (generic cell rate algorithm), executed atomically in Redis by a Lua script
//! ([`GCRA_SCRIPT`], Redis server time, so replicas agree). Limits are per minute with a burst of
//! the full minute's allowance. Keys: `<prefix>rl:ip:<ip>`, `<prefix>rl:user:<user id>` and, for
//! `POST /auth/login`, `<prefix>rl:login:<ip>` with the stricter login limit.
//!
//! When Redis does not answer (timeout 250 ms), the same limits are enforced per process by
//! `governor` (GCRA in memory), `/health/ready` reports `degraded`, and the Redis path is retried
//! on the next request. Requests are never let through unlimited and never refused wholesale.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use redis::aio::ConnectionManager;

use crate::error::Error;
use crate::state::AppState;

/// GCRA over several buckets in one round trip. KEYS = buckets, ARGV[i] = limit per minute of
/// KEYS[i]. A request is admitted only if every bucket admits it (then all are charged).
/// Returns {allowed (0/1), limit, remaining, retry_after_ms, reset_ms} of the tightest bucket.
pub const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = 60000
local best = nil
local new_tats = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i])
  local interval = period / limit
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - period
  if now < allow_at then
    return {0, limit, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
  end
  new_tats[i] = new_tat
  local remaining = math.floor((period - (new_tat - now)) / interval)
  if best == nil or remaining < best[3] then
    best = {1, limit, remaining, 0, math.ceil(new_tat - now)}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tostring(new_tats[i]), 'PX', math.ceil(new_tats[i] - now) + 1000)
end
return best
"#;

/// After a Redis failure, use the local limiter for this long before trying Redis again.
const REDIS_RETRY_AFTER_MS: u64 = 5_000;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type LocalLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Result of one limit check.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    pub retry_after_secs: u64,
    pub reset_secs: u64,
}

/// The limiter: Redis when available, otherwise per-process GCRA.
pub struct Limiter {
    redis: Option<ConnectionManager>,
    prefix: String,
    script: redis::Script,
    redis_healthy: AtomicBool,
    /// Unix ms until which Redis is not tried again after a failure (circuit breaker), so an
    /// outage costs one timeout per few seconds, not one per request.
    redis_retry_at_ms: AtomicU64,
    general: LocalLimiter,
    login: LocalLimiter,
    general_limit: u32,
    login_limit: u32,
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
}

impl Limiter {
    pub fn new(
        redis: Option<ConnectionManager>,
        prefix: &str,
        per_minute: u32,
        login_per_minute: u32,
    ) -> Self {
        Self {
            redis_healthy: AtomicBool::new(redis.is_some()),
            redis_retry_at_ms: AtomicU64::new(0),
            redis,
            prefix: prefix.to_string(),
            script: redis::Script::new(GCRA_SCRIPT),
            general: RateLimiter::keyed(quota(per_minute)).with_middleware(),
            login: RateLimiter::keyed(quota(login_per_minute)).with_middleware(),
            general_limit: per_minute,
            login_limit: login_per_minute,
        }
    }

    /// "redis" or "local".
    pub fn backend(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "local"
        }
    }

    /// Redis is configured but the last call failed.
    pub fn degraded(&self) -> bool {
        self.redis.is_some() && !self.redis_healthy.load(Ordering::Relaxed)
    }

    async fn check_redis(
        &self,
        conn: &ConnectionManager,
        buckets: &[(String, bool)],
    ) -> Option<Decision> {
        let mut conn = conn.clone();
        let mut inv = self.script.prepare_invoke();
        for (key, login) in buckets {
            inv.key(format!("{}rl:{key}", self.prefix));
            inv.arg(if *login {
                self.login_limit
            } else {
                self.general_limit
            });
        }
        let fut = inv.invoke_async::<(i64, i64, i64, i64, i64)>(&mut conn);
        match tokio::time::timeout(Duration::from_millis(250), fut).await {
            Ok(Ok((allowed, limit, remaining, retry_ms, reset_ms))) => {
                self.redis_healthy.store(true, Ordering::Relaxed);
                self.redis_retry_at_ms.store(0, Ordering::Relaxed);
                Some(Decision {
                    allowed: allowed == 1,
                    limit: limit.max(0) as u32,
                    remaining: remaining.max(0) as u32,
                    retry_after_secs: (retry_ms.max(0) as u64).div_ceil(1000),
                    reset_secs: (reset_ms.max(0) as u64).div_ceil(1000),
                })
            }
            _ => {
                self.redis_retry_at_ms
                    .store(unix_ms() + REDIS_RETRY_AFTER_MS, Ordering::Relaxed);
                if self.redis_healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "redis unavailable; rate limiting falls back to the local limiter"
                    );
                }
                None
            }
        }
    }

    fn check_local(&self, key: &str, login: bool) -> Decision {
        let (limiter, limit) = if login {
            (&self.login, self.login_limit)
        } else {
            (&self.general, self.general_limit)
        };
        match limiter.check_key(&key.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let per = 60.0 / f64::from(limit);
                Decision {
                    allowed: true,
                    limit,
                    remaining,
                    retry_after_secs: 0,
                    reset_secs: (f64::from(limit - remaining.min(limit)) * per).ceil() as u64,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    retry_after_secs: wait.as_secs() + 1,
                    reset_secs: wait.as_secs() + 1,
                }
            }
        }
    }

    /// Check several buckets (`true` = login limit) at once; the tightest decision wins.
    pub async fn check(&self, buckets: &[(String, bool)]) -> Decision {
        if let Some(conn) = &self.redis {
            if unix_ms() >= self.redis_retry_at_ms.load(Ordering::Relaxed) {
                if let Some(d) = self.check_redis(conn, buckets).await {
                    return d;
                }
            }
        }
        let mut tightest: Option<Decision> = None;
        for (key, login) in buckets {
            let d = self.check_local(key, *login);
            let replace = match &tightest {
                None => true,
                Some(t) => {
                    (!d.allowed && t.allowed)
                        || (d.allowed == t.allowed && d.remaining < t.remaining)
                }
            };
            if replace {
                tightest = Some(d);
            }
            if !d.allowed {
                break;
            }
        }
        tightest.unwrap_or(Decision {
            allowed: true,
            limit: self.general_limit,
            remaining: self.general_limit,
            retry_after_secs: 0,
            reset_secs: 0,
        })
    }

    /// Ping Redis (for readiness).
    pub async fn ping(&self) -> Option<bool> {
        let conn = self.redis.as_ref()?;
        let mut conn = conn.clone();
        let cmd = redis::cmd("PING");
        let fut = cmd.query_async::<String>(&mut conn);
        let ok = matches!(
            tokio::time::timeout(Duration::from_millis(500), fut).await,
            Ok(Ok(_))
        );
        self.redis_healthy.store(ok, Ordering::Relaxed);
        if ok {
            self.redis_retry_at_ms.store(0, Ordering::Relaxed);
        }
        Some(ok)
    }
}

fn set_headers(headers: &mut HeaderMap, d: &Decision) {
    for (name, value) in [
        ("ratelimit-limit", d.limit as u64),
        ("ratelimit-remaining", d.remaining as u64),
        ("ratelimit-reset", d.reset_secs),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            headers.insert(name, v);
        }
    }
}

/// Middleware on the `/api/v1` router.
pub async fn limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let limiter: Arc<Limiter> = state.limiter.clone();
    let ip = crate::middleware::client_ip(req.extensions());
    let mut buckets = vec![(format!("ip:{ip}"), false)];
    if req.method() == Method::POST && req.uri().path().ends_with("/auth/login") {
        buckets.push((format!("login:{ip}"), true));
    }
    if let Some(claims) = crate::auth::bearer_claims(&state, req.headers()) {
        buckets.push((format!("user:{}", claims.sub), false));
        // verified once here; the AuthUser extractor reuses it
        req.extensions_mut()
            .insert(crate::auth::VerifiedBearer(claims));
    }
    let decision = limiter.check(&buckets).await;
    if !decision.allowed {
        state.metrics.rate_limited_total.inc();
        let mut resp = Error::RateLimited {
            retry_after_secs: decision.retry_after_secs.max(1),
        }
        .into_response();
        set_headers(resp.headers_mut(), &decision);
        return resp;
    }
    let mut resp = next.run(req).await;
    set_headers(resp.headers_mut(), &decision);
    resp
}

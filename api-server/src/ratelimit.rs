//! Rate limiting shared by all replicas through Redis, with a local fallback. The [`Limiter`]
//! lives in the state; [`crate::middleware::rate_limit`] applies it to the `/api/v1` router.
//!
//! Algorithm: GCRA (generic cell rate algorithm), executed atomically in Redis by a Lua script
//! ([`GCRA_SCRIPT`], Redis server time, so replicas agree). Concurrent requests are decided by one
//! script call per group ([`redis_worker`]), exactly as one call each would decide them. Limits are per minute with a burst of
//! the full minute's allowance. Keys: `<prefix>rl:ip:<ip>`, `<prefix>rl:user:<user id>` and, for
//! `POST /auth/login`, `<prefix>rl:login:<ip>` with the stricter login limit; break-glass openings
//! have their own hourly bucket per user, `<prefix>rl:break-glass:<user id>`
//! ([`Limiter::check_break_glass`], [`BREAK_GLASS_PER_HOUR`]). An IPv6 client is
//! counted by its /64 ([`ip_bucket`]): one host usually holds a whole /64 and can pick a fresh
//! address for every request.
//!
//! When Redis does not answer (timeout 250 ms), the same limits are enforced per process by
//! `governor` (GCRA in memory), `/health/ready` reports `degraded`, and the Redis path is retried
//! on the next request. Requests are never let through unlimited and never refused wholesale.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

/// The part of a client address a per-IP bucket is keyed by: an IPv4 address (also when written
/// as IPv4-mapped IPv6) as it is, an IPv6 address by its /64 network (`2001:db8:1:2::/64`).
pub fn ip_bucket(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

/// GCRA for a group of requests in one round trip (see [`Limiter::check`]).
///
/// `ARGV[1]` = n requests; `ARGV[1 + r]` = how many buckets request r has; then one limit per
/// minute for every key, in `KEYS` order (request 1's buckets first). Requests are decided in
/// order, exactly as n separate calls would be: a request is admitted only if every one of its
/// buckets admits it, and then all of them are charged; a refused request charges nothing. A key
/// shared by several requests (one user's concurrent calls) is read once and written once.
/// Returns, per request, {allowed (0/1), limit, remaining, retry_after_ms, reset_ms} of its
/// tightest bucket.
pub const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = 60000
local n = tonumber(ARGV[1])
local tat = {}
local order = {}
local out = {}
local k = 0
for r = 1, n do
  local c = tonumber(ARGV[1 + r])
  local best = nil
  local denied = nil
  local new_tats = {}
  for j = 1, c do
    local key = KEYS[k + j]
    local limit = tonumber(ARGV[1 + n + k + j])
    local interval = period / limit
    local cur = tat[key]
    if cur == nil then
      cur = tonumber(redis.call('GET', key) or now)
      tat[key] = cur
    end
    if cur < now then cur = now end
    local new_tat = cur + interval
    local allow_at = new_tat - period
    if now < allow_at then
      denied = {0, limit, 0, math.ceil(allow_at - now), math.ceil(cur - now)}
      break
    end
    new_tats[j] = new_tat
    local remaining = math.floor((period - (new_tat - now)) / interval)
    if best == nil or remaining < best[3] then
      best = {1, limit, remaining, 0, math.ceil(new_tat - now)}
    end
  end
  if denied == nil then
    for j = 1, c do
      local key = KEYS[k + j]
      if order[key] == nil then
        order[key] = true
        order[#order + 1] = key
      end
      tat[key] = new_tats[j]
    end
  end
  local d = denied or best or {1, 0, 0, 0, 0}
  for i = 1, 5 do out[#out + 1] = d[i] end
  k = k + c
end
for _, key in ipairs(order) do
  local v = tat[key]
  redis.call('SET', key, tostring(v), 'PX', math.ceil(v - now) + 1000)
end
return out
"#;

/// GCRA for one bucket with its own period: `KEYS[1]`, `ARGV[1]` = limit per period,
/// `ARGV[2]` = period in ms (burst: the whole period's allowance). Returns {allowed (0/1),
/// remaining, retry_after_ms, reset_ms}. Used for the rare, hourly break-glass bucket.
pub const PERIOD_GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / limit
local cur = tonumber(redis.call('GET', KEYS[1]) or now)
if cur < now then cur = now end
local new_tat = cur + interval
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(cur - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return {1, math.floor((period - (new_tat - now)) / interval), 0, math.ceil(new_tat - now)}
"#;

/// Break-glass openings allowed per user and hour (shared by the replicas through Redis): a
/// request that opens a record through `X-Break-Glass-Reason` beyond it is refused with `429`
/// (audited, counted in `break_glass_refused_total`).
pub const BREAK_GLASS_PER_HOUR: u32 = 20;

/// Most requests decided by one Redis call.
const MAX_GROUP: usize = 256;

/// How long one grouped Redis call may take before its requests use the local limiter.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// One request's buckets (full Redis key, limit per minute), queued for the next Redis call.
struct Pending {
    buckets: Vec<(String, u32)>,
    reply: oneshot::Sender<Option<Decision>>,
}

/// The Redis side of the limiter: every request that arrives while a call is in flight is
/// decided by the next call, [`GCRA_SCRIPT`] over the whole group. Under load this is one
/// round trip and one script run for many requests instead of one each (and one read and write
/// per distinct bucket); an idle limiter sends a lone request at once. A failed or timed-out call
/// answers `None` to each of its requests, which then use the local limiter.
async fn redis_worker(
    mut conn: ConnectionManager,
    script: redis::Script,
    mut rx: mpsc::Receiver<Pending>,
    calls: Arc<AtomicU64>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        calls.fetch_add(1, Ordering::Relaxed);
        let mut inv = script.prepare_invoke();
        inv.arg(group.len());
        for p in &group {
            inv.arg(p.buckets.len());
        }
        for p in &group {
            for (key, limit) in &p.buckets {
                inv.key(key.as_str());
                inv.arg(*limit);
            }
        }
        let call = inv.invoke_async::<Vec<i64>>(&mut conn);
        let flat = match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(flat)) if flat.len() == group.len() * 5 => Some(flat),
            _ => None,
        };
        for (i, p) in group.drain(..).enumerate() {
            let decision = flat.as_ref().map(|f| {
                let v = &f[i * 5..i * 5 + 5];
                Decision {
                    allowed: v[0] == 1,
                    limit: v[1].max(0) as u32,
                    remaining: v[2].max(0) as u32,
                    retry_after_secs: (v[3].max(0) as u64).div_ceil(1000),
                    reset_secs: (v[4].max(0) as u64).div_ceil(1000),
                }
            });
            // the request may have given up waiting; nothing to do then
            let _ = p.reply.send(decision);
        }
    }
}

/// Health probes (`/health/live`, `/health/ready`, `/health`) allowed per client address (IPv6:
/// per /64) and minute, per process. A kubelet probes each container every few seconds (at most
/// once a second per probe), far below this; a flood is refused with `429`.
pub const PROBES_PER_MINUTE: u32 = 600;
/// Probes one client may send at once before the per-minute rate applies.
pub const PROBE_BURST: u32 = 100;

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

/// A refusal of the local (`governor`) limiter.
type LocalRefusal = governor::NotUntil<<DefaultClock as Clock>::Instant>;

/// Whole seconds until a request refused by the local limiter may be retried (rounded up, at
/// least 1).
fn local_wait_secs(not_until: &LocalRefusal) -> u64 {
    not_until
        .wait_time_from(DefaultClock::default().now())
        .as_secs()
        + 1
}

impl Decision {
    /// A request of a bucket with `limit` refused by the local limiter: nothing remains, and it
    /// may be retried (and the bucket has room again) once `not_until` has passed.
    fn denied(limit: u32, not_until: &LocalRefusal) -> Self {
        let wait = local_wait_secs(not_until);
        Decision {
            allowed: false,
            limit,
            remaining: 0,
            retry_after_secs: wait,
            reset_secs: wait,
        }
    }
}

/// The limiter: Redis when available, otherwise per-process GCRA.
pub struct Limiter {
    /// For readiness pings.
    redis: Option<ConnectionManager>,
    /// Queue of the grouped Redis calls ([`redis_worker`]).
    redis_tx: Option<mpsc::Sender<Pending>>,
    /// Grouped Redis calls made so far.
    redis_calls: Arc<AtomicU64>,
    prefix: String,
    redis_healthy: AtomicBool,
    /// Unix ms until which Redis is not tried again after a failure (circuit breaker), so an
    /// outage costs one timeout per few seconds, not one per request.
    redis_retry_at_ms: AtomicU64,
    general: LocalLimiter,
    login: LocalLimiter,
    /// Health probes per client (per process, never Redis: a probe must not depend on it).
    probes: LocalLimiter,
    /// Break-glass openings per user when Redis does not answer.
    break_glass: LocalLimiter,
    /// [`PERIOD_GCRA_SCRIPT`].
    period_script: redis::Script,
    general_limit: u32,
    login_limit: u32,
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
}

impl Limiter {
    /// With Redis, spawns the task that makes the grouped Redis calls (needs a Tokio runtime).
    pub fn new(
        redis: Option<ConnectionManager>,
        prefix: &str,
        per_minute: u32,
        login_per_minute: u32,
    ) -> Self {
        let redis_calls = Arc::new(AtomicU64::new(0));
        let redis_tx = redis.as_ref().map(|conn| {
            let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
            tokio::spawn(redis_worker(
                conn.clone(),
                redis::Script::new(GCRA_SCRIPT),
                rx,
                redis_calls.clone(),
            ));
            tx
        });
        Self {
            redis_calls,
            redis_healthy: AtomicBool::new(redis.is_some()),
            redis_retry_at_ms: AtomicU64::new(0),
            redis,
            redis_tx,
            prefix: prefix.to_string(),
            general: RateLimiter::keyed(quota(per_minute)).with_middleware(),
            login: RateLimiter::keyed(quota(login_per_minute)).with_middleware(),
            probes: RateLimiter::keyed(
                quota(PROBES_PER_MINUTE)
                    .allow_burst(NonZeroU32::new(PROBE_BURST).unwrap_or(NonZeroU32::MIN)),
            )
            .with_middleware(),
            break_glass: RateLimiter::keyed(Quota::per_hour(
                NonZeroU32::new(BREAK_GLASS_PER_HOUR).unwrap_or(NonZeroU32::MIN),
            ))
            .with_middleware(),
            period_script: redis::Script::new(PERIOD_GCRA_SCRIPT),
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

    /// Grouped Redis calls made so far (each decides one or more requests).
    pub fn redis_calls(&self) -> u64 {
        self.redis_calls.load(Ordering::Relaxed)
    }

    /// Redis is configured but the last call failed.
    pub fn degraded(&self) -> bool {
        self.redis.is_some() && !self.redis_healthy.load(Ordering::Relaxed)
    }

    /// A Redis call failed or timed out: the local limiter decides until the retry time (circuit
    /// breaker); the first failure after Redis answered is logged.
    fn redis_failed(&self) {
        self.redis_retry_at_ms
            .store(unix_ms() + REDIS_RETRY_AFTER_MS, Ordering::Relaxed);
        if self.redis_healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!("redis unavailable; rate limiting falls back to the local limiter");
        }
    }

    async fn check_redis(
        &self,
        tx: &mpsc::Sender<Pending>,
        buckets: &[(String, bool)],
    ) -> Option<Decision> {
        let buckets = buckets
            .iter()
            .map(|(key, login)| {
                let limit = if *login {
                    self.login_limit
                } else {
                    self.general_limit
                };
                (format!("{}rl:{key}", self.prefix), limit)
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        let asked = async {
            tx.send(Pending { buckets, reply }).await.ok()?;
            answer.await.ok().flatten()
        };
        // queued behind at most one call in flight, itself bounded by REDIS_TIMEOUT
        match tokio::time::timeout(2 * REDIS_TIMEOUT, asked).await {
            Ok(Some(d)) => {
                self.redis_healthy.store(true, Ordering::Relaxed);
                self.redis_retry_at_ms.store(0, Ordering::Relaxed);
                Some(d)
            }
            _ => {
                self.redis_failed();
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
            Err(not_until) => Decision::denied(limit, &not_until),
        }
    }

    /// One health probe of `client` (an [`ip_bucket`]): allowed, or the seconds to wait.
    pub fn check_probe(&self, client: &str) -> Result<(), u64> {
        match self.probes.check_key(&client.to_string()) {
            Ok(_) => Ok(()),
            Err(not_until) => Err(local_wait_secs(&not_until)),
        }
    }

    /// Check several buckets (`true` = login limit) at once; the tightest decision wins.
    pub async fn check(&self, buckets: &[(String, bool)]) -> Decision {
        if let Some(tx) = &self.redis_tx {
            if unix_ms() >= self.redis_retry_at_ms.load(Ordering::Relaxed) {
                if let Some(d) = self.check_redis(tx, buckets).await {
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

    /// One break-glass opening of `user` ([`BREAK_GLASS_PER_HOUR`] per hour): in Redis when it
    /// answers (one bucket shared by the replicas), otherwise per process. A refused opening
    /// charges nothing.
    pub async fn check_break_glass(&self, user: uuid::Uuid) -> Decision {
        let key = format!("break-glass:{user}");
        let limit = BREAK_GLASS_PER_HOUR;
        if let Some(conn) = &self.redis {
            if unix_ms() >= self.redis_retry_at_ms.load(Ordering::Relaxed) {
                let mut conn = conn.clone();
                let mut inv = self.period_script.prepare_invoke();
                inv.key(format!("{}rl:{key}", self.prefix))
                    .arg(limit)
                    .arg(3_600_000u64);
                let call = inv.invoke_async::<Vec<i64>>(&mut conn);
                match tokio::time::timeout(REDIS_TIMEOUT, call).await {
                    Ok(Ok(v)) if v.len() == 4 => {
                        self.redis_healthy.store(true, Ordering::Relaxed);
                        return Decision {
                            allowed: v[0] == 1,
                            limit,
                            remaining: v[1].max(0) as u32,
                            retry_after_secs: (v[2].max(0) as u64).div_ceil(1000),
                            reset_secs: (v[3].max(0) as u64).div_ceil(1000),
                        };
                    }
                    _ => self.redis_failed(),
                }
            }
        }
        match self.break_glass.check_key(&key) {
            Ok(snapshot) => Decision {
                allowed: true,
                limit,
                remaining: snapshot.remaining_burst_capacity(),
                retry_after_secs: 0,
                reset_secs: 0,
            },
            Err(not_until) => Decision::denied(limit, &not_until),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A limiter on the test Redis with a fresh key prefix and `per_minute` for every bucket.
    fn limiter(per_minute: u32) -> Arc<Limiter> {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
        let conn = crate::state::redis_manager(&url, None).expect("redis url");
        let prefix = format!("test-rl-{}:", uuid::Uuid::now_v7());
        Arc::new(Limiter::new(Some(conn), &prefix, per_minute, per_minute))
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(ip_bucket(ip("203.0.113.7")), "203.0.113.7");
        assert_eq!(ip_bucket(ip("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(ip_bucket(ip("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_eq!(
            ip_bucket(ip("2001:db8:1:2:dead:beef:0:7")),
            ip_bucket(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            ip_bucket(ip("2001:db8:1:3::1")),
            ip_bucket(ip("2001:db8:1:2::1"))
        );
    }

    fn buckets(keys: &[&str]) -> Vec<(String, bool)> {
        keys.iter().map(|k| (k.to_string(), false)).collect()
    }

    /// Decide `reqs` concurrently; the decisions in request order.
    async fn concurrently(l: &Arc<Limiter>, reqs: Vec<Vec<(String, bool)>>) -> Vec<Decision> {
        let tasks: Vec<_> = reqs
            .into_iter()
            .map(|b| {
                let l = l.clone();
                tokio::spawn(async move { l.check(&b).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    }

    /// 40 concurrent requests of one client against a limit of 10: fewer Redis calls than
    /// requests, and the same outcome as 40 calls one by one: exactly 10 admitted, each seeing
    /// a different `remaining` (9 down to 0), 30 refused with a retry time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_calls_decide_as_one_call_per_request() {
        let l = limiter(10);
        let decisions = concurrently(&l, vec![buckets(&["ip:10.0.0.1", "user:u1"]); 40]).await;
        assert!(!l.degraded(), "redis answered");
        let mut remaining: Vec<u32> = decisions
            .iter()
            .filter(|d| d.allowed)
            .map(|d| d.remaining)
            .collect();
        remaining.sort_unstable();
        assert_eq!(remaining, (0..10).collect::<Vec<_>>());
        let refused: Vec<_> = decisions.iter().filter(|d| !d.allowed).collect();
        assert_eq!(refused.len(), 30);
        assert!(refused
            .iter()
            .all(|d| d.retry_after_secs >= 1 && d.limit == 10));
        assert!(
            l.redis_calls() < 40,
            "{} calls for 40 requests",
            l.redis_calls()
        );
    }

    /// The hourly break-glass bucket: [`BREAK_GLASS_PER_HOUR`] openings, then refusals with the
    /// wait until the next one (about 3 minutes); other users are not affected.
    #[tokio::test]
    async fn break_glass_openings_are_limited_per_user_and_hour() {
        let l = limiter(600);
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        for i in 0..BREAK_GLASS_PER_HOUR {
            let d = l.check_break_glass(a).await;
            assert!(d.allowed, "opening {i}");
            assert_eq!(d.remaining, BREAK_GLASS_PER_HOUR - 1 - i);
        }
        let refused = l.check_break_glass(a).await;
        assert!(!refused.allowed);
        let per = 3600 / u64::from(BREAK_GLASS_PER_HOUR);
        assert!(
            (per - 2..=per + 1).contains(&refused.retry_after_secs),
            "{refused:?}"
        );
        assert!(l.check_break_glass(b).await.allowed);
        assert!(!l.degraded());
    }

    /// Within a group, a refused request charges none of its buckets: a client whose user bucket
    /// is spent does not use up its IP's allowance.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_request_charges_nothing() {
        let l = limiter(3);
        for _ in 0..3 {
            assert!(l.check(&buckets(&["ip:a", "user:u2"])).await.allowed);
        }
        let mut reqs = vec![buckets(&["ip:b", "user:u2"]); 6];
        reqs.push(buckets(&["ip:b"]));
        let decisions = concurrently(&l, reqs).await;
        assert!(decisions[..6].iter().all(|d| !d.allowed));
        assert!(decisions[6].allowed);
        assert_eq!(decisions[6].remaining, 2, "ip:b charged once");
        // and the state written back to Redis is what the next call sees
        assert_eq!(l.check(&buckets(&["ip:b"])).await.remaining, 1);
        assert!(!l.degraded());
    }
}

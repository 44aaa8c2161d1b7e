//! The operator's API calls: a tower layer on its kube Client counting every request by
//! (verb, kind).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use kube::{Client, Config};

use crate::call_kind;
use crate::call_kind::is_write;

/// Requests sent through a client, by (verb, kind); when the last write (not an Event) and the
/// first write of a child (not the platform, not an Event) were sent; 403 answers.
#[derive(Clone, Default)]
pub struct CallLog(Arc<Mutex<CallLogInner>>);

#[derive(Default)]
struct CallLogInner {
    counts: BTreeMap<(String, String), u64>,
    forbidden: BTreeMap<(String, String), u64>,
    last_write: Option<Instant>,
    first_child_write: Option<Instant>,
    /// Time from sending a request to its response head, by verb.
    waited: BTreeMap<String, Duration>,
}

#[derive(Clone)]
struct Recording<S> {
    inner: S,
    log: CallLog,
}

impl<S, B> tower::Service<http::Request<kube::client::Body>> for Recording<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let key = self.log.record(&req);
        let log = self.log.clone();
        let sent = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            *log.0
                .lock()
                .expect("call log")
                .waited
                .entry(key.0.clone())
                .or_default() += sent.elapsed();
            if let Ok(r) = &res {
                if r.status() == http::StatusCode::FORBIDDEN {
                    *log.0
                        .lock()
                        .expect("call log")
                        .forbidden
                        .entry(key)
                        .or_default() += 1;
                }
            }
            res
        })
    }
}

impl CallLog {
    /// Counts one request by its (verb, kind) ([`call_kind::classify`]).
    fn record<B>(&self, req: &http::Request<B>) -> (String, String) {
        let (verb, kind) = call_kind::classify(req);
        let mut inner = self.0.lock().expect("call log");
        if is_write(&verb) && kind != "Event" {
            let now = Instant::now();
            inner.last_write = Some(now);
            if kind != "HealthcarePlatform" && inner.first_child_write.is_none() {
                inner.first_child_write = Some(now);
            }
        }
        *inner
            .counts
            .entry((verb.clone(), kind.clone()))
            .or_default() += 1;
        (verb, kind)
    }

    pub fn counts(&self) -> CallCounts {
        CallCounts(self.0.lock().expect("call log").counts.clone())
    }

    pub fn waited(&self) -> BTreeMap<String, Duration> {
        self.0.lock().expect("call log").waited.clone()
    }

    pub fn forbidden(&self) -> CallCounts {
        CallCounts(self.0.lock().expect("call log").forbidden.clone())
    }

    pub fn last_write(&self) -> Option<Instant> {
        self.0.lock().expect("call log").last_write
    }

    pub fn first_child_write(&self) -> Option<Instant> {
        self.0.lock().expect("call log").first_child_write
    }

    pub fn forget_first_child_write(&self) {
        self.0.lock().expect("call log").first_child_write = None;
    }
}

/// A snapshot of a [`CallLog`].
#[derive(Clone, Debug, Default)]
pub struct CallCounts(BTreeMap<(String, String), u64>);

impl CallCounts {
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts(
            self.0
                .iter()
                .map(|(k, n)| (k.clone(), n - earlier.0.get(k).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    pub fn verb(&self, verb: &str) -> u64 {
        self.0
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn writes(&self) -> u64 {
        self.0
            .iter()
            .filter(|((v, _), _)| is_write(v))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn writes_of(&self, kind: &str) -> u64 {
        self.0
            .iter()
            .filter(|((v, k), _)| is_write(v) && k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// `verb=n (kind n, kind n) ...`, per `per` units (1 for totals).
    pub fn describe(&self, per: f64) -> String {
        const VERBS: &[&str] = &[
            "get",
            "list",
            "watch",
            "create",
            "apply",
            "patch",
            "update",
            "delete",
            "discovery",
            "other",
        ];
        let fmt = |n: f64| {
            if per == 1.0 {
                format!("{n:.0}")
            } else {
                format!("{n:.2}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            }
        };
        VERBS
            .iter()
            .filter_map(|verb| {
                let n = self.verb(verb);
                if n == 0 {
                    return None;
                }
                let kinds: Vec<String> = self
                    .0
                    .iter()
                    .filter(|((v, k), _)| v == verb && !k.is_empty())
                    .map(|((_, k), c)| format!("{k} {}", fmt(*c as f64 / per)))
                    .collect();
                Some(if kinds.is_empty() {
                    format!("{verb}={}", fmt(n as f64 / per))
                } else {
                    format!("{verb}={} ({})", fmt(n as f64 / per), kinds.join(", "))
                })
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A client with the given identity whose requests are recorded in `log`.
pub fn counting_client(config: &Config, log: &CallLog) -> anyhow::Result<Client> {
    let log = log.clone();
    Ok(kube::client::ClientBuilder::try_from(config.clone())
        .context("operator client")?
        .with_layer(&tower::layer::layer_fn(move |inner| Recording {
            inner,
            log: log.clone(),
        }))
        .build())
}

/// Waits until the client has sent nothing new for `quiet` (and at least one watch).
pub async fn wait_calls_settle(
    log: &CallLog,
    quiet: Duration,
    max: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last_total = log.counts().total();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let counts = log.counts();
        if counts.total() != last_total {
            last_total = counts.total();
            since = Instant::now();
        } else if since.elapsed() >= quiet && counts.verb("watch") > 0 {
            return Ok(());
        }
        if start.elapsed() > max {
            bail!(
                "the controller kept calling the API for {} s after its start: {}",
                max.as_secs(),
                counts.describe(1.0)
            );
        }
    }
}

/// Waits until the log shows no write (but Events) for `quiet`.
pub async fn wait_writes_quiet(
    log: &CallLog,
    quiet: Duration,
    max: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let since = log
            .last_write()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX);
        if since >= quiet {
            return Ok(());
        }
        if start.elapsed() > max {
            bail!(
                "the operator kept writing for {} s: {}",
                max.as_secs(),
                log.counts().describe(1.0)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_classification() {
        let log = CallLog::default();
        let req = |method: &str, uri: &str, apply: bool| {
            let mut b = http::Request::builder().method(method).uri(uri);
            if apply {
                b = b.header(http::header::CONTENT_TYPE, "application/apply-patch+yaml");
            }
            b.body(()).unwrap()
        };
        let cases = [
            (
                req("GET", "/api/v1/namespaces/n/secrets/s", false),
                ("get", "Secret"),
            ),
            (
                req("GET", "/apis/apps/v1/namespaces/n/deployments", false),
                ("list", "Deployment"),
            ),
            (
                req(
                    "GET",
                    "/apis/apps/v1/namespaces/n/deployments?watch=true",
                    false,
                ),
                ("watch", "Deployment"),
            ),
            (
                req(
                    "PATCH",
                    "/apis/networking.k8s.io/v1/namespaces/n/networkpolicies/x",
                    true,
                ),
                ("apply", "NetworkPolicy"),
            ),
            (
                req(
                    "PATCH",
                    "/apis/caduceus.io/v1alpha1/namespaces/n/healthcareplatforms/p/status",
                    false,
                ),
                ("patch", "HealthcarePlatform"),
            ),
            (
                req("POST", "/apis/events.k8s.io/v1/namespaces/n/events", false),
                ("create", "Event"),
            ),
            (
                req("GET", "/apis/monitoring.coreos.com/v1", false),
                ("discovery", ""),
            ),
        ];
        for (r, (verb, kind)) in cases {
            assert_eq!(
                log.record(&r),
                (verb.to_string(), kind.to_string()),
                "{}",
                r.uri()
            );
        }
        let counts = log.counts();
        assert_eq!(counts.total(), 7);
        assert_eq!(counts.writes(), 3);
        assert_eq!(counts.writes_of("Event"), 1);
        assert!(log.first_child_write().is_some());
    }
}

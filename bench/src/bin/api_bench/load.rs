//! The load generator of `api_bench`: one bare keep-alive hyper HTTP/1.1 connection per worker,
//! a warm-up, then latency samples and errors over the measured window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::probe::{usage, Probe, Usage};

/// Latency samples and errors of one workload, plus the resources it used.
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
    pub usage: Option<Usage>,
}

impl Stats {
    pub fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[idx] as f64 / 1000.0
    }
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// One keep-alive HTTP/1.1 connection per worker: a bare hyper client (no pool, no URL
/// parsing, no header maps built per request), so the load generator takes as little of the
/// shared CPU as possible. Reconnects after an error.
struct Conn {
    addr: std::net::SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn connect(addr: std::net::SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Send one request and drain the response; the status code, or an error.
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<StatusCode> {
        let sender = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => self.sender.insert(Self::connect(self.addr).await?),
        };
        let result = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            anyhow::Ok(status)
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

/// A request template: method, path, the shared `Host` and `Authorization` values, a body.
pub fn request(
    method: Method,
    path: &str,
    host: &HeaderValue,
    auth: &HeaderValue,
    body: Option<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host.clone())
        .header(hyper::header::AUTHORIZATION, auth.clone());
    if body.is_some() {
        b = b.header(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    // method, path and header values are valid by construction
    b.body(Full::new(body.unwrap_or_default()))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

/// Run `conns` workers (one connection each) for `secs` after a 2 s warm-up that is not
/// measured; `probe` snapshots CPU time and round trips at the start and end of the
/// measured window.
pub async fn load<F>(
    addr: std::net::SocketAddr,
    conns: u64,
    secs: u64,
    expect: StatusCode,
    probe: Probe,
    make: F,
) -> Stats
where
    F: Fn(u64) -> Request<Full<Bytes>> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let counter = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(2);
    let measure = Duration::from_secs(secs);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let make = make.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn { addr, sender: None };
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            loop {
                let now = tokio::time::Instant::now();
                if now - start >= warmup + measure {
                    break;
                }
                let req = make(counter.fetch_add(1, Ordering::Relaxed));
                let ok = matches!(conn.send(req).await, Ok(s) if s == expect);
                if now - start >= warmup {
                    lat.push(now.elapsed().as_micros() as u64);
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep_until(start + warmup).await;
    let before = tokio::task::spawn_blocking(move || probe.snapshot())
        .await
        .ok();
    tokio::time::sleep_until(start + warmup + measure).await;
    let after = tokio::task::spawn_blocking(move || probe.snapshot())
        .await
        .ok();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    all.sort_unstable();
    let requests = all.len() as u64;
    Stats {
        requests,
        errors,
        elapsed: measure,
        latencies_us: all,
        usage: match (before, after) {
            (Some(a), Some(b)) => usage(&a, &b, requests),
            _ => None,
        },
    }
}

//! HTTP front end: Kubernetes REST paths, discovery, watch streams, and `/standin/*` control
//! endpoints for out-of-process benchmarks.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{header, HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    registry::ResourceType,
    selector::{FieldSelector, LabelSelector},
    store::{ApiError, DeleteOpts, EventType, Store, Target, WriteOpts},
};

/// Interval of watch bookmarks when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// State shared by the server and the test handle.
pub struct Shared {
    store: Mutex<Store>,
}

impl Shared {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store: Mutex::new(store),
        })
    }

    /// Locks the store; a poisoned lock (a panic while holding it) is recovered, since the
    /// store is only mutated through complete operations.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let shared = shared.clone();
            async move { handle(shared, method, uri, headers, body).await }
        },
    )
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    tracing::debug!(code = e.code, reason = %e.reason, message = %e.message, "request refused");
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.to_status())
}

fn result_response(r: Result<Value, ApiError>, ok: StatusCode) -> Response {
    match r {
        Ok(v) => json_response(ok, &v),
        Err(e) => error_response(&e),
    }
}

struct Query(HashMap<String, String>);

impl Query {
    fn parse(uri: &Uri) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(uri.query().unwrap_or_default())
                .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        Ok(Self(pairs.into_iter().collect()))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// Parsed resource path: the type, namespace, name and subresource.
fn parse_target(store: &Store, segs: &[&str]) -> Option<Result<Target, ApiError>> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty() && matches!(*plural, "status" | "finalize")) =>
        {
            let mut r = vec![*plural];
            r.extend_from_slice(tail);
            return Some(finish_target(store, group, version, Some(ns), &r));
        }
        other => (None, other),
    };
    Some(finish_target(store, group, version, namespace, rest))
}

fn finish_target(
    store: &Store,
    group: &str,
    version: &str,
    ns: Option<&str>,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
    };
    let rtype = store
        .registry
        .lookup(group, version, plural)
        .ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })?;
    if let Some(s) = sub {
        if s != "status" || !rtype.status_subresource {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    }
    if rtype.namespaced && name.is_some() && ns.is_none() {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    Ok(Target {
        rtype,
        version: version.to_string(),
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
    })
}

fn default_manager(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn handle(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let query = match Query::parse(&uri) {
        Ok(q) => q,
        Err(e) => return error_response(&e),
    };
    if let Some(r) = discovery(&shared, &method, &segs) {
        return r;
    }
    if segs.first() == Some(&"standin") {
        return control(&shared, &method, &segs[1..], &query);
    }
    let target = {
        let store = shared.store();
        parse_target(&store, &segs)
    };
    let target = match target {
        None => {
            return error_response(&ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
        Some(Err(e)) => return error_response(&e),
        Some(Ok(t)) => t,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let is_apply = method == Method::PATCH && content_type.starts_with("application/apply-patch");
    let verb = match (&method, target.name.is_some()) {
        (&Method::GET, false) if query.flag("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) if is_apply => "apply",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => {
            return error_response(&ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{method} is not allowed here"),
            ))
        }
    };
    let kind_label = match &target.subresource {
        Some(s) => format!("{}/{s}", target.rtype.kind),
        None => target.rtype.kind.clone(),
    };
    if let Some(err) = shared.store().record_call(verb, &kind_label) {
        return error_response(&err);
    }
    let labels = match LabelSelector::parse(query.get("labelSelector").unwrap_or_default()) {
        Ok(l) => l,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    let fields_sel = match FieldSelector::parse(query.get("fieldSelector").unwrap_or_default()) {
        Ok(f) => f,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    let opts = WriteOpts {
        manager: query
            .get("fieldManager")
            .map(str::to_string)
            .unwrap_or_else(|| {
                if is_apply {
                    String::new()
                } else {
                    default_manager(&headers)
                }
            }),
        dry_run: query.get("dryRun") == Some("All"),
        force: query.flag("force"),
    };
    match verb {
        "watch" => watch(shared, target, labels, fields_sel, &query),
        "list" => {
            let limit = query
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|l| *l > 0);
            result_response(
                shared
                    .store()
                    .list(&target, &labels, &fields_sel, limit, query.get("continue")),
                StatusCode::OK,
            )
        }
        "get" => result_response(shared.store().get(&target), StatusCode::OK),
        "create" => match parse_json(&body) {
            Ok(obj) => result_response(
                shared.store().create(&target, obj, &opts),
                StatusCode::CREATED,
            ),
            Err(e) => error_response(&e),
        },
        "update" => match parse_json(&body) {
            Ok(obj) => result_response(shared.store().replace(&target, obj, &opts), StatusCode::OK),
            Err(e) => error_response(&e),
        },
        "apply" | "patch" => {
            let r = shared.store().patch(&target, &body, &content_type, &opts);
            result_response(r, StatusCode::OK)
        }
        "delete" | "deletecollection" => {
            let body_opts: Value = if body.is_empty() {
                json!({})
            } else {
                match parse_json(&body) {
                    Ok(v) => v,
                    Err(e) => return error_response(&e),
                }
            };
            let policy = query
                .get("propagationPolicy")
                .map(str::to_string)
                .or_else(|| {
                    body_opts
                        .get("propagationPolicy")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
            let dry_run = opts.dry_run
                || body_opts
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|v| v == "All"));
            let del = DeleteOpts {
                dry_run,
                orphan: policy.as_deref() == Some("Orphan"),
                precondition_uid: body_opts
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                precondition_rv: body_opts
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            };
            let mut store = shared.store();
            if verb == "delete" {
                result_response(store.delete(&target, &del), StatusCode::OK)
            } else {
                result_response(
                    store.delete_collection(&target, &labels, &fields_sel, &del),
                    StatusCode::OK,
                )
            }
        }
        _ => error_response(&ApiError::new(405, "MethodNotAllowed", "unsupported verb")),
    }
}

fn discovery(shared: &Shared, method: &Method, segs: &[&str]) -> Option<Response> {
    if method != Method::GET {
        return None;
    }
    let store = shared.store();
    let out = match segs {
        ["version"] => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-standin", "gitCommit": "standin",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
            "compiler": "gc", "platform": "linux/amd64",
        }),
        ["healthz"] | ["readyz"] | ["livez"] => {
            return Some((StatusCode::OK, "ok").into_response());
        }
        ["api"] => {
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        }
        ["api", v] => match store.registry.resource_list("", v) {
            Some(l) => l,
            None => {
                return Some(error_response(&ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )))
            }
        },
        ["apis"] => {
            let groups: Vec<Value> = store
                .registry
                .groups()
                .into_iter()
                .map(|(name, versions)| api_group(&name, &versions))
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        ["apis", g] => match store.registry.groups().get(*g) {
            Some(versions) => {
                let mut grp = api_group(g, versions);
                grp["kind"] = json!("APIGroup");
                grp["apiVersion"] = json!("v1");
                grp
            }
            None => {
                return Some(error_response(&ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )))
            }
        },
        ["apis", g, v] => match store.registry.resource_list(g, v) {
            Some(l) => l,
            None => {
                return Some(error_response(&ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )))
            }
        },
        _ => return None,
    };
    drop(store);
    shared
        .store()
        .record_call("discovery", &format!("/{}", segs.join("/")));
    Some(json_response(StatusCode::OK, &out))
}

fn api_group(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/standin/*`: call counters, settling workloads, stats (used by the benchmark binary).
fn control(shared: &Shared, method: &Method, segs: &[&str], query: &Query) -> Response {
    let mut store = shared.store();
    match (method, segs) {
        (&Method::GET, ["calls"]) => {
            let calls: Vec<Value> = store
                .calls
                .iter()
                .map(|((verb, kind), n)| json!({"verb": verb, "kind": kind, "count": n}))
                .collect();
            json_response(StatusCode::OK, &json!({"calls": calls}))
        }
        (&Method::POST, ["calls", "reset"]) => {
            store.calls.clear();
            json_response(StatusCode::OK, &json!({"reset": true}))
        }
        (&Method::POST, ["settle"]) => {
            let n = store.settle_all();
            json_response(StatusCode::OK, &json!({"settled": n}))
        }
        (&Method::POST, ["auto-ready"]) => {
            store.auto_ready = query.flag("enabled");
            let n = if store.auto_ready {
                store.settle_all()
            } else {
                0
            };
            json_response(
                StatusCode::OK,
                &json!({"autoReady": store.auto_ready, "settled": n}),
            )
        }
        (&Method::GET, ["stats"]) => {
            let mut counts = serde_json::Map::new();
            let types: Vec<Arc<ResourceType>> = store.registry.all().cloned().collect();
            for t in types {
                let n = store.list_raw(&t.key(), None).len();
                if n > 0 {
                    counts.insert(format!("{}.{}", t.kind, t.group), json!(n));
                }
            }
            json_response(
                StatusCode::OK,
                &json!({"resourceVersion": store.resource_version(), "objects": counts}),
            )
        }
        _ => error_response(&ApiError::new(
            404,
            "NotFound",
            "unknown stand-in control endpoint",
        )),
    }
}

type Matcher = Box<dyn Fn(&Value) -> bool + Send>;

/// Maps a stored change to what a filtered watch sees (objects entering or leaving the
/// selection become ADDED/DELETED, as with the real API server).
fn classify(
    ty: EventType,
    obj: &Value,
    prev: Option<&Value>,
    matches: &Matcher,
) -> Option<EventType> {
    let now = matches(obj);
    let before = prev.map(matches);
    match ty {
        EventType::Added => now.then_some(EventType::Added),
        EventType::Deleted => before.unwrap_or(now).then_some(EventType::Deleted),
        EventType::Modified => match (before.unwrap_or(true), now) {
            (true, true) => Some(EventType::Modified),
            (false, true) => Some(EventType::Added),
            (true, false) => Some(EventType::Deleted),
            (false, false) => None,
        },
    }
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": ty, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch(
    shared: Arc<Shared>,
    target: Target,
    labels: LabelSelector,
    fields_sel: FieldSelector,
    query: &Query,
) -> Response {
    let from_rv = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse::<u64>().ok());
    let initial_events = query.flag("sendInitialEvents");
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = Duration::from_secs(
        query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(1800),
    );
    if query
        .get("resourceVersion")
        .is_some_and(|rv| rv.parse::<u64>().is_err())
    {
        return error_response(&ApiError::bad_request("invalid resourceVersion"));
    }
    let (backlog, start_rv, mut sub) = {
        let store = shared.store();
        let sub = store.subscribe();
        match store.watch_backlog(&target, from_rv, initial_events) {
            Ok((events, rv)) => (Ok(events), rv, sub),
            Err(e) => (Err(e), 0, sub),
        }
    };
    let ns = target.namespace.clone().filter(|_| target.rtype.namespaced);
    let matcher: Matcher = Box::new(move |o: &Value| {
        ns.as_deref().is_none_or(|want| {
            o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(want)
        }) && labels.matches(o)
            && fields_sel.matches(o)
    });
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1024);
    let rtype = target.rtype.clone();
    let version = target.version.clone();
    let key = rtype.key();
    tokio::spawn(async move {
        let events = match backlog {
            Ok(events) => events,
            Err(e) => {
                let _ = tx.send(Ok(event_line("ERROR", &e.to_status()))).await;
                return;
            }
        };
        for (ty, obj, prev) in events {
            if let Some(ty) = classify(ty, &obj, prev.as_ref(), &matcher) {
                let line = event_line(ty.as_str(), &Store::present(&rtype, &version, &obj));
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        }
        let bookmark = |rv: u64, end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            event_line(
                "BOOKMARK",
                &json!({"kind": rtype.kind, "apiVersion": rtype.api_version(&version), "metadata": meta}),
            )
        };
        let mut last_rv = start_rv;
        if initial_events && tx.send(Ok(bookmark(last_rv, true))).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(Ok(bookmark(last_rv, false))).await.is_err() {
                        return;
                    }
                }
                r = sub.recv() => match r {
                    Ok(entry) => {
                        if entry.rv <= last_rv {
                            continue;
                        }
                        last_rv = entry.rv;
                        if entry.key != key {
                            continue;
                        }
                        if let Some(ty) = classify(entry.ty, &entry.obj, entry.prev.as_ref(), &matcher) {
                            let line = event_line(ty.as_str(), &Store::present(&rtype, &version, &entry.obj));
                            if tx.send(Ok(line)).await.is_err() {
                                return;
                            }
                        }
                    }
                    // A slow watcher that fell behind is closed; the client resumes from its
                    // last resourceVersion, which the log replays.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

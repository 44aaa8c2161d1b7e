//! The object store and the API semantics: resourceVersions, generation, create/replace/patch/
//! server-side apply, status subresource, finalizers, deletion, garbage collection, watch log.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::{
    controllers,
    fields::{self, ManagerEntry, Scope},
    registry::{Registry, ResKey, ResourceType},
    schema,
    selector::{FieldSelector, LabelSelector},
};

/// Events kept for watch resumption; older resourceVersions get `410 Gone`.
const MAX_LOG: usize = 50_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct WatchEntry {
    pub rv: u64,
    pub key: ResKey,
    pub ty: EventType,
    pub obj: Value,
    pub prev: Option<Value>,
}

/// An API error, rendered as a `metav1.Status`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(t: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified_plural(t)),
        )
        .with_details(json!({"name": name, "group": t.group, "kind": t.plural}))
    }

    fn already_exists(t: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified_plural(t)),
        )
        .with_details(json!({"name": name, "group": t.group, "kind": t.plural}))
    }

    fn conflict(t: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified_plural(t)
            ),
        )
        .with_details(json!({"name": name, "group": t.group, "kind": t.plural}))
    }

    fn invalid(t: &ResourceType, name: &str, causes: &[schema::FieldError]) -> Self {
        let text: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let message = if text.len() == 1 {
            format!(
                "{} \"{name}\" is invalid: {}",
                t.qualified_kind_for_errors(),
                text[0]
            )
        } else {
            format!(
                "{} \"{name}\" is invalid: [{}]",
                t.qualified_kind_for_errors(),
                text.join(", ")
            )
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        Self::new(422, "Invalid", message)
            .with_details(json!({"name": name, "group": t.group, "kind": t.kind, "causes": causes}))
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

fn qualified_plural(t: &ResourceType) -> String {
    if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

impl ResourceType {
    fn qualified_kind_for_errors(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// Where a request is addressed.
#[derive(Clone, Debug)]
pub struct Target {
    pub rtype: Arc<ResourceType>,
    /// The version in the request path.
    pub version: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    fn scope(&self) -> Scope {
        if self.is_status() {
            Scope::Status
        } else {
            Scope::Main {
                status_subresource: self.rtype.status_subresource,
            }
        }
    }

    fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }

    fn name(&self) -> Result<&str, ApiError> {
        self.name
            .as_deref()
            .ok_or_else(|| ApiError::new(405, "MethodNotAllowed", "a resource name is required"))
    }
}

/// Options of a write request.
#[derive(Clone, Debug, Default)]
pub struct WriteOpts {
    pub manager: String,
    pub dry_run: bool,
    pub force: bool,
}

/// Options of a delete request.
#[derive(Clone, Debug, Default)]
pub struct DeleteOpts {
    pub dry_run: bool,
    pub orphan: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// How managedFields change in a write.
enum Managed {
    /// A non-apply write by this manager.
    Update(String),
    /// Server-side apply already computed the new entries.
    Applied(Vec<ManagerEntry>),
}

/// An injected failure: the next `remaining` matching requests get `code`.
#[derive(Clone, Debug)]
pub struct Failure {
    pub verb: String,
    pub kind: String,
    pub code: u16,
    pub remaining: u32,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(key)).and_then(Value::as_str)
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The object without its resourceVersion and managedFields timestamps, for no-op detection.
fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(Value::Array(entries)) = m.get_mut("managedFields") {
            for e in entries.iter_mut() {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    o
}

/// Everything but metadata and status: what bumps `metadata.generation`.
fn generation_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    o
}

type ObjKey = (String, String);

pub struct Store {
    pub registry: Registry,
    rv: u64,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Value>>,
    log: VecDeque<Arc<WatchEntry>>,
    /// Watches can resume from any resourceVersion >= this.
    oldest_rv: u64,
    tx: broadcast::Sender<Arc<WatchEntry>>,
    /// API calls by `(verb, kind)`.
    pub calls: BTreeMap<(String, String), u64>,
    pub failures: Vec<Failure>,
    /// Settle workload status as soon as a workload is written.
    pub auto_ready: bool,
    validator: kube_cel::Validator,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(16_384);
        let mut store = Self {
            registry: Registry::with_builtins(),
            rv: 0,
            objects: HashMap::new(),
            log: VecDeque::new(),
            oldest_rv: 0,
            tx,
            calls: BTreeMap::new(),
            failures: Vec::new(),
            auto_ready: false,
            validator: kube_cel::Validator::new(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let t = store.registry.get(&(String::new(), "namespaces".into()));
            if let Some(t) = t {
                let target = Target {
                    rtype: t,
                    version: "v1".into(),
                    namespace: None,
                    name: None,
                    subresource: None,
                };
                let body =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                let opts = WriteOpts {
                    manager: "kube-apiserver".into(),
                    ..WriteOpts::default()
                };
                // Built-in namespaces always admit; an error here would be a bug in this module.
                if let Err(e) = store.create(&target, body, &opts) {
                    tracing::error!(error = %e.message, "creating built-in namespace failed");
                }
            }
        }
        store
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEntry>> {
        self.tx.subscribe()
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Counts a call; returns an injected failure if one matches.
    pub fn record_call(&mut self, verb: &str, kind: &str) -> Option<ApiError> {
        *self
            .calls
            .entry((verb.to_string(), kind.to_string()))
            .or_default() += 1;
        let f = self.failures.iter_mut().find(|f| {
            f.remaining > 0
                && (f.verb == verb || f.verb == "*")
                && (f.kind == kind || f.kind == "*")
        })?;
        f.remaining -= 1;
        let code = f.code;
        self.failures.retain(|f| f.remaining > 0);
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Some(ApiError::new(
            code,
            reason,
            format!("injected failure for {verb} {kind}"),
        ))
    }

    /// The object as served at `version` (custom resources are stored once, like a CRD with
    /// conversion strategy `None`).
    pub fn present(t: &ResourceType, version: &str, obj: &Value) -> Value {
        let mut o = obj.clone();
        o["apiVersion"] = Value::String(t.api_version(version));
        o["kind"] = Value::String(t.kind.clone());
        o
    }

    fn objects_of(&self, key: &ResKey) -> Option<&BTreeMap<ObjKey, Value>> {
        self.objects.get(key)
    }

    pub fn lookup(&self, key: &ResKey, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// All objects of a type, optionally in one namespace, sorted by namespace and name.
    pub fn list_raw(&self, key: &ResKey, ns: Option<&str>) -> Vec<Value> {
        self.objects_of(key)
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| n == want))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn ns_of(t: &Target) -> String {
        if t.rtype.namespaced {
            t.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        }
    }

    pub fn get(&self, t: &Target) -> Result<Value, ApiError> {
        let name = t.name()?;
        let obj = self
            .lookup(&t.rtype.key(), &Self::ns_of(t), name)
            .ok_or_else(|| ApiError::not_found(&t.rtype, name))?;
        Ok(Self::present(&t.rtype, &t.version, obj))
    }

    pub fn list(
        &self,
        t: &Target,
        labels: &LabelSelector,
        fields_sel: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (list_rv, after) = match continue_token {
            Some(tok) => {
                let (rv, rest) = tok
                    .split_once(':')
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                let rv: u64 = rv
                    .parse()
                    .map_err(|_| ApiError::bad_request("invalid continue token"))?;
                let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
                (rv, Some((ns.to_string(), name.to_string())))
            }
            None => (self.rv, None),
        };
        let ns = t.namespace.as_deref().filter(|_| t.rtype.namespaced);
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0usize;
        if let Some(m) = self.objects_of(&t.rtype.key()) {
            for ((ons, oname), obj) in m.iter() {
                if ns.is_some_and(|want| ons != want) {
                    continue;
                }
                if after.as_ref().is_some_and(|a| (ons, oname) <= (&a.0, &a.1)) {
                    continue;
                }
                if !labels.matches(obj) || !fields_sel.matches(obj) {
                    continue;
                }
                if limit.is_some_and(|l| items.len() >= l) {
                    if next.is_none() {
                        if let Some(last) = items.last() {
                            let last: &Value = last;
                            next = Some(format!(
                                "{list_rv}:{}/{}",
                                meta_str(last, "namespace").unwrap_or_default(),
                                meta_str(last, "name").unwrap_or_default()
                            ));
                        }
                    }
                    remaining += 1;
                    continue;
                }
                items.push(Self::present(&t.rtype, &t.version, obj));
            }
        }
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if let Some(n) = next {
            metadata["continue"] = Value::String(n);
            metadata["remainingItemCount"] = json!(remaining);
        }
        Ok(json!({
            "kind": format!("{}List", t.rtype.kind),
            "apiVersion": t.rtype.api_version(&t.version),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Initial events and the resourceVersion a watch continues after.
    #[allow(clippy::type_complexity)]
    pub fn watch_backlog(
        &self,
        t: &Target,
        from_rv: Option<u64>,
        initial_events: bool,
    ) -> Result<(Vec<(EventType, Value, Option<Value>)>, u64), ApiError> {
        let key = t.rtype.key();
        let ns = t.namespace.as_deref().filter(|_| t.rtype.namespaced);
        match from_rv {
            Some(rv) if rv > 0 && !initial_events => {
                if rv < self.oldest_rv {
                    return Err(ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {rv} ({})", self.oldest_rv),
                    ));
                }
                let events = self
                    .log
                    .iter()
                    .filter(|e| e.rv > rv && e.key == key)
                    .filter(|e| ns.is_none_or(|want| meta_str(&e.obj, "namespace") == Some(want)))
                    .map(|e| (e.ty, e.obj.clone(), e.prev.clone()))
                    .collect();
                Ok((events, self.rv))
            }
            _ => {
                let events = self
                    .list_raw(&key, ns)
                    .into_iter()
                    .map(|o| (EventType::Added, o, None))
                    .collect();
                Ok((events, self.rv))
            }
        }
    }

    fn commit(
        &mut self,
        t: &ResourceType,
        ty: EventType,
        mut obj: Value,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let ns = meta_str(&obj, "namespace").unwrap_or_default().to_string();
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let bucket = self.objects.entry(t.key()).or_default();
        match ty {
            EventType::Deleted => {
                bucket.remove(&(ns, name));
            }
            _ => {
                bucket.insert((ns, name), obj.clone());
            }
        }
        let entry = Arc::new(WatchEntry {
            rv: self.rv,
            key: t.key(),
            ty,
            obj: obj.clone(),
            prev,
        });
        self.log.push_back(entry.clone());
        while self.log.len() > MAX_LOG {
            if let Some(old) = self.log.pop_front() {
                self.oldest_rv = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(entry);
        obj
    }

    /// Admission of a custom resource (defaults, pruning, schema, CEL) and of CRD objects.
    fn admit(
        &self,
        t: &ResourceType,
        name: &str,
        obj: Value,
        old: Option<&Value>,
    ) -> Result<Value, ApiError> {
        if t.group == "apiextensions.k8s.io" && t.kind == "CustomResourceDefinition" {
            crate::registry::parse_crd(&obj).map_err(|msg| {
                ApiError::invalid(
                    t,
                    name,
                    &[schema::FieldError {
                        field: "spec".into(),
                        reason: "FieldValueInvalid",
                        message: msg,
                    }],
                )
            })?;
            return Ok(obj);
        }
        let Some(version_schema) = t.schemas.get(t.preferred_version()) else {
            return Ok(obj);
        };
        schema::admit(&self.validator, version_schema, &obj, old)
            .map_err(|errs| ApiError::invalid(t, name, &errs))
    }

    fn require_namespace(&self, t: &ResourceType, ns: &str) -> Result<(), ApiError> {
        if !t.namespaced {
            return Ok(());
        }
        let key = (String::new(), "namespaces".to_string());
        match self.lookup(&key, "", ns) {
            None => Err(ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
                .with_details(json!({"name": ns, "kind": "namespaces"}))),
            Some(n) if meta(n).is_some_and(|m| m.contains_key("deletionTimestamp")) => Err(ApiError::new(
                403,
                "Forbidden",
                format!("unable to create new content in namespace {ns} because it is being terminated"),
            )),
            Some(_) => Ok(()),
        }
    }

    pub fn create(&mut self, t: &Target, body: Value, opts: &WriteOpts) -> Result<Value, ApiError> {
        self.create_with(t, body, opts, Managed::Update(opts.manager.clone()))
    }

    fn create_with(
        &mut self,
        t: &Target,
        mut obj: Value,
        opts: &WriteOpts,
        managed: Managed,
    ) -> Result<Value, ApiError> {
        let rt = t.rtype.clone();
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
            if kind != rt.kind {
                return Err(ApiError::bad_request(format!(
                    "the kind in the body ({kind}) does not match the resource ({})",
                    rt.kind
                )));
            }
        }
        let ns = Self::ns_of(t);
        if rt.namespaced {
            match meta_str(&obj, "namespace") {
                Some(body_ns) if body_ns != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {}
            }
            meta_mut(&mut obj).insert("namespace".into(), Value::String(ns.clone()));
        } else {
            meta_mut(&mut obj).remove("namespace");
        }
        let name = match meta_str(&obj, "name") {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta_str(&obj, "generateName") {
                Some(prefix) => {
                    let suffix: String = uuid::Uuid::new_v4()
                        .simple()
                        .to_string()
                        .chars()
                        .take(5)
                        .collect();
                    format!("{prefix}{suffix}")
                }
                None => {
                    return Err(ApiError::invalid(
                        &rt,
                        "",
                        &[schema::FieldError {
                            field: "metadata.name".into(),
                            reason: "FieldValueRequired",
                            message: "Required value: name or generateName is required".into(),
                        }],
                    ))
                }
            },
        };
        self.require_namespace(&rt, &ns)?;
        if self.lookup(&rt.key(), &ns, &name).is_some() {
            return Err(ApiError::already_exists(&rt, &name));
        }
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), Value::String(name.clone()));
            for k in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                m.remove(k);
            }
            m.insert(
                "uid".into(),
                Value::String(uuid::Uuid::new_v4().to_string()),
            );
            m.insert("creationTimestamp".into(), Value::String(now()));
            m.insert("generation".into(), json!(1));
        }
        obj["apiVersion"] = Value::String(rt.api_version(rt.preferred_version()));
        obj["kind"] = Value::String(rt.kind.clone());
        if rt.status_subresource {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        let mut obj = self.admit(&rt, &name, obj, None)?;
        let managers = match managed {
            Managed::Applied(m) => m,
            Managed::Update(manager) => {
                let mut m = Vec::new();
                let changed = fields::changed_paths(
                    &json!({}),
                    &obj,
                    Scope::Main {
                        status_subresource: false,
                    },
                );
                fields::record_update(
                    &mut m,
                    &changed,
                    &obj,
                    &manager,
                    None,
                    &rt.api_version(&t.version),
                    &now(),
                );
                m
            }
        };
        fields::write_managers(&mut obj, &managers);
        if rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition" {
            obj["status"] = crd_status(&obj);
        }
        if rt.kind == "Namespace" && rt.group.is_empty() {
            obj["status"] = json!({"phase": "Active"});
        }
        if opts.dry_run {
            return Ok(Self::present(&rt, &t.version, &obj));
        }
        let stored = self.commit(&rt, EventType::Added, obj, None);
        self.after_write(&rt, &stored);
        Ok(Self::present(&rt, &t.version, &stored))
    }

    pub fn replace(
        &mut self,
        t: &Target,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let name = t.name()?.to_string();
        let old = self
            .lookup(&t.rtype.key(), &Self::ns_of(t), &name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.rtype, &name))?;
        if meta_str(&body, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        if let Some(rv) = meta_str(&body, "resourceVersion").filter(|rv| !rv.is_empty()) {
            if Some(rv) != meta_str(&old, "resourceVersion") {
                return Err(ApiError::conflict(&t.rtype, &name));
            }
        }
        self.write_existing(t, old, body, opts, Managed::Update(opts.manager.clone()))
    }

    pub fn patch(
        &mut self,
        t: &Target,
        body: &[u8],
        content_type: &str,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let name = t.name()?.to_string();
        let rt = t.rtype.clone();
        let existing = self.lookup(&rt.key(), &Self::ns_of(t), &name).cloned();
        let ct = content_type.split(';').next().unwrap_or_default().trim();
        if ct == "application/apply-patch+yaml" {
            return self.apply(t, &name, existing, body, opts);
        }
        let old = existing.ok_or_else(|| ApiError::not_found(&rt, &name))?;
        let mut doc = Self::present(&rt, &t.version, &old);
        match ct {
            "application/json-patch+json" => {
                let ops: Vec<json_patch::PatchOperation> = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                for op in &ops {
                    // Like the API server (evanphx/json-patch), `test` of a missing path
                    // against `null` succeeds; kube-runtime's finalizer helper relies on it.
                    if let json_patch::PatchOperation::Test(t) = op {
                        if t.value.is_null() && doc.pointer(t.path.as_str()).is_none() {
                            continue;
                        }
                    }
                    json_patch::patch(&mut doc, std::slice::from_ref(op)).map_err(|e| {
                        ApiError::new(
                            422,
                            "Invalid",
                            format!(
                                "the server rejected our request due to an error in our request: {e}"
                            ),
                        )
                    })?;
                }
            }
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                if ct == "application/strategic-merge-patch+json" && rt.crd_name.is_some() {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
                let patch: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
                json_patch::merge(&mut doc, &patch);
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {other}"),
                ))
            }
        }
        if meta_str(&doc, "resourceVersion") != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(&rt, &name));
        }
        self.write_existing(t, old, doc, opts, Managed::Update(opts.manager.clone()))
    }

    fn apply(
        &mut self,
        t: &Target,
        name: &str,
        existing: Option<Value>,
        body: &[u8],
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let rt = t.rtype.clone();
        if opts.manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, fieldManager: Required value: is required for apply patch",
            ));
        }
        let body: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => serde_norway::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
        };
        if body.get("apiVersion").and_then(Value::as_str)
            != Some(rt.api_version(&t.version).as_str())
            || body.get("kind").and_then(Value::as_str) != Some(rt.kind.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "apply configuration must set apiVersion {} and kind {}",
                rt.api_version(&t.version),
                rt.kind
            )));
        }
        if let Some(body_name) = meta_str(&body, "name").filter(|n| *n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced {
            if let Some(ns) = meta_str(&body, "namespace") {
                if Some(ns) != t.namespace.as_deref() {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        let applied = fields::scoped(&body, t.scope());
        let api_version = rt.api_version(&t.version);
        let sub = t.subresource.as_deref();
        match existing {
            None => {
                if t.is_status() {
                    return Err(ApiError::not_found(&rt, name));
                }
                let mut managers = Vec::new();
                let mut live = json!({});
                fields::apply(
                    &mut live,
                    &mut managers,
                    &applied,
                    &opts.manager,
                    None,
                    &api_version,
                    true,
                    &now(),
                )
                .map_err(|_| {
                    ApiError::new(500, "InternalError", "apply on an empty object conflicted")
                })?;
                let mut obj = live;
                obj["apiVersion"] = Value::String(api_version.clone());
                obj["kind"] = Value::String(rt.kind.clone());
                let m = meta_mut(&mut obj);
                m.insert("name".into(), Value::String(name.to_string()));
                self.create_with(t, obj, opts, Managed::Applied(managers))
            }
            Some(old) => {
                if let Some(rv) = meta_str(&body, "resourceVersion") {
                    if Some(rv) != meta_str(&old, "resourceVersion") {
                        return Err(ApiError::conflict(&rt, name));
                    }
                }
                let mut managers = fields::read_managers(&old);
                let mut live = old.clone();
                fields::apply(&mut live, &mut managers, &applied, &opts.manager, sub, &api_version, opts.force, &now())
                    .map_err(|conflicts| {
                        let descr: Vec<String> = conflicts.iter().map(|c| c.describe()).collect();
                        let causes: Vec<Value> = conflicts
                            .iter()
                            .map(|c| json!({"type": "FieldManagerConflict", "message": c.describe(), "field": format!(".{}", c.path.join("."))}))
                            .collect();
                        let message = if descr.len() == 1 {
                            format!("Apply failed with 1 conflict: {}", descr[0])
                        } else {
                            format!("Apply failed with {} conflicts: {}", descr.len(), descr.join("\n"))
                        };
                        ApiError::new(409, "Conflict", message)
                            .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}))
                    })?;
                self.write_existing(t, old, live, opts, Managed::Applied(managers))
            }
        }
    }

    /// Common path of every write to an existing object.
    fn write_existing(
        &mut self,
        t: &Target,
        old: Value,
        mut new: Value,
        opts: &WriteOpts,
        managed: Managed,
    ) -> Result<Value, ApiError> {
        let rt = t.rtype.clone();
        let name = meta_str(&old, "name").unwrap_or_default().to_string();
        if !new.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        // Scope: the status endpoint changes only status, the main endpoint never does when
        // the kind has a status subresource.
        if t.is_status() {
            let mut merged = old.clone();
            match new.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            new = merged;
        } else if rt.status_subresource {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        // System metadata is the server's.
        {
            let old_meta = meta(&old).cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
                "managedFields",
            ] {
                match old_meta.get(k) {
                    Some(v) => {
                        m.insert(k.to_string(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
        }
        new["apiVersion"] = Value::String(rt.api_version(rt.preferred_version()));
        new["kind"] = Value::String(rt.kind.clone());
        if meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            let before = finalizers(&old);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} \"{name}\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{added}\"}}",
                        rt.qualified_kind_for_errors()
                    ),
                ));
            }
        }
        let mut new = self.admit(&rt, &name, new, Some(&old))?;
        if generation_part(&new) != generation_part(&old) {
            let g = meta(&old)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        let managers = match managed {
            Managed::Applied(m) => m,
            Managed::Update(manager) => {
                let mut m = fields::read_managers(&old);
                let changed = fields::changed_paths(&old, &new, t.scope());
                fields::record_update(
                    &mut m,
                    &changed,
                    &new,
                    &manager,
                    t.subresource.as_deref(),
                    &rt.api_version(&t.version),
                    &now(),
                );
                m
            }
        };
        fields::write_managers(&mut new, &managers);
        if comparable(&new) == comparable(&old) {
            return Ok(Self::present(&rt, &t.version, &old));
        }
        if opts.dry_run {
            return Ok(Self::present(&rt, &t.version, &new));
        }
        let stored = self.commit(&rt, EventType::Modified, new, Some(old));
        if meta(&stored).is_some_and(|m| m.contains_key("deletionTimestamp"))
            && finalizers(&stored).is_empty()
        {
            let removed = self.remove_object(&rt, stored);
            return Ok(Self::present(&rt, &t.version, &removed));
        }
        self.after_write(&rt, &stored);
        Ok(Self::present(&rt, &t.version, &stored))
    }

    pub fn delete(&mut self, t: &Target, opts: &DeleteOpts) -> Result<Value, ApiError> {
        let name = t.name()?.to_string();
        let rt = t.rtype.clone();
        let obj = self
            .lookup(&rt.key(), &Self::ns_of(t), &name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt, &name))?;
        if let Some(uid) = &opts.precondition_uid {
            if Some(uid.as_str()) != meta_str(&obj, "uid") {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&obj, "uid").unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if Some(rv.as_str()) != meta_str(&obj, "resourceVersion") {
                return Err(ApiError::conflict(&rt, &name));
            }
        }
        if opts.dry_run {
            return Ok(Self::present(&rt, &t.version, &obj));
        }
        let out = self.delete_object(&rt, obj, opts.orphan);
        Ok(Self::present(&rt, &t.version, &out))
    }

    pub fn delete_collection(
        &mut self,
        t: &Target,
        labels: &LabelSelector,
        fields_sel: &FieldSelector,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let rt = t.rtype.clone();
        let ns = t.namespace.as_deref().filter(|_| rt.namespaced);
        let victims: Vec<Value> = self
            .list_raw(&rt.key(), ns)
            .into_iter()
            .filter(|o| labels.matches(o) && fields_sel.matches(o))
            .collect();
        let mut items = Vec::new();
        for v in victims {
            let out = if opts.dry_run {
                v
            } else {
                self.delete_object(&rt, v, opts.orphan)
            };
            items.push(Self::present(&rt, &t.version, &out));
        }
        Ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(&t.version),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }

    /// Deletes honouring finalizers: with finalizers only `deletionTimestamp` is set.
    fn delete_object(&mut self, rt: &ResourceType, obj: Value, orphan: bool) -> Value {
        if orphan {
            if let Some(uid) = meta_str(&obj, "uid").map(str::to_string) {
                self.orphan_dependents(&uid);
            }
        }
        if !finalizers(&obj).is_empty() {
            if meta(&obj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                return obj;
            }
            let mut new = obj.clone();
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), Value::String(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            return self.commit(rt, EventType::Modified, new, Some(obj));
        }
        self.remove_object(rt, obj)
    }

    /// Removes an object for good, then what depends on it.
    fn remove_object(&mut self, rt: &ResourceType, obj: Value) -> Value {
        let removed = self.commit(rt, EventType::Deleted, obj.clone(), Some(obj));
        if rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition" {
            if let Some(crd_name) = meta_str(&removed, "name") {
                if let Some(key) = self.registry.unregister_crd(crd_name) {
                    let victims = self.list_raw(&key, None);
                    if let Ok(ct) = crate::registry::parse_crd(&removed) {
                        for v in victims {
                            self.commit(&ct, EventType::Deleted, v.clone(), Some(v));
                        }
                    }
                    self.objects.remove(&key);
                }
            }
        }
        if rt.group.is_empty() && rt.kind == "Namespace" {
            if let Some(ns) = meta_str(&removed, "name").map(str::to_string) {
                let types: Vec<Arc<ResourceType>> = self
                    .registry
                    .all()
                    .filter(|t| t.namespaced)
                    .cloned()
                    .collect();
                for t in types {
                    for v in self.list_raw(&t.key(), Some(&ns)) {
                        self.delete_object(&t, v, false);
                    }
                }
            }
        }
        if let Some(uid) = meta_str(&removed, "uid").map(str::to_string) {
            self.collect_garbage(&uid);
        }
        removed
    }

    fn dependents_of(&self, uid: &str) -> Vec<(Arc<ResourceType>, Value)> {
        let mut out = Vec::new();
        for (key, objs) in &self.objects {
            let Some(t) = self.registry.get(key) else {
                continue;
            };
            for obj in objs.values() {
                let owned = meta(obj)
                    .and_then(|m| m.get("ownerReferences"))
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                    });
                if owned {
                    out.push((t.clone(), obj.clone()));
                }
            }
        }
        out
    }

    fn without_owner(obj: &Value, uid: &str) -> (Value, usize) {
        let mut new = obj.clone();
        let m = meta_mut(&mut new);
        let refs: Vec<Value> = m
            .get("ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let n = refs.len();
        if refs.is_empty() {
            m.remove("ownerReferences");
        } else {
            m.insert("ownerReferences".into(), Value::Array(refs));
        }
        (new, n)
    }

    /// Background cascading deletion, as kube-controller-manager's garbage collector does it:
    /// dependents whose last owner is gone are deleted, others lose the dangling reference.
    fn collect_garbage(&mut self, owner_uid: &str) {
        for (t, dep) in self.dependents_of(owner_uid) {
            let (stripped, left) = Self::without_owner(&dep, owner_uid);
            if left == 0 {
                self.delete_object(&t, dep, false);
            } else {
                self.commit(&t, EventType::Modified, stripped, Some(dep));
            }
        }
    }

    fn orphan_dependents(&mut self, owner_uid: &str) {
        for (t, dep) in self.dependents_of(owner_uid) {
            let (stripped, _) = Self::without_owner(&dep, owner_uid);
            self.commit(&t, EventType::Modified, stripped, Some(dep));
        }
    }

    /// Side effects of a committed write: CRD registration, controller models.
    fn after_write(&mut self, rt: &ResourceType, obj: &Value) {
        if rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition" {
            if let Err(e) = self.registry.register_crd(obj) {
                tracing::warn!(error = %e, "CRD not registered");
            }
            return;
        }
        if meta(obj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return;
        }
        if rt.group == "apps" && rt.kind == "StatefulSet" {
            self.ensure_statefulset_pvcs(obj);
        }
        if self.auto_ready {
            self.settle(rt, obj);
        }
    }

    fn ensure_statefulset_pvcs(&mut self, sts: &Value) {
        let Some(pvc_type) = self
            .registry
            .get(&(String::new(), "persistentvolumeclaims".into()))
        else {
            return;
        };
        for pvc in controllers::statefulset_pvcs(sts) {
            let ns = meta_str(&pvc, "namespace").unwrap_or_default().to_string();
            let name = meta_str(&pvc, "name").unwrap_or_default().to_string();
            if self.lookup(&pvc_type.key(), &ns, &name).is_some() {
                continue;
            }
            let target = Target {
                rtype: pvc_type.clone(),
                version: "v1".into(),
                namespace: Some(ns),
                name: None,
                subresource: None,
            };
            let opts = WriteOpts {
                manager: "kube-controller-manager".into(),
                ..WriteOpts::default()
            };
            match self.create(&target, pvc, &opts) {
                Ok(created) => {
                    let status = json!({"phase": "Bound", "accessModes": created.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])), "capacity": created.pointer("/spec/resources/requests").cloned().unwrap_or(json!({}))});
                    self.write_status(&pvc_type, &created, status, "kube-controller-manager");
                }
                Err(e) => tracing::warn!(error = %e.message, "StatefulSet PVC not created"),
            }
        }
    }

    /// Brings a workload to its ready status; true when something changed.
    pub fn settle(&mut self, rt: &ResourceType, obj: &Value) -> bool {
        match controllers::ready_status(&rt.group, &rt.kind, obj, &now()) {
            Some(status) => {
                self.write_status(rt, obj, status, "kube-controller-manager");
                true
            }
            None => false,
        }
    }

    /// Replaces an object's status as `manager` through the status subresource rules.
    pub fn write_status(
        &mut self,
        rt: &ResourceType,
        obj: &Value,
        status: Value,
        manager: &str,
    ) -> Option<Value> {
        let ns = meta_str(obj, "namespace").unwrap_or_default();
        let name = meta_str(obj, "name").unwrap_or_default();
        let old = self.lookup(&rt.key(), ns, name)?.clone();
        let mut new = old.clone();
        new["status"] = status;
        if comparable(&new) == comparable(&old) {
            return Some(old);
        }
        let mut managers = fields::read_managers(&old);
        let scope = if rt.status_subresource {
            Scope::Status
        } else {
            Scope::Main {
                status_subresource: false,
            }
        };
        let sub = rt.status_subresource.then_some("status");
        let changed = fields::changed_paths(&old, &new, scope);
        fields::record_update(
            &mut managers,
            &changed,
            &new,
            manager,
            sub,
            &rt.api_version(rt.preferred_version()),
            &now(),
        );
        fields::write_managers(&mut new, &managers);
        Some(self.commit(rt, EventType::Modified, new, Some(old)))
    }

    /// Settles every workload (Deployments, StatefulSets, ReplicaSets, Jobs, CNPG Clusters).
    pub fn settle_all(&mut self) -> usize {
        let mut changed = 0;
        let types: Vec<Arc<ResourceType>> = self
            .registry
            .all()
            .filter(|t| {
                matches!(
                    (t.group.as_str(), t.kind.as_str()),
                    ("apps", "Deployment" | "StatefulSet" | "ReplicaSet")
                        | ("batch", "Job")
                        | ("postgresql.cnpg.io", "Cluster")
                )
            })
            .cloned()
            .collect();
        for t in types {
            for obj in self.list_raw(&t.key(), None) {
                if meta(&obj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                    continue;
                }
                if self.settle(&t, &obj) {
                    changed += 1;
                }
            }
        }
        changed
    }
}

/// The status the apiextensions controller gives an accepted CRD.
fn crd_status(crd: &Value) -> Value {
    let now = now();
    let names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let versions: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "acceptedNames": names,
        "storedVersions": versions,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    })
}

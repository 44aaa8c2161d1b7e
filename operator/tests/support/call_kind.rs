//! Which Kubernetes API call a request is, as (verb, kind), the way the API server's audit log
//! names it: the operator's call log in the cluster tests (`cluster.rs`) and in `operator_bench`
//! (which includes this file with `#[path]`) count the operator's requests by it.

/// A verb that changes an object.
pub fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "apply" | "delete")
}

/// (verb, kind) of one request: `discovery` (no kind) for the API discovery paths; `watch`,
/// `get`, `list`, `create`, `update`, `apply` (a server-side apply patch), `patch`, `delete`.
pub fn classify<B>(req: &http::Request<B>) -> (String, String) {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    let (resource, named) = match rest {
        [] => (None, false),
        ["namespaces", _ns, plural, tail @ ..] => (Some(*plural), !tail.is_empty()),
        [plural, tail @ ..] => (Some(*plural), !tail.is_empty()),
    };
    match resource {
        None => ("discovery".to_string(), String::new()),
        Some(plural) => {
            let watch = query
                .split('&')
                .any(|kv| kv == "watch=true" || kv == "watch=1");
            let apply = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
            let verb = match *req.method() {
                http::Method::GET if watch => "watch",
                http::Method::GET if named => "get",
                http::Method::GET => "list",
                http::Method::POST => "create",
                http::Method::PUT => "update",
                http::Method::PATCH if apply => "apply",
                http::Method::PATCH => "patch",
                http::Method::DELETE => "delete",
                _ => "other",
            };
            (verb.to_string(), kind_of(plural))
        }
    }
}

/// The kind of a resource path segment (plural).
fn kind_of(plural: &str) -> String {
    let kind = match plural {
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "services" => "Service",
        "serviceaccounts" => "ServiceAccount",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "pods" => "Pod",
        "namespaces" => "Namespace",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "jobs" => "Job",
        "cronjobs" => "CronJob",
        "horizontalpodautoscalers" => "HorizontalPodAutoscaler",
        "poddisruptionbudgets" => "PodDisruptionBudget",
        "networkpolicies" => "NetworkPolicy",
        "ingresses" => "Ingress",
        "events" => "Event",
        "leases" => "Lease",
        "healthcareplatforms" => "HealthcarePlatform",
        "clusters" => "Cluster",
        "scheduledbackups" => "ScheduledBackup",
        "servicemonitors" => "ServiceMonitor",
        "prometheusrules" => "PrometheusRule",
        "customresourcedefinitions" => "CustomResourceDefinition",
        other => other,
    };
    kind.to_string()
}

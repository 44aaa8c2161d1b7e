//! Drift that server-side apply cannot undo: comparison of a live pod template with the desired
//! one.
//!
//! Server-side apply never removes fields owned by another field manager, so an env var added
//! with `kubectl set env`, a `privileged: true` set by hand, an extra volume or container survive
//! every apply. The apply stage therefore compares, after the apply, the parts of the pod spec
//! that matter for security and compliance and replaces the pod spec when they differ (see
//! `apply::Applier::apply_exact`).
//!
//! The live object carries fields the API server defaults (`terminationMessagePath`,
//! `imagePullPolicy`, `dnsPolicy`, probe timeouts, `protocol: TCP`, ...), so the comparison is
//! not a naive equality. It compares a projection that leaves out what the server defaults and
//! normalises the few defaults inside the compared parts:
//!
//! - pod level: `securityContext`, `volumes` (by name; `defaultMode: 420` of secret / configMap
//!   / projected / downwardAPI volumes, `fieldRef.apiVersion: v1`, `divisor: "0"`,
//!   `serviceAccountToken.expirationSeconds: 3600`, `sizeLimit` by value, a plain
//!   `readOnly: false`), `serviceAccountName`, `automountServiceAccountToken`, `hostNetwork`,
//!   `hostPID`, `hostIPC`, `shareProcessNamespace` (`false` equals absent);
//! - containers and init containers, matched by name (the set of names must be equal): `image`,
//!   `command`, `args`, `env` (in order; `fieldRef.apiVersion: v1`, `divisor: "0"`, an empty
//!   `value`), `envFrom`, `securityContext` (exactly: an explicit `false` there overrides the pod
//!   level), `volumeMounts` (by `mountPath`; `readOnly: false` equals absent) and `resources`
//!   (quantities by value:
//!   the server writes `0.5` as `500m`, `1024Mi` as `1Gi`).
//!
//! Everywhere, `null`, empty strings, empty lists and empty maps equal absent fields (the server
//! omits them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{Map, Value};

use crate::validate::parse_quantity;

/// Whether the live pod spec matches the desired one in every part that matters for security and
/// compliance (see the module documentation for what is compared and how).
pub fn same_pod_spec(live: Option<&PodSpec>, desired: Option<&PodSpec>) -> bool {
    let project = |s: Option<&PodSpec>| {
        s.and_then(|s| serde_json::to_value(s).ok())
            .map(|v| pod_projection(&v))
    };
    project(live) == project(desired)
}

/// Removes `null`, empty strings, empty lists and empty maps (recursively).
pub fn prune(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::Array(items) => {
            let items: Vec<Value> = items.into_iter().filter_map(prune).collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(map) => {
            let map: Map<String, Value> = map
                .into_iter()
                .filter_map(|(k, v)| prune(v).map(|v| (k, v)))
                .collect();
            (!map.is_empty()).then_some(Value::Object(map))
        }
        other => Some(other),
    }
}

fn pod_projection(spec: &Value) -> Value {
    let mut out = Map::new();
    for key in [
        "securityContext",
        "serviceAccountName",
        "automountServiceAccountToken",
    ] {
        if let Some(v) = spec.get(key).cloned().and_then(prune) {
            out.insert(key.into(), v);
        }
    }
    // Plain booleans in the API (`omitempty`): false is never written back.
    for key in ["hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"] {
        if spec.get(key) == Some(&Value::Bool(true)) {
            out.insert(key.into(), Value::Bool(true));
        }
    }
    let volumes: BTreeMap<String, Value> = by_name(spec.get("volumes"))
        .map(|(name, v)| (name, normalize_volume(v)))
        .collect();
    out.insert("volumes".into(), json_map(volumes));
    for key in ["containers", "initContainers"] {
        let containers: BTreeMap<String, Value> = by_name(spec.get(key))
            .map(|(name, c)| (name, container_projection(c)))
            .collect();
        out.insert(key.into(), json_map(containers));
    }
    Value::Object(out)
}

fn container_projection(c: &Value) -> Value {
    let mut out = Map::new();
    for key in ["image", "command", "args", "envFrom", "securityContext"] {
        if let Some(v) = c.get(key).cloned().and_then(prune) {
            out.insert(key.into(), v);
        }
    }
    if let Some(env) = c.get("env").and_then(Value::as_array) {
        let env: Vec<Value> = env.iter().filter_map(normalize_env).collect();
        if !env.is_empty() {
            out.insert("env".into(), Value::Array(env));
        }
    }
    if let Some(mounts) = c.get("volumeMounts").and_then(Value::as_array) {
        // Keyed by mountPath (their order means nothing).
        let mounts: BTreeMap<String, Value> = mounts
            .iter()
            .filter_map(|m| {
                let mut m = m.clone();
                drop_false(&mut m, "readOnly");
                let path = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
                Some((path.to_string(), prune(m)?))
            })
            .collect();
        if !mounts.is_empty() {
            out.insert("volumeMounts".into(), json_map(mounts));
        }
    }
    if let Some(r) = c.get("resources").and_then(normalize_resources) {
        out.insert("resources".into(), r);
    }
    Value::Object(out)
}

/// `(name, item)` of a list of named items; items without a name are keyed by their position
/// (the API server rejects them anyway).
fn by_name(list: Option<&Value>) -> impl Iterator<Item = (String, &Value)> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, item)| {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("#{i}"));
            (name, item)
        })
}

fn json_map(m: BTreeMap<String, Value>) -> Value {
    Value::Object(m.into_iter().collect())
}

fn drop_false(v: &mut Value, key: &str) {
    if let Some(obj) = v.as_object_mut() {
        if obj.get(key) == Some(&Value::Bool(false)) {
            obj.remove(key);
        }
    }
}

/// The defaults the API server fills into `fieldRef` / `resourceFieldRef` selectors.
fn normalize_selectors(v: &mut Value) {
    if let Some(f) = v.get_mut("fieldRef").and_then(Value::as_object_mut) {
        f.entry("apiVersion")
            .or_insert_with(|| Value::String("v1".into()));
    }
    if let Some(r) = v.get_mut("resourceFieldRef").and_then(Value::as_object_mut) {
        let divisor = r
            .get("divisor")
            .and_then(Value::as_str)
            .map(quantity)
            .unwrap_or_else(|| quantity("0"));
        r.insert("divisor".into(), divisor);
    }
}

fn normalize_env(e: &Value) -> Option<Value> {
    let mut e = e.clone();
    if let Some(from) = e.get_mut("valueFrom") {
        normalize_selectors(from);
    }
    prune(e)
}

fn normalize_volume(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(obj) = v.as_object_mut() {
        for (kind, source) in obj.iter_mut() {
            if kind == "name" {
                continue;
            }
            drop_false(source, "readOnly");
            if matches!(
                kind.as_str(),
                "secret" | "configMap" | "projected" | "downwardAPI"
            ) {
                if let Some(s) = source.as_object_mut() {
                    s.entry("defaultMode").or_insert(Value::from(420));
                }
            }
            if let Some(items) = source.get_mut("items").and_then(Value::as_array_mut) {
                items.iter_mut().for_each(normalize_selectors);
            }
            if let Some(size) = source.get("sizeLimit").and_then(Value::as_str) {
                let q = quantity(size);
                if let Some(s) = source.as_object_mut() {
                    s.insert("sizeLimit".into(), q);
                }
            }
            if let Some(sources) = source.get_mut("sources").and_then(Value::as_array_mut) {
                for s in sources.iter_mut().filter_map(Value::as_object_mut) {
                    if let Some(t) = s
                        .get_mut("serviceAccountToken")
                        .and_then(Value::as_object_mut)
                    {
                        t.entry("expirationSeconds").or_insert(Value::from(3600));
                    }
                    for (_, projection) in s.iter_mut() {
                        if let Some(items) =
                            projection.get_mut("items").and_then(Value::as_array_mut)
                        {
                            items.iter_mut().for_each(normalize_selectors);
                        }
                    }
                }
            }
        }
    }
    prune(v).unwrap_or(Value::Null)
}

/// A quantity by value (`0.5` = `500m`); an unparsable one stays a string. The value is rounded
/// to 15 significant digits: `9m` parses to `9 × 0.001`, one bit away from `0.009`.
fn quantity(s: &str) -> Value {
    match parse_quantity(s) {
        Some(x) => Value::String(format!("{x:.14e}")),
        None => Value::String(s.to_string()),
    }
}

fn normalize_resources(r: &Value) -> Option<Value> {
    let mut out = Map::new();
    for key in ["limits", "requests"] {
        if let Some(m) = r.get(key).and_then(Value::as_object) {
            let m: Map<String, Value> = m
                .iter()
                .map(|(k, v)| {
                    let q = v.as_str().map(quantity).unwrap_or_else(|| v.clone());
                    (k.clone(), q)
                })
                .collect();
            out.insert(key.into(), Value::Object(m));
        }
    }
    if let Some(claims) = r.get("claims") {
        out.insert("claims".into(), claims.clone());
    }
    prune(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;
    use crate::desired::{config_map, deployment, postgres, redis};
    use serde_json::json;

    /// What the API server returns for a pod spec it stored: the defaults filled in, quantities
    /// in canonical form, `false` plain booleans and empty strings dropped.
    fn as_served(desired: &PodSpec) -> PodSpec {
        let mut v = serde_json::to_value(desired).unwrap();
        let spec = v.as_object_mut().unwrap();
        spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
        spec.entry("restartPolicy").or_insert(json!("Always"));
        spec.entry("schedulerName")
            .or_insert(json!("default-scheduler"));
        spec.entry("terminationGracePeriodSeconds")
            .or_insert(json!(30));
        spec.entry("securityContext").or_insert(json!({}));
        // The deprecated alias is filled from serviceAccountName.
        if let Some(sa) = spec.get("serviceAccountName").cloned() {
            spec.insert("serviceAccount".into(), sa);
        }
        for key in ["hostNetwork", "hostPID", "hostIPC"] {
            if spec.get(key) == Some(&json!(false)) {
                spec.remove(key);
            }
        }
        for vol in spec
            .get_mut("volumes")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let vol = vol.as_object_mut().unwrap();
            for kind in ["secret", "configMap", "projected", "downwardAPI"] {
                if let Some(s) = vol.get_mut(kind).and_then(Value::as_object_mut) {
                    s.entry("defaultMode").or_insert(json!(420));
                }
            }
        }
        for key in ["containers", "initContainers"] {
            for c in spec
                .get_mut(key)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let c = c.as_object_mut().unwrap();
                c.entry("imagePullPolicy").or_insert(json!("IfNotPresent"));
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
                for port in c
                    .get_mut("ports")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    port.as_object_mut()
                        .unwrap()
                        .entry("protocol")
                        .or_insert(json!("TCP"));
                }
                for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
                        p.entry("timeoutSeconds").or_insert(json!(1));
                        p.entry("periodSeconds").or_insert(json!(10));
                        p.entry("successThreshold").or_insert(json!(1));
                        p.entry("failureThreshold").or_insert(json!(3));
                        if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                            h.entry("scheme").or_insert(json!("HTTP"));
                        }
                    }
                }
                for e in c
                    .get_mut("env")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(f) = e.pointer_mut("/valueFrom/fieldRef") {
                        f.as_object_mut()
                            .unwrap()
                            .entry("apiVersion")
                            .or_insert(json!("v1"));
                    }
                    if let Some(r) = e.pointer_mut("/valueFrom/resourceFieldRef") {
                        r.as_object_mut()
                            .unwrap()
                            .entry("divisor")
                            .or_insert(json!("0"));
                    }
                    if e.get("value") == Some(&json!("")) {
                        e.as_object_mut().unwrap().remove("value");
                    }
                }
                for m in c
                    .get_mut("volumeMounts")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if m.get("readOnly") == Some(&json!(false)) {
                        m.as_object_mut().unwrap().remove("readOnly");
                    }
                }
                // Canonical quantities.
                if let Some(r) = c.get_mut("resources").and_then(Value::as_object_mut) {
                    for (_, m) in r.iter_mut() {
                        for (_, q) in m.as_object_mut().into_iter().flatten() {
                            *q = json!(canonical(q.as_str().unwrap()));
                        }
                    }
                }
            }
        }
        serde_json::from_value(v).unwrap()
    }

    /// The API server's canonical form of the quantities the builders use.
    fn canonical(q: &str) -> String {
        match q {
            "0.5" => "500m".into(),
            "1000m" => "1".into(),
            "1024Mi" => "1Gi".into(),
            other => other.into(),
        }
    }

    fn api_pod() -> PodSpec {
        let p = platform(|s| {
            s.api_server.resources =
                crate::crd::ResourcesSpec::new("0.5", "1024Mi", "1000m", "1024Mi");
        });
        deployment::build(&p, &config_map::build(&p), None, None)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    fn postgres_pod() -> PodSpec {
        let p = platform(|_| {});
        postgres::build(&p, Some("0123"))
            .unwrap()
            .stateful_set
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    fn redis_pod() -> PodSpec {
        let p = platform(|_| {});
        redis::build(&p, None)
            .unwrap()
            .stateful_set
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    fn edited(spec: &PodSpec, f: impl FnOnce(&mut Value)) -> PodSpec {
        let mut v = serde_json::to_value(spec).unwrap();
        f(&mut v);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn served_defaults_are_not_drift() {
        for desired in [api_pod(), postgres_pod(), redis_pod()] {
            let live = as_served(&desired);
            assert_ne!(
                serde_json::to_value(&live).unwrap(),
                serde_json::to_value(&desired).unwrap(),
                "the served object differs textually"
            );
            assert!(same_pod_spec(Some(&live), Some(&desired)));
        }
    }

    #[test]
    fn an_env_var_added_by_another_manager_is_drift() {
        let desired = api_pod();
        let live = edited(&as_served(&desired), |v| {
            v["containers"][0]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES", "value": "60"}));
        });
        assert!(!same_pod_spec(Some(&live), Some(&desired)));
        // A changed value of an existing variable, and an env var turned into envFrom.
        let live = edited(&as_served(&desired), |v| {
            v["containers"][0]["env"][0]["value"] = json!("changed");
            v["containers"][0]["env"][0]
                .as_object_mut()
                .unwrap()
                .remove("valueFrom");
        });
        assert!(!same_pod_spec(Some(&live), Some(&desired)));
        let live = edited(&as_served(&desired), |v| {
            v["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "other"}}]);
        });
        assert!(!same_pod_spec(Some(&live), Some(&desired)));
    }

    #[test]
    fn hand_set_security_context_fields_are_drift() {
        let desired = postgres_pod();
        for (field, value) in [
            ("privileged", json!(true)),
            ("runAsUser", json!(0)),
            ("runAsNonRoot", json!(false)),
            ("allowPrivilegeEscalation", json!(true)),
        ] {
            let live = edited(&as_served(&desired), |v| {
                v["containers"][0]["securityContext"][field] = value.clone();
            });
            assert!(!same_pod_spec(Some(&live), Some(&desired)), "{field}");
        }
        let live = edited(&as_served(&desired), |v| {
            v["securityContext"]["runAsUser"] = json!(0);
        });
        assert!(!same_pod_spec(Some(&live), Some(&desired)), "pod level");
        for key in ["hostNetwork", "hostPID", "hostIPC"] {
            let live = edited(&as_served(&desired), |v| v[key] = json!(true));
            assert!(!same_pod_spec(Some(&live), Some(&desired)), "{key}");
        }
        let live = edited(&as_served(&desired), |v| {
            v["automountServiceAccountToken"] = json!(true);
        });
        assert!(!same_pod_spec(Some(&live), Some(&desired)));
    }

    #[test]
    fn extra_volumes_mounts_containers_and_images_are_drift() {
        let desired = api_pod();
        let cases: Vec<fn(&mut Value)> = vec![
            |v| {
                v["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "host", "hostPath": {"path": "/", "type": ""}}))
            },
            |v| {
                v["containers"][0]["volumeMounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "tmp", "mountPath": "/elsewhere"}))
            },
            |v| {
                let mut extra = v["containers"][0].clone();
                extra["name"] = json!("sidecar");
                v["containers"].as_array_mut().unwrap().push(extra);
            },
            |v| {
                v["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
            },
            |v| v["containers"][0]["image"] = json!("evil/api:latest"),
            |v| v["containers"][0]["command"] = json!(["/bin/sh"]),
            |v| v["containers"][0]["resources"]["limits"]["memory"] = json!("64Gi"),
            |v| {
                v["containers"][0]["resources"]["limits"]
                    .as_object_mut()
                    .unwrap()
                    .remove("cpu");
            },
            |v| v["serviceAccountName"] = json!("default"),
        ];
        for (i, case) in cases.iter().enumerate() {
            let live = edited(&as_served(&desired), *case);
            assert!(!same_pod_spec(Some(&live), Some(&desired)), "case {i}");
        }
        assert!(!same_pod_spec(None, Some(&desired)));
    }

    #[test]
    fn defaults_inside_compared_fields_are_not_drift() {
        let desired: PodSpec = serde_json::from_value(json!({
            "containers": [{
                "name": "c",
                "image": "img",
                "env": [
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                    {"name": "EMPTY", "value": ""}
                ],
                "volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": false}]
            }],
            "hostNetwork": false,
            "volumes": [
                {"name": "s", "secret": {"secretName": "x"}},
                {"name": "t", "emptyDir": {"sizeLimit": "0.5Gi"}},
                {"name": "p", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}}
                ]}}
            ]
        }))
        .unwrap();
        let live: PodSpec = serde_json::from_value(json!({
            "containers": [{
                "name": "c",
                "image": "img",
                "imagePullPolicy": "IfNotPresent",
                "env": [
                    {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "0"}}},
                    {"name": "EMPTY"}
                ],
                "volumeMounts": [{"name": "s", "mountPath": "/s"}],
                "resources": {}
            }],
            "volumes": [
                {"name": "s", "secret": {"secretName": "x", "defaultMode": 420}},
                {"name": "t", "emptyDir": {"sizeLimit": "512Mi"}},
                {"name": "p", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    {"downwardAPI": {"items": [{"path": "n", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}]}}
                ]}}
            ],
            "securityContext": {},
            "dnsPolicy": "ClusterFirst"
        }))
        .unwrap();
        assert!(same_pod_spec(Some(&live), Some(&desired)));
        // The same places with values that are not the defaults.
        let changed = [
            "/volumes/0/secret/defaultMode",
            "/volumes/2/projected/sources/0/serviceAccountToken/expirationSeconds",
            "/containers/0/env/0/valueFrom/fieldRef/apiVersion",
        ];
        for path in changed {
            let mut v = serde_json::to_value(&live).unwrap();
            *v.pointer_mut(path).unwrap() = if path.ends_with("apiVersion") {
                json!("v2")
            } else {
                json!(511)
            };
            let edited: PodSpec = serde_json::from_value(v).unwrap();
            assert!(!same_pod_spec(Some(&edited), Some(&desired)), "{path}");
        }
        let mut v = serde_json::to_value(&live).unwrap();
        v["containers"][0]["volumeMounts"][0]["readOnly"] = json!(true);
        let edited: PodSpec = serde_json::from_value(v).unwrap();
        assert!(!same_pod_spec(Some(&edited), Some(&desired)));
    }

    #[test]
    fn order_of_volumes_and_containers_and_equal_quantities_do_not_matter() {
        let desired = postgres_pod();
        let live = edited(&as_served(&desired), |v| {
            v["volumes"].as_array_mut().unwrap().reverse();
            v["containers"][0]["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .reverse();
        });
        assert!(same_pod_spec(Some(&live), Some(&desired)));
        assert_eq!(parse_quantity("1Gi"), parse_quantity("1024Mi"));
    }

    #[test]
    fn quantities_compare_by_value_without_float_noise() {
        for (a, b) in [
            ("0.009", "9m"),
            ("0.026", "26m"),
            ("1.5", "1500m"),
            ("1Gi", "1024Mi"),
            ("1G", "1000M"),
        ] {
            assert_ne!(a, b);
            assert_eq!(quantity(a), quantity(b), "{a} = {b}");
        }
        assert_ne!(quantity("0.5"), quantity("0.6"));
        assert_ne!(quantity("1G"), quantity("1Gi"));
        assert_ne!(quantity("1Mi"), quantity("1048577"));
    }
}

//! Resource types the stand-in serves: a fixed table of built-in kinds plus the kinds of
//! `CustomResourceDefinition`s created at runtime.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{json, Value};

/// Storage key of a resource type: `(group, plural)`. The core group is `""`.
pub type ResKey = (String, String);

/// A served resource type.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    /// Served versions; the first is the preferred (and storage) version.
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// OpenAPI v3 schema per version, only for custom resources.
    pub schemas: BTreeMap<String, Value>,
    /// Name of the CRD object that registered this type.
    pub crd_name: Option<String>,
}

impl ResourceType {
    pub fn key(&self) -> ResKey {
        (self.group.clone(), self.plural.clone())
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn preferred_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    /// `Kind.group` as the API server names a type in error messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// `(group, version, kind, plural, namespaced, status subresource, short names)`.
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    bool,
    &'static [&'static str],
);

const BUILTINS: &[Builtin] = &[
    ("", "v1", "Namespace", "namespaces", false, true, &["ns"]),
    ("", "v1", "Node", "nodes", false, true, &["no"]),
    (
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        false,
        true,
        &["pv"],
    ),
    ("", "v1", "Pod", "pods", true, true, &["po"]),
    ("", "v1", "Service", "services", true, true, &["svc"]),
    ("", "v1", "Endpoints", "endpoints", true, false, &["ep"]),
    ("", "v1", "ConfigMap", "configmaps", true, false, &["cm"]),
    ("", "v1", "Secret", "secrets", true, false, &[]),
    (
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        false,
        &["sa"],
    ),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        true,
        &["pvc"],
    ),
    ("", "v1", "Event", "events", true, false, &["ev"]),
    (
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        true,
        &["deploy"],
    ),
    (
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        true,
        true,
        &["sts"],
    ),
    ("apps", "v1", "DaemonSet", "daemonsets", true, true, &["ds"]),
    (
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        true,
        true,
        &["rs"],
    ),
    ("batch", "v1", "Job", "jobs", true, true, &[]),
    ("batch", "v1", "CronJob", "cronjobs", true, true, &["cj"]),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        true,
        &["hpa"],
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        true,
        &["pdb"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        false,
        &["netpol"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        true,
        &["ing"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        false,
        false,
        &[],
    ),
    (
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        false,
        &[],
    ),
    (
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        true,
        false,
        &["ev"],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        false,
        &[],
    ),
    (
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false,
        false,
        &["sc"],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        true,
        &["crd", "crds"],
    ),
];

/// All served resource types.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: BTreeMap<ResKey, Arc<ResourceType>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut types = BTreeMap::new();
        for (group, version, kind, plural, namespaced, status, short) in BUILTINS {
            let t = ResourceType {
                group: (*group).to_string(),
                versions: vec![(*version).to_string()],
                kind: (*kind).to_string(),
                plural: (*plural).to_string(),
                singular: kind.to_lowercase(),
                short_names: short.iter().map(|s| (*s).to_string()).collect(),
                namespaced: *namespaced,
                status_subresource: *status,
                schemas: BTreeMap::new(),
                crd_name: None,
            };
            types.insert(t.key(), Arc::new(t));
        }
        Self { types }
    }

    /// The type served at `group/version` under `plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), plural.to_string()))
            .filter(|t| t.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// The type with this `apiVersion` and kind.
    pub fn lookup_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = split_api_version(api_version);
        self.types
            .values()
            .find(|t| t.group == group && t.kind == kind && t.versions.iter().any(|v| v == version))
            .cloned()
    }

    pub fn get(&self, key: &ResKey) -> Option<Arc<ResourceType>> {
        self.types.get(key).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Registers (or re-registers) the kind defined by a CRD object. Returns its key.
    pub fn register_crd(&mut self, crd: &Value) -> Result<ResKey, String> {
        let t = parse_crd(crd)?;
        if let Some(existing) = self.types.get(&t.key()) {
            if existing.crd_name.is_none() {
                return Err(format!("{} is a built-in resource", t.qualified_kind()));
            }
        }
        let key = t.key();
        self.types.insert(key.clone(), Arc::new(t));
        Ok(key)
    }

    /// Removes a CRD-defined kind; returns its key if it was registered by that CRD.
    pub fn unregister_crd(&mut self, crd_name: &str) -> Option<ResKey> {
        let key = self
            .types
            .iter()
            .find(|(_, t)| t.crd_name.as_deref() == Some(crd_name))
            .map(|(k, _)| k.clone())?;
        self.types.remove(&key);
        Some(key)
    }

    /// Groups with their served versions, core group excluded, in a stable order.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values().filter(|t| !t.group.is_empty()) {
            let versions = out.entry(t.group.clone()).or_default();
            for v in &t.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        out
    }

    /// `APIResourceList` for a group version, or `None` when nothing is served there.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut resources = Vec::new();
        for t in self
            .types
            .values()
            .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
        {
            resources.push(json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": t.short_names,
            }));
            if t.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", t.plural),
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        if resources.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }))
    }
}

/// Splits `group/version` (`v1` for the core group).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Reads the served kind of an `apiextensions.k8s.io/v1` CRD object.
pub fn parse_crd(crd: &Value) -> Result<ResourceType, String> {
    let name = str_at(crd, &["metadata", "name"]).ok_or("metadata.name is required")?;
    let group = str_at(crd, &["spec", "group"]).ok_or("spec.group is required")?;
    let kind = str_at(crd, &["spec", "names", "kind"]).ok_or("spec.names.kind is required")?;
    let plural =
        str_at(crd, &["spec", "names", "plural"]).ok_or("spec.names.plural is required")?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let singular = str_at(crd, &["spec", "names", "singular"])
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let short_names = crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let namespaced = match str_at(crd, &["spec", "scope"]) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => return Err(format!("spec.scope: Unsupported value: {other:?}")),
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions is required")?;
    let mut served = Vec::new();
    let mut schemas = BTreeMap::new();
    let mut status_subresource = false;
    let mut storage_first: Option<String> = None;
    for v in versions {
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or("spec.versions[].name is required")?;
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage_first = Some(vname.to_string());
        }
        if v.pointer("/subresources/status").is_some() {
            status_subresource = true;
        }
        if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
            schemas.insert(vname.to_string(), schema.clone());
        }
        served.push(vname.to_string());
    }
    if served.is_empty() {
        return Err("spec.versions: at least one version must be served".into());
    }
    if let Some(storage) = storage_first {
        served.retain(|v| v != &storage);
        served.insert(0, storage);
    }
    Ok(ResourceType {
        group: group.to_string(),
        versions: served,
        kind: kind.to_string(),
        plural: plural.to_string(),
        singular,
        short_names,
        namespaced,
        status_subresource,
        schemas,
        crd_name: Some(name.to_string()),
    })
}

//! Least-privilege RBAC: the chart's ClusterRole and leader-election Role grant exactly the
//! resources the operator's code touches, with no wildcard, and at least the verbs its calls need.
//!
//! The operator's API usage is read from `operator/src` (test modules, i.e. everything after a
//! `#[cfg(test)]`, excluded):
//! - kinds: `k8s_openapi::api::<group>::<version>::Kind` imports and paths; dynamic kinds by their
//!   group strings (`postgresql.cnpg.io`, `monitoring.coreos.com`);
//! - applied (server-side apply = `patch`, which may create): kinds that are owned (not borrowed)
//!   fields of the structs in `operator/src/desired/` (what the build stage returns and apply
//!   applies);
//! - deleted: `delete::<Kind>` calls, and the sweep: every kind the operator's registry
//!   (`caduceus_operator::desired::kinds`) deletes when unwanted is listed and deleted;
//! - called on a `let NAME: Api<Kind>`: `NAME.get(`/`.get_opt(`/`.list(`/`.patch(`/`.delete(`/
//!   `.delete_collection(`/`.create(` need that verb; the same call anywhere else in the file
//!   allows it (helpers such as `detach(&api, ..)` work on a generic `Api`);
//! - watched: every built-in kind of the registry (`list`, `watch`);
//! - the custom resource: status writes (`patch_status`/`replace_status`), the finalizer
//!   (`FINALIZER`), owner references with `block_owner_deletion` (`finalizers` `update`);
//! - Events through `kube::runtime::events::Recorder` (`create`, `patch` on events.k8s.io);
//! - leader election through `kube_lease_manager` (`get`, `create`, `patch` on Leases, in the
//!   operator's namespace only).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use caduceus_e2e::{helm_template, repo_root};
use caduceus_operator::desired::kinds::{WhenUnwanted, CUSTOM_KINDS, TYPED_KINDS};
use serde_json::Value;

type Grants = BTreeMap<(String, String), BTreeSet<String>>;

/// Top-level kinds of k8s-openapi: (module, type, API group, resource).
const KNOWN: [(&str, &str, &str, &str); 24] = [
    ("core", "Secret", "", "secrets"),
    ("core", "ConfigMap", "", "configmaps"),
    ("core", "Service", "", "services"),
    ("core", "ServiceAccount", "", "serviceaccounts"),
    (
        "core",
        "PersistentVolumeClaim",
        "",
        "persistentvolumeclaims",
    ),
    ("core", "Pod", "", "pods"),
    ("core", "Namespace", "", "namespaces"),
    ("core", "Endpoints", "", "endpoints"),
    ("core", "Event", "", "events"),
    ("apps", "Deployment", "apps", "deployments"),
    ("apps", "StatefulSet", "apps", "statefulsets"),
    ("apps", "DaemonSet", "apps", "daemonsets"),
    ("apps", "ReplicaSet", "apps", "replicasets"),
    ("batch", "Job", "batch", "jobs"),
    ("batch", "CronJob", "batch", "cronjobs"),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        "autoscaling",
        "horizontalpodautoscalers",
    ),
    (
        "policy",
        "PodDisruptionBudget",
        "policy",
        "poddisruptionbudgets",
    ),
    (
        "networking",
        "NetworkPolicy",
        "networking.k8s.io",
        "networkpolicies",
    ),
    ("networking", "Ingress", "networking.k8s.io", "ingresses"),
    ("coordination", "Lease", "coordination.k8s.io", "leases"),
    ("events", "Event", "events.k8s.io", "events"),
    ("rbac", "Role", "rbac.authorization.k8s.io", "roles"),
    (
        "rbac",
        "RoleBinding",
        "rbac.authorization.k8s.io",
        "rolebindings",
    ),
    (
        "discovery",
        "EndpointSlice",
        "discovery.k8s.io",
        "endpointslices",
    ),
];

/// One source file without its test module.
struct Source {
    path: String,
    text: String,
}

fn sources(dir: &Path, out: &mut Vec<Source>) {
    for entry in fs::read_dir(dir).expect("operator/src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("read source");
            let text = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            out.push(Source {
                path: path.display().to_string(),
                text,
            });
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// (module, type) of every `k8s_openapi::api::<module>::<version>::...` reference in `text`.
fn k8s_types(text: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("k8s_openapi::api::") {
        let rest = &text[i + "k8s_openapi::api::".len()..];
        let mut parts = rest.splitn(3, "::");
        let (Some(module), Some(_version), Some(tail)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let names: Vec<&str> = if let Some(list) = tail.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            list[..end].split(',').collect()
        } else {
            let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
            vec![&tail[..end]]
        };
        for name in names {
            let name = name.split_whitespace().next().unwrap_or_default();
            if !name.is_empty() {
                out.insert((module.to_string(), name.to_string()));
            }
        }
    }
    out
}

/// `Api<K>` / `Api::<K>` with a concrete K.
fn api_types(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for pat in ["Api<", "Api::<"] {
        for (i, _) in text.match_indices(pat) {
            let rest = &text[i + pat.len()..];
            let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
            out.insert(rest[..end].to_string());
        }
    }
    out
}

/// Api methods and the RBAC verb each needs.
const METHODS: [(&str, &str); 7] = [
    (".get(", "get"),
    (".get_opt(", "get"),
    (".list(", "list"),
    (".patch(", "patch"),
    (".delete(", "delete"),
    (".delete_collection(", "deletecollection"),
    (".create(", "create"),
];

/// `(NAME, K)` of every `letNAME:Api<K>` in whitespace-free text (`let mut` included).
fn api_bindings(compact: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (i, _) in compact.match_indices(":Api<") {
        let before = &compact[..i];
        let start = before
            .rfind(|c: char| !is_ident(c))
            .map(|j| j + 1)
            .unwrap_or(0);
        let var = before[start..]
            .strip_prefix("let")
            .map(|v| v.strip_prefix("mut").unwrap_or(v));
        let Some(var) = var.filter(|v| !v.is_empty()) else {
            continue;
        };
        let rest = &compact[i + ":Api<".len()..];
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        out.insert((var.to_string(), rest[..end].to_string()));
    }
    out
}

fn turbofish(text: &str, method: &str) -> BTreeSet<String> {
    let pat = format!("{method}::<");
    text.match_indices(&pat)
        .map(|(i, _)| {
            let rest = &text[i + pat.len()..];
            let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .collect()
}

/// What the operator's code needs (`required`) and may be granted (`allowed`), per resource.
fn operator_usage() -> (Grants, Grants) {
    let mut files = Vec::new();
    sources(&repo_root().join("operator/src"), &mut files);
    assert!(!files.is_empty(), "operator/src has no source");
    let all: String = files.iter().map(|f| f.text.as_str()).collect();

    // Resource types referenced anywhere, by type name.
    let mut kinds: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (module, ty) in k8s_types(&all) {
        if let Some((_, _, group, resource)) =
            KNOWN.iter().find(|(m, t, _, _)| *m == module && *t == ty)
        {
            kinds.insert(ty, (group.to_string(), resource.to_string()));
        }
    }
    let mut required = Grants::new();
    let mut allowed = Grants::new();
    let need = |g: &mut Grants, key: &(String, String), verbs: &[&str]| {
        g.entry(key.clone())
            .or_default()
            .extend(verbs.iter().map(|v| v.to_string()));
    };

    // Everything referenced may be read and watched (owned children).
    for key in kinds.values() {
        need(&mut allowed, key, &["get", "list", "watch"]);
    }
    // Applied: fields of the desired stage's structs.
    let build: String = files
        .iter()
        .filter(|f| f.path.contains("/desired/"))
        .map(|f| f.text.as_str())
        .collect();
    for (ty, key) in &kinds {
        let as_field = build.lines().any(|l| {
            let l = l.trim();
            let field_type = l.split_once(':').map(|x| x.1).unwrap_or("");
            // Owned fields only: borrowed ones (`&'a [Pod]`) are observations handed in.
            l.starts_with("pub ") && !field_type.contains('&') && contains_word(field_type, ty)
        });
        if as_field {
            need(&mut required, key, &["patch"]);
            need(&mut allowed, key, &["patch", "create"]);
        }
    }
    // Deleted and read through explicit Api<K>.
    for ty in turbofish(&all, "delete") {
        if let Some(key) = kinds.get(&ty) {
            need(&mut required, key, &["delete"]);
            need(&mut allowed, key, &["delete"]);
        }
    }
    for file in &files {
        // Allowed: every call of the file may concern any explicit Api<K> of the file (helpers
        // such as `detach(&api, ..)` call methods on a generic Api).
        for ty in api_types(&file.text) {
            let Some(key) = kinds.get(&ty) else { continue };
            for (call, verb) in METHODS {
                if file.text.contains(call) {
                    need(&mut allowed, key, &[verb]);
                }
            }
        }
        // Required: methods called on a variable declared `let NAME: Api<K>`.
        // A name bound to several types in one file (`api`) is ambiguous and only allows.
        let compact: String = file.text.chars().filter(|c| !c.is_whitespace()).collect();
        let bindings = api_bindings(&compact);
        for (var, ty) in &bindings {
            if bindings.iter().filter(|(v, _)| v == var).count() > 1 {
                continue;
            }
            let Some(key) = kinds.get(ty) else { continue };
            for (call, verb) in METHODS {
                if compact.contains(&format!("{var}{call}")) {
                    need(&mut required, key, &[verb]);
                }
            }
        }
    }
    // The operator's registry of child kinds (`operator/src/desired/kinds.rs`): every built-in
    // kind is watched; the kinds deleted when unwanted are listed and deleted by the sweep,
    // custom ones too (when their CRDs are served).
    for k in TYPED_KINDS {
        let (_, _, group, resource) = KNOWN
            .iter()
            .find(|(_, t, _, _)| *t == k.kind)
            .unwrap_or_else(|| panic!("KNOWN lacks the registered kind {}", k.kind));
        let key = (group.to_string(), resource.to_string());
        kinds.insert(k.kind.to_string(), key.clone());
        need(&mut required, &key, &["list", "watch"]);
        need(&mut allowed, &key, &["get", "list", "watch"]);
        if k.unwanted == WhenUnwanted::Delete {
            need(&mut required, &key, &["list", "delete"]);
            need(&mut allowed, &key, &["delete"]);
        }
    }
    for c in CUSTOM_KINDS {
        let ar = (c.resource)();
        let key = (ar.group.clone(), ar.plural.clone());
        if c.unwanted == WhenUnwanted::Delete {
            need(&mut required, &key, &["list", "delete"]);
            need(&mut allowed, &key, &["list", "delete"]);
        }
    }
    // Dynamic kinds.
    let cnpg = ("postgresql.cnpg.io".to_string(), "clusters".to_string());
    if all.contains("postgresql.cnpg.io") {
        need(&mut required, &cnpg, &["patch"]);
        need(
            &mut allowed,
            &cnpg,
            &["get", "list", "watch", "patch", "create"],
        );
    }
    // CloudNativePG ScheduledBackups (delegated backups): applied and deleted by plural.
    if all.contains("postgresql.cnpg.io") && all.contains("\"scheduledbackups\"") {
        let key = (
            "postgresql.cnpg.io".to_string(),
            "scheduledbackups".to_string(),
        );
        need(&mut required, &key, &["patch"]);
        need(
            &mut allowed,
            &key,
            &["get", "list", "watch", "patch", "create"],
        );
    }
    if all.contains("monitoring.coreos.com") {
        for (kind, resource) in [
            ("ServiceMonitor", "servicemonitors"),
            ("PrometheusRule", "prometheusrules"),
        ] {
            if all.contains(kind) {
                let key = ("monitoring.coreos.com".to_string(), resource.to_string());
                need(&mut required, &key, &["patch"]);
                need(
                    &mut allowed,
                    &key,
                    &["get", "list", "watch", "patch", "create"],
                );
            }
        }
    }
    // The custom resource.
    let hcp = ("caduceus.io".to_string(), "healthcareplatforms".to_string());
    let status = (
        "caduceus.io".to_string(),
        "healthcareplatforms/status".to_string(),
    );
    let finalizers = (
        "caduceus.io".to_string(),
        "healthcareplatforms/finalizers".to_string(),
    );
    need(
        &mut allowed,
        &hcp,
        &["get", "list", "watch", "patch", "update"],
    );
    if all.contains("Controller::new") {
        need(&mut required, &hcp, &["get", "list", "watch"]);
    }
    if all.contains("FINALIZER") && all.contains("finalizer(") {
        need(&mut required, &hcp, &["patch"]);
    }
    if all.contains("patch_status(") || all.contains("replace_status(") {
        need(&mut required, &status, &["patch"]);
        need(&mut allowed, &status, &["get", "patch", "update"]);
    }
    if all.contains("block_owner_deletion: Some(true)") {
        need(&mut required, &finalizers, &["update"]);
        need(&mut allowed, &finalizers, &["update"]);
    }
    if all.contains("Recorder") {
        let events = ("events.k8s.io".to_string(), "events".to_string());
        need(&mut required, &events, &["create", "patch"]);
        need(&mut allowed, &events, &["create", "patch"]);
    }
    if all.contains("kube_lease_manager") || all.contains("LeaseManager") {
        let leases = ("coordination.k8s.io".to_string(), "leases".to_string());
        need(&mut required, &leases, &["get", "create", "patch"]);
        need(&mut allowed, &leases, &["get", "create", "patch", "update"]);
    }
    (required, allowed)
}

/// The chart's rules (default values): ClusterRole and Role separately.
fn chart_rules() -> (Grants, Grants) {
    let objects = helm_template(&[]).expect("helm template");
    let mut cluster = Grants::new();
    let mut namespaced = Grants::new();
    for obj in &objects {
        let target = match obj["kind"].as_str() {
            Some("ClusterRole") => &mut cluster,
            Some("Role") => &mut namespaced,
            _ => continue,
        };
        for rule in obj["rules"].as_array().expect("rules") {
            let list = |v: &Value| -> Vec<String> {
                v.as_array()
                    .expect("list")
                    .iter()
                    .map(|s| s.as_str().expect("string").to_string())
                    .collect()
            };
            let (groups, resources, verbs) = (
                list(&rule["apiGroups"]),
                list(&rule["resources"]),
                list(&rule["verbs"]),
            );
            for v in groups.iter().chain(&resources).chain(&verbs) {
                assert!(
                    !v.contains('*'),
                    "wildcard `{v}` in {}",
                    obj["metadata"]["name"]
                );
            }
            assert!(rule["resourceNames"].is_null() || rule["resourceNames"].is_array());
            for g in &groups {
                for r in &resources {
                    target
                        .entry((g.clone(), r.clone()))
                        .or_default()
                        .extend(verbs.iter().cloned());
                }
            }
        }
    }
    (cluster, namespaced)
}

#[test]
fn chart_rbac_is_exactly_what_the_operator_uses() {
    let (required, allowed) = operator_usage();
    let (cluster, namespaced) = chart_rules();
    println!("operator code needs: {required:#?}");
    let leases = ("coordination.k8s.io".to_string(), "leases".to_string());
    assert!(
        !cluster.contains_key(&leases),
        "Leases belong in the namespaced Role, not the ClusterRole"
    );
    for key in namespaced.keys() {
        assert_eq!(
            key, &leases,
            "the namespaced Role is for leader election only"
        );
    }
    let mut granted = cluster.clone();
    for (k, v) in &namespaced {
        granted
            .entry(k.clone())
            .or_default()
            .extend(v.iter().cloned());
    }
    let mut problems = Vec::new();
    for (key, verbs) in &required {
        let have = granted.get(key).cloned().unwrap_or_default();
        let missing: Vec<_> = verbs.difference(&have).collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{key:?}: the operator needs {missing:?}, the chart does not grant it"
            ));
        }
    }
    for (key, verbs) in &granted {
        let Some(ok) = allowed.get(key) else {
            problems.push(format!(
                "{key:?}: granted {verbs:?}, but the operator's code never touches it"
            ));
            continue;
        };
        let extra: Vec<_> = verbs.difference(ok).collect();
        if !extra.is_empty() {
            problems.push(format!(
                "{key:?}: grants {extra:?}, which the operator's code never uses"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "RBAC does not match operator/src:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn scanner_finds_imports_api_types_and_turbofish() {
    let text = "use k8s_openapi::api::apps::v1::{Deployment, StatefulSet as Sts};\n\
                let x = k8s_openapi::api::core::v1::Secret::default();\n\
                let a: Api<Deployment> = todo; self.delete::<StatefulSet>(&n); c.owns(Api::<Secret>::all(c));";
    let types = k8s_types(text);
    assert!(types.contains(&("apps".into(), "Deployment".into())));
    assert!(types.contains(&("apps".into(), "StatefulSet".into())));
    assert!(types.contains(&("core".into(), "Secret".into())));
    assert_eq!(
        api_types(text),
        BTreeSet::from(["Deployment".to_string(), "Secret".to_string()])
    );
    assert_eq!(
        turbofish(text, "delete"),
        BTreeSet::from(["StatefulSet".to_string()])
    );
    let compact: String = "let pvcs: Api<PersistentVolumeClaim> = x; let mut s: Api<Secret> = y;"
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert_eq!(
        api_bindings(&compact),
        BTreeSet::from([
            ("pvcs".to_string(), "PersistentVolumeClaim".to_string()),
            ("s".to_string(), "Secret".to_string())
        ])
    );
    assert!(contains_word("Option<Secret>", "Secret"));
    assert!(!contains_word("Option<SecretKeyRef>", "Secret"));
}

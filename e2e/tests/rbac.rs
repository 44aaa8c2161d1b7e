//! Least-privilege RBAC: the chart's ClusterRole and leader-election Role grant exactly the
//! resources the operator's code touches, with no wildcard, and at least the verbs its calls need.
//!
//! The operator's API usage is read from `operator/src` (test modules, i.e. everything after a
//! `#[cfg(test)]`, excluded):
//! - kinds: `k8s_openapi::api::<group>::<version>::Kind` imports and paths; dynamic kinds by their
//!   group strings (`postgresql.cnpg.io`, `monitoring.coreos.com`);
//! - applied (server-side apply = `patch`, which may create): every kind of the operator's
//!   registry (`caduceus_operator::desired::kinds`), which is what the desired list is made of;
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
    // Applied (server-side apply = `patch`, which may create): every kind of the registry.
    for k in TYPED_KINDS {
        if let Some(key) = kinds.get(k.kind) {
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

/// The chart's release namespace (`helm_template` renders into it).
const RELEASE_NS: &str = "caduceus-system";

/// The RBAC objects of one `helm template` render.
#[derive(Default)]
struct ChartRbac {
    /// ClusterRole rules by name.
    cluster_roles: BTreeMap<String, Grants>,
    /// Role rules by (namespace, name).
    roles: BTreeMap<(String, String), Grants>,
    /// ClusterRoleBindings: (roleRef kind, roleRef name).
    cluster_bindings: Vec<(String, String)>,
    /// RoleBindings: (namespace, roleRef kind, roleRef name).
    bindings: Vec<(String, String, String)>,
}

impl ChartRbac {
    /// What the chart's ServiceAccount may do cluster-wide (ClusterRoles bound by a
    /// ClusterRoleBinding).
    fn cluster_wide(&self) -> Grants {
        let mut out = Grants::new();
        for (kind, name) in &self.cluster_bindings {
            assert_eq!(
                kind, "ClusterRole",
                "a ClusterRoleBinding binds a ClusterRole"
            );
            let rules = self
                .cluster_roles
                .get(name)
                .unwrap_or_else(|| panic!("ClusterRoleBinding to a missing ClusterRole {name}"));
            merge(&mut out, rules);
        }
        out
    }

    /// What it may do in each namespace through RoleBindings there.
    fn per_namespace(&self) -> BTreeMap<String, Grants> {
        let mut out: BTreeMap<String, Grants> = BTreeMap::new();
        for (ns, kind, name) in &self.bindings {
            let rules = match kind.as_str() {
                "Role" => self.roles.get(&(ns.clone(), name.clone())),
                "ClusterRole" => self.cluster_roles.get(name),
                other => panic!("RoleBinding to a {other}"),
            }
            .unwrap_or_else(|| panic!("RoleBinding in {ns} to a missing {kind} {name}"));
            merge(out.entry(ns.clone()).or_default(), rules);
        }
        out
    }

    /// Everything granted anywhere.
    fn everything(&self) -> Grants {
        let mut out = self.cluster_wide();
        for g in self.per_namespace().values() {
            merge(&mut out, g);
        }
        out
    }
}

fn merge(into: &mut Grants, from: &Grants) {
    for (k, v) in from {
        into.entry(k.clone()).or_default().extend(v.iter().cloned());
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// The chart's RBAC objects rendered with `values` (`--set` pairs). Every binding's subject is
/// the chart's ServiceAccount; no rule has a wildcard.
fn chart_rbac(values: &[&str]) -> ChartRbac {
    let mut args = Vec::new();
    for v in values {
        args.extend(["--set", v]);
    }
    let objects = helm_template(&args).expect("helm template");
    let account = objects
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .and_then(|o| o["metadata"]["name"].as_str())
        .expect("the chart renders its ServiceAccount")
        .to_string();
    let mut out = ChartRbac::default();
    for obj in &objects {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        match kind {
            "ClusterRole" | "Role" => {
                let mut grants = Grants::new();
                for rule in obj["rules"].as_array().expect("rules") {
                    let (groups, resources, verbs) = (
                        strings(&rule["apiGroups"]),
                        strings(&rule["resources"]),
                        strings(&rule["verbs"]),
                    );
                    for v in groups.iter().chain(&resources).chain(&verbs) {
                        assert!(!v.contains('*'), "wildcard `{v}` in {kind} {name}");
                    }
                    assert!(rule["resourceNames"].is_null() || rule["resourceNames"].is_array());
                    for g in &groups {
                        for r in &resources {
                            grants
                                .entry((g.clone(), r.clone()))
                                .or_default()
                                .extend(verbs.iter().cloned());
                        }
                    }
                }
                if kind == "ClusterRole" {
                    assert!(ns.is_none(), "ClusterRole {name} with a namespace");
                    out.cluster_roles.insert(name, grants);
                } else {
                    let ns = ns.unwrap_or_else(|| panic!("Role {name} without a namespace"));
                    out.roles.insert((ns, name), grants);
                }
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                let subjects = obj["subjects"].as_array().expect("subjects");
                assert_eq!(subjects.len(), 1, "{kind} {name}: one subject");
                assert_eq!(subjects[0]["kind"], "ServiceAccount", "{kind} {name}");
                assert_eq!(subjects[0]["name"], account.as_str(), "{kind} {name}");
                assert_eq!(subjects[0]["namespace"], RELEASE_NS, "{kind} {name}");
                let role_kind = obj["roleRef"]["kind"].as_str().expect("roleRef.kind");
                let role_name = obj["roleRef"]["name"].as_str().expect("roleRef.name");
                if kind == "ClusterRoleBinding" {
                    assert!(ns.is_none(), "ClusterRoleBinding {name} with a namespace");
                    out.cluster_bindings
                        .push((role_kind.to_string(), role_name.to_string()));
                } else {
                    let ns = ns.unwrap_or_else(|| panic!("RoleBinding {name} without a namespace"));
                    out.bindings
                        .push((ns, role_kind.to_string(), role_name.to_string()));
                }
            }
            _ => {}
        }
    }
    out
}

/// Problems of `granted` against what the operator's code needs and may use.
fn compare(granted: &Grants, required: &Grants, allowed: &Grants, problems: &mut Vec<String>) {
    for (key, verbs) in required {
        let have = granted.get(key).cloned().unwrap_or_default();
        let missing: Vec<_> = verbs.difference(&have).collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{key:?}: the operator needs {missing:?}, the chart does not grant it"
            ));
        }
    }
    for (key, verbs) in granted {
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
}

fn leases() -> (String, String) {
    ("coordination.k8s.io".to_string(), "leases".to_string())
}

/// `required`/`allowed` without Leases (leader election lives in the release namespace).
fn without_leases(g: &Grants) -> Grants {
    let mut g = g.clone();
    g.remove(&leases());
    g
}

/// The leader-election Role: Leases only, in the release namespace only.
fn check_leader_election(rbac: &ChartRbac, required: &Grants, allowed: &Grants) -> Vec<String> {
    let mut problems = Vec::new();
    assert!(
        !rbac.cluster_wide().contains_key(&leases()),
        "Leases belong in the namespaced Role, not the ClusterRole"
    );
    let mut lease_grants = Grants::new();
    for (ns, grants) in rbac.per_namespace() {
        if let Some(verbs) = grants.get(&leases()) {
            assert_eq!(
                ns, RELEASE_NS,
                "Leases granted outside the release namespace"
            );
            lease_grants.insert(leases(), verbs.clone());
        }
    }
    let only = |g: &Grants| -> Grants {
        g.iter()
            .filter(|(k, _)| **k == leases())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    compare(
        &lease_grants,
        &only(required),
        &only(allowed),
        &mut problems,
    );
    problems
}

#[test]
fn chart_rbac_is_exactly_what_the_operator_uses() {
    let (required, allowed) = operator_usage();
    println!("operator code needs: {required:#?}");
    let rbac = chart_rbac(&[]);
    // Default: rbac.scope Cluster. The operator's rules cluster-wide; the release namespace's
    // Role is for leader election only.
    for ((ns, name), grants) in &rbac.roles {
        assert_eq!(ns, RELEASE_NS, "Role {name} outside the release namespace");
        for key in grants.keys() {
            assert_eq!(
                key,
                &leases(),
                "the namespaced Role is for leader election only"
            );
        }
    }
    let mut problems = check_leader_election(&rbac, &required, &allowed);
    compare(
        &without_leases(&rbac.everything()),
        &without_leases(&required),
        &without_leases(&allowed),
        &mut problems,
    );
    assert!(
        problems.is_empty(),
        "RBAC (rbac.scope Cluster) does not match operator/src:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn namespaced_rbac_grants_the_same_rules_in_the_watched_namespace_only() {
    let (required, allowed) = operator_usage();
    let cluster_mode = chart_rbac(&[]).cluster_wide();
    // The watched namespace apart from the release namespace, and the same one.
    for watched in ["clinical", RELEASE_NS] {
        let rbac = chart_rbac(&[
            "rbac.scope=Namespaced",
            &format!("watchNamespace={watched}"),
        ]);
        assert!(
            rbac.cluster_roles.is_empty() && rbac.cluster_bindings.is_empty(),
            "rbac.scope Namespaced (watchNamespace {watched}): nothing cluster-wide, found \
             ClusterRoles {:?} and ClusterRoleBindings {:?}",
            rbac.cluster_roles.keys().collect::<Vec<_>>(),
            rbac.cluster_bindings
        );
        let per_ns = rbac.per_namespace();
        for ns in per_ns.keys() {
            assert!(
                ns == watched || ns == RELEASE_NS,
                "rules bound in namespace {ns}, neither watched ({watched}) nor the release's"
            );
        }
        // Every rule but the Lease's is bound in the watched namespace only.
        if watched != RELEASE_NS {
            let release = per_ns.get(RELEASE_NS).cloned().unwrap_or_default();
            assert!(
                without_leases(&release).is_empty(),
                "the release namespace's Role is for leader election only: {release:?}"
            );
        }
        let in_watched = without_leases(per_ns.get(watched).expect("a Role in the watched one"));
        let mut problems = check_leader_election(&rbac, &required, &allowed);
        compare(
            &in_watched,
            &without_leases(&required),
            &without_leases(&allowed),
            &mut problems,
        );
        assert!(
            problems.is_empty(),
            "RBAC (rbac.scope Namespaced, watchNamespace {watched}) does not match operator/src:\n  {}",
            problems.join("\n  ")
        );
        assert_eq!(
            in_watched, cluster_mode,
            "the Role in the watched namespace has exactly the rules of the cluster-wide mode"
        );
    }
}

/// With a watch namespace the operator's every request is namespaced (or API discovery, which
/// the built-in `system:discovery` ClusterRole allows every authenticated client): each
/// `Api::all` in `operator/src` is the `None` arm of a match on the watch namespace. A
/// cluster-scoped request anywhere else would need a ClusterRole in `rbac.scope: Namespaced`.
#[test]
fn operator_makes_no_cluster_wide_request_with_a_watch_namespace() {
    let mut files = Vec::new();
    sources(&repo_root().join("operator/src"), &mut files);
    let mut problems = Vec::new();
    for f in &files {
        for (n, line) in f.text.lines().enumerate() {
            for pat in ["Api::all(", "Api::all_with(", "Api::<"] {
                let Some(i) = line.find(pat) else { continue };
                if pat == "Api::<" && !line[i..].contains(">::all") {
                    continue;
                }
                if !line.trim_start().starts_with("None =>") {
                    problems.push(format!("{}:{}: {}", f.path, n + 1, line.trim()));
                }
            }
        }
        for pat in [
            "CustomResourceDefinition",
            "Namespace>",
            "ClusterRole",
            "Node>",
        ] {
            if f.text.contains(pat) {
                problems.push(format!("{}: uses {pat} (cluster-scoped)", f.path));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "cluster-scoped requests outside the all-namespaces arm (rbac.scope Namespaced grants \
         nothing cluster-wide):\n  {}",
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

//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Model: a field is a leaf path of the object (scalars, lists and empty maps are leaves; lists
//! are atomic, there are no associative list keys). Each manager entry
//! `(manager, operation, subresource)` owns a set of paths, stored as `fieldsV1`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

pub type Path = Vec<String>;

/// Metadata fields the server owns; never part of a manager's field set.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// Which part of an object a request may manage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The main endpoint; `status` is excluded when the kind has a status subresource.
    Main { status_subresource: bool },
    /// The `/status` subresource: only `status`.
    Status,
}

/// The part of `obj` that is managed within `scope` (system metadata, apiVersion, kind removed).
pub fn scoped(obj: &Value, scope: Scope) -> Value {
    let mut out = Map::new();
    let Some(map) = obj.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in map {
        match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => {}
            ("metadata", Scope::Main { .. }) => {
                if let Some(meta) = v.as_object() {
                    let m: Map<String, Value> = meta
                        .iter()
                        .filter(|(mk, _)| !SYSTEM_METADATA.contains(&mk.as_str()))
                        .map(|(mk, mv)| (mk.clone(), mv.clone()))
                        .collect();
                    if !m.is_empty() {
                        out.insert(k.clone(), Value::Object(m));
                    }
                }
            }
            (
                "status",
                Scope::Main {
                    status_subresource: true,
                },
            ) => {}
            ("status", Scope::Status) => {
                out.insert(k.clone(), v.clone());
            }
            (_, Scope::Status) => {}
            (_, Scope::Main { .. }) => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Leaf paths of a value.
pub fn leaf_paths(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let mut prefix = Vec::new();
    walk(v, &mut prefix, &mut out);
    out
}

fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                walk(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

/// Leaf paths (within `scope`) whose value differs between `old` and `new`.
pub fn changed_paths(old: &Value, new: &Value, scope: Scope) -> BTreeSet<Path> {
    let old = scoped(old, scope);
    let new = scoped(new, scope);
    let mut all = leaf_paths(&old);
    all.extend(leaf_paths(&new));
    all.into_iter()
        .filter(|p| get_path(&old, p) != get_path(&new, p))
        .collect()
}

pub fn get_path<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in p {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

/// Removes the field at `p`, then any parent map this left empty (below the top level).
pub fn remove_path(v: &mut Value, p: &[String]) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = &mut *v;
    for seg in parents {
        match cur.as_object_mut().and_then(|m| m.get_mut(seg)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
        if m.is_empty() && parents.len() > 1 {
            remove_path(v, parents);
        }
    }
}

/// True when one path is a prefix of the other (they name overlapping fields).
pub fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Merges an applied configuration into a live object: maps merge recursively, everything else
/// (scalars, lists) replaces; `null` removes the field.
pub fn deep_merge(target: &mut Value, src: &Value) {
    match (target.as_object_mut(), src.as_object()) {
        (Some(t), Some(s)) => {
            for (k, v) in s {
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = src.clone(),
    }
}

/// Paths to `fieldsV1` (`{"f:spec":{"f:replicas":{}}}`).
pub fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            let entry = cur
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()));
            match entry.as_object_mut() {
                Some(m) => cur = m,
                None => break,
            }
        }
    }
    Value::Object(root)
}

/// `fieldsV1` to paths. Only `f:` keys are understood; `.` markers are ignored.
pub fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let mut prefix = Vec::new();
    fv1_walk(v, &mut prefix, &mut out);
    out
}

fn fv1_walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let children: Vec<(&String, &Value)> = v
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, child) in children {
        prefix.push(k[2..].to_string());
        fv1_walk(child, prefix, out);
        prefix.pop();
    }
}

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagerEntry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub subresource: Option<String>,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<Path>,
}

impl ManagerEntry {
    pub fn same_identity(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

pub fn read_managers(obj: &Value) -> Vec<ManagerEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| {
                    Some(ManagerEntry {
                        manager: e.get("manager")?.as_str()?.to_string(),
                        operation: e.get("operation")?.as_str()?.to_string(),
                        subresource: e
                            .get("subresource")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        api_version: e
                            .get("apiVersion")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        time: e
                            .get("time")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn write_managers(obj: &mut Value, managers: &[ManagerEntry]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = serde_json::json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&m.fields),
            });
            if let (Some(sub), Some(map)) = (&m.subresource, e.as_object_mut()) {
                map.insert("subresource".into(), Value::String(sub.clone()));
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Records a non-apply write (create, update, patch) by `manager`: it takes ownership of every
/// changed field and every other manager loses it.
pub fn record_update(
    managers: &mut Vec<ManagerEntry>,
    changed: &BTreeSet<Path>,
    new_obj: &Value,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
) {
    if changed.is_empty() {
        return;
    }
    for m in managers.iter_mut() {
        m.fields.retain(|f| !changed.iter().any(|c| overlaps(c, f)));
    }
    let gained: BTreeSet<Path> = changed
        .iter()
        .filter(|p| get_path(new_obj, p).is_some())
        .cloned()
        .collect();
    if let Some(m) = managers
        .iter_mut()
        .find(|m| m.same_identity(manager, "Update", subresource))
    {
        m.fields.extend(gained);
        m.time = now.to_string();
        m.api_version = api_version.to_string();
    } else if !gained.is_empty() {
        managers.push(ManagerEntry {
            manager: manager.to_string(),
            operation: "Update".into(),
            subresource: subresource.map(str::to_string),
            api_version: api_version.to_string(),
            time: now.to_string(),
            fields: gained,
        });
    }
    managers.retain(|m| !m.fields.is_empty());
}

/// A field another manager owns with a different value than the applied configuration.
#[derive(Clone, Debug)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

impl Conflict {
    pub fn describe(&self) -> String {
        format!(
            "conflict with \"{}\" using {}: .{}",
            self.manager,
            self.api_version,
            self.path.join(".")
        )
    }
}

/// Server-side apply of `applied` (already reduced to `scope`) onto `live` by `manager`.
/// Returns the conflicts when there are some and `force` is false (then nothing is changed).
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: &mut Value,
    managers: &mut Vec<ManagerEntry>,
    applied: &Value,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    force: bool,
    now: &str,
) -> Result<(), Vec<Conflict>> {
    let applied_paths = leaf_paths(applied);
    let mut conflicts = Vec::new();
    for m in managers.iter() {
        if m.same_identity(manager, "Apply", subresource) {
            continue;
        }
        for p in &applied_paths {
            if m.fields.iter().any(|f| overlaps(f, p)) && get_path(live, p) != get_path(applied, p)
            {
                conflicts.push(Conflict {
                    manager: m.manager.clone(),
                    api_version: m.api_version.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    if force {
        for m in managers.iter_mut() {
            if m.same_identity(manager, "Apply", subresource) {
                continue;
            }
            m.fields.retain(|f| {
                !applied_paths
                    .iter()
                    .any(|p| overlaps(f, p) && get_path(live, p) != get_path(applied, p))
            });
        }
    }
    let previous: BTreeSet<Path> = managers
        .iter()
        .find(|m| m.same_identity(manager, "Apply", subresource))
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    for removed in previous.difference(&applied_paths) {
        let still_applied = applied_paths.iter().any(|p| overlaps(p, removed));
        let owned_by_other = managers
            .iter()
            .filter(|m| !m.same_identity(manager, "Apply", subresource))
            .any(|m| m.fields.iter().any(|f| overlaps(f, removed)));
        if !still_applied && !owned_by_other {
            remove_path(live, removed);
        }
    }
    deep_merge(live, applied);
    match managers
        .iter_mut()
        .find(|m| m.same_identity(manager, "Apply", subresource))
    {
        Some(m) => {
            if m.fields != applied_paths {
                m.time = now.to_string();
            }
            m.fields = applied_paths;
            m.api_version = api_version.to_string();
        }
        None => managers.push(ManagerEntry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            subresource: subresource.map(str::to_string),
            api_version: api_version.to_string(),
            time: now.to_string(),
            fields: applied_paths,
        }),
    }
    managers.retain(|m| !m.fields.is_empty());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Path {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn fields_v1_round_trip() {
        let paths: BTreeSet<Path> = [p("spec.replicas"), p("metadata.labels.app")]
            .into_iter()
            .collect();
        let v = to_fields_v1(&paths);
        assert_eq!(
            v,
            json!({"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:replicas":{}}})
        );
        assert_eq!(from_fields_v1(&v), paths);
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let mut live = json!({"spec": {"a": 1, "b": 2}});
        let mut managers = Vec::new();
        apply(
            &mut live,
            &mut managers,
            &json!({"spec": {"a": 1, "b": 2}}),
            "m",
            None,
            "v1",
            false,
            "t",
        )
        .unwrap();
        apply(
            &mut live,
            &mut managers,
            &json!({"spec": {"a": 3}}),
            "m",
            None,
            "v1",
            false,
            "t",
        )
        .unwrap();
        assert_eq!(live, json!({"spec": {"a": 3}}));
    }

    #[test]
    fn apply_conflicts_with_other_owner_unless_forced() {
        let mut live = json!({"spec": {"replicas": 5}});
        let mut managers = vec![ManagerEntry {
            manager: "kubectl".into(),
            operation: "Update".into(),
            subresource: None,
            api_version: "apps/v1".into(),
            time: "t".into(),
            fields: [p("spec.replicas")].into_iter().collect(),
        }];
        let applied = json!({"spec": {"replicas": 2}});
        let err = apply(
            &mut live,
            &mut managers,
            &applied,
            "op",
            None,
            "apps/v1",
            false,
            "t",
        )
        .unwrap_err();
        assert_eq!(
            err[0].describe(),
            "conflict with \"kubectl\" using apps/v1: .spec.replicas"
        );
        assert_eq!(live, json!({"spec": {"replicas": 5}}));
        apply(
            &mut live,
            &mut managers,
            &applied,
            "op",
            None,
            "apps/v1",
            true,
            "t",
        )
        .unwrap();
        assert_eq!(live, json!({"spec": {"replicas": 2}}));
        assert_eq!(managers.len(), 1);
        assert_eq!(managers[0].manager, "op");
    }

    #[test]
    fn equal_values_are_shared_not_conflicting() {
        let mut live = json!({"spec": {"replicas": 2}});
        let mut managers = vec![ManagerEntry {
            manager: "other".into(),
            operation: "Apply".into(),
            subresource: None,
            api_version: "v1".into(),
            time: "t".into(),
            fields: [p("spec.replicas")].into_iter().collect(),
        }];
        apply(
            &mut live,
            &mut managers,
            &json!({"spec": {"replicas": 2}}),
            "op",
            None,
            "v1",
            false,
            "t",
        )
        .unwrap();
        assert_eq!(managers.len(), 2);
        // "op" stops applying the field: "other" still owns it, so it stays.
        apply(
            &mut live,
            &mut managers,
            &json!({"spec": {"x": 1}}),
            "op",
            None,
            "v1",
            false,
            "t",
        )
        .unwrap();
        assert_eq!(live, json!({"spec": {"replicas": 2, "x": 1}}));
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let mut managers = vec![ManagerEntry {
            manager: "op".into(),
            operation: "Apply".into(),
            subresource: None,
            api_version: "v1".into(),
            time: "t".into(),
            fields: [p("spec.replicas"), p("spec.image")].into_iter().collect(),
        }];
        let old = json!({"spec": {"replicas": 2, "image": "a"}});
        let new = json!({"spec": {"replicas": 4, "image": "a"}});
        let changed = changed_paths(
            &old,
            &new,
            Scope::Main {
                status_subresource: true,
            },
        );
        record_update(&mut managers, &changed, &new, "kubectl", None, "v1", "t");
        assert_eq!(managers[0].fields, [p("spec.image")].into_iter().collect());
        assert_eq!(
            managers[1].fields,
            [p("spec.replicas")].into_iter().collect()
        );
    }
}

//! What the stand-in plays of kube-controller-manager (and of the CloudNativePG operator):
//! workload status once "pods are ready", and the PVCs the StatefulSet controller creates.

use serde_json::{json, Map, Value};

fn int_at(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr).and_then(Value::as_i64)
}

/// Puts `key: n` in `m` unless `n` is zero (the API server omits zero counts).
fn put_count(m: &mut Map<String, Value>, key: &str, n: i64) {
    if n != 0 {
        m.insert(key.to_string(), json!(n));
    }
}

/// The status a workload reaches once all its pods are ready, or `None` when it already has it
/// (or the kind is not a workload the stand-in settles).
pub fn ready_status(group: &str, kind: &str, obj: &Value, now: &str) -> Option<Value> {
    let generation = int_at(obj, "/metadata/generation").unwrap_or(1);
    let status = obj.get("status").cloned().unwrap_or_else(|| json!({}));
    match (group, kind) {
        ("apps", "Deployment") | ("apps", "StatefulSet") | ("apps", "ReplicaSet") => {
            let want = int_at(obj, "/spec/replicas").unwrap_or(1);
            let settled = int_at(&status, "/observedGeneration") == Some(generation)
                && int_at(&status, "/replicas").unwrap_or(0) == want
                && int_at(&status, "/readyReplicas").unwrap_or(0) == want
                && int_at(&status, "/availableReplicas").unwrap_or(0) == want;
            if settled {
                return None;
            }
            let mut m = Map::new();
            m.insert("observedGeneration".into(), json!(generation));
            for key in [
                "replicas",
                "readyReplicas",
                "availableReplicas",
                "updatedReplicas",
            ] {
                put_count(&mut m, key, want);
            }
            if kind == "StatefulSet" {
                put_count(&mut m, "currentReplicas", want);
                let revision = format!(
                    "{}-{generation}",
                    obj.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                );
                m.insert("currentRevision".into(), json!(revision));
                m.insert("updateRevision".into(), json!(revision));
                m.insert("collisionCount".into(), json!(0));
            }
            if kind == "Deployment" {
                m.insert(
                    "conditions".into(),
                    json!([
                        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                         "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
                        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                         "message": "ReplicaSet has successfully progressed.", "lastUpdateTime": now, "lastTransitionTime": now},
                    ]),
                );
            }
            Some(Value::Object(m))
        }
        ("batch", "Job") => {
            let complete = status
                .get("conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Complete" && c["status"] == "True")
                });
            if complete {
                return None;
            }
            let completions = int_at(obj, "/spec/completions").unwrap_or(1);
            Some(json!({
                "startTime": now,
                "completionTime": now,
                "succeeded": completions,
                "ready": 0,
                "terminating": 0,
                "uncountedTerminatedPods": {},
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
                ],
            }))
        }
        ("postgresql.cnpg.io", "Cluster") => {
            let want = int_at(obj, "/spec/instances").unwrap_or(1);
            if int_at(&status, "/readyInstances") == Some(want)
                && int_at(&status, "/instances") == Some(want)
            {
                return None;
            }
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some(json!({
                "instances": want,
                "readyInstances": want,
                "phase": "Cluster in healthy state",
                "currentPrimary": format!("{name}-1"),
                "writeService": format!("{name}-rw"),
                "readService": format!("{name}-r"),
                "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady",
                                "message": "Cluster is Ready", "lastTransitionTime": now}],
            }))
        }
        _ => None,
    }
}

/// PVCs the StatefulSet controller creates for `sts`: `<template>-<sts>-<ordinal>`, labelled
/// with the template and selector labels, owned by the StatefulSet only when its
/// `persistentVolumeClaimRetentionPolicy.whenDeleted` is `Delete`.
pub fn statefulset_pvcs(sts: &Value) -> Vec<Value> {
    let Some(name) = sts.pointer("/metadata/name").and_then(Value::as_str) else {
        return Vec::new();
    };
    let namespace = sts
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let replicas = int_at(sts, "/spec/replicas").unwrap_or(1).max(0);
    let templates = sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let selector_labels = sts
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let owned = sts
        .pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted")
        .and_then(Value::as_str)
        == Some("Delete");
    let mut out = Vec::new();
    for tpl in &templates {
        let Some(tpl_name) = tpl.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let mut labels = tpl
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        labels.extend(selector_labels.clone());
        for i in 0..replicas {
            let mut pvc = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": format!("{tpl_name}-{name}-{i}"),
                    "namespace": namespace,
                    "labels": labels,
                },
                "spec": tpl.get("spec").cloned().unwrap_or_else(|| json!({})),
            });
            if owned {
                pvc["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": name,
                    "uid": sts.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                    "controller": true,
                    "blockOwnerDeletion": true,
                }]);
            }
            out.push(pvc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_ready_status_then_settled() {
        let mut d = json!({"metadata": {"name": "api", "generation": 2}, "spec": {"replicas": 3}});
        let s = ready_status("apps", "Deployment", &d, "t").unwrap();
        assert_eq!(s["readyReplicas"], 3);
        assert_eq!(s["observedGeneration"], 2);
        d["status"] = s;
        assert!(ready_status("apps", "Deployment", &d, "t").is_none());
    }

    #[test]
    fn statefulset_pvcs_named_like_the_controller() {
        let sts = json!({"metadata": {"name": "db", "namespace": "n", "uid": "u"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]}});
        let pvcs = statefulset_pvcs(&sts);
        let names: Vec<&str> = pvcs
            .iter()
            .filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str))
            .collect();
        assert_eq!(names, vec!["data-db-0", "data-db-1"]);
        assert_eq!(pvcs[0]["metadata"]["labels"]["app"], "db");
        assert!(pvcs[0]["metadata"].get("ownerReferences").is_none());
    }
}

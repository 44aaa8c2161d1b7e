//! Volume claim templates of the embedded database and cache StatefulSets compared with the live
//! ones, and the PVCs that must grow. Pure: the apply stage acts on what these functions decide.
//!
//! `spec.volumeClaimTemplates` of a StatefulSet is immutable on a real API server: an apply that
//! changes it fails with 422. So when the desired templates differ from the live ones in a field
//! the operator sets (template names, labels, access modes, `storageClassName`, the storage
//! request — compared by value: the server may write `1024Mi` as `1Gi`), the apply stage deletes
//! the StatefulSet with `propagationPolicy: Orphan` (its pods and PVCs keep running; the new
//! StatefulSet adopts them) and creates it again with the new templates ([`plan`]). Fields the
//! server fills in (`volumeMode`, `status`, `apiVersion`/`kind`) are not compared.
//!
//! A pod can only be adopted when it already mounts a claim of every desired template: the
//! StatefulSet controller would otherwise try to add the claim volume to the running pod, which
//! the API server forbids (pod volumes are immutable), and the pod would never be replaced. So when
//! a template is added (cache persistence switched on), the pods are deleted with the
//! StatefulSet (`propagationPolicy: Background`; PVCs are retained) and created again.
//!
//! A grown storage request is also written to every existing PVC of the StatefulSet
//! (`<template>-<statefulset>-<ordinal>`), which expands the volume when its StorageClass allows
//! it ([`expansions`]). A smaller request is refused ([`TemplatePlan::Refuse`]): a PVC can never
//! shrink, and the StatefulSet is left as it is.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::validate::parse_quantity;

/// Key of the storage request in a claim's `resources.requests`.
pub const STORAGE: &str = "storage";

/// What the apply stage does with a StatefulSet before applying it.
#[derive(Clone, Debug, PartialEq)]
pub enum TemplatePlan {
    /// No live StatefulSet, or its claim templates equal the desired ones: apply as usual.
    Keep,
    /// The claim templates differ: delete the StatefulSet, then create it again. Its PVCs are
    /// always kept; its pods too when `keep_pods` (they mount a claim of every desired template,
    /// so the new StatefulSet adopts them), otherwise they are deleted with it.
    Recreate { keep_pods: bool },
    /// The desired storage request of a claim template is smaller than the live one.
    Refuse(StorageDecrease),
}

/// A refused storage decrease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageDecrease {
    /// Name of the claim template (`data`).
    pub claim: String,
    /// Live storage request.
    pub live: String,
    /// Desired (smaller) storage request.
    pub desired: String,
}

/// A PVC whose storage request must grow to `to`.
#[derive(Clone, Debug, PartialEq)]
pub struct Expansion {
    pub pvc: String,
    pub from: String,
    pub to: Quantity,
}

fn templates(sts: &StatefulSet) -> &[PersistentVolumeClaim] {
    sts.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default()
}

fn storage(claim: &PersistentVolumeClaim) -> Option<&Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get(STORAGE)
}

/// Two storage requests compared by value (by text when one is not a quantity).
fn same_storage(a: Option<&Quantity>, b: Option<&Quantity>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => match (parse_quantity(&a.0), parse_quantity(&b.0)) {
            (Some(x), Some(y)) => x == y,
            _ => a.0.trim() == b.0.trim(),
        },
        _ => false,
    }
}

/// Whether `a` is a strictly smaller storage request than `b` (both must be quantities).
fn smaller(a: &Quantity, b: &Quantity) -> bool {
    matches!(
        (parse_quantity(&a.0), parse_quantity(&b.0)),
        (Some(x), Some(y)) if x < y
    )
}

/// The fields of a claim template the operator sets (empty equals absent).
fn same_template(live: &PersistentVolumeClaim, desired: &PersistentVolumeClaim) -> bool {
    let labels = |c: &PersistentVolumeClaim| c.metadata.labels.clone().unwrap_or_default();
    let modes = |c: &PersistentVolumeClaim| {
        c.spec
            .as_ref()
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default()
    };
    let class =
        |c: &PersistentVolumeClaim| c.spec.as_ref().and_then(|s| s.storage_class_name.clone());
    live.metadata.name == desired.metadata.name
        && labels(live) == labels(desired)
        && modes(live) == modes(desired)
        && class(live) == class(desired)
        && same_storage(storage(live), storage(desired))
}

/// Whether the live StatefulSet's claim templates equal the desired ones in every field the
/// operator sets (an absent list equals an empty one).
pub fn same_claim_templates(live: &StatefulSet, desired: &StatefulSet) -> bool {
    let (live, desired) = (templates(live), templates(desired));
    live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| same_template(l, d))
}

/// What to do before applying `desired` over `live`.
pub fn plan(live: Option<&StatefulSet>, desired: &StatefulSet) -> TemplatePlan {
    let Some(live) = live else {
        return TemplatePlan::Keep;
    };
    let live_templates: BTreeMap<Option<&str>, &PersistentVolumeClaim> = templates(live)
        .iter()
        .map(|t| (t.metadata.name.as_deref(), t))
        .collect();
    for want in templates(desired) {
        let Some(have) = live_templates.get(&want.metadata.name.as_deref()) else {
            continue;
        };
        if let (Some(have), Some(want_size)) = (storage(have), storage(want)) {
            if smaller(want_size, have) {
                return TemplatePlan::Refuse(StorageDecrease {
                    claim: want.metadata.name.clone().unwrap_or_default(),
                    live: have.0.clone(),
                    desired: want_size.0.clone(),
                });
            }
        }
    }
    if same_claim_templates(live, desired) {
        TemplatePlan::Keep
    } else {
        let keep_pods = templates(desired)
            .iter()
            .all(|want| live_templates.contains_key(&want.metadata.name.as_deref()));
        TemplatePlan::Recreate { keep_pods }
    }
}

/// Whether `pvc` was made from template `template` of StatefulSet `sts`
/// (`<template>-<sts>-<ordinal>`).
fn made_from(pvc: &str, template: &str, sts: &str) -> bool {
    pvc.strip_prefix(template)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_prefix(sts))
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|ordinal| !ordinal.is_empty() && ordinal.chars().all(|c| c.is_ascii_digit()))
}

/// The PVCs of `desired` (among `pvcs`, e.g. every PVC carrying the component's selector labels)
/// whose storage request is smaller than their template's: each must be patched to grow.
/// PVCs being deleted, of other StatefulSets or already as large (or larger) are left alone.
pub fn expansions(desired: &StatefulSet, pvcs: &[PersistentVolumeClaim]) -> Vec<Expansion> {
    let Some(sts) = desired.metadata.name.as_deref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for template in templates(desired) {
        let (Some(name), Some(want)) = (template.metadata.name.as_deref(), storage(template))
        else {
            continue;
        };
        for pvc in pvcs {
            let Some(pvc_name) = pvc.metadata.name.as_deref() else {
                continue;
            };
            if pvc.metadata.deletion_timestamp.is_some() || !made_from(pvc_name, name, sts) {
                continue;
            }
            if let Some(have) = storage(pvc) {
                if smaller(have, want) {
                    out.push(Expansion {
                        pvc: pvc_name.to_string(),
                        from: have.0.clone(),
                        to: want.clone(),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;
    use crate::desired::{postgres, redis};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn db(f: impl FnOnce(&mut crate::crd::HealthcarePlatformSpec)) -> StatefulSet {
        postgres::build(&platform(f), None).unwrap().stateful_set
    }

    /// The StatefulSet as a real API server returns it: templates with `apiVersion`/`kind`,
    /// `volumeMode` and `status` filled in, quantities normalised.
    fn as_served(sts: &StatefulSet) -> StatefulSet {
        let mut v = serde_json::to_value(sts).unwrap();
        for t in v["spec"]["volumeClaimTemplates"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            t["apiVersion"] = json!("v1");
            t["kind"] = json!("PersistentVolumeClaim");
            t["spec"]["volumeMode"] = json!("Filesystem");
            t["status"] = json!({"phase": "Pending"});
            if t["spec"]["resources"]["requests"]["storage"] == "10Gi" {
                t["spec"]["resources"]["requests"]["storage"] = json!("10240Mi");
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn pvc(name: &str, size: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
        }))
        .unwrap()
    }

    #[test]
    fn an_upgrade_keeps_the_stateful_set() {
        let live = as_served(&db(|s| s.database.version = "16.6".into()));
        let desired = db(|s| s.database.version = "16.7".into());
        assert_eq!(plan(Some(&live), &desired), TemplatePlan::Keep);
        assert_eq!(plan(None, &desired), TemplatePlan::Keep);
    }

    #[test]
    fn server_filled_fields_and_quantity_spelling_do_not_count() {
        let desired = db(|_| {});
        assert!(same_claim_templates(&as_served(&desired), &desired));
    }

    #[test]
    fn a_changed_template_recreates_the_stateful_set() {
        let live = as_served(&db(|_| {}));
        // A template of an earlier operator with the version label.
        let mut old = live.clone();
        old.spec
            .as_mut()
            .unwrap()
            .volume_claim_templates
            .as_mut()
            .unwrap()[0]
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(crate::names::LABEL_VERSION.into(), "16.6".into());
        let keep = TemplatePlan::Recreate { keep_pods: true };
        assert_eq!(plan(Some(&old), &db(|_| {})), keep);
        // More storage.
        let grown = db(|s| s.database.storage.size = Quantity("20Gi".into()));
        assert_eq!(plan(Some(&live), &grown), keep);
        // Another StorageClass.
        let class = db(|s| s.database.storage.storage_class_name = Some("fast".into()));
        assert_eq!(plan(Some(&live), &class), keep);
    }

    #[test]
    fn redis_persistence_on_and_off_recreates() {
        let cache = |on: bool| {
            redis::build(&platform(|s| s.cache.persistence.enabled = on), None)
                .unwrap()
                .stateful_set
        };
        // On: the running pod has no claim volume and cannot get one; it is replaced.
        assert_eq!(
            plan(Some(&as_served(&cache(false))), &cache(true)),
            TemplatePlan::Recreate { keep_pods: false }
        );
        // Off: the pod is adopted and rolled to the template without the claim.
        assert_eq!(
            plan(Some(&as_served(&cache(true))), &cache(false)),
            TemplatePlan::Recreate { keep_pods: true }
        );
        assert_eq!(
            plan(Some(&as_served(&cache(true))), &cache(true)),
            TemplatePlan::Keep
        );
    }

    #[test]
    fn a_storage_decrease_is_refused() {
        let live = as_served(&db(|s| s.database.storage.size = Quantity("20Gi".into())));
        let smaller = db(|s| s.database.storage.size = Quantity("10Gi".into()));
        assert_eq!(
            plan(Some(&live), &smaller),
            TemplatePlan::Refuse(StorageDecrease {
                claim: "data".into(),
                live: "20Gi".into(),
                desired: "10Gi".into(),
            })
        );
        // Same size written differently is no decrease.
        let same = db(|s| s.database.storage.size = Quantity("20480Mi".into()));
        assert_eq!(plan(Some(&live), &same), TemplatePlan::Keep);
    }

    #[test]
    fn grown_requests_expand_every_pvc_of_the_stateful_set_only() {
        let desired = db(|s| s.database.storage.size = Quantity("20Gi".into()));
        let mut deleting = pvc("data-demo-postgres-2", "10Gi");
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let pvcs = [
            pvc("data-demo-postgres-0", "10Gi"),
            pvc("data-demo-postgres-1", "20480Mi"),
            deleting,
            pvc("data-demo-postgres-extra", "1Gi"),
            pvc("data-demo-redis-0", "1Gi"),
            pvc("data-demo-postgres-3", "50Gi"),
        ];
        assert_eq!(
            expansions(&desired, &pvcs),
            [Expansion {
                pvc: "data-demo-postgres-0".into(),
                from: "10Gi".into(),
                to: Quantity("20Gi".into()),
            }]
        );
        // Nothing to do at the template's size.
        assert!(expansions(&db(|_| {}), &pvcs[..1]).is_empty());
    }

    #[test]
    fn pvc_names_follow_the_stateful_set_controller() {
        assert!(made_from("data-demo-postgres-0", "data", "demo-postgres"));
        assert!(made_from("data-demo-postgres-12", "data", "demo-postgres"));
        assert!(!made_from("data-demo-postgres-", "data", "demo-postgres"));
        assert!(!made_from(
            "data-demo-postgres-headless-0",
            "data",
            "demo-postgres"
        ));
        assert!(!made_from("demo-backups", "data", "demo-postgres"));
    }
}

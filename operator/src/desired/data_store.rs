//! What the StatefulSets of the embedded data stores ([`super::postgres`], [`super::redis`])
//! have in common: one replica (none while stopped) running as [`DATA_UID`], claims retained
//! when the StatefulSet goes or scales down, and a claim template without the version.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaim, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::component_version;
use super::pod::claim_spec;
use super::security::{container_security_context, pod_security_context, resources, DATA_UID};
use crate::crd::ResourcesSpec;
use crate::names::Component;
use crate::validate::ValidatedPlatform;

/// A container of a data store's image, hardened for [`DATA_UID`], with `resources`.
pub fn container(name: &str, image: String, resources_spec: &ResourcesSpec) -> Container {
    Container {
        name: name.into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        resources: Some(resources(resources_spec)),
        security_context: Some(container_security_context(DATA_UID)),
        ..Default::default()
    }
}

/// The claim template of the data volume. Never the version in its labels: claim templates
/// are immutable (an upgrade would fail with 422).
pub fn claim_template(
    p: &ValidatedPlatform,
    component: Component,
    storage_class: Option<String>,
    size: Quantity,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(p.names.data_volume().into()),
            labels: Some(p.names.claim_labels(component)),
            ..Default::default()
        },
        spec: Some(claim_spec(storage_class, size)),
        ..Default::default()
    }
}

/// The StatefulSet spec of `component`'s data store: governed by Service `service_name`, its pod
/// `pod` (containers, volumes) run as [`DATA_UID`] without a service-account token or service
/// links, with `annotations` on the pod template. PVCs outlive the StatefulSet; the finalizer
/// deletes them only under `deletionPolicy: Delete`.
pub fn stateful_set_spec(
    p: &ValidatedPlatform,
    component: Component,
    service_name: String,
    annotations: Option<BTreeMap<String, String>>,
    pod: PodSpec,
    claims: Option<Vec<PersistentVolumeClaim>>,
) -> StatefulSetSpec {
    let names = &p.names;
    StatefulSetSpec {
        replicas: Some(if p.spec.stopped { 0 } else { 1 }),
        service_name: Some(service_name),
        selector: LabelSelector {
            match_labels: Some(names.selector(component)),
            ..Default::default()
        },
        persistent_volume_claim_retention_policy: Some(
            StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".into()),
                when_scaled: Some("Retain".into()),
            },
        ),
        revision_history_limit: Some(5),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(names.labels(component, &component_version(p, component))),
                annotations,
                ..Default::default()
            }),
            spec: Some(PodSpec {
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                security_context: Some(pod_security_context(DATA_UID)),
                ..pod
            }),
        },
        volume_claim_templates: claims,
        ..Default::default()
    }
}

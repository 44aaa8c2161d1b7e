//! CloudNativePG provider: a `postgresql.cnpg.io/v1` `Cluster` (as a DynamicObject, so the
//! operator does not depend on CloudNativePG's Rust types). CloudNativePG creates the
//! `<cluster>-app` Secret whose `uri` key the API reads as `DATABASE_URL`.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::child_meta;
use crate::crd::{DatabaseProvider, DEFAULT_CNPG_POSTGRES_IMAGE};
use crate::names::{
    Component, ANNOTATION_CNPG_HIBERNATION, DATABASE_APP_USER, DATABASE_NAME, DATABASE_USER,
};
use crate::validate::ValidatedPlatform;

pub const GROUP: &str = "postgresql.cnpg.io";
pub const VERSION: &str = "v1";
pub const KIND: &str = "Cluster";
pub const PLURAL: &str = "clusters";
/// Name of the CRD the operator discovers before using this provider.
pub const CRD_NAME: &str = "clusters.postgresql.cnpg.io";

/// The API resource of a CloudNativePG Cluster.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// `imageName` of the Cluster: `database.imageRepository` (default
/// [`DEFAULT_CNPG_POSTGRES_IMAGE`], not the Embedded provider's default) tagged `database.version`.
pub fn image(p: &ValidatedPlatform) -> String {
    let db = &p.spec.database;
    let repository = db
        .image_repository
        .as_deref()
        .unwrap_or(DEFAULT_CNPG_POSTGRES_IMAGE);
    format!("{repository}:{}", db.version)
}

/// The Cluster, or `None` unless the provider is `CloudNativePG`.
pub fn build(p: &ValidatedPlatform) -> Option<DynamicObject> {
    let db = &p.spec.database;
    if db.provider != DatabaseProvider::CloudNativePG {
        return None;
    }
    let mut metadata = child_meta(p, p.names.cnpg_cluster(), Component::Database);
    if p.spec.stopped {
        // CloudNativePG hibernation: pods removed, PVCs kept.
        metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_CNPG_HIBERNATION.to_string(),
            "on".to_string(),
        )]));
    }
    let mut storage = json!({ "size": db.storage.size.0 });
    if let Some(class) = &db.storage.storage_class_name {
        storage["storageClass"] = json!(class);
    }
    let spec = json!({
        "instances": db.instances,
        "imageName": image(p),
        "enableSuperuserAccess": false,
        "primaryUpdateStrategy": "unsupervised",
        "storage": storage,
        "resources": {
            "requests": {"cpu": db.resources.requests.cpu.0, "memory": db.resources.requests.memory.0},
            "limits": {"cpu": db.resources.limits.cpu.0, "memory": db.resources.limits.memory.0},
        },
        "bootstrap": {"initdb": {"database": DATABASE_NAME, "owner": DATABASE_USER}},
        // The API's runtime role (neither superuser nor owner); its grants are set by the API
        // pod's `db-setup` init container, run as the owner.
        "managed": {"roles": [{
            "name": DATABASE_APP_USER,
            "ensure": "present",
            "login": true,
            "superuser": false,
            "createdb": false,
            "createrole": false,
            "inherit": false,
            "replication": false,
            "bypassrls": false,
            "passwordSecret": {"name": p.names.postgres_app()},
        }]},
        "postgresql": {"parameters": {
            "max_connections": crate::desired::postgres::max_connections(p).to_string(),
        }},
        "inheritedMetadata": {"labels": {
            crate::names::LABEL_PART_OF: crate::names::PART_OF,
        }},
    });
    let mut obj =
        DynamicObject::new(&p.names.cnpg_cluster(), &api_resource()).data(json!({ "spec": spec }));
    obj.metadata = metadata;
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    #[test]
    fn cluster_carries_instances_storage_and_image() {
        let p = platform(|s| {
            s.database.provider = DatabaseProvider::CloudNativePG;
            s.database.instances = 3;
            s.database.storage.storage_class_name = Some("fast".into());
        });
        let c = build(&p).unwrap();
        assert_eq!(
            c.types.as_ref().unwrap().api_version,
            "postgresql.cnpg.io/v1"
        );
        assert_eq!(c.types.as_ref().unwrap().kind, "Cluster");
        assert_eq!(c.metadata.name.as_deref(), Some("demo-db"));
        let spec = &c.data["spec"];
        assert_eq!(spec["instances"], 3);
        assert_eq!(spec["storage"]["storageClass"], "fast");
        assert_eq!(spec["imageName"], "ghcr.io/cloudnative-pg/postgresql:16.6");
        assert_eq!(
            spec["postgresql"]["parameters"]["max_connections"],
            crate::desired::postgres::max_connections(&p).to_string()
        );
        assert_eq!(spec["enableSuperuserAccess"], false);
        let role = &spec["managed"]["roles"][0];
        assert_eq!(role["name"], "caduceus_app");
        assert_eq!(role["superuser"], false);
        assert_eq!(role["passwordSecret"]["name"], "demo-postgres-app");
        assert!(c.metadata.owner_references.is_some());
    }

    #[test]
    fn image_repository_overrides_the_cloudnative_pg_default() {
        let p = platform(|s| {
            s.database.provider = DatabaseProvider::CloudNativePG;
            s.database.image_repository = Some("registry.clinic.example/mirror/postgresql".into());
            s.database.version = "16.4".into();
        });
        assert_eq!(
            build(&p).unwrap().data["spec"]["imageName"],
            "registry.clinic.example/mirror/postgresql:16.4"
        );
    }

    #[test]
    fn stopped_hibernates() {
        let p = platform(|s| {
            s.database.provider = DatabaseProvider::CloudNativePG;
            s.stopped = true;
        });
        let c = build(&p).unwrap();
        assert_eq!(c.metadata.annotations.unwrap()["cnpg.io/hibernation"], "on");
    }

    #[test]
    fn other_providers_build_nothing() {
        assert!(build(&platform(|_| {})).is_none());
    }
}

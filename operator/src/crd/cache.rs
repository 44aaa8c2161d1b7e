//! Cache section of the `HealthcarePlatform` spec.

use super::*;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Cache

/// Redis cache.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.provider != 'External' || has(self.secretRef)").message("cache.secretRef is required when cache.provider is External").field_path(".secretRef"),
    validation = Rule::new("self.provider == 'External' || !has(self.secretRef)").message("cache.secretRef is only allowed when cache.provider is External").field_path(".secretRef")
)]
pub struct CacheSpec {
    /// `Embedded` (hardened Redis StatefulSet), `External` (URL from `secretRef`) or `Disabled`
    /// (the API then rate-limits per pod).
    #[serde(default)]
    pub provider: CacheProvider,
    /// Redis version: the tag of the cache image (`imageRepository`).
    #[serde(default = "default_redis_version")]
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+(\.[0-9]+)?$"))]
    pub version: String,
    #[doc = "Repository of the Redis image, without tag (the tag is `version`), e.g. a mirror in your"]
    #[doc = concat!("own registry. Defaults to `", default_redis_image!(), "`. Unused unless Embedded.")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[a-z0-9][a-z0-9._\-/:]*[a-z0-9]$")
    )]
    #[x_kube(validation = Rule::new("!self.matches(':[^/]*$')").message("cache.imageRepository must not contain a tag; the tag is cache.version"))]
    pub image_repository: Option<String>,
    /// CPU and memory of the Redis pod.
    #[serde(default = "default_cache_resources")]
    pub resources: ResourcesSpec,
    /// Append-only-file persistence on a PVC.
    #[serde(default)]
    pub persistence: PersistenceSpec,
    /// Secret holding a `redis://` URL (External only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// TCP port the API may reach an External Redis on (NetworkPolicy egress).
    #[serde(default = "default_redis_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub external_port: i32,
    /// CIDRs the API may reach an External Redis in (required with network policies:
    /// `[0.0.0.0/0, ::/0]` allows any address, explicitly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_cidrs: Vec<String>,
}

impl Default for CacheSpec {
    fn default() -> Self {
        Self {
            provider: CacheProvider::default(),
            version: default_redis_version(),
            image_repository: None,
            resources: default_cache_resources(),
            persistence: PersistenceSpec::default(),
            secret_ref: None,
            external_port: default_redis_port(),
            external_cidrs: Vec::new(),
        }
    }
}

fn default_redis_version() -> String {
    DEFAULT_REDIS_VERSION.into()
}
fn default_cache_resources() -> ResourcesSpec {
    ResourcesSpec::new("100m", "128Mi", "500m", "256Mi")
}
fn default_redis_port() -> i32 {
    6379
}

/// Where the cache runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheProvider {
    #[default]
    Embedded,
    External,
    Disabled,
}

/// Redis persistence.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_cache_size")]
    pub size: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for PersistenceSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            size: default_cache_size(),
            storage_class_name: None,
        }
    }
}

fn default_cache_size() -> Quantity {
    Quantity("1Gi".into())
}

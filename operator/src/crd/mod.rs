//! The `HealthcarePlatform` custom resource (`caduceus.io/v1alpha1`).
//!
//! Every spec field has a serde default, and schemars copies each serde default into the CRD
//! schema (`default:`), so the API server stores exactly the values the operator would assume.
//! A GitOps tool that diffs the live object therefore sees the same values the operator uses, and
//! the operator never writes to `spec` (no drift from defaulting).
//!
//! Cross-field rules are CEL `x-kubernetes-validations`, so an impossible resource is refused by
//! the API server instead of being half-applied; [`crate::validate`] repeats the checks for
//! `render` and for clusters that skipped the schema.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Default API image repository (the `caduceus-api` binary, uid 65532).
pub const DEFAULT_API_IMAGE: &str = "ghcr.io/caduceus-health/caduceus-api";
/// Default backup agent image repository (`docker/backup.Dockerfile`); its default tag is
/// `<api version>-pg<database major>` ([`HealthcarePlatform::backup_image`]).
pub const DEFAULT_BACKUP_IMAGE: &str = "ghcr.io/caduceus-health/caduceus-backup";
/// Default embedded PostgreSQL version (official `postgres` image tag).
pub const DEFAULT_POSTGRES_VERSION: &str = "16.6";
/// Default embedded Redis version (official `redis` image tag).
pub const DEFAULT_REDIS_VERSION: &str = "7.4.2";

// The third-party repositories as macros expanding to literals, so the field docs below (and so
// the CRD's descriptions) name them through `concat!` instead of repeating them.
macro_rules! default_postgres_image {
    () => {
        "docker.io/library/postgres"
    };
}
macro_rules! default_cnpg_postgres_image {
    () => {
        "ghcr.io/cloudnative-pg/postgresql"
    };
}
macro_rules! default_redis_image {
    () => {
        "docker.io/library/redis"
    };
}
/// Default repository of the Embedded database image (the official `postgres` image); the tag is
/// `database.version`. `database.imageRepository` overrides it.
pub const DEFAULT_POSTGRES_IMAGE: &str = default_postgres_image!();
/// Default repository of the CloudNativePG database image (CloudNativePG's own PostgreSQL
/// image); the tag is `database.version`. `database.imageRepository` overrides it.
pub const DEFAULT_CNPG_POSTGRES_IMAGE: &str = default_cnpg_postgres_image!();
/// Default repository of the Embedded cache image (the official `redis` image); the tag is
/// `cache.version`. `cache.imageRepository` overrides it.
pub const DEFAULT_REDIS_IMAGE: &str = default_redis_image!();

mod api_server;
mod backup;
mod cache;
mod database;
mod monitoring;
mod security;
mod status;

pub use api_server::*;
pub use backup::*;
pub use cache::*;
pub use database::*;
pub use monitoring::*;
pub use security::*;
pub use status::*;

/// Specification of a Caduceus healthcare platform: Postgres, Redis and the Caduceus API,
/// hardened and wired together.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "caduceus.io",
    version = "v1alpha1",
    kind = "HealthcarePlatform",
    plural = "healthcareplatforms",
    namespaced,
    shortname = "hcp",
    category = "caduceus",
    status = "HealthcarePlatformStatus",
    derive = "PartialEq",
    validation = ::kube::core::Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters (child names derive from it)"),
    doc = "A HIPAA-grade Caduceus healthcare platform managed by caduceus-operator.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Compliant","type":"boolean","jsonPath":".status.compliance.compliant"}"#,
    printcolumn = r#"{"name":"API","type":"string","description":"API server pods ready/desired","jsonPath":".status.apiServer.ready"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.apiServer.version"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HealthcarePlatformSpec {
    /// The Caduceus API server deployment.
    #[serde(default)]
    pub api_server: ApiServerSpec,
    /// The PostgreSQL database.
    #[serde(default)]
    pub database: DatabaseSpec,
    /// The Redis cache (rate limiting, sessions).
    #[serde(default)]
    pub cache: CacheSpec,
    /// NetworkPolicies: default-deny plus the few flows the platform needs.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// Security settings handed to the API server.
    #[serde(default)]
    pub security: SecuritySpec,
    /// Prometheus Operator integration.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    /// Encrypted backups.
    #[serde(default)]
    pub backup: BackupSpec,
    /// Continuous compliance evaluation.
    #[serde(default)]
    pub compliance: ComplianceSpec,
    /// What happens to PVCs, credentials and backups when the platform is deleted.
    /// `Retain` (default) keeps them; `Delete` removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Stop applying spec changes; status is still updated.
    #[serde(default)]
    pub paused: bool,
    /// Scale every workload to zero but keep all data.
    #[serde(default)]
    pub stopped: bool,
}

impl HealthcarePlatform {
    /// The image tag the API runs: the spec's tag or the operator's own version.
    pub fn api_image_tag(&self) -> String {
        self.spec
            .api_server
            .image
            .tag
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
    }
}

/// The CRD as YAML, exactly what `caduceus-operator crd` prints and `crds/` holds.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    use kube::CustomResourceExt;
    let crd = HealthcarePlatform::crd();
    crate::yaml::to_string(&crd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_gets_documented_defaults() {
        let spec: HealthcarePlatformSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.api_server.replicas, 2);
        assert_eq!(spec.security.session_idle_timeout_minutes, 15);
        assert_eq!(spec.security.max_session_hours, 12);
        assert_eq!(spec.security.audit_retention_days, 2190);
        assert_eq!(spec.security.mfa, None);
        assert_eq!(
            spec.security.effective_mfa(&spec.compliance.profiles),
            MfaPolicy::Required,
            "HIPAA (the default profile) requires MFA"
        );
        assert_eq!(
            spec.security.effective_mfa(&[ComplianceProfile::GDPR]),
            MfaPolicy::Optional
        );
        assert_eq!(
            spec.security.mfa_required_roles,
            vec![MfaRole::Admin, MfaRole::Physician]
        );
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
        assert!(spec.network_policy.enabled);
        assert_eq!(spec.database.provider, DatabaseProvider::Embedded);
        assert_eq!(spec, HealthcarePlatformSpec::default());
    }

    #[test]
    fn nested_defaults_match_struct_defaults() {
        // A partially given section gets the same defaults for the missing fields.
        let spec: HealthcarePlatformSpec =
            serde_json::from_str(r#"{"apiServer":{"replicas":3},"cache":{"provider":"Disabled"}}"#)
                .unwrap();
        assert_eq!(spec.api_server.replicas, 3);
        assert_eq!(spec.api_server.autoscaling, AutoscalingSpec::default());
        assert_eq!(spec.cache.provider, CacheProvider::Disabled);
        assert_eq!(spec.cache.version, DEFAULT_REDIS_VERSION);
    }
}

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

use caduceus_contract::settings;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, Toleration};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
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

// ---------------------------------------------------------------------------------------------
// API server

/// The Caduceus API server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.env) || self.env.all(e, !(e.name in ['DATABASE_URL', 'REDIS_URL', 'CADUCEUS_JWT_KEY_FILE', 'CADUCEUS_PHI_KEYS_FILE']))").message("apiServer.env must not override DATABASE_URL, REDIS_URL or the key file paths; the operator sets them from Secrets").field_path(".env"),
    validation = Rule::new("!has(self.env) || self.env.all(e, !(e.name in ['CADUCEUS_PATIENT_RETENTION_DAYS', 'CADUCEUS_TRUSTED_PROXIES']))").message("apiServer.env must not set CADUCEUS_PATIENT_RETENTION_DAYS or CADUCEUS_TRUSTED_PROXIES; use spec.security.patientRetentionDays and spec.security.trustedProxies").field_path(".env")
)]
pub struct ApiServerSpec {
    /// Container image of the API server.
    #[serde(default)]
    pub image: ImageSpec,
    /// Number of API pods when autoscaling is disabled.
    #[serde(default = "default_api_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// CPU and memory requests and limits of each API pod.
    #[serde(default = "default_api_resources")]
    pub resources: ResourcesSpec,
    /// HorizontalPodAutoscaler (autoscaling/v2, CPU and memory).
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// Optional Ingress, always with TLS.
    #[serde(default)]
    pub ingress: IngressSpec,
    /// `CADUCEUS_LOG_LEVEL`: a tracing filter such as `info` or `caduceus_api=debug,info`.
    #[serde(default = "default_log_level")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_:=,.\-]+$"))]
    pub log_level: String,
    /// Scheduling escape hatch: node selector for API pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Scheduling escape hatch: tolerations for API pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Scheduling escape hatch: affinity for API pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra environment variables for the API container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
    /// The FHIR R4 interface at `/fhir/R4`.
    #[serde(default)]
    pub fhir: FhirSpec,
}

impl Default for ApiServerSpec {
    fn default() -> Self {
        Self {
            image: ImageSpec::default(),
            replicas: default_api_replicas(),
            resources: default_api_resources(),
            autoscaling: AutoscalingSpec::default(),
            ingress: IngressSpec::default(),
            log_level: default_log_level(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            env: Vec::new(),
            fhir: FhirSpec::default(),
        }
    }
}

/// Settings of the API's FHIR R4 interface.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FhirSpec {
    /// `CADUCEUS_FHIR_MRN_SYSTEM`: the identifier system (an absolute URI, e.g.
    /// `urn:oid:2.16.840.1.113883.3.1234` or `https://hospital.example/fhir/mrn`) of the
    /// hospital's MRNs: `Patient.identifier.system` on `/fhir/R4`, and the system an
    /// `identifier` search must name.
    #[serde(default = "default_fhir_mrn_system")]
    #[schemars(
        length(min = 3, max = 2048),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s]+$")
    )]
    pub mrn_system: String,
}

impl Default for FhirSpec {
    fn default() -> Self {
        Self {
            mrn_system: default_fhir_mrn_system(),
        }
    }
}

fn default_fhir_mrn_system() -> String {
    settings::DEFAULT_FHIR_MRN_SYSTEM.to_string()
}

fn default_api_replicas() -> i32 {
    2
}
fn default_log_level() -> String {
    "info".into()
}
fn default_api_resources() -> ResourcesSpec {
    ResourcesSpec::new("250m", "256Mi", "1", "512Mi")
}

/// A container image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository without tag.
    #[serde(default = "default_api_repository")]
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[a-z0-9][a-z0-9._\-/:]*[a-z0-9]$")
    )]
    pub repository: String,
    /// Image tag. Defaults to the operator's own version, so upgrading the operator upgrades the
    /// API. `latest` is refused: every rollout must be reproducible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
    )]
    #[x_kube(validation = Rule::new("self != 'latest'").message("the `latest` tag is not allowed; pin a version"))]
    pub tag: Option<String>,
    /// Image pull policy.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Names of image pull Secrets in the platform's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: default_api_repository(),
            tag: None,
            pull_policy: PullPolicy::default(),
            pull_secrets: Vec::new(),
        }
    }
}

fn default_api_repository() -> String {
    DEFAULT_API_IMAGE.into()
}

/// Kubernetes image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// CPU and memory requests and limits. Both are always set (hardening baseline).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ResourcesSpec {
    pub requests: CpuMemory,
    pub limits: CpuMemory,
}

impl ResourcesSpec {
    pub fn new(req_cpu: &str, req_mem: &str, lim_cpu: &str, lim_mem: &str) -> Self {
        Self {
            requests: CpuMemory {
                cpu: Quantity(req_cpu.into()),
                memory: Quantity(req_mem.into()),
            },
            limits: CpuMemory {
                cpu: Quantity(lim_cpu.into()),
                memory: Quantity(lim_mem.into()),
            },
        }
    }
}

/// A CPU and memory pair.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CpuMemory {
    pub cpu: Quantity,
    pub memory: Quantity,
}

/// HorizontalPodAutoscaler settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxReplicas >= self.minReplicas").message("apiServer.autoscaling.maxReplicas must be >= minReplicas").field_path(".maxReplicas"))]
pub struct AutoscalingSpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 1, max = 100))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: i32,
    #[serde(default = "default_target_memory")]
    #[schemars(range(min = 1, max = 100))]
    pub target_memory_utilization_percentage: i32,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_cpu_utilization_percentage: default_target_cpu(),
            target_memory_utilization_percentage: default_target_memory(),
        }
    }
}

fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    10
}
fn default_target_cpu() -> i32 {
    70
}
fn default_target_memory() -> i32 {
    80
}

/// Ingress for the public API (port 8080). TLS is always on; the certificate Secret defaults to
/// `<platform>-api-tls` (for example filled by cert-manager through `annotations`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.host)").message("apiServer.ingress.host is required when the ingress is enabled").field_path(".host"))]
pub struct IngressSpec {
    #[serde(default)]
    pub enabled: bool,
    /// DNS name of the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^(\*\.)?[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?)*$"
        )
    )]
    pub host: Option<String>,
    /// IngressClass name; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// TLS certificate Secret; `<platform>-api-tls` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
    /// Annotations for the Ingress (e.g. cert-manager issuer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------------
// Database

/// PostgreSQL database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.provider != 'External' || has(self.secretRef)").message("database.secretRef is required when database.provider is External").field_path(".secretRef"),
    validation = Rule::new("self.provider == 'External' || !has(self.secretRef)").message("database.secretRef is only allowed when database.provider is External").field_path(".secretRef"),
    validation = Rule::new("self.provider == oldSelf.provider").message("database.provider is immutable; restore a backup into a new platform instead").field_path(".provider"),
    validation = Rule::new("self.provider != 'CloudNativePG' || !has(self.bootstrap) || !has(self.bootstrap.fromBackup)").message("database.bootstrap.fromBackup is not supported with the CloudNativePG provider (use CloudNativePG's own recovery)").field_path(".bootstrap.fromBackup")
)]
pub struct DatabaseSpec {
    /// `Embedded` (a hardened StatefulSet), `CloudNativePG` (a `postgresql.cnpg.io/v1` Cluster;
    /// needs the CloudNativePG operator) or `External` (connection URL from `secretRef`).
    #[serde(default)]
    pub provider: DatabaseProvider,
    /// PostgreSQL version: the tag of the database image (`imageRepository`).
    #[serde(default = "default_postgres_version")]
    #[schemars(regex(pattern = r"^[0-9]{2}(\.[0-9]{1,2})?$"))]
    pub version: String,
    #[doc = "Repository of the database image, without tag (the tag is `version`), e.g. a mirror"]
    #[doc = concat!("in your own registry. Defaults to `", default_postgres_image!(), "` (Embedded) or")]
    #[doc = concat!("`", default_cnpg_postgres_image!(), "` (CloudNativePG, which needs its own PostgreSQL")]
    #[doc = "image: mirror that one). Unused with External."]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[a-z0-9][a-z0-9._\-/:]*[a-z0-9]$")
    )]
    #[x_kube(validation = Rule::new("!self.matches(':[^/]*$')").message("database.imageRepository must not contain a tag; the tag is database.version"))]
    pub image_repository: Option<String>,
    /// Persistent storage (Embedded and CloudNativePG).
    #[serde(default = "default_database_storage")]
    pub storage: StorageSpec,
    /// CPU and memory of each database pod (Embedded and CloudNativePG).
    #[serde(default = "default_database_resources")]
    pub resources: ResourcesSpec,
    /// Number of PostgreSQL instances (CloudNativePG only; Embedded runs one).
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: i32,
    /// Secret holding the connection URL (External only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// TCP port the API may reach an External database on (NetworkPolicy egress).
    #[serde(default = "default_postgres_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub external_port: i32,
    /// CIDRs the API may reach an External database in (required with network policies:
    /// `[0.0.0.0/0, ::/0]` allows any address, explicitly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_cidrs: Vec<String>,
    /// How a new platform's database starts (Embedded and External): `fromBackup` restores a
    /// backup before the API starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<DatabaseBootstrap>,
}

/// `spec.database.bootstrap`: how a new platform's database starts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseBootstrap {
    /// Restore this backup before the API starts: a one-off Job `<platform>-restore` runs while
    /// the API is held at 0 replicas, and `status.restore` records its success (the database must
    /// be empty; a populated database is left alone, so the restore runs once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
}

/// A backup to restore a new platform from (usually another platform's backups).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FromBackup {
    /// Backup name (`backup-YYYYMMDDTHHMMSS.mmmZ`) or `latest` (the default).
    #[serde(default = "latest_backup")]
    #[schemars(regex(pattern = r"^(latest|[A-Za-z0-9][A-Za-z0-9._-]{0,127})$"))]
    pub name: String,
    /// Where the backups are: exactly one of `s3` or `claimName`.
    pub source: BackupSource,
    /// Secret (in the platform's namespace) holding the `backup-key.json` that decrypts them.
    #[schemars(length(min = 1, max = 253))]
    pub secret_ref: String,
}

fn latest_backup() -> String {
    "latest".into()
}

/// Exactly one of `s3` or `claimName`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.claimName)").message("bootstrap.fromBackup.source needs exactly one of s3 or claimName"))]
pub struct BackupSource {
    /// An S3-compatible destination (same fields as `backup.destination.s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// An existing PVC holding a `pvc` destination (e.g. `<old platform>-backups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: Option<String>,
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        Self {
            provider: DatabaseProvider::default(),
            version: default_postgres_version(),
            image_repository: None,
            storage: default_database_storage(),
            resources: default_database_resources(),
            instances: default_instances(),
            secret_ref: None,
            external_port: default_postgres_port(),
            external_cidrs: Vec::new(),
            bootstrap: None,
        }
    }
}

fn default_postgres_version() -> String {
    DEFAULT_POSTGRES_VERSION.into()
}
fn default_database_storage() -> StorageSpec {
    StorageSpec {
        size: Quantity("10Gi".into()),
        storage_class_name: None,
    }
}
fn default_database_resources() -> ResourcesSpec {
    ResourcesSpec::new("250m", "512Mi", "2", "2Gi")
}
fn default_instances() -> i32 {
    3
}
fn default_postgres_port() -> i32 {
    5432
}

/// Where the database runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DatabaseProvider {
    #[default]
    Embedded,
    CloudNativePG,
    External,
}

/// Persistent volume settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, e.g. `10Gi`.
    pub size: Quantity,
    /// StorageClass; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// A key in a Secret of the platform's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key holding the connection URL.
    #[serde(default = "default_url_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_url_key() -> String {
    "url".into()
}

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

// ---------------------------------------------------------------------------------------------
// Network policy, security

/// NetworkPolicies of the platform.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create default-deny and allow policies (strongly recommended).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may reach the API on port 8080. Default: every pod in the platform's namespace.
    /// Add your ingress controller's namespace here when the Ingress is enabled. Must not be
    /// empty (an empty list would admit every source).
    #[serde(default = "default_ingress_from")]
    pub ingress_from: Vec<NetworkPolicyPeer>,
    /// Namespace whose pods may scrape metrics on port 9090.
    #[serde(default = "default_monitoring_namespace")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub monitoring_namespace: String,
    /// Namespace of caduceus-operator, whose pods may read the API's compliance self-report on
    /// port 9090 (and whose metrics the per-platform operator ServiceMonitor scrapes).
    #[serde(default = "default_operator_namespace")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub operator_namespace: String,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            ingress_from: default_ingress_from(),
            monitoring_namespace: default_monitoring_namespace(),
            operator_namespace: default_operator_namespace(),
        }
    }
}

fn default_operator_namespace() -> String {
    "caduceus-system".into()
}

fn default_true() -> bool {
    true
}
fn default_ingress_from() -> Vec<NetworkPolicyPeer> {
    vec![NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..Default::default()
    }]
}
fn default_monitoring_namespace() -> String {
    "monitoring".into()
}

/// Security settings passed to the API server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// Automatic logoff after this many idle minutes.
    #[serde(default = "default_idle_timeout")]
    #[schemars(range(min = 1, max = 1440))]
    pub session_idle_timeout_minutes: i32,
    /// Maximum age of a session in hours, counted from the login whatever the activity
    /// (`CADUCEUS_MAX_SESSION_HOURS`): an older session cannot be used or refreshed.
    #[serde(default = "default_max_session_hours")]
    #[schemars(range(min = 1, max = 24))]
    pub max_session_hours: i32,
    /// Access token (JWT) lifetime in minutes.
    #[serde(default = "default_token_ttl")]
    #[schemars(range(min = 1, max = 1440))]
    pub access_token_ttl_minutes: i32,
    /// Rate limits.
    #[serde(default)]
    pub rate_limit: RateLimitSpec,
    /// How long audit records are kept (HIPAA: 6 years = 2190 days).
    #[serde(default = "default_audit_retention")]
    #[schemars(range(min = 1, max = 36500))]
    pub audit_retention_days: i32,
    /// Soft-deleted patients are purged this many days after their deletion
    /// (`CADUCEUS_PATIENT_RETENTION_DAYS`). At least 2190 (6 years: HIPAA documentation retention
    /// and the audit trail's minimum, so a record never goes while the audit about it must stay).
    #[serde(default = "default_patient_retention")]
    #[schemars(range(min = 2190, max = 36500))]
    pub patient_retention_days: i32,
    /// Days after an appointment (its end) during which the appointment keeps its practitioner
    /// in the patient's care team (`CADUCEUS_CARE_TEAM_ACCESS_DAYS`); cancelled and no-show
    /// appointments never count, explicit assignments last until revoked.
    #[serde(default = "default_care_team_access_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub care_team_access_days: i32,
    /// Reverse proxies / ingress controllers whose `X-Forwarded-For` the API believes
    /// (`CADUCEUS_TRUSTED_PROXIES`): CIDRs such as `10.0.0.0/8` or single IP addresses. The
    /// client IP keys the per-IP rate limits and the audit trail. Empty trusts no proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new("self.all(x, isCIDR(x) || isIP(x))").message("security.trustedProxies entries must be CIDRs such as 10.0.0.0/8 or IP addresses"))]
    pub trusted_proxies: Vec<String>,
    /// Origins allowed by CORS; empty disables CORS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_allowed_origins: Vec<String>,
    /// Enables `POST /auth/register`.
    #[serde(default)]
    pub self_registration: bool,
    /// Multi-factor authentication (TOTP) of the API's accounts (`CADUCEUS_MFA`): `Required`
    /// (the roles of `mfaRequiredRoles` must use it: without it their login opens a session that
    /// may only enrol), `Optional` (any account may enrol) or `Disabled` (no new enrolment;
    /// accounts already using MFA keep being asked for it). Unset: `Required` under the HIPAA
    /// compliance profile, `Optional` otherwise. Compliance rule `mfa-required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<MfaPolicy>,
    /// Roles that must use MFA when it is `Required` (`CADUCEUS_MFA_REQUIRED_ROLES`).
    #[serde(default = "default_mfa_required_roles")]
    #[schemars(length(min = 1, max = 4))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(x, x == r))").message("security.mfaRequiredRoles must not repeat a role"))]
    pub mfa_required_roles: Vec<MfaRole>,
}

/// MFA policy of the API.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaPolicy {
    Required,
    Optional,
    Disabled,
}

impl MfaPolicy {
    /// The value of `CADUCEUS_MFA`.
    pub fn setting(self) -> &'static str {
        match self {
            MfaPolicy::Required => "required",
            MfaPolicy::Optional => "optional",
            MfaPolicy::Disabled => "disabled",
        }
    }
}

/// A staff role that can be required to use MFA.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum MfaRole {
    Admin,
    Physician,
    Nurse,
    Receptionist,
}

impl MfaRole {
    /// The role's name in the API (`CADUCEUS_MFA_REQUIRED_ROLES`).
    pub fn as_str(self) -> &'static str {
        match self {
            MfaRole::Admin => "admin",
            MfaRole::Physician => "physician",
            MfaRole::Nurse => "nurse",
            MfaRole::Receptionist => "receptionist",
        }
    }
}

fn default_mfa_required_roles() -> Vec<MfaRole> {
    vec![MfaRole::Admin, MfaRole::Physician]
}

impl SecuritySpec {
    /// The MFA policy in effect: `spec.security.mfa`, or when unset `Required` under the HIPAA
    /// profile and `Optional` otherwise.
    pub fn effective_mfa(&self, profiles: &[ComplianceProfile]) -> MfaPolicy {
        self.mfa
            .unwrap_or(if profiles.contains(&ComplianceProfile::HIPAA) {
                MfaPolicy::Required
            } else {
                MfaPolicy::Optional
            })
    }
}

impl Default for SecuritySpec {
    fn default() -> Self {
        Self {
            session_idle_timeout_minutes: default_idle_timeout(),
            max_session_hours: default_max_session_hours(),
            access_token_ttl_minutes: default_token_ttl(),
            rate_limit: RateLimitSpec::default(),
            audit_retention_days: default_audit_retention(),
            patient_retention_days: default_patient_retention(),
            care_team_access_days: default_care_team_access_days(),
            trusted_proxies: Vec::new(),
            cors_allowed_origins: Vec::new(),
            self_registration: false,
            mfa: None,
            mfa_required_roles: default_mfa_required_roles(),
        }
    }
}

/// A contract default as the CRD's `i32` (every bound is far below `i32::MAX`).
const fn contract_default(n: settings::Number) -> i32 {
    n.default as i32
}
fn default_idle_timeout() -> i32 {
    contract_default(settings::SESSION_IDLE_TIMEOUT_MINUTES)
}
fn default_max_session_hours() -> i32 {
    contract_default(settings::MAX_SESSION_HOURS)
}
fn default_token_ttl() -> i32 {
    contract_default(settings::ACCESS_TOKEN_TTL_MINUTES)
}
fn default_audit_retention() -> i32 {
    contract_default(settings::AUDIT_RETENTION_DAYS)
}
fn default_patient_retention() -> i32 {
    contract_default(settings::PATIENT_RETENTION_DAYS)
}
fn default_care_team_access_days() -> i32 {
    contract_default(settings::CARE_TEAM_ACCESS_DAYS)
}

/// Rate limits of the API.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Requests per minute per client IP and per user.
    #[serde(default = "default_rpm")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: i32,
    /// Login attempts per minute per client IP.
    #[serde(default = "default_login_rpm")]
    #[schemars(range(min = 1, max = 1000))]
    pub login_attempts_per_minute: i32,
}

impl Default for RateLimitSpec {
    fn default() -> Self {
        Self {
            requests_per_minute: default_rpm(),
            login_attempts_per_minute: default_login_rpm(),
        }
    }
}

fn default_rpm() -> i32 {
    contract_default(settings::RATE_LIMIT_REQUESTS_PER_MINUTE)
}
fn default_login_rpm() -> i32 {
    contract_default(settings::RATE_LIMIT_LOGIN_PER_MINUTE)
}

// ---------------------------------------------------------------------------------------------
// Monitoring, backup, compliance (schema owned here, behaviour by their own modules)

/// Prometheus Operator integration (ServiceMonitor, PrometheusRule, dashboard).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create ServiceMonitors, a PrometheusRule and a Grafana dashboard ConfigMap when the
    /// Prometheus Operator CRDs are installed (condition `MonitoringReady` says when they are not).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Extra labels on the ServiceMonitors and the PrometheusRule, e.g. the `release` label
    /// your Prometheus selects them by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Base URL of the runbooks the alerts link to (`<base>/<alert>.md`).
    #[serde(default = "default_runbook_base_url")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^https?://"))]
    pub runbook_base_url: String,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            labels: BTreeMap::new(),
            runbook_base_url: default_runbook_base_url(),
        }
    }
}

/// The runbooks in `docs/runbooks/` of this repository.
pub const DEFAULT_RUNBOOK_BASE_URL: &str =
    "https://github.com/caduceus-health/caduceus/blob/main/docs/runbooks";

fn default_runbook_base_url() -> String {
    DEFAULT_RUNBOOK_BASE_URL.into()
}

/// Encrypted backups of the database.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Cron schedule (default hourly).
    #[serde(default = "default_backup_schedule")]
    #[schemars(length(min = 9, max = 100))]
    pub schedule: String,
    /// How long backups are kept.
    #[serde(default)]
    pub retention: RetentionSpec,
    /// Where backups go: an S3-compatible object store or a PVC.
    #[serde(default)]
    pub destination: BackupDestination,
    /// Secret holding `backup-key.json`; `<platform>-backup-key` (generated) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_secret_ref: Option<String>,
    /// Recovery point objective: a backup older than this is a violation.
    #[serde(default = "default_rpo")]
    #[schemars(range(min = 5, max = 10080))]
    pub rpo_minutes: i32,
    /// Image of the backup agent (`caduceus-backup` with `pg_dump`/`pg_restore` of the
    /// database's major version). Pull policy and pull Secrets are those of `apiServer.image`.
    #[serde(default)]
    pub image: BackupImageSpec,
}

/// Image of the backup agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupImageSpec {
    /// Image repository without tag, e.g. a mirror in your own registry.
    #[serde(default = "default_backup_repository")]
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[a-z0-9][a-z0-9._\-/:]*[a-z0-9]$")
    )]
    #[x_kube(validation = Rule::new("!self.matches(':[^/]*$')").message("backup.image.repository must not contain a tag; use backup.image.tag"))]
    pub repository: String,
    /// Image tag. Defaults to `<API version>-pg<major of database.version>` (e.g.
    /// `0.1.0-pg16`): the tag `docker/backup.Dockerfile` is built with, so the agent carries
    /// `pg_dump`/`pg_restore` of the database's major version. `latest` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
    )]
    #[x_kube(validation = Rule::new("self != 'latest'").message("the `latest` tag is not allowed; pin a version"))]
    pub tag: Option<String>,
}

impl Default for BackupImageSpec {
    fn default() -> Self {
        Self {
            repository: default_backup_repository(),
            tag: None,
        }
    }
}

fn default_backup_repository() -> String {
    DEFAULT_BACKUP_IMAGE.into()
}

impl BackupImageSpec {
    /// The default tag: `<API image tag>-pg<major of the database version>`.
    pub fn default_tag(api_version: &str, database_version: &str) -> String {
        let major = database_version.split('.').next().unwrap_or_default();
        format!("{api_version}-pg{major}")
    }

    /// The image reference: `repository:tag`, the tag defaulting to [`Self::default_tag`].
    pub fn reference(&self, api_version: &str, database_version: &str) -> String {
        let tag = self
            .tag
            .clone()
            .unwrap_or_else(|| Self::default_tag(api_version, database_version));
        format!("{}:{tag}", self.repository)
    }
}

impl Default for BackupSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: default_backup_schedule(),
            retention: RetentionSpec::default(),
            destination: BackupDestination::default(),
            encryption_key_secret_ref: None,
            rpo_minutes: default_rpo(),
            image: BackupImageSpec::default(),
        }
    }
}

fn default_backup_schedule() -> String {
    "0 * * * *".into()
}
fn default_rpo() -> i32 {
    60
}

/// Backup retention.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    #[serde(default = "default_retention_days")]
    #[schemars(range(min = 1, max = 36500))]
    pub days: i32,
    /// Never prune below this many backups.
    #[serde(default = "default_min_count")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_count: i32,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self {
            days: default_retention_days(),
            min_count: default_min_count(),
        }
    }
}

fn default_retention_days() -> i32 {
    30
}
fn default_min_count() -> i32 {
    7
}

/// Exactly one of `s3` or `pvc`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.pvc)").message("backup.destination needs exactly one of s3 or pvc"))]
pub struct BackupDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcDestination>,
}

impl Default for BackupDestination {
    fn default() -> Self {
        Self {
            s3: None,
            pvc: Some(PvcDestination::default()),
        }
    }
}

/// S3-compatible object store.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// Endpoint URL for non-AWS stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub endpoint: Option<String>,
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret_ref: String,
    #[serde(default)]
    pub force_path_style: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// A PVC holding backups.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcDestination {
    #[serde(default = "default_backup_pvc_size")]
    pub size: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for PvcDestination {
    fn default() -> Self {
        Self {
            size: default_backup_pvc_size(),
            storage_class_name: None,
        }
    }
}

fn default_backup_pvc_size() -> Quantity {
    Quantity("20Gi".into())
}

/// Continuous compliance evaluation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Regulatory profiles to evaluate.
    #[serde(default = "default_profiles")]
    pub profiles: Vec<ComplianceProfile>,
    /// `Enforce` overrides non-compliant values; `Audit` only reports.
    #[serde(default)]
    pub mode: ComplianceMode,
    /// Time-limited, justified exceptions to single rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<ComplianceException>,
}

impl Default for ComplianceSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            profiles: default_profiles(),
            mode: ComplianceMode::default(),
            exceptions: Vec::new(),
        }
    }
}

fn default_profiles() -> Vec<ComplianceProfile> {
    vec![ComplianceProfile::HIPAA]
}

/// A regulatory profile.
#[allow(clippy::upper_case_acronyms)]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComplianceProfile {
    HIPAA,
    GDPR,
    SOC2,
}

/// Compliance mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ComplianceMode {
    #[default]
    Enforce,
    Audit,
}

/// An exception to one compliance rule.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceException {
    #[schemars(length(min = 1, max = 128))]
    pub rule: String,
    #[schemars(length(min = 1, max = 1024))]
    pub justification: String,
    /// RFC 3339 time after which the exception no longer applies.
    pub expires: Time,
}

/// What happens to data when the platform is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep PVCs, credentials, key rings and backups (default: PHI is never deleted by accident).
    #[default]
    Retain,
    /// Delete PVCs and backups together with the platform.
    Delete,
}

// ---------------------------------------------------------------------------------------------
// Status

/// Observed state of a platform. Written only by the operator, through the status subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HealthcarePlatformStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Provisioning, Ready, Degraded, Failed, Paused or Stopped.
    #[serde(default)]
    pub phase: Phase,
    /// Human-readable summary of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Conditions in the `metav1.Condition` shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Where clients reach the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointStatus>,
    /// The running API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServerStatus>,
    /// The embedded database's TLS certificates (absent for other providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseStatus>,
    /// Compliance evaluation result (absent until evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<ComplianceStatus>,
    /// Backup state (absent until the first backup ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The completed restore of `spec.database.bootstrap.fromBackup` (absent until it
    /// succeeded). Once set, the restore never runs again, even after its Job is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// Lifecycle phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Phase {
    #[default]
    Pending,
    Provisioning,
    Ready,
    Degraded,
    Failed,
    Paused,
    Stopped,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Provisioning,
        Phase::Ready,
        Phase::Degraded,
        Phase::Failed,
        Phase::Paused,
        Phase::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
            Phase::Paused => "Paused",
            Phase::Stopped => "Stopped",
        }
    }
}

/// API endpoints.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// In-cluster URL, e.g. `https://demo-api.ns.svc:8080` (the API serves HTTPS with the
    /// operator-issued certificate of `<platform>-api-internal-tls`; trust its `ca.crt`).
    pub internal: String,
    /// Public URL through the Ingress, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
}

/// API server rollout state.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerStatus {
    /// Version (image tag) every ready pod runs; absent during a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub ready_replicas: i32,
    pub desired_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    pub ready: String,
}

/// Operator-issued TLS of the embedded database (renewed automatically).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// When the Postgres server certificate expires (re-issued 30 days before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_not_after: Option<Time>,
    /// When the newest CA in `ca.crt` expires (a new CA is issued a year before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_not_after: Option<Time>,
}

/// Compliance evaluation summary (filled by the compliance engine).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<ComplianceProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ComplianceMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliant: Option<bool>,
    #[serde(default)]
    pub passed: i32,
    #[serde(default)]
    pub total: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<ComplianceViolation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<Time>,
    /// Rules whose evidence is not available yet (never counted as passed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_evaluated: Vec<ComplianceRuleNote>,
    /// Values the operator overrode in `Enforce` mode, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enforced: Vec<ComplianceOverride>,
    /// State of each exception of the spec (active, expired or naming an unknown rule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<ComplianceExceptionStatus>,
    /// Head of the API's audit hash chain at the last evaluation (tamper detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_chain_head: Option<AuditChainHead>,
}

/// A rule and why it was not evaluated.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceRuleNote {
    pub rule: String,
    pub message: String,
}

/// One value overridden by `Enforce` mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceOverride {
    pub rule: String,
    /// Spec path, e.g. `spec.security.sessionIdleTimeoutMinutes`.
    pub field: String,
    pub from: String,
    pub to: String,
    pub message: String,
}

/// State of one compliance exception.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceExceptionStatus {
    pub rule: String,
    pub expires: Time,
    /// `Active`, `Expired` or `UnknownRule`.
    pub state: String,
    pub message: String,
}

/// Head of the API's audit hash chain.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditChainHead {
    pub id: i64,
    pub hash: String,
}

/// One failing compliance rule.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceViolation {
    pub rule: String,
    pub severity: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// Backup state: from the backup Jobs and their pods' termination messages, or from
/// CloudNativePG's Cluster status when backups are delegated.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_time: Option<Time>,
    /// The Job of the last `caduceus.io/backup-now` token handled (each token runs once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_on_demand_job: Option<String>,
}

/// A completed restore of `spec.database.bootstrap.fromBackup`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// `fromBackup.name` as requested (`latest` or a backup name).
    pub backup_name: String,
    /// The backup the agent restored (`latest` resolved); absent when it restored nothing
    /// because the database already had tables (`skipped`) or it did not report the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_backup: Option<String>,
    /// True when the database already had tables, so nothing was restored (`--if-empty`).
    #[serde(default)]
    pub skipped: bool,
    /// When the restore Job succeeded.
    pub completion_time: Time,
    /// The Job that ran the restore (deleted a week after it finished).
    pub job: String,
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

    /// The CRD's bounds and defaults of the settings the API reads are the contract's.
    #[test]
    fn security_settings_have_the_contract_bounds_and_defaults() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(HealthcarePlatform::crd()).unwrap();
        let security = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["spec"]["properties"]["security"]["properties"];
        let spec = HealthcarePlatformSpec::default().security;
        for (field, setting, value) in [
            (
                "sessionIdleTimeoutMinutes",
                settings::SESSION_IDLE_TIMEOUT_MINUTES,
                spec.session_idle_timeout_minutes,
            ),
            (
                "maxSessionHours",
                settings::MAX_SESSION_HOURS,
                spec.max_session_hours,
            ),
            (
                "accessTokenTtlMinutes",
                settings::ACCESS_TOKEN_TTL_MINUTES,
                spec.access_token_ttl_minutes,
            ),
            (
                "auditRetentionDays",
                settings::AUDIT_RETENTION_DAYS,
                spec.audit_retention_days,
            ),
            (
                "patientRetentionDays",
                settings::PATIENT_RETENTION_DAYS,
                spec.patient_retention_days,
            ),
            (
                "careTeamAccessDays",
                settings::CARE_TEAM_ACCESS_DAYS,
                spec.care_team_access_days,
            ),
        ] {
            let schema = &security[field];
            assert_eq!(
                schema["minimum"].as_f64(),
                Some(f64::from(setting.min)),
                "{field}"
            );
            assert_eq!(
                schema["maximum"].as_f64(),
                Some(f64::from(setting.max)),
                "{field}"
            );
            assert_eq!(i64::from(value), i64::from(setting.default), "{field}");
        }
        let rate = &security["rateLimit"]["properties"];
        for (field, setting, value) in [
            (
                "requestsPerMinute",
                settings::RATE_LIMIT_REQUESTS_PER_MINUTE,
                spec.rate_limit.requests_per_minute,
            ),
            (
                "loginAttemptsPerMinute",
                settings::RATE_LIMIT_LOGIN_PER_MINUTE,
                spec.rate_limit.login_attempts_per_minute,
            ),
        ] {
            assert_eq!(
                rate[field]["minimum"].as_f64(),
                Some(f64::from(setting.min)),
                "{field}"
            );
            assert_eq!(
                rate[field]["maximum"].as_f64(),
                Some(f64::from(setting.max)),
                "{field}"
            );
            assert_eq!(i64::from(value), i64::from(setting.default), "{field}");
        }
    }

    /// The roles and the default the CRD offers for MFA are the contract's.
    #[test]
    fn mfa_roles_and_default_are_the_contracts() {
        let roles = [
            MfaRole::Admin,
            MfaRole::Physician,
            MfaRole::Nurse,
            MfaRole::Receptionist,
        ];
        assert_eq!(roles.map(MfaRole::as_str), settings::MFA_ROLES);
        let default: Vec<&str> = default_mfa_required_roles()
            .into_iter()
            .map(MfaRole::as_str)
            .collect();
        assert_eq!(default.join(","), settings::DEFAULT_MFA_REQUIRED_ROLES);
        for p in [
            MfaPolicy::Required,
            MfaPolicy::Optional,
            MfaPolicy::Disabled,
        ] {
            assert!(settings::MFA_POLICIES.contains(&p.setting()));
        }
        let spec: HealthcarePlatformSpec =
            serde_json::from_str(r#"{"security":{"mfa":"Disabled","mfaRequiredRoles":["nurse"]}}"#)
                .unwrap();
        assert_eq!(spec.security.mfa, Some(MfaPolicy::Disabled));
        assert_eq!(spec.security.mfa_required_roles, vec![MfaRole::Nurse]);
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

    #[test]
    fn backup_image_defaults_to_the_tag_the_dockerfile_documents() {
        let spec = HealthcarePlatformSpec::default();
        assert_eq!(spec.backup.image.repository, DEFAULT_BACKUP_IMAGE);
        assert_eq!(
            spec.backup
                .image
                .reference("0.1.0", DEFAULT_POSTGRES_VERSION),
            "ghcr.io/caduceus-health/caduceus-backup:0.1.0-pg16"
        );
        assert_eq!(
            spec.backup.image.reference("1.4.0", "17.2"),
            "ghcr.io/caduceus-health/caduceus-backup:1.4.0-pg17"
        );
        let spec: HealthcarePlatformSpec = serde_json::from_str(
            r#"{"backup":{"image":{"repository":"registry.example.org:5000/mirror/caduceus-backup"}}}"#,
        )
        .unwrap();
        assert_eq!(
            spec.backup.image.reference("0.1.0", "16.6"),
            "registry.example.org:5000/mirror/caduceus-backup:0.1.0-pg16"
        );
        let spec: HealthcarePlatformSpec =
            serde_json::from_str(r#"{"backup":{"image":{"tag":"0.1.0-pg16-hotfix1"}}}"#).unwrap();
        assert_eq!(
            spec.backup.image.reference("0.1.0", "16.6"),
            "ghcr.io/caduceus-health/caduceus-backup:0.1.0-pg16-hotfix1"
        );
        // A partial backup section keeps the default image.
        let spec: HealthcarePlatformSpec =
            serde_json::from_str(r#"{"backup":{"rpoMinutes":30}}"#).unwrap();
        assert_eq!(spec.backup.image, BackupImageSpec::default());
    }

    #[test]
    fn unknown_enum_value_is_refused() {
        let err =
            serde_json::from_str::<HealthcarePlatformSpec>(r#"{"database":{"provider":"MySQL"}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("MySQL"), "{err}");
    }
}

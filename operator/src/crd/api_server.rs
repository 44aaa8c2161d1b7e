//! API server section of the `HealthcarePlatform` spec.

use super::*;
use caduceus_contract::settings;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

//! Database section of the `HealthcarePlatform` spec.

use super::*;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_value_is_refused() {
        let err =
            serde_json::from_str::<HealthcarePlatformSpec>(r#"{"database":{"provider":"MySQL"}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("MySQL"), "{err}");
    }
}

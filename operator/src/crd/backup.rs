//! Backup section of the `HealthcarePlatform` spec.

use super::*;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

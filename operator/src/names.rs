//! Every object name, label and selector the operator uses, in one place.
//!
//! Builders, apply, status and the finalizer all ask this module; no other module formats a
//! child name or writes a label map by hand.

use std::collections::BTreeMap;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "caduceus-operator";
/// Finalizer that applies `deletionPolicy`.
pub const FINALIZER: &str = "caduceus.io/finalizer";
/// Value of `app.kubernetes.io/part-of`.
pub const PART_OF: &str = "caduceus";
/// Value of `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "caduceus-operator";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_VERSION: &str = "app.kubernetes.io/version";

/// Pod-template annotation carrying a hash of the API ConfigMap, so a settings change rolls pods.
pub const ANNOTATION_CONFIG_HASH: &str = "caduceus.io/config-hash";
/// Postgres / Redis pod-template annotation carrying a hash of the server certificate and key,
/// so a renewed certificate restarts the server.
pub const ANNOTATION_TLS_CHECKSUM: &str = "caduceus.io/tls-checksum";
/// API pod-template annotation carrying a hash of the embedded Redis's CA bundle: the API reads
/// the bundle at start, so a new CA (published before the Redis certificate moves to it) rolls
/// the API pods.
pub const ANNOTATION_REDIS_CA_CHECKSUM: &str = "caduceus.io/redis-ca-checksum";
/// API pod-template annotation carrying a hash of the API's serving certificate and key
/// (`<platform>-api-internal-tls`): the API reads them at start, so a renewed certificate rolls
/// the API pods.
pub const ANNOTATION_API_TLS_CHECKSUM: &str = "caduceus.io/api-tls-checksum";
/// Label the Grafana dashboard sidecar looks for.
pub const LABEL_GRAFANA_DASHBOARD: &str = "grafana_dashboard";
/// `app.kubernetes.io/name` of the operator's own pods and Service (Helm chart).
pub const OPERATOR_APP_NAME: &str = "caduceus-operator";
/// Port name of the operator's metrics Service (Helm chart).
pub const OPERATOR_METRICS_PORT_NAME: &str = "http-metrics";
/// Marks Secrets printed by `render` whose values are placeholders.
pub const ANNOTATION_PLACEHOLDER: &str = "caduceus.io/placeholder-values";
/// CloudNativePG hibernation annotation (used when the platform is stopped).
pub const ANNOTATION_CNPG_HIBERNATION: &str = "cnpg.io/hibernation";
/// Label CloudNativePG puts on the pods of a Cluster.
pub const LABEL_CNPG_CLUSTER: &str = "cnpg.io/cluster";

/// Longest platform name: leaves room for the longest suffix (`-postgres-headless`) and the
/// StatefulSet pod ordinal within the 63-character DNS label limit.
pub const MAX_PLATFORM_NAME_LEN: usize = 40;

/// Mount path of the API secrets (docs/contracts.md).
pub const API_SECRETS_MOUNT: &str = "/etc/caduceus/secrets";
/// Key of the JWT signing key in the API secret.
pub const JWT_KEY: &str = "jwt.key";
/// Key of the PHI key ring in the API secret.
pub const PHI_KEYS: &str = "phi-keys.json";

pub const API_HTTP_PORT: i32 = caduceus_contract::settings::API_HTTP_PORT as i32;
pub const API_METRICS_PORT: i32 = caduceus_contract::settings::API_ADMIN_PORT as i32;
pub const POSTGRES_PORT: i32 = 5432;
pub const REDIS_PORT: i32 = 6379;

/// Database name and role the operator creates for the API.
pub const DATABASE_NAME: &str = "caduceus";
pub const DATABASE_USER: &str = "caduceus";
/// The API's runtime role (neither superuser nor owner; the contract's default).
pub const DATABASE_APP_USER: &str = caduceus_contract::settings::DEFAULT_APP_DB_USER;

/// Keys of the generated database credentials Secret.
pub const PG_USERNAME_KEY: &str = "username";
pub const PG_PASSWORD_KEY: &str = "password";
pub const PG_DATABASE_KEY: &str = "database";
pub const PG_URL_KEY: &str = "database-url";
/// Keys of the generated Redis Secret.
pub const REDIS_PASSWORD_KEY: &str = "password";
pub const REDIS_URL_KEY: &str = "redis-url";
pub const REDIS_AUTH_CONF_KEY: &str = "auth.conf";
/// Key of the connection URI in the Secret CloudNativePG creates (`<cluster>-app`).
pub const CNPG_URI_KEY: &str = "uri";

/// A platform component: one value of `app.kubernetes.io/component`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    ApiServer,
    Database,
    Cache,
    /// Objects shared by the whole platform (network policies).
    Platform,
    /// The backup agent (CronJob, Jobs, their NetworkPolicies, key Secret, PVC).
    Backup,
    /// The one-off restore of `database.bootstrap.fromBackup` (its Job and NetworkPolicies):
    /// the backup agent's image, but its own selector, so the backup pods' policies and
    /// `status.backup` never include it.
    Restore,
}

impl Component {
    /// `app.kubernetes.io/component`.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::ApiServer => "api-server",
            Component::Database => "database",
            Component::Cache => "cache",
            Component::Platform => "platform",
            Component::Backup => "backup",
            Component::Restore => "restore",
        }
    }

    /// `app.kubernetes.io/name`: the application the component runs.
    pub fn app_name(self) -> &'static str {
        match self {
            Component::ApiServer => "caduceus-api",
            Component::Database => "postgres",
            Component::Cache => "redis",
            Component::Platform => "caduceus",
            Component::Backup | Component::Restore => "caduceus-backup",
        }
    }
}

/// Names of one platform's children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    platform: String,
}

impl Names {
    pub fn new(platform: impl Into<String>) -> Self {
        Self {
            platform: platform.into(),
        }
    }

    pub fn platform(&self) -> &str {
        &self.platform
    }

    fn suffixed(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.platform)
    }

    /// Deployment, Service, ServiceAccount, HPA, PDB and Ingress of the API.
    pub fn api(&self) -> String {
        self.suffixed("api")
    }
    pub fn api_config(&self) -> String {
        self.suffixed("api-config")
    }
    pub fn api_secrets(&self) -> String {
        self.suffixed("api-secrets")
    }
    /// The user's Ingress certificate (default `tls.secretName` of the Ingress; never issued by
    /// the operator).
    pub fn api_tls(&self) -> String {
        self.suffixed("api-tls")
    }
    /// CA, serving certificate and key of the API's own HTTPS listeners (operator-issued; not the
    /// Ingress certificate of [`Names::api_tls`]).
    pub fn api_internal_tls(&self) -> String {
        self.suffixed("api-internal-tls")
    }
    /// StatefulSet and client Service of the embedded database.
    pub fn postgres(&self) -> String {
        self.suffixed("postgres")
    }
    pub fn postgres_headless(&self) -> String {
        self.suffixed("postgres-headless")
    }
    pub fn postgres_credentials(&self) -> String {
        self.suffixed("postgres-credentials")
    }
    /// CA, server certificate and key of the embedded Postgres (operator-issued).
    /// The API's runtime database role: name, password and `database-url` (`db-setup` creates
    /// the role; the API connects as it).
    pub fn postgres_app(&self) -> String {
        self.suffixed("postgres-app")
    }
    /// ConfigMap with the embedded database's `pg_hba.conf` (TCP only over TLS).
    pub fn postgres_hba(&self) -> String {
        self.suffixed("postgres-hba")
    }
    pub fn postgres_tls(&self) -> String {
        self.suffixed("postgres-tls")
    }
    /// Name of the volume claim template; PVCs are `data-<statefulset>-<ordinal>`.
    pub fn data_volume(&self) -> &'static str {
        "data"
    }
    /// StatefulSet and Service of the embedded cache.
    pub fn redis(&self) -> String {
        self.suffixed("redis")
    }
    pub fn redis_credentials(&self) -> String {
        self.suffixed("redis-credentials")
    }
    /// CA, server certificate and key of the embedded Redis (operator-issued).
    pub fn redis_tls(&self) -> String {
        self.suffixed("redis-tls")
    }
    /// CloudNativePG `Cluster`.
    pub fn cnpg_cluster(&self) -> String {
        self.suffixed("db")
    }
    /// Secret CloudNativePG creates for the application owner.
    /// CloudNativePG's read-write Service of the cluster.
    pub fn cnpg_rw_service(&self) -> String {
        format!("{}-rw", self.cnpg_cluster())
    }
    pub fn cnpg_app_secret(&self) -> String {
        self.suffixed("db-app")
    }
    pub fn backup_key(&self) -> String {
        self.suffixed("backup-key")
    }
    /// ServiceMonitor of the API (same name as its Service).
    pub fn api_service_monitor(&self) -> String {
        self.api()
    }
    /// ServiceMonitor scraping this platform's compliance series from the operator.
    pub fn operator_service_monitor(&self) -> String {
        self.suffixed("operator")
    }
    pub fn prometheus_rule(&self) -> String {
        self.suffixed("alerts")
    }
    pub fn dashboard(&self) -> String {
        self.suffixed("dashboard")
    }

    pub fn netpol_default_deny(&self) -> String {
        self.suffixed("default-deny")
    }
    pub fn netpol_dns_egress(&self) -> String {
        self.suffixed("allow-dns-egress")
    }
    pub fn netpol_api_ingress(&self) -> String {
        self.suffixed("allow-api-ingress")
    }
    pub fn netpol_api_egress(&self) -> String {
        self.suffixed("allow-api-egress")
    }
    pub fn netpol_postgres_ingress(&self) -> String {
        self.suffixed("allow-postgres-ingress")
    }
    pub fn netpol_redis_ingress(&self) -> String {
        self.suffixed("allow-redis-ingress")
    }
    /// Every NetworkPolicy name of `network_policy.rs` (tests; unwanted ones are swept).
    #[cfg(test)]
    pub fn all_network_policies(&self) -> Vec<String> {
        vec![
            self.netpol_default_deny(),
            self.netpol_dns_egress(),
            self.netpol_api_ingress(),
            self.netpol_api_egress(),
            self.netpol_postgres_ingress(),
            self.netpol_redis_ingress(),
        ]
    }

    /// Backup CronJob (and the prefix of its Jobs).
    pub fn backup_cron_job(&self) -> String {
        self.suffixed("backup")
    }
    /// Job of an on-demand backup (`caduceus.io/backup-now`); `token_hash` is a short hex digest.
    pub fn backup_now_job(&self, token_hash: &str) -> String {
        self.suffixed(&format!("backup-now-{token_hash}"))
    }
    /// PVC of a `pvc` backup destination.
    pub fn backup_pvc(&self) -> String {
        self.suffixed("backups")
    }
    pub fn netpol_backup_egress(&self) -> String {
        self.suffixed("allow-backup-egress")
    }
    pub fn netpol_backup_to_postgres(&self) -> String {
        self.suffixed("allow-backup-to-postgres")
    }
    /// Job restoring `database.bootstrap.fromBackup` into a new platform's database (runs once).
    pub fn restore_job(&self) -> String {
        self.suffixed("restore")
    }
    /// Egress (and no ingress) of the restore pod.
    pub fn netpol_restore_egress(&self) -> String {
        self.suffixed("allow-restore-egress")
    }
    /// Ingress to the embedded Postgres from the restore pod.
    pub fn netpol_restore_to_postgres(&self) -> String {
        self.suffixed("allow-restore-to-postgres")
    }
    /// CloudNativePG `ScheduledBackup` (CloudNativePG provider).
    pub fn cnpg_scheduled_backup(&self) -> String {
        self.suffixed("db-backup")
    }

    /// In-cluster DNS name of a Service.
    pub fn service_host(&self, service: &str, namespace: &str) -> String {
        format!("{service}.{namespace}.svc")
    }

    /// Recommended labels of a child.
    pub fn labels(&self, component: Component, version: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector(component);
        labels.insert(LABEL_PART_OF.into(), PART_OF.into());
        labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
        labels.insert(LABEL_VERSION.into(), label_value(version));
        labels
    }

    /// Labels of a StatefulSet's `volumeClaimTemplates` (and so of the PVCs made from them):
    /// the recommended labels without `app.kubernetes.io/version`. Claim templates are
    /// immutable, so nothing in them may change when the database or cache is upgraded.
    pub fn claim_labels(&self, component: Component) -> BTreeMap<String, String> {
        let mut labels = self.selector(component);
        labels.insert(LABEL_PART_OF.into(), PART_OF.into());
        labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
        labels
    }

    /// Every Secret of a platform that holds data-unlocking material (credentials, keys, the
    /// PHI key ring, the database and cache CAs and server keys): `deletionPolicy: Retain` keeps all of them
    /// with the PVCs and backups they unlock. The one list the finalizer uses; a test checks
    /// that every Secret the build stage can produce is in it.
    pub fn retained_secrets(&self) -> Vec<String> {
        vec![
            self.api_secrets(),
            self.postgres_credentials(),
            self.postgres_app(),
            self.postgres_tls(),
            self.redis_credentials(),
            self.redis_tls(),
            self.api_internal_tls(),
            self.backup_key(),
        ]
    }

    /// Immutable selector of a component's pods (no version: selectors never change).
    pub fn selector(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_string(), component.app_name().to_string()),
            (LABEL_INSTANCE.to_string(), self.platform.clone()),
            (LABEL_COMPONENT.to_string(), component.as_str().to_string()),
        ])
    }

    /// Selects every object and pod of this platform.
    pub fn platform_selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_INSTANCE.to_string(), self.platform.clone()),
            (LABEL_PART_OF.to_string(), PART_OF.to_string()),
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        ])
    }

    /// Selects the backup Jobs (scheduled and on-demand) and their pods.
    pub fn backup_selector_string(&self) -> String {
        selector_string(&self.selector(Component::Backup))
    }

    /// Selects the restore Job's pod.
    pub fn restore_selector_string(&self) -> String {
        selector_string(&self.selector(Component::Restore))
    }

    /// `platform_selector` as a label-selector string for list calls.
    pub fn platform_selector_string(&self) -> String {
        selector_string(&self.platform_selector())
    }
}

/// `k=v,k2=v2` for list calls.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Makes an arbitrary string a valid label value (max 63 chars of `[A-Za-z0-9._-]`, alphanumeric
/// at both ends).
pub fn label_value(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_contain_recommended_keys() {
        let n = Names::new("demo");
        let l = n.labels(Component::ApiServer, "1.2.3");
        assert_eq!(l[LABEL_NAME], "caduceus-api");
        assert_eq!(l[LABEL_INSTANCE], "demo");
        assert_eq!(l[LABEL_COMPONENT], "api-server");
        assert_eq!(l[LABEL_PART_OF], "caduceus");
        assert_eq!(l[LABEL_MANAGED_BY], "caduceus-operator");
        assert_eq!(l[LABEL_VERSION], "1.2.3");
    }

    #[test]
    fn selector_is_subset_of_labels_and_has_no_version() {
        let n = Names::new("demo");
        let sel = n.selector(Component::Database);
        let labels = n.labels(Component::Database, "16.6");
        assert!(sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
        assert!(!sel.contains_key(LABEL_VERSION));
        let platform = n.platform_selector();
        assert!(platform.iter().all(|(k, v)| labels.get(k) == Some(v)));
    }

    #[test]
    fn claim_labels_are_stable_across_versions() {
        let n = Names::new("demo");
        let claim = n.claim_labels(Component::Database);
        assert!(!claim.contains_key(LABEL_VERSION));
        let labels = n.labels(Component::Database, "16.6");
        let mut without_version = labels.clone();
        without_version.remove(LABEL_VERSION);
        assert_eq!(claim, without_version);
        // The PVCs stay selectable by the component's selector.
        assert!(n
            .selector(Component::Database)
            .iter()
            .all(|(k, v)| claim.get(k) == Some(v)));
    }

    #[test]
    fn retained_secrets_include_the_database_certificate() {
        let n = Names::new("demo");
        let kept = n.retained_secrets();
        for want in [
            "demo-api-secrets",
            "demo-postgres-credentials",
            "demo-postgres-tls",
            "demo-redis-credentials",
            "demo-api-internal-tls",
            "demo-backup-key",
        ] {
            assert!(kept.iter().any(|k| k == want), "{want} not in {kept:?}");
        }
        // The operator's certificate never takes the name of the user's Ingress certificate.
        assert_ne!(n.api_internal_tls(), n.api_tls());
    }

    #[test]
    fn longest_child_name_fits_dns_label() {
        let n = Names::new("a".repeat(MAX_PLATFORM_NAME_LEN));
        for name in n.all_network_policies().into_iter().chain([
            n.postgres_headless(),
            n.postgres_credentials(),
            format!("{}-{}-0", n.data_volume(), n.postgres()),
            // A Job's name is also the value of its pods' `job-name` label.
            n.restore_job(),
        ]) {
            assert!(name.len() <= 63, "{name} is {} chars", name.len());
        }
    }

    #[test]
    fn restore_pods_have_their_own_selector() {
        let n = Names::new("demo");
        assert_eq!(n.restore_job(), "demo-restore");
        assert_ne!(
            n.selector(Component::Restore),
            n.selector(Component::Backup)
        );
        assert_eq!(
            n.restore_selector_string(),
            "app.kubernetes.io/component=restore,app.kubernetes.io/instance=demo,app.kubernetes.io/name=caduceus-backup"
        );
        // The restore pod carries the platform labels: default-deny and DNS egress select it.
        let labels = n.labels(Component::Restore, "1.0.0");
        assert!(n
            .platform_selector()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v)));
    }

    #[test]
    fn label_value_is_sanitised() {
        assert_eq!(label_value("1.0.0+build/7"), "1.0.0_build_7");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
        assert_eq!(label_value("-v1-"), "v1");
    }

    #[test]
    fn selector_string_is_sorted_and_joined() {
        let n = Names::new("demo");
        assert_eq!(
            n.platform_selector_string(),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/managed-by=caduceus-operator,app.kubernetes.io/part-of=caduceus"
        );
    }
}

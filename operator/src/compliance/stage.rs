//! The compliance stage of the reconcile (after apply): collects live evidence (the platform's
//! NetworkPolicies, `status.backup`, the backup Jobs, the API self-report), evaluates, and returns what the
//! status stage writes (`status.compliance`, conditions `Compliant` and `MonitoringReady`) and
//! the Events to publish.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::Client;

use super::report::{self, ComplianceEvent};
use super::self_report::{url_for, SelfReport, SelfReportClient};
use super::{assess, Assessment, LiveEvidence, Override};
use crate::apply::{describe, MonitoringState, Observed};
use crate::crd::{CacheProvider, ComplianceStatus, HealthcarePlatform};
use crate::desired::Children;
use crate::validate::ValidatedPlatform;
use caduceus_contract::conditions::{
    COMPLIANT, MONITORING_READY, REASON_APPLIED, REASON_MONITORING_DISABLED,
    REASON_PROMETHEUS_OPERATOR_NOT_INSTALLED,
};

/// What the compliance stage hands to the status stage.
#[derive(Clone, Debug)]
pub struct ComplianceUpdate {
    /// New `status.compliance` (`None` when compliance is disabled).
    pub status: Option<ComplianceStatus>,
    /// (type, status, reason, message) of `Compliant` and `MonitoringReady`.
    pub conditions: Vec<(&'static str, &'static str, &'static str, String)>,
    pub events: Vec<ComplianceEvent>,
    pub assessment: Option<Assessment>,
}

impl ComplianceUpdate {
    /// Writes the update into a freshly computed status.
    pub fn apply_to(
        &self,
        status: &mut crate::crd::HealthcarePlatformStatus,
        generation: Option<i64>,
        now: &Time,
    ) {
        status.compliance = self.status.clone();
        for (type_, st, reason, message) in &self.conditions {
            report::set_condition(
                &mut status.conditions,
                type_,
                st,
                reason,
                message.clone(),
                generation,
                now,
            );
        }
    }
}

/// `MonitoringReady` from what apply did.
pub fn monitoring_condition(
    state: MonitoringState,
) -> (&'static str, &'static str, &'static str, String) {
    match state {
        MonitoringState::Applied => (
            MONITORING_READY,
            "True",
            REASON_APPLIED,
            "ServiceMonitors, PrometheusRule and Grafana dashboard ConfigMap are applied".into(),
        ),
        MonitoringState::PrometheusOperatorNotInstalled => (
            MONITORING_READY,
            "False",
            REASON_PROMETHEUS_OPERATOR_NOT_INSTALLED,
            "the monitoring.coreos.com CRDs (ServiceMonitor, PrometheusRule) are not installed: no monitoring objects are created; everything else works".into(),
        ),
        MonitoringState::Disabled => (
            MONITORING_READY,
            "False",
            REASON_MONITORING_DISABLED,
            "spec.monitoring.enabled is false".into(),
        ),
    }
}

/// Whether this reconcile needs the API's self-report: for the compliance rules, and for the
/// `CacheReady` condition of an External cache (the API's readiness does not depend on Redis).
pub fn self_report_needed(p: &ValidatedPlatform) -> bool {
    p.spec.compliance.enabled || p.spec.cache.provider == CacheProvider::External
}

/// Reads the API's compliance self-report (`GET /internal/compliance` on the admin port, HTTPS)
/// when [`self_report_needed`], trusting only `api_ca`, the `ca.crt` of the API's certificate as
/// the operator built it ([`crate::desired::api_tls::ca_bundle`]); an error (never a pass) when
/// no API pod is ready to answer, there is no CA to trust or the read fails. `None` when not
/// needed.
pub async fn read_self_report(
    self_reports: &Result<SelfReportClient, String>,
    p: &ValidatedPlatform,
    observed: &Observed,
    api_ca: Option<&[u8]>,
) -> Option<Result<SelfReport, String>> {
    if !self_report_needed(p) {
        return None;
    }
    let ready_api_pods = observed
        .deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    Some(match self_reports {
        Ok(_) if ready_api_pods == 0 => Err("no API pod is ready to answer".to_string()),
        Ok(c) => match api_ca {
            None => Err(format!(
                "the CA of the API's certificate ({} ca.crt) is not available",
                p.names.api_internal_tls()
            )),
            Some(ca) => match c.trusting(ca) {
                Ok(c) => c
                    .fetch(&url_for(&p.names, &p.namespace))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        },
        Err(e) => Err(e.clone()),
    })
}

/// Lists the platform's NetworkPolicies as they are in the cluster.
async fn live_network_policies(
    client: &Client,
    p: &ValidatedPlatform,
) -> Result<Vec<NetworkPolicy>, String> {
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &p.namespace);
    api.list(&ListParams::default().labels(&p.names.platform_selector_string()))
        .await
        .map(|l| l.items)
        .map_err(|e| describe(&e))
}

/// Collects evidence and evaluates `effective` (the platform the children were built from).
///
/// The API's self-report is the one the controller read after apply (`observed.self_report`,
/// see [`read_self_report`]).
pub async fn run(
    client: &Client,
    hp: &HealthcarePlatform,
    effective: &ValidatedPlatform,
    desired: &Children,
    observed: &Observed,
    overrides: Vec<Override>,
    now: Timestamp,
) -> ComplianceUpdate {
    let monitoring = monitoring_condition(observed.monitoring);
    let previous = hp.status.as_ref().and_then(|s| s.compliance.as_ref());
    if !effective.spec.compliance.enabled {
        return ComplianceUpdate {
            status: None,
            conditions: vec![
                (
                    COMPLIANT,
                    "Unknown",
                    "EvaluationDisabled",
                    "spec.compliance.enabled is false: no rule is evaluated or enforced".into(),
                ),
                monitoring,
            ],
            events: Vec::new(),
            assessment: None,
        };
    }
    let self_report = observed
        .self_report
        .clone()
        .unwrap_or_else(|| Err("the API self-report was not read".to_string()));
    let network_policies = match live_network_policies(client, effective).await {
        Ok(list) => list,
        // Unreadable policies count as missing: the rule then fails and says so.
        Err(e) => {
            tracing::warn!(error = %e, "listing NetworkPolicies for compliance failed");
            Vec::new()
        }
    };
    let live = LiveEvidence {
        network_policies,
        // The `status.backup` this reconcile writes (from the backup Jobs or CloudNativePG).
        backup: crate::status::backup_status(
            effective,
            hp.status.as_ref().and_then(|s| s.backup.as_ref()),
            observed,
            now,
        ),
        backup_jobs: observed.backup_jobs.clone(),
        self_report,
        previous_chain_head: previous.and_then(|c| c.audit_chain_head.clone()),
    };
    let assessment = assess(effective, desired, Some(&live), overrides, now);
    let now_time = Time(now);
    let status = report::status(&assessment, previous, &now_time);
    let events = report::events(previous, &status);
    let (st, reason, message) = report::condition(&assessment);
    ComplianceUpdate {
        status: Some(status),
        conditions: vec![(COMPLIANT, st, reason, message), monitoring],
        events,
        assessment: Some(assessment),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretKeyRef;
    use crate::desired::test_support::platform;

    #[test]
    fn the_self_report_is_read_for_compliance_or_an_external_cache() {
        assert!(self_report_needed(&platform(|_| {})));
        assert!(!self_report_needed(&platform(
            |s| s.compliance.enabled = false
        )));
        assert!(self_report_needed(&platform(|s| {
            s.compliance.enabled = false;
            s.cache.provider = CacheProvider::External;
            s.cache.secret_ref = Some(SecretKeyRef {
                name: "redis".into(),
                key: "url".into(),
            });
        })));
    }

    #[tokio::test]
    async fn no_ready_api_pod_is_an_error_not_a_pass() {
        let p = platform(|_| {});
        let client =
            SelfReportClient::new(std::time::Duration::from_millis(200)).map_err(|e| e.to_string());
        let read = read_self_report(&client, &p, &Observed::default(), Some(b"ca")).await;
        assert_eq!(read, Some(Err("no API pod is ready to answer".to_string())));
        let off = platform(|s| s.compliance.enabled = false);
        assert_eq!(
            read_self_report(&client, &off, &Observed::default(), Some(b"ca")).await,
            None
        );
    }

    /// Without the CA of the API's certificate the operator reads nothing (it never falls back
    /// to plain HTTP or to other roots).
    #[tokio::test]
    async fn no_ca_to_trust_is_an_error_not_a_pass() {
        use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
        let p = platform(|_| {});
        let client =
            SelfReportClient::new(std::time::Duration::from_millis(200)).map_err(|e| e.to_string());
        let observed = Observed {
            deployment: Some(Deployment {
                status: Some(DeploymentStatus {
                    ready_replicas: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let read = read_self_report(&client, &p, &observed, None).await;
        assert_eq!(
            read,
            Some(Err(
                "the CA of the API's certificate (demo-api-internal-tls ca.crt) is not available"
                    .to_string()
            ))
        );
        let read = read_self_report(&client, &p, &observed, Some(b"not pem")).await;
        assert!(read.unwrap().unwrap_err().contains("CA bundle"));
    }
}

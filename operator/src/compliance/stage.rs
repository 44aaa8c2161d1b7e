//! The compliance stage of the reconcile (after apply): collects live evidence (the platform's
//! NetworkPolicies, `status.backup`, the backup Jobs, the API self-report), evaluates, and returns what the
//! status stage writes (`status.compliance`, conditions `Compliant` and `MonitoringReady`) and
//! the Events to publish.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::Client;

use super::report::{self, ComplianceEvent, COMPLIANT};
use super::self_report::{url_for, SelfReportClient};
use super::{assess, Assessment, LiveEvidence, Override};
use crate::apply::{describe, MonitoringState, Observed};
use crate::build::monitoring::{MONITORING_READY, REASON_NOT_INSTALLED};
use crate::build::Children;
use crate::crd::{ComplianceStatus, HealthcarePlatform};
use crate::validate::ValidatedPlatform;

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
            "Applied",
            "ServiceMonitors, PrometheusRule and Grafana dashboard ConfigMap are applied".into(),
        ),
        MonitoringState::PrometheusOperatorNotInstalled => (
            MONITORING_READY,
            "False",
            REASON_NOT_INSTALLED,
            "the monitoring.coreos.com CRDs (ServiceMonitor, PrometheusRule) are not installed: no monitoring objects are created; everything else works".into(),
        ),
        MonitoringState::Disabled => (
            MONITORING_READY,
            "False",
            "MonitoringDisabled",
            "spec.monitoring.enabled is false".into(),
        ),
    }
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
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &Client,
    self_reports: &Result<SelfReportClient, String>,
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
    let ready_api_pods = observed
        .deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let self_report = match self_reports {
        Ok(_) if ready_api_pods == 0 => Err("no API pod is ready to answer".to_string()),
        Ok(c) => c
            .fetch(&url_for(&effective.names, &effective.namespace))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
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

//! Compliance metrics, registered into the operator's registry:
//!
//! | metric | type | labels | value |
//! |---|---|---|---|
//! | `caduceus_compliance_rule_status` | gauge | `platform` (`<namespace>/<name>`), `rule` | 1 pass, 0 fail, -1 not evaluated, 2 excepted |
//! | `caduceus_compliance_violations` | gauge | `platform`, `severity` | failing rules |
//! | `caduceus_backup_last_success_timestamp_seconds` | gauge | `platform` | `status.backup.lastSuccessfulTime` (absent until reported) |
//!
//! Labels carry only the platform's namespace/name and fixed rule/severity vocabularies.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus::{IntGaugeVec, Opts, Registry};

use super::{Assessment, Severity, Verdict, RULES};

/// The two compliance gauges.
#[derive(Clone, Debug)]
pub struct ComplianceMetrics {
    pub rule_status: IntGaugeVec,
    pub violations: IntGaugeVec,
    pub backup_last_success: IntGaugeVec,
}

impl ComplianceMetrics {
    /// Creates the gauges and registers them into `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let rule_status = IntGaugeVec::new(
            Opts::new(
                "caduceus_compliance_rule_status",
                "Compliance rule result per platform: 1 pass, 0 fail, -1 not evaluated, 2 excepted.",
            ),
            &["platform", "rule"],
        )?;
        let violations = IntGaugeVec::new(
            Opts::new(
                "caduceus_compliance_violations",
                "Failing compliance rules per platform and severity.",
            ),
            &["platform", "severity"],
        )?;
        let backup_last_success = IntGaugeVec::new(
            Opts::new(
                "caduceus_backup_last_success_timestamp_seconds",
                "Unix time of the platform's last successful backup (from status.backup).",
            ),
            &["platform"],
        )?;
        registry.register(Box::new(rule_status.clone()))?;
        registry.register(Box::new(violations.clone()))?;
        registry.register(Box::new(backup_last_success.clone()))?;
        Ok(Self {
            rule_status,
            violations,
            backup_last_success,
        })
    }

    /// Records one assessment of `platform` (`<namespace>/<name>`).
    pub fn record(&self, platform: &str, a: &Assessment) {
        self.forget(platform);
        for r in &a.results {
            self.rule_status
                .with_label_values(&[platform, r.rule.id])
                .set(r.verdict.metric_value());
        }
        for sev in Severity::ALL {
            let n = a
                .results
                .iter()
                .filter(|r| r.verdict == Verdict::Fail && r.rule.severity == sev)
                .count();
            self.violations
                .with_label_values(&[platform, sev.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Records the time of the last successful backup, or removes the series when unknown.
    pub fn record_backup(&self, platform: &str, last_success: Option<&Time>) {
        match last_success {
            Some(t) => self
                .backup_last_success
                .with_label_values(&[platform])
                .set(t.0.as_second()),
            None => {
                let _ = self.backup_last_success.remove_label_values(&[platform]);
            }
        }
    }

    /// Removes every series of a deleted platform (or of rules no longer selected).
    pub fn forget(&self, platform: &str) {
        for r in &RULES {
            let _ = self.rule_status.remove_label_values(&[platform, r.id]);
        }
        for sev in Severity::ALL {
            let _ = self
                .violations
                .remove_label_values(&[platform, sev.as_str()]);
        }
    }

    /// Removes every series of a deleted platform.
    pub fn forget_platform(&self, platform: &str) {
        self.forget(platform);
        let _ = self.backup_last_success.remove_label_values(&[platform]);
    }
}

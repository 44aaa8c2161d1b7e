//! Prometheus metrics of the operator, in their own registry (no global state, so tests and
//! several controllers in one process do not collide).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `caduceus_operator_reconciles_total` | counter | `result` = success, error |
//! | `caduceus_operator_reconcile_duration_seconds` | histogram | – |
//! | `caduceus_operator_reconcile_errors_total` | counter | `reason` (status reason) |
//! | `caduceus_operator_platforms` | gauge | `phase` |
//! | `caduceus_operator_drift_corrections_total` | counter | `kind` |
//! | `caduceus_compliance_rule_status` | gauge | `platform`, `rule` (see [`crate::compliance::metrics`]) |
//! | `caduceus_compliance_violations` | gauge | `platform`, `severity` |
//! | `caduceus_backup_last_success_timestamp_seconds` | gauge | `platform` |
//!
//! Labels never carry platform data beyond the fixed vocabularies above and the platform's
//! `<namespace>/<name>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::compliance::metrics::ComplianceMetrics;
use crate::crd::Phase;

/// The operator's metrics. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub errors: IntCounterVec,
    pub platforms: IntGaugeVec,
    pub drift_corrections: IntCounterVec,
    /// `caduceus_compliance_*` and `caduceus_backup_last_success_timestamp_seconds`.
    pub compliance: ComplianceMetrics,
    phases: Arc<Mutex<HashMap<String, Phase>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "caduceus_operator_reconciles_total",
                "Reconciles of HealthcarePlatforms by result.",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "caduceus_operator_reconcile_duration_seconds",
                "Duration of one HealthcarePlatform reconcile.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("static metric definition");
        let errors = IntCounterVec::new(
            Opts::new(
                "caduceus_operator_reconcile_errors_total",
                "Reconcile errors by status reason.",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let platforms = IntGaugeVec::new(
            Opts::new(
                "caduceus_operator_platforms",
                "HealthcarePlatforms managed by this operator, by phase.",
            ),
            &["phase"],
        )
        .expect("static metric definition");
        let drift_corrections = IntCounterVec::new(
            Opts::new(
                "caduceus_operator_drift_corrections_total",
                "Children changed or deleted by someone else and restored, by kind.",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_duration.clone()),
            Box::new(errors.clone()),
            Box::new(platforms.clone()),
            Box::new(drift_corrections.clone()),
        ] {
            registry
                .register(c)
                .expect("metric names are unique within a fresh registry");
        }
        let compliance = ComplianceMetrics::register(&registry).expect("static metric definition");
        for phase in Phase::ALL {
            platforms.with_label_values(&[phase.as_str()]).set(0);
        }
        for result in ["success", "error"] {
            reconciles.with_label_values(&[result]).inc_by(0);
        }
        Self {
            registry,
            reconciles,
            reconcile_duration,
            errors,
            platforms,
            drift_corrections,
            compliance,
            phases: Arc::default(),
        }
    }

    /// Records the phase of a platform (key: `namespace/name`).
    pub fn set_phase(&self, key: &str, phase: Option<Phase>) {
        let mut phases = match self.phases.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        match phase {
            Some(p) => {
                phases.insert(key.to_string(), p);
            }
            None => {
                phases.remove(key);
            }
        }
        for phase in Phase::ALL {
            let n = phases.values().filter(|p| **p == phase).count();
            self.platforms
                .with_label_values(&[phase.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_counted_per_platform() {
        let m = Metrics::new();
        m.set_phase("a/x", Some(Phase::Ready));
        m.set_phase("a/y", Some(Phase::Ready));
        m.set_phase("a/y", Some(Phase::Degraded));
        assert_eq!(m.platforms.with_label_values(&["Ready"]).get(), 1);
        assert_eq!(m.platforms.with_label_values(&["Degraded"]).get(), 1);
        m.set_phase("a/x", None);
        assert_eq!(m.platforms.with_label_values(&["Ready"]).get(), 0);
    }

    #[test]
    fn exposition_names_every_metric() {
        let m = Metrics::new();
        m.drift_corrections.with_label_values(&["Deployment"]).inc();
        m.errors.with_label_values(&["ApplyFailed"]).inc();
        m.reconcile_duration.observe(0.01);
        let text = m.render();
        for name in [
            "caduceus_operator_reconciles_total",
            "caduceus_operator_reconcile_duration_seconds_bucket",
            "caduceus_operator_reconcile_errors_total{reason=\"ApplyFailed\"} 1",
            "caduceus_operator_platforms{phase=\"Ready\"} 0",
            "caduceus_operator_drift_corrections_total{kind=\"Deployment\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}

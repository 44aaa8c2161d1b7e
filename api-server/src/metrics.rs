//! Prometheus metrics (served on the admin address at `/metrics`).
//!
//! One [`Metrics`] per app instance with its own registry, so tests never share counters.
//! Labels are bounded: route templates from `MatchedPath`, never raw paths, ids or PHI.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Handle to the metric set: one `Arc`, because it is cloned with the app state several times
/// per request. Fields are reached through `Deref` (`metrics.http_requests_total`).
#[derive(Clone)]
pub struct Metrics(std::sync::Arc<MetricSet>);

impl std::ops::Deref for Metrics {
    type Target = MetricSet;

    fn deref(&self) -> &MetricSet {
        &self.0
    }
}

/// Every metric named in the API issue.
pub struct MetricSet {
    pub registry: Registry,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub patient_operations_total: IntCounterVec,
    pub appointment_bookings_total: IntCounter,
    pub prescriptions_created_total: IntCounter,
    pub active_sessions: IntGauge,
    pub db_pool_connections: IntGaugeVec,
    pub audit_events_total: IntCounterVec,
    pub audit_write_failures_total: IntCounter,
    pub phi_access_denied_total: IntCounter,
    pub rate_limited_total: IntCounter,
    /// Requests that opened a record through break-glass, by the caller's role.
    pub break_glass_access_total: IntCounterVec,
    /// Break-glass openings refused by the per-user hourly limit, by the caller's role.
    pub break_glass_refused_total: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = MetricSet {
            http_requests_total: IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests by method, route template and status",
                ),
                &["method", "route", "status"],
            )?,
            http_request_duration_seconds: HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ]),
                &["method", "route"],
            )?,
            patient_operations_total: IntCounterVec::new(
                Opts::new("patient_operations_total", "Patient record operations"),
                &["op"],
            )?,
            appointment_bookings_total: IntCounter::new(
                "appointment_bookings_total",
                "Appointments booked",
            )?,
            prescriptions_created_total: IntCounter::new(
                "prescriptions_created_total",
                "Prescriptions created",
            )?,
            active_sessions: IntGauge::new("active_sessions", "Sessions neither revoked nor idle")?,
            db_pool_connections: IntGaugeVec::new(
                Opts::new("db_pool_connections", "Database pool connections by state"),
                &["state"],
            )?,
            audit_events_total: IntCounterVec::new(
                Opts::new("audit_events_total", "Audit events written, by outcome"),
                &["outcome"],
            )?,
            audit_write_failures_total: IntCounter::new(
                "audit_write_failures_total",
                "Audit events that could not be written",
            )?,
            phi_access_denied_total: IntCounter::new(
                "phi_access_denied_total",
                "Requests denied by the permission check",
            )?,
            rate_limited_total: IntCounter::new("rate_limited_total", "Requests refused with 429")?,
            break_glass_access_total: IntCounterVec::new(
                Opts::new(
                    "break_glass_access_total",
                    "Requests that opened a patient's record with X-Break-Glass-Reason, by role",
                ),
                &["role"],
            )?,
            break_glass_refused_total: IntCounterVec::new(
                Opts::new(
                    "break_glass_refused_total",
                    "Break-glass openings refused by the per-user hourly limit, by role",
                ),
                &["role"],
            )?,
            registry,
        };
        m.registry
            .register(Box::new(m.http_requests_total.clone()))?;
        m.registry
            .register(Box::new(m.http_request_duration_seconds.clone()))?;
        m.registry
            .register(Box::new(m.patient_operations_total.clone()))?;
        m.registry
            .register(Box::new(m.appointment_bookings_total.clone()))?;
        m.registry
            .register(Box::new(m.prescriptions_created_total.clone()))?;
        m.registry.register(Box::new(m.active_sessions.clone()))?;
        m.registry
            .register(Box::new(m.db_pool_connections.clone()))?;
        m.registry
            .register(Box::new(m.audit_events_total.clone()))?;
        m.registry
            .register(Box::new(m.audit_write_failures_total.clone()))?;
        m.registry
            .register(Box::new(m.phi_access_denied_total.clone()))?;
        m.registry
            .register(Box::new(m.rate_limited_total.clone()))?;
        m.registry
            .register(Box::new(m.break_glass_access_total.clone()))?;
        m.registry
            .register(Box::new(m.break_glass_refused_total.clone()))?;
        // make label sets visible from the start
        for op in ["create", "read", "list", "update", "delete"] {
            m.patient_operations_total.with_label_values(&[op]);
        }
        for outcome in ["success", "denied", "error"] {
            m.audit_events_total.with_label_values(&[outcome]);
        }
        for state in ["idle", "in_use", "worker"] {
            m.db_pool_connections.with_label_values(&[state]);
        }
        // the roles that may break the glass
        for role in crate::rbac::Role::ALL {
            if crate::rbac::allows(role, crate::rbac::Permission::BreakGlass) {
                m.break_glass_access_total
                    .with_label_values(&[role.as_str()]);
                m.break_glass_refused_total
                    .with_label_values(&[role.as_str()]);
            }
        }
        Ok(Self(std::sync::Arc::new(m)))
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

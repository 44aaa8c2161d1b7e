//! The contract between Caduceus' programs: everything that crosses a process boundary between
//! the operator, the API server and the backup agent is defined here once. The operator writes
//! settings into the API's ConfigMap and reads its self-report and conditions; the API reads the
//! settings and writes the self-report; clients (ArgoCD's health check, dashboards) read the
//! condition names; the Helm chart sets the operator's own settings ([`operator_env`]).
//! docs/contracts.md and the chart are tested against this crate.

pub mod conditions;
pub mod key_files;
pub mod operator_env;
pub mod self_report;
pub mod settings;

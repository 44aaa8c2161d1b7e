//! Helpers shared by the operator's integration tests (`mod support;` in a test file; Cargo
//! builds `tests/support/` as a module of each test that includes it, not as a test of its own).
//!
//! - [`cluster`]: the real controller (`run_controller`) against a real control plane
//!   (`scripts/cluster.sh`), with the platform, status, condition, Event, metric, call-log and
//!   wait helpers of the `cluster_*` tests.
//! - [`api_process`]: finding and starting the real `caduceus-api` binary.
//! - [`call_kind`]: the (verb, kind) of a Kubernetes API request (also `operator_bench`'s).
//! - [`database`]: a throw-away database with the API's schema, runtime role and keys.

// Each test crate uses only some of the helpers.
#![allow(dead_code)]

pub mod api_process;
pub mod call_kind;
pub mod cluster;
pub mod database;

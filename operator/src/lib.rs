//! # caduceus-operator
//!
//! Kubernetes operator that provisions a whole Caduceus healthcare platform from one
//! `HealthcarePlatform` (`caduceus.io/v1alpha1`). Reconcile is a staged pipeline:
//! [`validate`] → [`build`] (pure) → [`apply`] (server-side apply, field manager
//! `caduceus-operator`) → [`status`].
//!
//! ## Embedding the controller (tests, benchmarks)
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), caduceus_operator::ControllerError> {
//! use caduceus_operator::{run_controller, ControllerConfig};
//! let config = ControllerConfig::default();      // requeue 5 min, backoff 1 s .. 5 min
//! let metrics = config.metrics.clone();          // read counters while it runs
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let handle = tokio::spawn(run_controller(client, config, async move { let _ = stopped.await; }));
//! // ... create HealthcarePlatforms through `client` ...
//! let _ = stop.send(());
//! # let _ = metrics.render();
//! # let _ = handle.await;
//! # Ok(()) }
//! ```
//!
//! `run_controller(client, config, shutdown)` watches platforms and every owned kind until
//! `shutdown` resolves, then drains in-flight reconciles and returns. It returns
//! [`ControllerError::CrdNotInstalled`] at once when the CRD is not served. It does no leader
//! election (the `run` command does that around it). [`Metrics`] is a self-contained prometheus
//! registry; `Metrics::render()` gives the text exposition.

pub mod apply;
pub mod compliance;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod drift;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod render;
pub mod server;
pub mod status;
pub mod validate;
pub mod volume_claims;
pub mod watch_cache;
pub mod yaml;

pub use controller::{run_controller, ControllerConfig, ControllerError};
pub use crd::{HealthcarePlatform, HealthcarePlatformSpec, HealthcarePlatformStatus};
pub use metrics::Metrics;

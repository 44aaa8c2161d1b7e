//! The store: SQL of the hot paths and the grouped lookups/writes ([`crate::batch`]) that
//! [`crate::state::AppState`] holds: sessions, patient reads and registrations, and the audit
//! trail's writer. Below the domain ([`crate::access`], [`crate::audit`], [`crate::auth`]): it
//! takes pools and connections, never the state, and decides nothing. [`roles`]: the database
//! roles (`db-setup`, and what `serve` refuses to connect as).

pub mod audit;
pub mod blind_index;
pub mod patients;
pub mod roles;
pub mod sessions;

//! The audit trail in Postgres: the events as stored ([`AuditEvent`], [`Outcome`], the action
//! names in [`actions`]), the hash chain's head and lock, and the group-commit [`AuditWriter`]
//! that [`crate::state::AppState`] holds. Events of an authenticated caller are built with
//! `AuditEvent::by` ([`crate::auth`]); the admin endpoints and retention are in [`crate::audit`].

mod writer;

pub use writer::{append_in, write_now, AuditWriter};
pub use writer::{canonical, chain_hash};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::request::RequestMeta;

/// Advisory lock key serialising writers of the hash chain (any replica).
pub const CHAIN_LOCK: i64 = 0x00CA_D0CE_A0D1;

/// The chain head `(id, hash)`: the newest audit row or, when retention has purged every row,
/// the newest purge anchor (`audit_purges`), so the chain continues after it instead of
/// restarting at id 1 and the reported head never moves backwards. No row: the empty chain.
pub const HEAD_SQL: &str = "SELECT id, hash FROM ( \
       (SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1) \
       UNION ALL \
       (SELECT through_id, through_hash FROM audit_purges ORDER BY through_id DESC LIMIT 1) \
     ) h ORDER BY id DESC LIMIT 1";

/// Outcome of an audited operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// Action names used in `audit_events.action` (stable; clients filter on them).
pub mod actions {
    pub const LOGIN_SUCCESS: &str = "auth.login";
    pub const LOGIN_FAILURE: &str = "auth.login_failed";
    pub const LOCKOUT: &str = "auth.lockout";
    pub const REFRESH: &str = "auth.refresh";
    pub const REFRESH_REUSE: &str = "auth.refresh_reuse";
    pub const LOGOUT: &str = "auth.logout";
    pub const REGISTER: &str = "auth.register";
    /// The right password of an account with MFA: a login challenge was issued (no session).
    pub const MFA_CHALLENGE: &str = "auth.mfa_challenge";
    /// A TOTP secret was issued (enrolment started; not active until confirmed).
    pub const MFA_ENROLL: &str = "auth.mfa_enroll";
    /// Enrolment confirmed with a code: MFA active, recovery codes issued.
    pub const MFA_CONFIRM: &str = "auth.mfa_confirm";
    /// The account holder turned MFA off (with a current code).
    pub const MFA_DISABLE: &str = "auth.mfa_disable";
    /// A wrong, replayed or locked-out MFA code (login, confirmation or disabling).
    pub const MFA_FAILED: &str = "auth.mfa_failed";
    /// A login completed with a recovery code (that code is spent).
    pub const MFA_RECOVERY_USED: &str = "auth.mfa_recovery_used";
    /// An admin removed an account's MFA (its sessions end).
    pub const USER_MFA_RESET: &str = "user.mfa_reset";
    pub const PERMISSION_DENIED: &str = "access.denied";
    pub const USER_CREATE: &str = "user.create";
    pub const USER_UPDATE: &str = "user.update";
    pub const USER_LIST: &str = "user.list";
    pub const USER_READ: &str = "user.read";
    pub const PATIENT_CREATE: &str = "patient.create";
    pub const PATIENT_READ: &str = "patient.read";
    pub const PATIENT_LIST: &str = "patient.list";
    pub const PATIENT_SEARCH: &str = "patient.search";
    pub const PATIENT_UPDATE: &str = "patient.update";
    pub const PATIENT_DELETE: &str = "patient.delete";
    pub const BREAK_GLASS: &str = "patient.break_glass";
    pub const CARE_TEAM_ADD: &str = "patient.care_team_add";
    pub const AUDIT_READ: &str = "audit.read";
    pub const AUDIT_VERIFY: &str = "audit.verify";
    /// The retention purge deleted audit rows past retention (`serve`, daily; no actor).
    pub const AUDIT_PURGE: &str = "audit.purge";
    pub const KEYS_ROTATE: &str = "keys.rotate";
    /// `caduceus-api rotate-blind-index` (resource: the active blind-index key id).
    pub const KEYS_ROTATE_BLIND_INDEX: &str = "keys.rotate_blind_index";
    /// A soft-deleted patient hard-deleted after `CADUCEUS_PATIENT_RETENTION_DAYS` (`serve`).
    pub const PATIENT_PURGE: &str = "patient.purge";
    /// A backup was restored into the database (recorded by `caduceus-backup restore` in
    /// `backup_restores`, audited by `serve` at start; no actor).
    pub const BACKUP_RESTORE: &str = "backup.restore";
}

/// One audit record before it is chained.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    pub outcome: Outcome,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub purpose: Option<String>,
}

impl AuditEvent {
    /// A successful event from `user_agent`, with no request, client or actor.
    fn bare(action: &str, resource_type: &str, user_agent: Option<String>) -> Self {
        Self {
            actor_id: None,
            actor_role: None,
            action: action.to_string(),
            resource_type: resource_type.to_string(),
            resource_id: None,
            patient_id: None,
            outcome: Outcome::Success,
            client_ip: None,
            user_agent,
            request_id: None,
            purpose: None,
        }
    }

    /// A successful event with client metadata; no actor yet.
    pub fn new(meta: &RequestMeta, action: &str, resource_type: &str) -> Self {
        Self {
            client_ip: Some(meta.client_ip.clone()),
            request_id: Some(meta.request_id.clone()),
            ..Self::bare(action, resource_type, meta.user_agent.clone())
        }
    }

    /// Event performed by an operator through the command line (no HTTP request, no actor).
    pub fn cli(action: &str, resource_type: &str) -> Self {
        let agent = format!("caduceus-api/{} cli", env!("CARGO_PKG_VERSION"));
        Self::bare(action, resource_type, Some(agent))
    }

    /// Event performed by the server itself (scheduled maintenance; no request, no actor).
    pub fn system(action: &str, resource_type: &str) -> Self {
        let agent = format!("caduceus-api/{} scheduler", env!("CARGO_PKG_VERSION"));
        Self::bare(action, resource_type, Some(agent))
    }

    pub fn actor(mut self, id: Uuid, role: &str) -> Self {
        self.actor_id = Some(id);
        self.actor_role = Some(role.to_string());
        self
    }

    pub fn resource(mut self, id: impl ToString) -> Self {
        self.resource_id = Some(id.to_string());
        self
    }

    pub fn patient(mut self, id: Uuid) -> Self {
        self.patient_id = Some(id);
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Stated purpose (break-glass reason, override reason). Truncated to 500 characters.
    pub fn purpose(mut self, purpose: &str) -> Self {
        self.purpose = Some(purpose.chars().take(500).collect());
        self
    }
}

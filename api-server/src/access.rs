//! Record-level access to a patient's data — the ONE place routes ask who may see which
//! patient's what. Every route scoped to a patient (patients, appointments, prescriptions, and
//! whatever comes next, e.g. FHIR) takes the caller ([`AuthUser`]) and the patient, and gets back
//! a decision ([`PatientAccess`]), a list scope ([`list_query`]) or the refusal:
//!
//! * [`decide`] / [`visible`]: the decision for one record whose care-team flag is known (pure;
//!   the rules are [`rbac::patient_access`]). [`Need::Clinical`] for data that demographics do not
//!   open (prescriptions).
//! * [`admit`] / [`check`]: the same with the refusals — a patient account asking for another
//!   record, or a missing record, gets `404`; a clinician outside the care team `403` with the one
//!   wording of [`refusal`] (plus how to break the glass where the caller may). Denials are
//!   counted and audited here.
//! * [`refuse`] / [`refuse_action`]: audit a denial and build its error when the route decided
//!   itself (e.g. inside a transaction it must drop first).
//! * [`AccessLog`]: the audit events of a successful access (a `patient.break_glass` event with
//!   the stated reason when access came through break-glass), written fail closed, with the
//!   break-glass counter and the per-user break-glass limit (`429` beyond it, audited).
//! * [`Resource`], [`load`], [`list_query`] and [`count_visible`]: read one row of a
//!   patient-scoped resource with the caller's access, list the rows the caller's scope allows,
//!   or count them (a list's exact total, e.g. FHIR `Bundle.total`).
//!
//! Break-glass opens single records: a record read by id (the patient, one appointment, one
//! prescription), a write to one record (a prescription), and lists narrowed to one patient
//! record ([`ListTarget::OnePatient`]: an exact MRN, the `patient_id` of appointments or
//! prescriptions). Any other list or search answers with the care team's scope, header or not.

use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::audit::{actions, AuditEvent, Outcome};
use crate::auth::AuthUser;
use crate::error::Error;
use crate::rbac::{self, ListScope, PatientAccess, Permission, Relation};
use crate::state::AppState;
use crate::store::patients as store;

/// The one wording of a `403` for a record outside the caller's care team.
pub const OUTSIDE_CARE_TEAM: &str = "not in this patient's care team";
/// Added to [`OUTSIDE_CARE_TEAM`] when break-glass would open the record and the caller may use it.
const BREAK_GLASS_HINT: &str =
    "; a physician may break the glass with an X-Break-Glass-Reason header";

/// What a route opens of a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The record: demographics suffice (patients, appointments; clinical fields are then left out).
    Record,
    /// Clinical data only: demographic access is refused like no access (prescriptions).
    Clinical,
}

/// What a denial is about, for its audit record: resource type (`patient`, `appointment`, ...),
/// the resource id if there is one yet, and the patient.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub resource_type: &'a str,
    pub resource_id: Option<Uuid>,
    pub patient: Uuid,
}

/// The facts about the caller and patient `patient` (care-team flag `in_care_team`), with the
/// request's break-glass reason when `glass` (never for granting: booking, assigning).
fn relation(auth: &AuthUser, patient: Uuid, in_care_team: bool, glass: bool) -> Relation {
    Relation::of(
        auth.role,
        auth.patient_id,
        patient,
        in_care_team,
        glass && auth.break_glass_reason.is_some(),
    )
}

/// The caller's access to patient `patient`, break-glass included.
pub fn decide(auth: &AuthUser, patient: Uuid, in_care_team: bool, need: Need) -> PatientAccess {
    match rbac::patient_access(auth.role, relation(auth, patient, in_care_team, true)) {
        PatientAccess::Demographics if need == Need::Clinical => PatientAccess::Denied,
        a => a,
    }
}

/// The caller's access to a record they just created or booked (no break-glass involved).
pub fn on_write(auth: &AuthUser, patient: Uuid, in_care_team: bool) -> PatientAccess {
    rbac::patient_access(auth.role, relation(auth, patient, in_care_team, false))
}

/// The access that opens the record, `None` when it stays closed (lists skip such rows).
pub fn visible(
    auth: &AuthUser,
    patient: Uuid,
    in_care_team: bool,
    need: Need,
) -> Option<PatientAccess> {
    match decide(auth, patient, in_care_team, need) {
        PatientAccess::Denied | PatientAccess::Hidden => None,
        a => Some(a),
    }
}

/// May the caller book an appointment with `practitioner` for the patient, or move one to
/// `practitioner` ([`rbac::may_book_appointment`]: for someone else it needs the right to assign
/// the care team; break-glass does not count).
pub fn may_book(auth: &AuthUser, patient: Uuid, in_care_team: bool, practitioner: Uuid) -> bool {
    rbac::may_book_appointment(
        auth.role,
        relation(auth, patient, in_care_team, false),
        practitioner == auth.user_id,
    )
}

/// May the caller assign clinicians to the patient's care team ([`rbac::may_assign_care_team`];
/// break-glass does not count).
pub fn may_assign_care_team(auth: &AuthUser, patient: Uuid, in_care_team: bool) -> bool {
    rbac::may_assign_care_team(auth.role, relation(auth, patient, in_care_team, false))
}

/// The `403` for a record outside the caller's care team; `glass_opens`: break-glass would open
/// it (reads), so a caller who may break the glass is told how.
pub fn refusal(auth: &AuthUser, glass_opens: bool) -> Error {
    let hint = glass_opens && rbac::allows(auth.role, Permission::BreakGlass);
    Error::Forbidden(format!(
        "{OUTSIDE_CARE_TEAM}{}",
        if hint { BREAK_GLASS_HINT } else { "" }
    ))
}

/// Count and audit a denial (`patient`: whether the audit record names the patient).
async fn audit_denial(state: &AppState, auth: &AuthUser, target: &Target<'_>, patient: bool) {
    auth.denied(
        state,
        target.resource_type,
        target.resource_id.map(|id| id.to_string()),
        patient.then_some(target.patient),
    )
    .await;
}

/// The error for an access that does not open the record, the denial audited: `404` for
/// [`PatientAccess::Hidden`] (existence must not leak), otherwise the [`refusal`].
pub async fn refuse(
    state: &AppState,
    auth: &AuthUser,
    target: &Target<'_>,
    access: PatientAccess,
) -> Error {
    if access == PatientAccess::Hidden {
        audit_denial(state, auth, target, false).await;
        Error::NotFound
    } else {
        audit_denial(state, auth, target, true).await;
        refusal(auth, true)
    }
}

/// The `403` for an action outside the caller's care team that break-glass never allows
/// (booking, assigning, changing clinical fields), the denial audited.
pub async fn refuse_action(state: &AppState, auth: &AuthUser, target: &Target<'_>) -> Error {
    audit_denial(state, auth, target, true).await;
    refusal(auth, false)
}

/// Admit the caller to `target.patient` whose care-team flag was read with the record
/// (`None`: no such live record). Refusals as in the module docs; the returned access opens the
/// record (never `Denied`/`Hidden`).
pub async fn admit(
    state: &AppState,
    auth: &AuthUser,
    target: &Target<'_>,
    in_care_team: Option<bool>,
    need: Need,
) -> Result<PatientAccess, Error> {
    // patient accounts learn nothing about other records
    if rbac::hidden_without_lookup(auth.role, auth.patient_id, target.patient) {
        audit_denial(state, auth, target, false).await;
        return Err(Error::NotFound);
    }
    let in_care_team = in_care_team.ok_or(Error::NotFound)?;
    match decide(auth, target.patient, in_care_team, need) {
        a @ (PatientAccess::Denied | PatientAccess::Hidden) => {
            Err(refuse(state, auth, target, a).await)
        }
        a => Ok(a),
    }
}

/// [`admit`] for a route that has not read the patient: looks the care-team flag up (no PHI).
pub async fn check(
    state: &AppState,
    auth: &AuthUser,
    target: &Target<'_>,
    need: Need,
) -> Result<PatientAccess, Error> {
    let in_care_team = if rbac::hidden_without_lookup(auth.role, auth.patient_id, target.patient) {
        None
    } else {
        store::in_care_team(
            &state.pool,
            target.patient,
            auth.user_id,
            state.config.care_team_access_days,
        )
        .await?
    };
    admit(state, auth, target, in_care_team, need).await
}

/// Where the rows of a resource scoped to one patient are: its audit resource type, its columns
/// (those of its `FromRow` row type but `in_care_team`), the `FROM` clause joining
/// `patients p`, its id and patient id columns, and what of the patient it opens.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    pub resource_type: &'static str,
    pub columns: &'static str,
    pub from: &'static str,
    pub id_col: &'static str,
    pub patient_col: &'static str,
    pub need: Need,
}

/// The row type of a [`Resource`], read with the caller's care-team flag for its patient.
pub trait PatientScoped: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin {
    const RESOURCE: Resource;
    /// The row's patient and the caller's care-team flag for them.
    fn scope(&self) -> (Uuid, bool);
}

/// Load row `id` of `R`'s resource with the caller's access to its patient ([`admit`]: `404`
/// when missing or hidden, `403` outside the care team, denials audited).
pub async fn load<R: PatientScoped>(
    state: &AppState,
    auth: &AuthUser,
    id: Uuid,
) -> Result<(R, PatientAccess), Error> {
    let resource = R::RESOURCE;
    let row: R = store::read_for_caller(
        &state.pool,
        resource.columns,
        resource.from,
        resource.id_col,
        id,
        (auth.user_id, state.config.care_team_access_days),
    )
    .await?
    .ok_or(Error::NotFound)?;
    let (patient, in_care_team) = row.scope();
    let target = Target {
        resource_type: resource.resource_type,
        resource_id: Some(id),
        patient,
    };
    let access = admit(state, auth, &target, Some(in_care_team), resource.need).await?;
    Ok((row, access))
}

/// What a list request asks for, as far as break-glass is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListTarget {
    /// Narrowed to one patient record by the route's own filter (an exact MRN; a `patient_id`):
    /// break-glass may open it.
    OnePatient,
    /// Anything else: break-glass never widens it.
    Many,
}

/// Which records a list may return to the caller.
pub fn list_scope(auth: &AuthUser, target: ListTarget) -> ListScope {
    rbac::patient_list_scope(
        auth.role,
        auth.break_glass_reason.is_some(),
        target == ListTarget::OnePatient,
    )
}

/// The list query of a [`Resource`] for the caller: its rows with the caller's care-team flag,
/// of live patients, narrowed to the caller's [`list_scope`]. Add filters (for
/// [`ListTarget::OnePatient`], the one that narrows to one patient), order and limit, then skip
/// the rows [`visible`] closes.
pub fn list_query(
    state: &AppState,
    auth: &AuthUser,
    resource: &Resource,
    target: ListTarget,
) -> QueryBuilder<Postgres> {
    scoped_query(state, auth, resource, target, Select::Rows)
}

/// What a [`scoped_query`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The rows: the resource's columns and the caller's care-team flag ([`list_query`]).
    Rows,
    /// The number of rows and one of their patients, per care-team flag (`n`, `patient`,
    /// `in_care_team`; [`count_visible`] adds the grouping): a list's exact total.
    Count,
}

/// [`list_query`] selecting `select`: a route builds its list and its count with the same scope
/// and the same filters (one function pushing them), so the two cannot drift.
pub fn scoped_query(
    state: &AppState,
    auth: &AuthUser,
    resource: &Resource,
    target: ListTarget,
    select: Select,
) -> QueryBuilder<Postgres> {
    let counted;
    let columns = match select {
        Select::Rows => resource.columns,
        Select::Count => {
            counted = format!(
                "count(*) AS n, (array_agg({}))[1] AS patient",
                resource.patient_col
            );
            counted.as_str()
        }
    };
    let mut qb = store::select_for_caller(
        columns,
        resource.from,
        auth.user_id,
        state.config.care_team_access_days,
    );
    store::push_list_scope(
        &mut qb,
        list_scope(auth, target),
        auth.patient_id,
        resource.patient_col,
    );
    qb
}

/// How many rows of `resource` the caller's list finds over all its pages: `qb` is the list's
/// query selecting [`Select::Count`] ([`scoped_query`] with the list's filters, without order and
/// paging), and a row counts when [`visible`] opens it, as the list skips the others. The rows
/// are counted per care-team flag and each group is decided once, on one of its patients: the
/// decision depends on the patient only for patient accounts, whose scope is their own record.
/// No row is read, nothing is decrypted.
///
/// The count tells whether records match, so it is audited like the list it counts, fail
/// closed: `action` on the resource type, no record named; when break-glass opened the rows (a
/// list narrowed to one patient), as a break-glass opening of that patient ([`AccessLog`]).
pub async fn count_visible(
    state: &AppState,
    auth: &AuthUser,
    resource: &Resource,
    mut qb: QueryBuilder<Postgres>,
    action: &str,
) -> Result<i64, Error> {
    qb.push(" GROUP BY 3");
    let groups: Vec<(i64, Uuid, bool)> = qb.build_query_as().fetch_all(&state.pool).await?;
    let mut total = 0;
    let mut log = AccessLog::new(resource.resource_type);
    for (n, patient, in_care_team) in groups {
        match visible(auth, patient, in_care_team, resource.need) {
            Some(PatientAccess::BreakGlass) => {
                let ev = AuditEvent::by(auth, action, resource.resource_type).patient(patient);
                log = log.add_event(auth, ev, PatientAccess::BreakGlass);
                total += n;
            }
            Some(_) => total += n,
            None => {}
        }
    }
    log.or_action(auth, action).write(state).await?;
    Ok(total)
}

/// The audit events of a successful access to resources of one type (`patient`,
/// `appointment`, ...), written together (fail closed) by [`Self::write`].
#[derive(Debug)]
pub struct AccessLog {
    resource_type: &'static str,
    events: Vec<AuditEvent>,
    /// The request opened a record through break-glass: the caller, their role, and the
    /// `patient.break_glass` event to audit (as denied) if the opening is refused.
    break_glass: Option<(Uuid, &'static str, AuditEvent)>,
}

impl AccessLog {
    pub fn new(resource_type: &'static str) -> Self {
        Self {
            resource_type,
            events: Vec::new(),
            break_glass: None,
        }
    }

    /// Log access `access` to resource `resource_id` of patient `patient`: the action's event
    /// and, through break-glass, a `patient.break_glass` event; both carry the stated reason as
    /// `purpose`.
    #[must_use = "`add` returns the log with the events added"]
    pub fn add(
        self,
        auth: &AuthUser,
        action: &str,
        resource_id: impl ToString,
        patient: Uuid,
        access: PatientAccess,
    ) -> Self {
        let ev = AuditEvent::by(auth, action, self.resource_type)
            .resource(resource_id.to_string())
            .patient(patient);
        self.add_event(auth, ev, access)
    }

    /// [`Self::add`] for an event built by the route (e.g. a refusal that discloses facts about
    /// the record, with its own outcome): through break-glass, the reason becomes its `purpose`
    /// and a `patient.break_glass` event for the same resource and patient is added.
    #[must_use = "`add_event` returns the log with the events added"]
    pub fn add_event(mut self, auth: &AuthUser, mut ev: AuditEvent, access: PatientAccess) -> Self {
        if access == PatientAccess::BreakGlass {
            let reason = auth.break_glass_reason.clone().unwrap_or_default();
            ev = ev.purpose(&reason);
            let mut glass = AuditEvent::by(auth, actions::BREAK_GLASS, self.resource_type)
                .purpose(&reason)
                .outcome(ev.outcome);
            glass.resource_id = ev.resource_id.clone();
            glass.patient_id = ev.patient_id;
            if self.break_glass.is_none() {
                let refused = glass.clone().outcome(Outcome::Denied);
                self.break_glass = Some((auth.user_id, auth.role.as_str(), refused));
            }
            self.events.push(glass);
        }
        self.events.push(ev);
        self
    }

    /// Add an event of the same operation (e.g. an interaction override).
    pub fn push(&mut self, event: AuditEvent) {
        self.events.push(event);
    }

    /// The latest event (the last access's own event after [`Self::add`]).
    pub fn last_mut(&mut self) -> Option<&mut AuditEvent> {
        self.events.last_mut()
    }

    /// Nothing was accessed (an empty list): log `action` on the resource type instead.
    pub fn or_action(mut self, auth: &AuthUser, action: &str) -> Self {
        if self.events.is_empty() {
            self.events
                .push(AuditEvent::by(auth, action, self.resource_type));
        }
        self
    }

    /// Write the events (fail closed: `?` it before returning data). A request that opened a
    /// record through break-glass is one opening, however many rows of that record it returns:
    /// it is charged to the caller's hourly break-glass bucket
    /// ([`crate::ratelimit::BREAK_GLASS_PER_HOUR`]) and counted in `break_glass_access_total`
    /// by role; beyond the limit nothing is returned: `429` with `Retry-After`, the attempt
    /// audited as a denied `patient.break_glass` and counted in `break_glass_refused_total`.
    pub async fn write(self, state: &AppState) -> Result<(), Error> {
        self.admit(state).await?;
        state.audit.record_all(self.events).await?;
        Self::opened(state, self.break_glass);
        Ok(())
    }

    /// [`Self::write`] for a change: the events are appended inside the change's open
    /// transaction `conn`, durable with its COMMIT (nothing to undo when they cannot be
    /// written: the change is not committed either). A refused break-glass opening is still
    /// audited at once (it is not part of the change).
    pub async fn write_in(
        self,
        state: &AppState,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(), Error> {
        self.admit(state).await?;
        state.audit.write_in(conn, &self.events).await?;
        Self::opened(state, self.break_glass);
        Ok(())
    }

    /// Charge a break-glass opening to the caller's bucket; beyond it, audit the refusal: 429.
    async fn admit(&self, state: &AppState) -> Result<(), Error> {
        if let Some((user, role, refused)) = &self.break_glass {
            let decision = state.limiter.check_break_glass(*user).await;
            if !decision.allowed {
                state
                    .metrics
                    .break_glass_refused_total
                    .with_label_values(&[role])
                    .inc();
                state.metrics.rate_limited_total.inc();
                state.audit.record(refused.clone()).await?;
                return Err(Error::RateLimited {
                    retry_after_secs: decision.retry_after_secs.max(1),
                });
            }
        }
        Ok(())
    }

    /// Count a break-glass opening whose events were written.
    fn opened(state: &AppState, break_glass: Option<(Uuid, &'static str, AuditEvent)>) {
        if let Some((_, role, _)) = break_glass {
            state
                .metrics
                .break_glass_access_total
                .with_label_values(&[role])
                .inc();
        }
    }
}

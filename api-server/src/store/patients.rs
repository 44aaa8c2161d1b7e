//! Patient rows in Postgres: the stored row and its columns, the care-team SQL, the grouped
//! session-and-patient read and the grouped registration (both [`crate::batch::Lookup`]s held by
//! [`crate::state::AppState`]), and the optimistic PHI update. No policy here: what a caller may
//! see is decided in [`crate::access`].

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Connection, FromRow, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::crypto::AuditKey;
use crate::rbac::ListScope;
use crate::store::audit::{append_in, AuditEvent};
use crate::store::blind_index::{taken_under_other_keys, Candidate, PATIENT_MRN};
use crate::store::sessions::{SessionCheck, SESSION_COLUMNS};

/// Stored row: ciphertexts + metadata (+ the caller's care-team flag computed in the query).
#[derive(Debug, FromRow)]
pub struct PatientRow {
    pub id: Uuid,
    pub phi_key_id: String,
    pub mrn: Vec<u8>,
    pub given_name: Vec<u8>,
    pub family_name: Vec<u8>,
    pub birth_date: Vec<u8>,
    pub sex: Vec<u8>,
    pub phone: Option<Vec<u8>>,
    pub email: Option<Vec<u8>>,
    pub address: Option<Vec<u8>>,
    pub allergies: Vec<u8>,
    pub medications: Vec<u8>,
    pub conditions: Vec<u8>,
    pub emergency_contact: Option<Vec<u8>>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub in_care_team: bool,
}

/// Columns of [`PatientRow`] minus `in_care_team` (callers add that expression).
pub const ROW_COLUMNS: &str =
    "p.id, p.phi_key_id, p.mrn, p.given_name, p.family_name, p.birth_date, p.sex, \
    p.phone, p.email, p.address, p.allergies, p.medications, p.conditions, p.emergency_contact, \
    p.created_by, p.created_at, p.updated_at";

/// Encrypted column values, in the order of [`ENC_COLUMNS`], and the blind indexes under the
/// active blind-index key (`bidx_key_id`).
pub struct Encrypted {
    pub key_id: String,
    pub bidx_key_id: String,
    pub mrn_bidx: Vec<u8>,
    pub name_dob_bidx: Vec<u8>,
    /// The MRN's index under the ring's other blind-index keys (empty with one key): a stored
    /// row with one of these has the same MRN ([`mrn_taken_under_other_keys`]).
    pub mrn_bidx_others: Vec<Vec<u8>>,
    /// The MRN's advisory lock (`crate::crypto::BlindIndexes::lock`).
    pub mrn_lock: i32,
    pub cols: [Option<Vec<u8>>; 12],
}

/// The positions of `rows` whose MRN another stored patient has under another blind-index key,
/// after taking their MRNs' locks ([`crate::store::blind_index`]): run it in the transaction
/// that then writes the rows, before the write. Nothing happens with one blind-index key.
pub async fn mrn_taken_under_other_keys(
    conn: &mut sqlx::PgConnection,
    rows: &[(Uuid, &Encrypted)],
) -> Result<Vec<usize>, sqlx::Error> {
    let candidates: Vec<Candidate<'_>> = rows
        .iter()
        .map(|(id, enc)| Candidate {
            row: *id,
            others: &enc.mrn_bidx_others,
            lock: enc.mrn_lock,
        })
        .collect();
    taken_under_other_keys(conn, PATIENT_MRN, &candidates).await
}

pub const ENC_COLUMNS: [&str; 12] = [
    "mrn",
    "given_name",
    "family_name",
    "birth_date",
    "sex",
    "phone",
    "email",
    "address",
    "allergies",
    "medications",
    "conditions",
    "emergency_contact",
];

/// SQL for "the caller (`me`, an SQL expression) is in the care team of patient `p`": registered
/// the patient, was assigned (`POST /patients/{id}/care-team`, until revoked), or is the
/// practitioner of an appointment with the patient that was neither cancelled nor a no-show and
/// ended less than `days` (an SQL expression of type `int`: `CADUCEUS_CARE_TEAM_ACCESS_DAYS`) days
/// ago — appointment-derived access expires.
pub fn in_care_team_sql(me: &str, days: &str) -> String {
    format!(
        "(p.created_by = {me} \
         OR EXISTS (SELECT 1 FROM care_team c WHERE c.patient_id = p.id AND c.user_id = {me}) \
         OR EXISTS (SELECT 1 FROM appointments a WHERE a.patient_id = p.id \
                    AND a.practitioner_id = {me} AND a.status NOT IN ('cancelled', 'noshow') \
                    AND a.end_at > now() - make_interval(days => {days})))"
    )
}

/// [`crate::config::Config::care_team_access_days`] as the `int` bound to [`in_care_team_sql`]'s
/// `days` (the configuration keeps it within 1–3650).
pub fn access_days(days: u32) -> i32 {
    i32::try_from(days).unwrap_or(i32::MAX)
}

/// Narrows a list query (`qb`, which joins `patients p` and a `caller` row with `caller.me`) to the
/// records `scope` allows: the caller's own record (`own_patient`, compared with `patient_col`),
/// their care team, or everything. The one place list endpoints apply the list scope.
pub fn push_list_scope(
    qb: &mut QueryBuilder<Postgres>,
    scope: ListScope,
    own_patient: Option<Uuid>,
    patient_col: &str,
) {
    match scope {
        ListScope::OwnRecord => match own_patient {
            Some(pid) => {
                qb.push(format!(" AND {patient_col} = ")).push_bind(pid);
            }
            None => {
                qb.push(" AND false");
            }
        },
        ListScope::CareTeam => {
            qb.push(" AND ")
                .push(in_care_team_sql("caller.me", "caller.days"));
        }
        ListScope::All => {}
    }
}

/// `SELECT` of `columns` and the caller's care-team flag (`in_care_team`) from `from` (which
/// is or joins `patients p`), live patients only; the caller `user` is `caller.me`, the
/// appointment access window ([`access_days`]) `caller.days`. Add the scope, filters, order and
/// limit.
pub fn select_for_caller(
    columns: &str,
    from: &str,
    user: Uuid,
    days: u32,
) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new(format!(
        "SELECT {columns}, {} AS in_care_team FROM {from} CROSS JOIN (SELECT ",
        in_care_team_sql("caller.me", "caller.days")
    ));
    qb.push_bind(user)
        .push("::uuid AS me, ")
        .push_bind(access_days(days))
        .push("::int AS days) caller WHERE p.deleted_at IS NULL");
    qb
}

/// The row whose `id_col` is `id` of `columns` from `from` (which joins `patients p`), with the
/// care-team flag of `user` (appointment window `days`); `None` when missing or its patient is
/// deleted.
pub async fn read_for_caller<R>(
    pool: &PgPool,
    columns: &str,
    from: &str,
    id_col: &str,
    id: Uuid,
    (user, days): (Uuid, u32),
) -> Result<Option<R>, sqlx::Error>
where
    R: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {columns}, {} AS in_care_team FROM {from} \
         WHERE {id_col} = $1 AND p.deleted_at IS NULL",
        in_care_team_sql("$2", "$3")
    )))
    .bind(id)
    .bind(user)
    .bind(access_days(days))
    .fetch_optional(pool)
    .await
}

/// The caller's (`user`) care-team flag for live patient `patient` (appointment window `days`);
/// `None`: no such live patient.
pub async fn in_care_team(
    pool: &PgPool,
    patient: Uuid,
    user: Uuid,
    days: u32,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM patients p WHERE p.id = $1 AND p.deleted_at IS NULL",
        in_care_team_sql("$2", "$3")
    )))
    .bind(patient)
    .bind(user)
    .bind(access_days(days))
    .fetch_optional(pool)
    .await
}

/// Grouped session check and patient read: key = (session id, user id) of a verified access
/// token and the patient id of the path. No row: no such session for this user. Otherwise the
/// session's state ([`SessionCheck`]) and, when live, the record's ciphertexts with
/// the caller's care-team flag (see [`crate::batch`]). Holds the appointment access window
/// (`CADUCEUS_CARE_TEAM_ACCESS_DAYS`).
pub struct SessionPatientLookup {
    pub care_team_access_days: u32,
}

/// What [`SessionPatientLookup`] finds for one key.
pub struct SessionAndPatient {
    pub session: SessionCheck,
    /// The live record with the caller's care-team flag (`None`: missing or deleted).
    pub patient: Option<PatientRow>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for SessionAndPatient {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let found: bool = row.try_get("patient_found")?;
        Ok(Self {
            session: SessionCheck::from_row(row)?,
            patient: if found {
                Some(PatientRow::from_row(row)?)
            } else {
                None
            },
        })
    }
}

pub(crate) static SESSION_PATIENT_LOOKUP_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        format!(
            "SELECT q.ord, {}, p.id IS NOT NULL AS patient_found, {ROW_COLUMNS}, \
             {} AS in_care_team \
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) WITH ORDINALITY AS q(sid, uid, pid, ord) \
             JOIN sessions s ON s.id = q.sid AND s.user_id = q.uid \
             JOIN users u ON u.id = s.user_id \
             LEFT JOIN patients p ON p.id = q.pid AND p.deleted_at IS NULL",
            SESSION_COLUMNS,
            in_care_team_sql("q.uid", "$4::int")
        )
    });

impl crate::batch::Lookup for SessionPatientLookup {
    type Key = (Uuid, Uuid, Uuid);
    type Row = SessionAndPatient;
    const NAME: &'static str = "session and patient";

    async fn fetch(
        &self,
        conn: &mut sqlx::PgConnection,
        keys: &[(Uuid, Uuid, Uuid)],
    ) -> Result<Vec<(usize, SessionAndPatient)>, sqlx::Error> {
        let mut sids = Vec::with_capacity(keys.len());
        let mut uids = Vec::with_capacity(keys.len());
        let mut pids = Vec::with_capacity(keys.len());
        for (sid, uid, pid) in keys {
            sids.push(*sid);
            uids.push(*uid);
            pids.push(*pid);
        }
        let rows: Vec<SessionAndPatient> =
            sqlx::query_as(sqlx::AssertSqlSafe(SESSION_PATIENT_LOOKUP_SQL.as_str()))
                .bind(&sids)
                .bind(&uids)
                .bind(&pids)
                .bind(access_days(self.care_team_access_days))
                .fetch_all(conn)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| (crate::batch::index(r.session.ord), r))
            .collect())
    }
}

/// Grouped patient registration (see [`crate::batch`]): every `POST /patients` queued while a
/// batch is in flight is inserted by ONE statement, its audit rows appended in the SAME
/// transaction ([`crate::store::audit::append_in`]), and both made durable by ONE commit,
/// instead of a transaction (and a WAL flush) each: no patient is stored without its
/// `patient.create` record, and there is nothing to undo when that record cannot be written.
///
/// The statement is idempotent, as the batcher requires (it re-runs a batch whose connection
/// broke, possibly after the first run committed): `ON CONFLICT DO NOTHING` skips a row that
/// already exists, and a row whose own id (a fresh UUIDv7, known only to this request) is found
/// in the table counts as created — and is not audited again (its record committed with it). A
/// row skipped whose id is NOT in the table lost on the MRN: an existing patient, or an earlier
/// row of the same batch with the same MRN. If the statement fails for any other reason, each
/// row is tried alone (in a transaction of its own) so that one bad row cannot fail the rest.
pub struct PatientInsert {
    key: AuditKey,
}

impl PatientInsert {
    /// Registration whose audit rows are chained with `key` (the writer's,
    /// [`crate::store::audit::AuditWriter::key`]).
    pub fn new(key: AuditKey) -> Self {
        Self { key }
    }
}

/// One patient to insert: its new id, the registering user, the encrypted columns and the
/// `patient.create` event written with it.
pub struct PendingPatient {
    pub id: Uuid,
    pub created_by: Uuid,
    pub enc: Encrypted,
    pub event: AuditEvent,
}

/// What became of one [`PendingPatient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored (and durable: the worker's connection runs with `synchronous_commit = on`).
    Created(chrono::DateTime<chrono::Utc>),
    /// Another live or deleted record has this MRN.
    MrnTaken,
    /// The row failed on its own (logged by SQLSTATE by the worker); nothing was stored.
    Failed,
    /// The group's audit rows could not be written: nothing of the group was stored.
    Unaudited,
}

pub(crate) static PATIENT_INSERT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(
    || {
        let enc = ENC_COLUMNS.join(", ");
        let enc_arrays: String = (0..ENC_COLUMNS.len())
            .map(|i| format!(", ${}::bytea[]", i + 6))
            .collect();
        let bidx_key = ENC_COLUMNS.len() + 6;
        format!(
            "WITH q AS (SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::text[], \
             $5::uuid[]{enc_arrays}, ${bidx_key}::text[]) WITH ORDINALITY \
             AS q(id, mrn_bidx, name_dob_bidx, phi_key_id, created_by, {enc}, bidx_key_id, ord)), \
             ins AS (INSERT INTO patients (id, mrn_bidx, name_dob_bidx, phi_key_id, created_by, {enc}, bidx_key_id) \
             SELECT id, mrn_bidx, name_dob_bidx, phi_key_id, created_by, {enc}, bidx_key_id FROM q ORDER BY ord \
             ON CONFLICT DO NOTHING RETURNING id, created_at) \
             SELECT q.ord, COALESCE(ins.created_at, \
             (SELECT p.created_at FROM patients p WHERE p.id = q.id)) AS created_at, \
             ins.id IS NOT NULL AS fresh \
             FROM q LEFT JOIN ins ON ins.id = q.id"
        )
    },
);

impl PatientInsert {
    /// Insert `rows` and append the audit rows of those inserted now, in one transaction. A row
    /// whose MRN a stored patient has under another blind-index key is not inserted
    /// ([`mrn_taken_under_other_keys`]).
    async fn insert_audited(
        &self,
        conn: &mut sqlx::PgConnection,
        rows: &[PendingPatient],
    ) -> Result<Vec<(usize, Inserted)>, sqlx::Error> {
        let mut tx = conn.begin().await?;
        let ids: Vec<(Uuid, &Encrypted)> = rows.iter().map(|r| (r.id, &r.enc)).collect();
        let taken = mrn_taken_under_other_keys(&mut tx, &ids).await?;
        let pending: Vec<usize> = (0..rows.len()).filter(|i| !taken.contains(i)).collect();
        let subset: Vec<&PendingPatient> = pending.iter().map(|&i| &rows[i]).collect();
        let mut found: Vec<(usize, Inserted, bool)> = if subset.is_empty() {
            vec![]
        } else {
            Self::insert(&mut tx, &subset)
                .await?
                .into_iter()
                .filter_map(|(j, r, fresh)| pending.get(j).map(|&i| (i, r, fresh)))
                .collect()
        };
        found.extend(taken.iter().map(|&i| (i, Inserted::MrnTaken, false)));
        let events: Vec<&AuditEvent> = found
            .iter()
            .filter(|(_, _, fresh)| *fresh)
            .filter_map(|(i, _, _)| rows.get(*i).map(|r| &r.event))
            .collect();
        match append_in(&mut tx, &self.key, &events).await {
            Ok(()) => {}
            Err(sqlx::Error::Database(db))
                if !crate::batch::is_broken_code(db.code().as_deref()) =>
            {
                // dropping `tx` rolls the whole group back: none of it is stored
                tracing::error!(rows = rows.len(), sqlstate = ?db.code(), "audit rows of a patient registration could not be written");
                return Ok((0..rows.len()).map(|i| (i, Inserted::Unaudited)).collect());
            }
            Err(e) => return Err(e),
        }
        tx.commit().await?;
        Ok(found.into_iter().map(|(i, r, _)| (i, r)).collect())
    }

    /// The grouped statement: each row's outcome, and whether it was inserted now.
    async fn insert(
        conn: &mut sqlx::PgConnection,
        rows: &[&PendingPatient],
    ) -> Result<Vec<(usize, Inserted, bool)>, sqlx::Error> {
        let mut q = sqlx::query_as::<_, (i64, Option<chrono::DateTime<chrono::Utc>>, bool)>(
            sqlx::AssertSqlSafe(PATIENT_INSERT_SQL.as_str()),
        )
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.enc.mrn_bidx.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.enc.name_dob_bidx.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.enc.key_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.created_by).collect::<Vec<_>>());
        for c in 0..ENC_COLUMNS.len() {
            q = q.bind(
                rows.iter()
                    .map(|r| r.enc.cols[c].as_deref())
                    .collect::<Vec<Option<&[u8]>>>(),
            );
        }
        q = q.bind(
            rows.iter()
                .map(|r| r.enc.bidx_key_id.as_str())
                .collect::<Vec<_>>(),
        );
        let found = q.fetch_all(conn).await?;
        Ok(found
            .into_iter()
            .map(|(ord, at, fresh)| {
                let outcome = at.map_or(Inserted::MrnTaken, Inserted::Created);
                (crate::batch::index(ord), outcome, fresh)
            })
            .collect())
    }
}

impl crate::batch::Lookup for PatientInsert {
    type Key = PendingPatient;
    type Row = Inserted;
    const NAME: &'static str = "patient insert";

    async fn fetch(
        &self,
        conn: &mut sqlx::PgConnection,
        keys: &[PendingPatient],
    ) -> Result<Vec<(usize, Inserted)>, sqlx::Error> {
        match self.insert_audited(conn, keys).await {
            Err(sqlx::Error::Database(db))
                if keys.len() > 1 && !crate::batch::is_broken_code(db.code().as_deref()) =>
            {
                tracing::warn!(rows = keys.len(), sqlstate = ?db.code(), "grouped patient insert failed; inserting row by row");
                let mut out = Vec::with_capacity(keys.len());
                for (i, row) in keys.iter().enumerate() {
                    match self.insert_audited(conn, std::slice::from_ref(row)).await {
                        Ok(mut one) => out.extend(one.pop().map(|(_, r)| (i, r))),
                        Err(sqlx::Error::Database(db))
                            if !crate::batch::is_broken_code(db.code().as_deref()) =>
                        {
                            tracing::error!(sqlstate = ?db.code(), "patient insert failed");
                            out.push((i, Inserted::Failed));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            }
            done => done,
        }
    }
}

/// `UPDATE` of every encrypted column (and blind index) of live patient `id`, only while its
/// `updated_at` is still `expected` (optimistic concurrency); `updated_at` becomes `stamp`
/// (`now()` when `None`). Returns the new `updated_at`. While the ring holds several blind-index
/// keys, run [`mrn_taken_under_other_keys`] first in the same transaction.
pub fn write_phi(
    id: Uuid,
    enc: Encrypted,
    expected: chrono::DateTime<chrono::Utc>,
    stamp: Option<chrono::DateTime<chrono::Utc>>,
) -> QueryBuilder<Postgres> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE patients SET updated_at = ");
    match stamp {
        Some(t) => qb.push_bind(t),
        None => qb.push("now()"),
    };
    qb.push(", mrn_bidx = ")
        .push_bind(enc.mrn_bidx)
        .push(", name_dob_bidx = ")
        .push_bind(enc.name_dob_bidx)
        .push(", bidx_key_id = ")
        .push_bind(enc.bidx_key_id)
        .push(", phi_key_id = ")
        .push_bind(enc.key_id);
    for (c, v) in ENC_COLUMNS.iter().zip(enc.cols) {
        qb.push(", ").push(*c).push(" = ").push_bind(v);
    }
    qb.push(" WHERE deleted_at IS NULL AND id = ")
        .push_bind(id)
        .push(" AND updated_at = ")
        .push_bind(expected)
        .push(" RETURNING updated_at");
    qb
}

#[cfg(test)]
mod tests;

//! The extractor of `GET` and `PATCH /patients/{id}`: session check and record read in one
//! grouped statement, then the caller's access from [`crate::access`].

use axum::extract::Path;
use axum::response::IntoResponse;
use uuid::Uuid;

use crate::access::{self, Need, Target};
use crate::auth::AuthUser;
use crate::error::Error;
use crate::rbac::{perm, PatientAccess};
use crate::state::AppState;
use crate::store::patients::PatientRow;

/// Extractor of `GET` and `PATCH /patients/{id}`: the caller, authenticated (see [`AuthUser`])
/// and holding permission `P` (like [`crate::auth::Authorized`]), the path's record id, and the live record
/// with the caller's care-team flag (`None`: missing or deleted). Session and record come from
/// ONE grouped statement ([`crate::store::patients::SessionPatientLookup`]) instead of two in turn. The record is only
/// fetched, not yet allowed: [`access::admit`] decides ([`CallerAndPatient::access`]).
///
/// Refusals keep the order of every other route: 401, then 403, then 400 for a path that is not
/// a UUID (that path gets the plain session check).
pub struct CallerAndPatient<P> {
    auth: AuthUser,
    id: Uuid,
    row: Option<PatientRow>,
    _perm: std::marker::PhantomData<P>,
}

impl<P: perm::Required> axum::extract::FromRequestParts<AppState> for CallerAndPatient<P> {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let path = Path::<Uuid>::from_request_parts(parts, state).await;
        Self::for_id(
            parts,
            state,
            path.map(|Path(id)| id)
                .map_err(axum::response::IntoResponse::into_response),
        )
        .await
    }
}

impl<P: perm::Required> CallerAndPatient<P> {
    /// The extractor for a record id that is not the path itself (FHIR AllergyIntolerance and
    /// Condition ids name a record and an entry of it; a search names it in `patient`): the
    /// same session check, permission and record read; `id`'s error is answered after the 401
    /// and 403 checks, as the path's is.
    pub async fn for_id(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
        id: Result<Uuid, axum::response::Response>,
    ) -> Result<Self, axum::response::Response> {
        let claims = crate::auth::verified_claims(parts, state).map_err(Error::into_response)?;
        let (session, found) = match &id {
            Ok(id) => {
                let both = state
                    .patient_reads
                    .get((claims.sid, claims.sub, *id))
                    .await
                    .map_err(Error::into_response)?;
                match both {
                    Some(b) => (Some(b.session), b.patient),
                    None => (None, None),
                }
            }
            Err(_) => {
                let session = state
                    .sessions
                    .get((claims.sid, claims.sub))
                    .await
                    .map_err(Error::into_response)?;
                (session, None)
            }
        };
        let auth = AuthUser::from_session(parts, state, &claims, session)
            .await
            .map_err(Error::into_response)?;
        auth.require(state, P::PERMISSION)
            .await
            .map_err(Error::into_response)?;
        match id {
            Ok(id) => Ok(Self {
                auth,
                id,
                row: found,
                _perm: std::marker::PhantomData,
            }),
            Err(rejection) => Err(rejection),
        }
    }
}

impl<P> CallerAndPatient<P> {
    /// The caller.
    pub fn auth(&self) -> &AuthUser {
        &self.auth
    }

    /// The record id of the path.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// When the live record last changed (`None`: missing or deleted); its version on FHIR.
    pub fn updated_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.row.as_ref().map(|r| r.updated_at)
    }

    /// The caller, the record id, the record and the caller's access to it (refusals and their
    /// audit in [`access::admit`]).
    pub async fn access(
        self,
        state: &AppState,
    ) -> Result<(AuthUser, Uuid, PatientRow, PatientAccess), Error> {
        self.access_for(state, Need::Record).await
    }

    /// [`Self::access`] for a route that opens `need` of the record ([`Need::Clinical`]:
    /// demographic access is refused like none).
    pub async fn access_for(
        self,
        state: &AppState,
        need: Need,
    ) -> Result<(AuthUser, Uuid, PatientRow, PatientAccess), Error> {
        let target = Target {
            resource_type: "patient",
            resource_id: Some(self.id),
            patient: self.id,
        };
        let in_care_team = self.row.as_ref().map(|r| r.in_care_team);
        let access = access::admit(state, &self.auth, &target, in_care_team, need).await?;
        let row = self.row.ok_or(Error::NotFound)?;
        Ok((self.auth, self.id, row, access))
    }
}

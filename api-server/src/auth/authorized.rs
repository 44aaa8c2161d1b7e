//! [`Authorized`]: authentication + the role-level permission check as one extractor.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AuthUser;
use crate::error::Error;
use crate::rbac::perm::Required;
use crate::state::AppState;

/// An authenticated caller whose role holds permission `P` (see [`crate::rbac::perm`]).
///
/// Being a request-parts extractor it runs before the body extractor ([`crate::error::ApiJson`]
/// must come last in axum), so the order is always 401 → 403 → 400/415/422, on every route that
/// declares its permission this way. Denials are counted and audited by
/// [`AuthUser::require`].
pub struct Authorized<P>(pub AuthUser, pub PhantomData<P>);

impl<P: Required> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        user.require(state, P::PERMISSION).await?;
        Ok(Self(user, PhantomData))
    }
}

//! FHIR `Practitioner`: the staff who can be booked and be in a care team — active accounts
//! with a clinical role (physician, nurse; [`Role::is_clinician`], the rule booking uses). Any
//! other account (admins, receptionists, patients, deactivated accounts) is `404`.
//!
//! Mapping: `name[0].text` = the display name, `qualification[0].code.text` = the role,
//! `active`. The account's e-mail (`telecom`) is account data: only callers who may manage
//! accounts ([`Permission::UsersManage`], admins) see it. Reads and searches are audited as the
//! account routes' `user.read` / `user.list`. Accounts carry no identifier (licence numbers are
//! not kept), so there is no `identifier` search.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use fhir_r4::r4::resources::practitioner::{Practitioner, PractitionerQualification};
use fhir_r4::r4::resources::Resource;
use fhir_r4::r4::types;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::capability::{coded, Interaction, ParamType, ResourceCapability, SearchParam};
use super::search::{Match, Search};
use super::wire::{self, Version};
use crate::audit::{actions, AuditEvent};
use crate::auth::AuthUser;
use crate::error::Error;
use crate::pagination::ListScope;
use crate::rbac::{self, Permission, Role};
use crate::state::AppState;
use crate::users::{User, UserRow, USER_COLUMNS};

/// What `/fhir/R4/Practitioner` serves.
pub const CAPABILITY: ResourceCapability = ResourceCapability {
    type_name: "Practitioner",
    interactions: &[Interaction::Read, Interaction::SearchType],
    search: &[
        SearchParam {
            name: "_id",
            kind: ParamType::Token,
            doc: "the logical id (comma-separated for several)",
        },
        SearchParam {
            name: "name",
            kind: ParamType::String,
            doc: "a word of the name starting with the value (case-insensitive)",
        },
    ],
    sorts: &[],
    operations: &[],
    doc: "Physicians and nurses with an active account (the practitioners appointments are booked with). The e-mail (telecom) only for administrators.",
};

/// The clinical roles, as stored.
fn clinical_roles() -> Vec<&'static str> {
    Role::ALL
        .into_iter()
        .filter(|r| r.is_clinician())
        .map(Role::as_str)
        .collect()
}

/// The FHIR Practitioner of a clinical account (`with_email`: the caller may see account data).
pub fn to_fhir(u: &User, with_email: bool) -> (Practitioner, Version) {
    let version = Version(u.updated_at);
    let practitioner = Practitioner {
        id: Some(types::String(u.id.to_string())),
        meta: Some(version.meta()),
        active: Some(types::Boolean(u.active)),
        name: vec![types::HumanName {
            text: Some(types::String(u.display_name.clone())),
            ..Default::default()
        }],
        telecom: with_email
            .then(|| types::ContactPoint {
                system: Some(coded("email")),
                value: Some(types::String(u.email.clone())),
                r#use: Some(coded("work")),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        qualification: vec![PractitionerQualification {
            code: types::CodeableConcept {
                text: Some(types::String(u.role.0.as_str().to_string())),
                ..Default::default()
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    (practitioner, version)
}

fn json(p: Practitioner) -> Result<serde_json::Value, Error> {
    serde_json::to_value(Resource::Practitioner(Box::new(p)))
        .map_err(|e| Error::internal(anyhow::Error::new(e)))
}

/// The caller may see account data (the e-mail).
fn sees_account_data(auth: &AuthUser) -> bool {
    rbac::allows(auth.role, Permission::UsersManage)
}

/// `columns` of the active clinical accounts.
fn select(columns: &str) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new(format!("SELECT {columns} FROM users WHERE active"));
    qb.push(" AND role = ANY(")
        .push_bind(clinical_roles())
        .push(")");
    qb
}

/// `GET /Practitioner/{id}`.
pub async fn read(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let id: Uuid = id.parse().map_err(|_| Error::NotFound)?;
    let mut qb = select(USER_COLUMNS);
    qb.push(" AND id = ").push_bind(id);
    let user = qb
        .build_query_as::<UserRow>()
        .fetch_optional(&state.pool)
        .await?
        .ok_or(Error::NotFound)?
        .into_user(&state.keys)?;
    state
        .audit
        .record(AuditEvent::by(&auth, actions::USER_READ, "user").resource(id))
        .await?;
    let (fhir, version) = to_fhir(&user, sees_account_data(&auth));
    Ok(wire::resource(StatusCode::OK, &json(fhir)?, version, None))
}

/// Escape `%`, `_` and `\` for a `LIKE` pattern.
fn like_escaped(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// What a Practitioner search asks for (absent: not filtered).
#[derive(Debug)]
struct Filter {
    /// `_id`: these accounts.
    ids: Option<Vec<Uuid>>,
    /// `name`: lower-cased, a word of the display name starts with it.
    name: Option<String>,
}

impl Filter {
    fn parse(search: &Search) -> Result<Self, Error> {
        let ids = search
            .one("_id")?
            .map(|v| {
                v.split(',')
                    .map(|id| {
                        id.trim()
                            .parse()
                            .map_err(|_| Error::bad_parameter("_id", "must be ids"))
                    })
                    .collect::<Result<_, _>>()
            })
            .transpose()?;
        let name = search.one("name")?.map(|n| n.trim().to_lowercase());
        if name.as_deref() == Some("") {
            return Err(Error::bad_parameter("name", "must not be empty"));
        }
        Ok(Self { ids, name })
    }

    /// `columns` of the active clinical accounts it matches ([`select`]), without order and
    /// paging: the one query of the search's pages and of its [`total`].
    fn query(&self, columns: &str) -> QueryBuilder<Postgres> {
        let mut qb = select(columns);
        if let Some(ids) = &self.ids {
            qb.push(" AND id = ANY(").push_bind(ids.clone()).push(")");
        }
        if let Some(name) = &self.name {
            let pattern = like_escaped(name);
            qb.push(" AND (lower(display_name) LIKE ")
                .push_bind(format!("{pattern}%"))
                .push(" OR lower(display_name) LIKE ")
                .push_bind(format!("% {pattern}%"))
                .push(")");
        }
        qb
    }
}

/// How many practitioners `filter` matches over all pages: a count of the search's own query
/// (nothing decrypted), audited like the search (`user.list`, fail closed).
async fn total(state: &AppState, auth: &AuthUser, filter: &Filter) -> Result<i64, Error> {
    let total: i64 = filter
        .query("count(*)")
        .build_query_scalar()
        .fetch_one(&state.pool)
        .await?;
    state
        .audit
        .record(AuditEvent::by(auth, actions::USER_LIST, "user"))
        .await?;
    Ok(total)
}

/// `GET /Practitioner?...`: paged by id, with the exact `total` over all pages; `_summary=count`
/// answers the total alone, without listing.
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    auth: AuthUser,
) -> Result<Response, Error> {
    let search = Search::parse(&CAPABILITY, uri.query(), &headers)?;
    let filter = Filter::parse(&search)?;
    let base = wire::base_url(&headers, state.config.tls.is_some());
    if search.summary_count {
        let total = total(&state, &auth, &filter).await?;
        return Ok(super::search::respond_count(
            &base,
            "Practitioner",
            &search,
            total,
        ));
    }
    let scope = ListScope::new("/fhir/R4/Practitioner", auth.user_id)
        .filter("_id", search.one("_id")?)
        .filter("name", filter.name.as_deref());
    let paging = search.page().open::<Uuid>(&state.cursor_key, scope)?;
    let mut qb = filter.query(USER_COLUMNS);
    if let Some(after) = paging.after {
        qb.push(" AND id > ").push_bind(after);
    }
    qb.push(" ORDER BY id LIMIT ").push_bind(paging.limit + 1);
    let rows: Vec<UserRow> = qb.build_query_as().fetch_all(&state.pool).await?;
    let users = rows
        .into_iter()
        .map(|r| r.into_user(&state.keys))
        .collect::<Result<Vec<_>, _>>()?;
    let page = paging.page(users, |u| u.id);
    state
        .audit
        .record(AuditEvent::by(&auth, actions::USER_LIST, "user"))
        .await?;
    let with_email = sees_account_data(&auth);
    let mut matches = Vec::with_capacity(page.items.len());
    for u in &page.items {
        let (fhir, _) = to_fhir(u, with_email);
        matches.push(Match {
            id: u.id.to_string(),
            resource: json(fhir)?,
        });
    }
    let count = total(&state, &auth, &filter);
    let total = search
        .total(page.next_cursor.as_ref(), matches.len(), count)
        .await?;
    Ok(super::search::respond(
        &base,
        "Practitioner",
        &search,
        Some(total),
        matches,
        page.next_cursor,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escaped("a%b_c\\d"), "a\\%b\\_c\\\\d");
        assert_eq!(like_escaped("smith"), "smith");
    }

    #[test]
    fn only_physicians_and_nurses_are_practitioners() {
        assert_eq!(clinical_roles(), ["physician", "nurse"]);
    }
}

//! Cursor pagination shared by every list endpoint.
//!
//! Query `?limit=N&cursor=C` ([`PageParams`]; `limit` 1..=100, default 50). A handler opens the
//! parameters with [`PageParams::open`] for its [`ListScope`] (route, caller, filters), fetches
//! `limit + 1` rows after [`Paging::after`] ordered by a unique key, and builds the answer with
//! [`Paging::page`]; `next_cursor` is absent on the last page. Cursors are opaque and
//! authenticated (`pagination/cursor.rs`): one that was tampered with, issued to another
//! caller, for another list or other filters, has expired or is not a cursor at all is a `400`
//! naming `cursor`, never a first page.

mod cursor;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use cursor::{CursorError, Cursors, ListScope, Position, CURSOR_MAX_LEN, CURSOR_TTL_SECS};

use crate::crypto::CursorKey;
use crate::error::Error;

pub const MAX_LIMIT: i64 = 100;
pub const DEFAULT_LIMIT: i64 = 50;

fn check_limit(limit: Option<i64>) -> Result<i64, Error> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(l) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
        Some(_) => Err(Error::validation("limit", "must be between 1 and 100")),
    }
}

/// `limit` and `cursor` query parameters of a list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1..=100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A previous page's `next_cursor`, as given: opaque, valid for the same caller, list and
    /// filters for 24 hours (otherwise `400` naming `cursor`).
    #[param(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, Error> {
        check_limit(self.limit)
    }

    /// The page size and the position after which the page starts, checked against the list
    /// `scope` (a refused cursor is `400` naming `cursor`).
    pub fn open<'k, P: Position>(
        &self,
        key: &'k CursorKey,
        scope: ListScope,
    ) -> Result<Paging<'k, P>, Error> {
        let limit = self.limit()?;
        let cursors = Cursors::new(key, scope, chrono::Utc::now());
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(
                cursors
                    .decode(c)
                    .map_err(|e| Error::bad_parameter("cursor", &e.to_string()))?,
            ),
        };
        Ok(Paging {
            limit,
            after,
            cursors,
        })
    }
}

/// An opened page request: its size, where it starts and how its next cursor is made.
#[derive(Debug)]
pub struct Paging<'k, P> {
    pub limit: i64,
    /// The position of the previous page's last item (`None`: the first page).
    pub after: Option<P>,
    cursors: Cursors<'k>,
}

impl<P: Position> Paging<'_, P> {
    /// The page of `rows` (fetched with `LIMIT limit + 1`); `key` gives an item's position.
    pub fn page<T>(&self, rows: Vec<T>, key: impl Fn(&T) -> P) -> Page<T> {
        Page::from_rows(rows, self.limit, |row| self.cursors.encode(&key(row)))
    }
}

/// One page of results.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `rows` were fetched with `LIMIT limit + 1`; `key` gives the cursor of an item (handlers
    /// go through [`Paging::page`], which makes it an authenticated one).
    fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit.max(0) as usize);
        let next_cursor = if more { rows.last().map(key) } else { None };
        Self {
            items: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn pages_and_cursors() {
        let p = Page::from_rows(vec![1, 2, 3], 2, |v| v.to_string());
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(p.next_cursor.as_deref(), Some("2"));
        let last = Page::from_rows(vec![1, 2], 2, |v| v.to_string());
        assert!(last.next_cursor.is_none());
        for bad in [Some(0), Some(101)] {
            assert!(PageParams {
                limit: bad,
                cursor: None
            }
            .limit()
            .is_err());
        }
        assert_eq!(PageParams::default().limit().unwrap(), DEFAULT_LIMIT);
    }

    #[test]
    fn the_next_page_starts_after_the_last_item() {
        let key = CursorKey::derive(&[3; 32]);
        let scope = || ListScope::new("/api/v1/audit-events", Uuid::nil());
        let first = PageParams {
            limit: Some(2),
            cursor: None,
        }
        .open::<i64>(&key, scope())
        .unwrap();
        assert_eq!((first.limit, first.after), (2, None));
        let page = first.page(vec![9i64, 8, 7], |v| *v);
        assert_eq!(page.items, vec![9, 8]);
        let next = PageParams {
            limit: Some(2),
            cursor: page.next_cursor,
        }
        .open::<i64>(&key, scope())
        .unwrap();
        assert_eq!(next.after, Some(8));
        let refused = PageParams {
            limit: None,
            cursor: Some("8".into()),
        }
        .open::<i64>(&key, scope())
        .unwrap_err();
        assert_eq!(refused.status(), http::StatusCode::BAD_REQUEST);
        assert!(
            matches!(&refused, Error::BadParameter(f) if f.field == "cursor"),
            "{refused:?}"
        );
    }
}

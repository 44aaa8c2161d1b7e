//! Cursor pagination shared by every list endpoint.
//!
//! Query `?limit=N&cursor=C` ([`PageParams`]; `limit` 1..=100, default 50). Fetch `limit + 1`
//! rows ordered by a unique key and build the answer with [`Page::from_rows`]; the cursor is the
//! key of the last returned item (a UUID, or for the audit trail a sequence number:
//! [`SeqPageParams`]), `next_cursor` is absent on the last page. The parameter's schema is the
//! key's (`format: uuid`, `integer`), so a cursor that is not one is refused (422 naming it) by
//! [`crate::error::ApiQuery`] like any other parameter that does not parse.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

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

/// `limit` and `cursor` query parameters of a list keyed by UUID.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1..=100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<Uuid>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, Error> {
        check_limit(self.limit)
    }

    /// The key after which the page starts.
    pub fn cursor_uuid(&self) -> Result<Option<Uuid>, Error> {
        Ok(self.cursor)
    }
}

/// `limit` and `cursor` query parameters of a list keyed by a sequence number.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeqPageParams {
    /// Page size, 1..=100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<i64>,
}

impl SeqPageParams {
    pub fn limit(&self) -> Result<i64, Error> {
        check_limit(self.limit)
    }

    /// The key before which the page starts.
    pub fn cursor_i64(&self) -> Result<Option<i64>, Error> {
        Ok(self.cursor)
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
    /// `rows` were fetched with `LIMIT limit + 1`; `key` gives the cursor key of an item.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Self {
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

    #[test]
    fn pages_and_cursors() {
        let p = Page::from_rows(vec![1, 2, 3], 2, |v| v.to_string());
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(p.next_cursor.as_deref(), Some("2"));
        let last = Page::from_rows(vec![1, 2], 2, |v| v.to_string());
        assert!(last.next_cursor.is_none());
        for bad in [Some(0), Some(101)] {
            assert!(SeqPageParams {
                limit: bad,
                cursor: None
            }
            .limit()
            .is_err());
        }
        assert_eq!(PageParams::default().limit().unwrap(), DEFAULT_LIMIT);
    }
}

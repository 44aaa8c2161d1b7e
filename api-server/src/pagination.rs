//! Cursor pagination shared by every list endpoint.
//!
//! Query `?limit=N&cursor=C` ([`PageParams`]; `limit` 1..=100, default 50). Fetch `limit + 1`
//! rows ordered by a unique key and build the answer with [`Page::from_rows`]; the cursor is the
//! opaque (base64url) key of the last returned item, `next_cursor` is absent on the last page.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::Error;

pub const MAX_LIMIT: i64 = 100;
pub const DEFAULT_LIMIT: i64 = 50;

/// `limit` and `cursor` query parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1..=100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, Error> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(l) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
            Some(_) => Err(Error::validation("limit", "must be between 1 and 100")),
        }
    }

    fn cursor_text(&self) -> Result<Option<String>, Error> {
        match &self.cursor {
            None => Ok(None),
            Some(c) if c.is_empty() => Ok(None),
            Some(c) => URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .map(Some)
                .ok_or_else(|| Error::validation("cursor", "is not a valid cursor")),
        }
    }

    /// Cursor holding a UUID key.
    pub fn cursor_uuid(&self) -> Result<Option<Uuid>, Error> {
        self.cursor_text()?
            .map(|t| {
                t.parse()
                    .map_err(|_| Error::validation("cursor", "is not a valid cursor"))
            })
            .transpose()
    }

    /// Cursor holding an integer key.
    pub fn cursor_i64(&self) -> Result<Option<i64>, Error> {
        self.cursor_text()?
            .map(|t| {
                t.parse()
                    .map_err(|_| Error::validation("cursor", "is not a valid cursor"))
            })
            .transpose()
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
        let next_cursor = if more {
            rows.last().map(|r| URL_SAFE_NO_PAD.encode(key(r)))
        } else {
            None
        };
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
        let params = PageParams {
            limit: Some(2),
            cursor: p.next_cursor.clone(),
        };
        assert_eq!(params.cursor_i64().unwrap(), Some(2));
        let last = Page::from_rows(vec![1, 2], 2, |v| v.to_string());
        assert!(last.next_cursor.is_none());
        assert!(PageParams {
            limit: Some(101),
            cursor: None
        }
        .limit()
        .is_err());
        assert!(PageParams {
            limit: Some(0),
            cursor: None
        }
        .limit()
        .is_err());
        assert!(PageParams {
            limit: None,
            cursor: Some("%%".into())
        }
        .cursor_i64()
        .is_err());
    }
}

//! Opaque, authenticated list cursors.
//!
//! A cursor is base64url without padding (RFC 4648 §5) of
//!
//! ```text
//! version (1 byte, 1) | expires (8 bytes, big-endian Unix seconds) | position | tag (16 bytes)
//! ```
//!
//! * `position` is the sort key of the last item of the page, fixed length per list
//!   ([`Position`]): a UUID (16 bytes), a sequence number (8 bytes, big-endian), or a start time
//!   and a UUID (8 bytes of big-endian Unix microseconds, then 16).
//! * `tag` is `HMAC-SHA256(cursor key, "caduceus-cursor/v1" | scope | version | expires |
//!   position)` truncated to 16 bytes ([`crate::crypto::CursorKey`]), where the scope
//!   ([`ListScope`]) is the list's route, the caller's user id and the list's filters, each
//!   length-prefixed. A cursor is therefore good only for the caller it was issued to, on the
//!   list and with the filters it was issued for, until it expires ([`CURSOR_TTL_SECS`]).
//!
//! The position is authenticated, not encrypted: it is the key of an item the caller was just
//! given.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::crypto::{CursorKey, CURSOR_TAG_LEN};

/// Version byte of the cursor format.
const VERSION: u8 = 1;

/// Domain of the tag (a tag of another use of the key never matches).
const DOMAIN: &[u8] = b"caduceus-cursor/v1";

/// How long a cursor may be used after its page was served: 24 hours.
pub const CURSOR_TTL_SECS: i64 = 24 * 60 * 60;

/// The longest cursor any list issues, in characters (the query parameter's `maxLength`); the
/// longest today is an appointment cursor (49 bytes, 66 characters).
pub const CURSOR_MAX_LEN: usize = 128;

/// Why a cursor is refused. Never says more than this (no key, no position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not base64url, too long, the wrong length for the list or an unknown version.
    #[error("is not a cursor of this list")]
    Malformed,
    /// Tampered with, or issued to another caller, for another list or other filters.
    #[error("is not a cursor of this list for this caller and these filters")]
    Forged,
    /// Authentic but older than [`CURSOR_TTL_SECS`].
    #[error("has expired; start again from the first page")]
    Expired,
}

/// The sort key a list's cursor holds: fixed length, big-endian.
pub trait Position: Sized {
    /// Bytes of the encoded position.
    const LEN: usize;
    fn put(&self, out: &mut Vec<u8>);
    /// `bytes` is exactly [`Self::LEN`] long.
    fn get(bytes: &[u8]) -> Option<Self>;
}

impl Position for Uuid {
    const LEN: usize = 16;

    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }

    fn get(bytes: &[u8]) -> Option<Self> {
        Uuid::from_slice(bytes).ok()
    }
}

impl Position for i64 {
    const LEN: usize = 8;

    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }

    fn get(bytes: &[u8]) -> Option<Self> {
        Some(i64::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// A time (microseconds, the precision of Postgres `timestamptz`) and a tie-breaking id.
impl Position for (DateTime<Utc>, Uuid) {
    const LEN: usize = 8 + 16;

    fn put(&self, out: &mut Vec<u8>) {
        self.0.timestamp_micros().put(out);
        self.1.put(out);
    }

    fn get(bytes: &[u8]) -> Option<Self> {
        let (micros, id) = bytes.split_at_checked(8)?;
        let at = DateTime::from_timestamp_micros(i64::get(micros)?)?;
        Some((at, Uuid::get(id)?))
    }
}

/// What a cursor is bound to: the list (its route), the caller and the list's filters.
/// Filters are named and given in the order the handler declares them; an absent filter is
/// distinct from every value, so `?status=` and no `status` differ.
#[derive(Debug, Clone)]
pub struct ListScope {
    bytes: Vec<u8>,
}

fn put_field(out: &mut Vec<u8>, value: &[u8]) {
    // lengths of route names and query values (bounded by the request line) fit in u32
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

impl ListScope {
    /// The list `route` (e.g. `/api/v1/patients`) as seen by user `caller`.
    pub fn new(route: &str, caller: Uuid) -> Self {
        let mut bytes = Vec::with_capacity(64);
        put_field(&mut bytes, route.as_bytes());
        bytes.extend_from_slice(caller.as_bytes());
        Self { bytes }
    }

    /// Binds the filter `name` to its parsed value (`None`: not given).
    pub fn filter(mut self, name: &str, value: Option<impl std::fmt::Display>) -> Self {
        put_field(&mut self.bytes, name.as_bytes());
        match value {
            None => self.bytes.push(0),
            Some(v) => {
                self.bytes.push(1);
                put_field(&mut self.bytes, v.to_string().as_bytes());
            }
        }
        self
    }
}

/// Issues and checks the cursors of one list for one caller.
#[derive(Debug, Clone)]
pub struct Cursors<'k> {
    key: &'k CursorKey,
    scope: ListScope,
    now: DateTime<Utc>,
}

impl<'k> Cursors<'k> {
    pub fn new(key: &'k CursorKey, scope: ListScope, now: DateTime<Utc>) -> Self {
        Self { key, scope, now }
    }

    fn tag(&self, body: &[u8]) -> [u8; CURSOR_TAG_LEN] {
        self.key.tag(&[DOMAIN, &self.scope.bytes, body])
    }

    /// The cursor of `position`, valid for [`CURSOR_TTL_SECS`] from now.
    pub fn encode<P: Position>(&self, position: &P) -> String {
        let mut body = Vec::with_capacity(1 + 8 + P::LEN + CURSOR_TAG_LEN);
        body.push(VERSION);
        (self.now.timestamp() + CURSOR_TTL_SECS).put(&mut body);
        position.put(&mut body);
        let tag = self.tag(&body);
        body.extend_from_slice(&tag);
        B64URL.encode(body)
    }

    /// The position of a cursor issued by [`Self::encode`] with the same key and scope, before it
    /// expired.
    pub fn decode<P: Position>(&self, cursor: &str) -> Result<P, CursorError> {
        if cursor.len() > CURSOR_MAX_LEN {
            return Err(CursorError::Malformed);
        }
        let bytes = B64URL.decode(cursor).map_err(|_| CursorError::Malformed)?;
        if bytes.len() != 1 + 8 + P::LEN + CURSOR_TAG_LEN || bytes[0] != VERSION {
            return Err(CursorError::Malformed);
        }
        let (body, tag) = bytes.split_at(bytes.len() - CURSOR_TAG_LEN);
        if !self.key.verify(&[DOMAIN, &self.scope.bytes, body], tag) {
            return Err(CursorError::Forged);
        }
        let expires = i64::get(&body[1..9]).ok_or(CursorError::Malformed)?;
        if self.now.timestamp() >= expires {
            return Err(CursorError::Expired);
        }
        P::get(&body[9..]).ok_or(CursorError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> CursorKey {
        CursorKey::derive(&[byte; 32])
    }

    fn scope(user: Uuid) -> ListScope {
        ListScope::new("/api/v1/patients", user)
            .filter("mrn", None::<&str>)
            .filter("family_name", Some("Smith"))
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn positions_round_trip() {
        let k = key(1);
        let c = Cursors::new(&k, scope(Uuid::nil()), at(1_800_000_000));
        let id = Uuid::now_v7();
        let s = c.encode(&id);
        assert!(s.len() <= CURSOR_MAX_LEN);
        assert!(s
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'));
        assert_eq!(c.decode::<Uuid>(&s), Ok(id));
        for seq in [0, 1, i64::MAX, -5] {
            assert_eq!(c.decode::<i64>(&c.encode(&seq)), Ok(seq));
        }
        let start = DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap();
        let s = c.encode(&(start, id));
        assert!(s.len() <= CURSOR_MAX_LEN, "{}", s.len());
        assert_eq!(c.decode::<(DateTime<Utc>, Uuid)>(&s), Ok((start, id)));
        // the same bytes read as another list's position: wrong length
        assert_eq!(c.decode::<i64>(&s), Err(CursorError::Malformed));
    }

    #[test]
    fn every_changed_character_is_refused() {
        let k = key(1);
        let c = Cursors::new(&k, scope(Uuid::nil()), at(1_800_000_000));
        let s = c.encode(&Uuid::now_v7());
        for i in 0..s.len() {
            let mut chars: Vec<char> = s.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let changed: String = chars.into_iter().collect();
            // the last character carries 2 padding bits a lenient decoder could ignore; the
            // strict decoder refuses them
            assert!(c.decode::<Uuid>(&changed).is_err(), "position {i}");
        }
    }

    #[test]
    fn bound_to_key_caller_list_and_filters() {
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let k = key(1);
        let now = at(1_800_000_000);
        let s = Cursors::new(&k, scope(alice), now).encode(&Uuid::nil());
        let refused =
            |key: &CursorKey, scope: ListScope| Cursors::new(key, scope, now).decode::<Uuid>(&s);
        assert_eq!(refused(&k, scope(alice)), Ok(Uuid::nil()));
        assert_eq!(refused(&key(2), scope(alice)), Err(CursorError::Forged));
        assert_eq!(refused(&k, scope(bob)), Err(CursorError::Forged));
        let other_list = ListScope::new("/api/v1/users", alice)
            .filter("mrn", None::<&str>)
            .filter("family_name", Some("Smith"));
        assert_eq!(refused(&k, other_list), Err(CursorError::Forged));
        let other_filter = ListScope::new("/api/v1/patients", alice)
            .filter("mrn", None::<&str>)
            .filter("family_name", Some("Smyth"));
        assert_eq!(refused(&k, other_filter), Err(CursorError::Forged));
        // an absent filter differs from an empty one, and names are part of the binding
        let empty = ListScope::new("/api/v1/patients", alice)
            .filter("mrn", Some(""))
            .filter("family_name", Some("Smith"));
        assert_eq!(refused(&k, empty), Err(CursorError::Forged));
        let renamed = ListScope::new("/api/v1/patients", alice)
            .filter("mrm", None::<&str>)
            .filter("family_name", Some("Smith"));
        assert_eq!(refused(&k, renamed), Err(CursorError::Forged));
    }

    #[test]
    fn expires_after_a_day() {
        let k = key(1);
        let s = Cursors::new(&k, scope(Uuid::nil()), at(1_000)).encode(&7i64);
        let at_time = |t| Cursors::new(&k, scope(Uuid::nil()), at(t)).decode::<i64>(&s);
        assert_eq!(at_time(1_000 + CURSOR_TTL_SECS - 1), Ok(7));
        assert_eq!(at_time(1_000 + CURSOR_TTL_SECS), Err(CursorError::Expired));
    }

    #[test]
    fn malformed_cursors_are_refused() {
        let k = key(1);
        let c = Cursors::new(&k, scope(Uuid::nil()), at(1_800_000_000));
        let good = c.encode(&Uuid::nil());
        let bytes = B64URL.decode(&good).unwrap();
        let mut v2 = bytes.clone();
        v2[0] = 2;
        let padded = format!("{}=", good);
        let long = "A".repeat(CURSOR_MAX_LEN + 1);
        for bad in [
            "",
            "%%%",
            "not a cursor",
            padded.as_str(),
            long.as_str(),
            &B64URL.encode(&bytes[..bytes.len() - 1]),
            &B64URL.encode(v2),
            // the cursor forms before this format: a raw UUID and a sequence number
            "0190b8c4-1f2a-7c3b-9d4e-5f6a7b8c9d0e",
            "12345",
        ] {
            assert!(c.decode::<Uuid>(bad).is_err(), "{bad:?}");
        }
        assert_eq!(c.decode::<i64>("12345"), Err(CursorError::Malformed));
    }
}

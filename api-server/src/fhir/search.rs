//! FHIR search requests and `searchset` Bundles.
//!
//! Each resource declares its search parameters once ([`super::capability::ResourceCapability`]);
//! [`Search::parse`] accepts exactly those plus the result parameters every search has
//! (`_count` ≤ 100, `_summary=count`, `_sort`, `_format`, and `_cursor`, our opaque paging
//! token), refuses anything else with `400` unless the client sent `Prefer: handling=lenient`
//! (then it is ignored and left out of the `self` link), and the CapabilityStatement is
//! generated from the same declarations.

use axum::http::HeaderMap;
use fhir_r4::r4::resources::bundle::{Bundle, BundleEntry, BundleEntrySearch, BundleLink};
use fhir_r4::r4::{codes, types};
use serde_json::Value;

use super::capability::ResourceCapability;
use crate::error::Error;
use crate::pagination::{PageParams, MAX_LIMIT};

/// Result parameters every search accepts.
pub const RESULT_PARAMS: &[&str] = &["_count", "_summary", "_sort", "_format", "_cursor"];

/// A parsed search: the resource's own parameters (in request order) and the result
/// parameters.
#[derive(Debug, Default)]
pub struct Search {
    /// `(name, value)` of the resource's parameters, as sent (repeats kept).
    pub params: Vec<(String, String)>,
    pub count: Option<i64>,
    /// `_summary=count`: the total only, no entries.
    pub summary_count: bool,
    /// `_sort`: the parameter name, and `true` for descending (`-date`).
    pub sort: Option<(String, bool)>,
    pub cursor: Option<String>,
}

impl Search {
    /// Parse `query` against `cap`'s search parameters.
    pub fn parse(
        cap: &ResourceCapability,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Self, Error> {
        let lenient = super::wire::lenient(headers);
        let mut s = Search::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let (k, v) = (k.into_owned(), v.into_owned());
            match k.as_str() {
                "_count" => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| Error::bad_parameter("_count", "must be a whole number"))?;
                    if !(0..=MAX_LIMIT).contains(&n) {
                        return Err(Error::bad_parameter("_count", "must be between 0 and 100"));
                    }
                    s.count = Some(n);
                }
                "_summary" => match v.as_str() {
                    "count" => s.summary_count = true,
                    "false" => {}
                    _ => {
                        return Err(Error::bad_parameter(
                            "_summary",
                            "only _summary=count (or false) is supported",
                        ))
                    }
                },
                "_sort" => {
                    let (name, desc) = match v.strip_prefix('-') {
                        Some(n) => (n.to_string(), true),
                        None => (v.clone(), false),
                    };
                    if !cap.sorts.contains(&name.as_str()) {
                        return Err(Error::bad_parameter(
                            "_sort",
                            &format!("{} can be sorted by: {}", cap.type_name, sorts(cap)),
                        ));
                    }
                    s.sort = Some((name, desc));
                }
                "_format" => {}
                "_cursor" => s.cursor = Some(v),
                _ => {
                    let base = k.split(':').next().unwrap_or_default();
                    let known = cap.search.iter().any(|p| p.name == base);
                    let modifier_ok = !k.contains(':') || k.ends_with(":exact");
                    if known && modifier_ok {
                        s.params.push((base.to_string(), v));
                    } else if !lenient {
                        return Err(Error::bad_parameter(
                            base,
                            &format!(
                                "unknown or unsupported search parameter for {} (send Prefer: handling=lenient to ignore it; supported: {})",
                                cap.type_name,
                                cap.search.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        Ok(s)
    }

    /// Values of parameter `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The single value of parameter `name` (`400` when repeated).
    pub fn one<'a>(&'a self, name: &'a str) -> Result<Option<&'a str>, Error> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(Error::bad_parameter(name, "may be given once"));
        }
        Ok(first)
    }

    /// The exact `Bundle.total` of a page of `matched` entries: known from the page when it is
    /// the first (no cursor) with no page after it (it holds every match); otherwise `count`,
    /// the count over the list's own scoped query, which only then runs.
    pub async fn total(
        &self,
        next_cursor: Option<&String>,
        matched: usize,
        count: impl std::future::Future<Output = Result<i64, Error>>,
    ) -> Result<i64, Error> {
        if self.cursor.is_none() && next_cursor.is_none() {
            Ok(i64::try_from(matched).unwrap_or(i64::MAX))
        } else {
            count.await
        }
    }

    /// The page request for the domain's list (`_count` → `limit`, `_cursor` → `cursor`).
    pub fn page(&self) -> PageParams {
        PageParams {
            limit: self.count.filter(|c| *c > 0),
            cursor: self.cursor.clone(),
        }
    }

    /// The query string of this search without paging (for `self` and `next` links).
    fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.params {
            q.append_pair(k, v);
        }
        if let Some(c) = self.count {
            q.append_pair("_count", &c.to_string());
        }
        if let Some((name, desc)) = &self.sort {
            q.append_pair("_sort", &format!("{}{name}", if *desc { "-" } else { "" }));
        }
        if self.summary_count {
            q.append_pair("_summary", "count");
        }
        q.finish()
    }
}

fn sorts(cap: &ResourceCapability) -> String {
    if cap.sorts.is_empty() {
        "nothing".into()
    } else {
        cap.sorts.join(", ")
    }
}

/// One found resource: its JSON (with `resourceType`) and id.
pub struct Match {
    pub id: String,
    pub resource: Value,
}

/// A `searchset` Bundle: `total`, `self` and (when there is more) `next` links, one entry per
/// match with its `fullUrl`.
pub fn searchset(
    base: &str,
    type_name: &str,
    search: &Search,
    total: Option<i64>,
    matches: Vec<Match>,
    next_cursor: Option<String>,
) -> Bundle {
    let url = format!("{base}/{type_name}");
    let query = search.query();
    let link = |relation: &str, url: String| BundleLink {
        relation: types::String(relation.to_string()),
        url: types::Uri(url),
        ..Default::default()
    };
    let with = |extra: Option<(&str, &str)>| {
        let mut q = query.clone();
        if let Some((k, v)) = extra {
            let pair = form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish();
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(&pair);
        }
        if q.is_empty() {
            url.clone()
        } else {
            format!("{url}?{q}")
        }
    };
    let mut links = vec![link(
        "self",
        with(search.cursor.as_deref().map(|c| ("_cursor", c))),
    )];
    if let Some(next) = next_cursor.filter(|_| !search.summary_count) {
        links.push(link("next", with(Some(("_cursor", &next)))));
    }
    let entry = if search.summary_count {
        Vec::new()
    } else {
        matches
            .into_iter()
            .map(|m| BundleEntry {
                full_url: Some(types::Uri(format!("{url}/{}", m.id))),
                resource: Some(m.resource),
                search: Some(BundleEntrySearch {
                    mode: Some(fhir_r4::r4::coded::Coded::Known(
                        codes::SearchEntryMode::Match,
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect()
    };
    Bundle {
        r#type: fhir_r4::r4::coded::Coded::Known(codes::BundleType::Searchset),
        total: total.map(|t| types::UnsignedInt(u32::try_from(t.max(0)).unwrap_or(u32::MAX))),
        link: links,
        entry,
        ..Default::default()
    }
}

/// The answer of a search: the [`searchset`] Bundle as a FHIR JSON response.
pub fn respond(
    base: &str,
    type_name: &str,
    search: &Search,
    total: Option<i64>,
    matches: Vec<Match>,
    next_cursor: Option<String>,
) -> axum::response::Response {
    let bundle = searchset(base, type_name, search, total, matches, next_cursor);
    super::wire::fhir_json(
        axum::http::StatusCode::OK,
        &fhir_r4::r4::resources::Resource::Bundle(Box::new(bundle)),
    )
}

/// The answer of `_summary=count`: the [`searchset`] with the `total` alone (no entries, no
/// `next` link).
pub fn respond_count(
    base: &str,
    type_name: &str,
    search: &Search,
    total: i64,
) -> axum::response::Response {
    respond(base, type_name, search, Some(total), Vec::new(), None)
}

/// A FHIR date comparison (`date=ge2026-01-01`, `date=lt2026-01-01T10:00:00Z`): the prefix
/// (`eq` when absent) and the instant it compares with. A date without a time means the start
/// of that day (UTC) and, for `eq`, the whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateParam {
    pub prefix: DatePrefix,
    /// Start of the value's range.
    pub start: chrono::DateTime<chrono::Utc>,
    /// End (exclusive) of the value's range: the next day for a date, the instant itself for a
    /// date-time.
    pub end: chrono::DateTime<chrono::Utc>,
}

/// The prefixes of a date search (FHIR R4 §3.1.1.4.6) we serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePrefix {
    Eq,
    Ge,
    Le,
    Gt,
    Lt,
}

impl DateParam {
    /// Parse one value of date parameter `name`; `400` naming it otherwise.
    pub fn parse(name: &str, value: &str) -> Result<Self, Error> {
        let (prefix, rest) = match value.get(..2) {
            Some("eq") => (DatePrefix::Eq, &value[2..]),
            Some("ge") => (DatePrefix::Ge, &value[2..]),
            Some("le") => (DatePrefix::Le, &value[2..]),
            Some("gt") => (DatePrefix::Gt, &value[2..]),
            Some("lt") => (DatePrefix::Lt, &value[2..]),
            _ => (DatePrefix::Eq, value),
        };
        let bad = || {
            Error::bad_parameter(
                name,
                "must be [eq|ge|le|gt|lt]YYYY-MM-DD or an RFC 3339 date-time",
            )
        };
        if let Ok(day) = chrono::NaiveDate::parse_from_str(rest, "%Y-%m-%d") {
            let start = day.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc();
            return Ok(Self {
                prefix,
                start,
                end: start + chrono::Duration::days(1),
            });
        }
        let at = chrono::DateTime::parse_from_rfc3339(rest)
            .map_err(|_| bad())?
            .with_timezone(&chrono::Utc);
        Ok(Self {
            prefix,
            start: at,
            end: at,
        })
    }

    /// The matching instants as (inclusive lower bound, exclusive upper bound); `None` is
    /// unbounded. Push them as `col >= lower AND col < upper`.
    pub fn bounds(
        &self,
    ) -> (
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) {
        match self.prefix {
            DatePrefix::Eq if self.start == self.end => (
                Some(self.start),
                Some(self.start + chrono::Duration::microseconds(1)),
            ),
            DatePrefix::Eq => (Some(self.start), Some(self.end)),
            DatePrefix::Ge => (Some(self.start), None),
            DatePrefix::Gt if self.start == self.end => {
                (Some(self.start + chrono::Duration::microseconds(1)), None)
            }
            DatePrefix::Gt => (Some(self.end), None),
            DatePrefix::Le if self.start == self.end => {
                (None, Some(self.start + chrono::Duration::microseconds(1)))
            }
            DatePrefix::Le => (None, Some(self.end)),
            DatePrefix::Lt => (None, Some(self.start)),
        }
    }
}

/// The id of a reference parameter (`patient=Patient/<id>`, `patient=<id>`, or an absolute URL
/// ending in `<type>/<id>`), which must be a `type` reference; `400` naming `name` otherwise.
pub fn reference_id(name: &str, value: &str, type_name: &str) -> Result<uuid::Uuid, Error> {
    let tail = match value.rsplit_once('/') {
        Some((head, id)) => {
            if !(head == type_name || head.ends_with(&format!("/{type_name}"))) {
                return Err(Error::bad_parameter(
                    name,
                    &format!("must reference a {type_name}"),
                ));
            }
            id
        }
        None => value,
    };
    tail.parse()
        .map_err(|_| Error::bad_parameter(name, &format!("must be a {type_name} id")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn date_prefixes() {
        let day = |d| {
            chrono::Utc
                .with_ymd_and_hms(2026, 1, d, 0, 0, 0)
                .single()
                .expect("day")
        };
        let p = DateParam::parse("date", "2026-01-02").expect("eq");
        assert_eq!(p.bounds(), (Some(day(2)), Some(day(3))));
        let p = DateParam::parse("date", "ge2026-01-02").expect("ge");
        assert_eq!(p.bounds(), (Some(day(2)), None));
        let p = DateParam::parse("date", "gt2026-01-02").expect("gt");
        assert_eq!(p.bounds(), (Some(day(3)), None));
        let p = DateParam::parse("date", "le2026-01-02").expect("le");
        assert_eq!(p.bounds(), (None, Some(day(3))));
        let p = DateParam::parse("date", "lt2026-01-02").expect("lt");
        assert_eq!(p.bounds(), (None, Some(day(2))));
        let p = DateParam::parse("date", "lt2026-01-02T00:00:00Z").expect("instant");
        assert_eq!(p.bounds(), (None, Some(day(2))));
        assert!(DateParam::parse("date", "sa2026-01-02").is_err());
        assert!(DateParam::parse("date", "2026-13-02").is_err());
    }

    #[test]
    fn references() {
        let id = uuid::Uuid::new_v4();
        for v in [
            id.to_string(),
            format!("Patient/{id}"),
            format!("https://h/fhir/R4/Patient/{id}"),
        ] {
            assert_eq!(reference_id("patient", &v, "Patient").expect("ref"), id);
        }
        assert!(reference_id("patient", &format!("Practitioner/{id}"), "Patient").is_err());
        assert!(reference_id("patient", "Patient/x", "Patient").is_err());
    }
}

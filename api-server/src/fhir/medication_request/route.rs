//! Routes of administration as SNOMED CT codes (the R4 `route-codes` value set).

use crate::prescriptions::RouteOfAdministration;

/// The code system of `Dosage.route.coding`.
pub const SNOMED: &str = "http://snomed.info/sct";

/// The SNOMED CT code of each route (the R4 `route-codes` value set).
pub fn route_code(route: RouteOfAdministration) -> (&'static str, &'static str) {
    use RouteOfAdministration as R;
    match route {
        R::Oral => ("26643006", "Oral route"),
        R::Sublingual => ("37839007", "Sublingual route"),
        R::Buccal => ("54471007", "Buccal route"),
        R::Intravenous => ("47625008", "Intravenous route"),
        R::Intramuscular => ("78421000", "Intramuscular route"),
        R::Subcutaneous => ("34206005", "Subcutaneous route"),
        R::Topical => ("6064005", "Topical route"),
        R::Transdermal => ("45890007", "Transdermal route"),
        R::Inhaled => ("447694001", "Respiratory tract route"),
        R::Nasal => ("46713006", "Nasal route"),
        R::Ophthalmic => ("54485002", "Ophthalmic route"),
        R::Otic => ("10547007", "Otic route"),
        R::Rectal => ("37161004", "Rectal route"),
        R::Vaginal => ("16857009", "Vaginal route"),
    }
}

/// Every route, for lookups by code or name.
pub const ROUTES: [RouteOfAdministration; 14] = {
    use RouteOfAdministration as R;
    [
        R::Oral,
        R::Sublingual,
        R::Buccal,
        R::Intravenous,
        R::Intramuscular,
        R::Subcutaneous,
        R::Topical,
        R::Transdermal,
        R::Inhaled,
        R::Nasal,
        R::Ophthalmic,
        R::Otic,
        R::Rectal,
        R::Vaginal,
    ]
};

/// The route's name on `/api/v1` (`oral`, ...).
pub fn route_name(route: RouteOfAdministration) -> String {
    serde_json::to_value(route)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

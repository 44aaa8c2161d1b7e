//! The interaction check: medication names/codes and allergy entries → terms → findings.
//!
//! Reference data comes from migration 0101 ([`Formulary::load`]). Matching is pure
//! ([`Formulary::terms`], [`Formulary::check`]) and unit tested.
//!
//! * A name is normalised (lower case, non-alphanumerics become spaces, whitespace collapsed);
//!   every run of 1-3 words is looked up in `drug_terms`, and the code in `drug_substances.rxcui`.
//!   A substance term adds its classes (`class:<name>`).
//! * Drug–drug: a `drug` row whose `a`/`b` match a term of the new drug and a term of an existing
//!   medication (either order).
//! * Allergy: the new drug shares a term with an allergy entry (its substance or a class) → a
//!   `major` finding; an `allergy` row (allergy term `a` → drug term `b`) adds cross-reactivity.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

/// Severity, ordered (`Minor < Moderate < Major`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Minor,
    Moderate,
    Major,
}

impl Severity {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "minor" => Some(Self::Minor),
            "moderate" => Some(Self::Moderate),
            "major" => Some(Self::Major),
            _ => None,
        }
    }
}

/// What the new medication was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An active prescription (`prescription_id` names it).
    Prescription,
    /// The `medications` list of the patient record.
    MedicationList,
    /// The `allergies` list of the patient record.
    Allergy,
}

/// One finding. Names are reference vocabulary (`terms`), never the free text of the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Interaction {
    /// Row of the interaction table; absent for a direct allergy match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction_id: Option<i32>,
    /// `drug` or `allergy`.
    pub kind: String,
    pub severity: Severity,
    pub description: String,
    /// The term of the new medication and the term it collides with.
    pub terms: [String; 2],
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prescription_id: Option<Uuid>,
}

#[derive(Debug, Clone)]
struct Rule {
    id: i32,
    kind: String,
    a: String,
    b: String,
    severity: Severity,
    description: String,
}

/// The reference tables, in memory.
#[derive(Debug, Default)]
pub struct Formulary {
    aliases: HashMap<String, Vec<String>>,
    codes: HashMap<String, String>,
    classes: HashMap<String, Vec<String>>,
    rules: Vec<Rule>,
}

/// Lower case; every non-alphanumeric character a space; whitespace collapsed.
pub fn normalise(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every run of 1..=3 consecutive words of the normalised name.
fn candidates(name: &str) -> Vec<String> {
    let norm = normalise(name);
    let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
    let mut out = Vec::new();
    for n in 1..=3 {
        for w in words.windows(n) {
            out.push(w.join(" "));
        }
    }
    out
}

/// Item checked against: its source, optional prescription id, and terms.
pub struct Existing {
    pub source: Source,
    pub prescription_id: Option<Uuid>,
    pub terms: BTreeSet<String>,
}

impl Formulary {
    /// Load the reference tables (a few hundred rows).
    pub async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let mut f = Formulary::default();
        let terms: Vec<(String, String)> = sqlx::query_as("SELECT alias, term FROM drug_terms")
            .fetch_all(pool)
            .await?;
        for (alias, term) in terms {
            f.aliases.entry(alias).or_default().push(term);
        }
        let codes: Vec<(String, String)> =
            sqlx::query_as("SELECT rxcui, name FROM drug_substances WHERE rxcui IS NOT NULL")
                .fetch_all(pool)
                .await?;
        f.codes.extend(codes);
        let members: Vec<(String, String)> =
            sqlx::query_as("SELECT substance, class FROM drug_class_members")
                .fetch_all(pool)
                .await?;
        for (substance, class) in members {
            f.classes
                .entry(substance)
                .or_default()
                .push(format!("class:{class}"));
        }
        let rules: Vec<(i32, String, String, String, String, String)> = sqlx::query_as(
            "SELECT id, kind, a, b, severity, description FROM drug_interactions ORDER BY id",
        )
        .fetch_all(pool)
        .await?;
        for (id, kind, a, b, severity, description) in rules {
            let severity = Severity::parse(&severity).ok_or_else(|| {
                sqlx::Error::Decode("unknown severity in drug_interactions".into())
            })?;
            f.rules.push(Rule {
                id,
                kind,
                a,
                b,
                severity,
                description,
            });
        }
        Ok(f)
    }

    /// Terms of a medication name (and optional RxNorm code) or allergy entry.
    pub fn terms(&self, name: &str, code: Option<&str>) -> BTreeSet<String> {
        let mut direct = BTreeSet::new();
        for c in candidates(name) {
            if let Some(ts) = self.aliases.get(&c) {
                direct.extend(ts.iter().cloned());
            }
        }
        if let Some(s) = code.and_then(|c| self.codes.get(c.trim())) {
            direct.insert(s.clone());
        }
        let mut out = direct.clone();
        for t in &direct {
            if let Some(cs) = self.classes.get(t) {
                out.extend(cs.iter().cloned());
            }
        }
        out
    }

    /// Findings for a new medication with terms `new` against existing medications and allergies,
    /// most severe first, without duplicates.
    pub fn check(&self, new: &BTreeSet<String>, existing: &[Existing]) -> Vec<Interaction> {
        let mut out: Vec<Interaction> = Vec::new();
        let mut push = |i: Interaction| {
            if !out.contains(&i) {
                out.push(i);
            }
        };
        for item in existing {
            if item.source == Source::Allergy {
                for shared in new.intersection(&item.terms) {
                    push(Interaction {
                        interaction_id: None,
                        kind: "allergy".into(),
                        severity: Severity::Major,
                        description: "documented allergy to this drug or its class".into(),
                        terms: [shared.clone(), shared.clone()],
                        source: item.source,
                        prescription_id: None,
                    });
                }
            }
            for r in &self.rules {
                let hit = match (r.kind.as_str(), item.source) {
                    ("allergy", Source::Allergy) => (new.contains(&r.b)
                        && item.terms.contains(&r.a))
                    .then(|| [r.b.clone(), r.a.clone()]),
                    ("drug", Source::Prescription | Source::MedicationList) => {
                        if new.contains(&r.a) && item.terms.contains(&r.b) {
                            Some([r.a.clone(), r.b.clone()])
                        } else if new.contains(&r.b) && item.terms.contains(&r.a) {
                            Some([r.b.clone(), r.a.clone()])
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                if let Some(terms) = hit {
                    push(Interaction {
                        interaction_id: Some(r.id),
                        kind: r.kind.clone(),
                        severity: r.severity,
                        description: r.description.clone(),
                        terms,
                        source: item.source,
                        prescription_id: item.prescription_id,
                    });
                }
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.severity));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formulary() -> Formulary {
        let mut f = Formulary::default();
        for (alias, term) in [
            ("warfarin", "warfarin"),
            ("coumadin", "warfarin"),
            ("aspirin", "aspirin"),
            ("ibuprofen", "ibuprofen"),
            ("amoxicillin", "amoxicillin"),
            ("cephalexin", "cephalexin"),
            ("penicillin", "class:penicillin"),
            ("co trimoxazole", "trimethoprim"),
            ("co trimoxazole", "sulfamethoxazole"),
        ] {
            f.aliases.entry(alias.into()).or_default().push(term.into());
        }
        f.codes.insert("11289".into(), "warfarin".into());
        f.classes
            .insert("ibuprofen".into(), vec!["class:nsaid".into()]);
        f.classes
            .insert("amoxicillin".into(), vec!["class:penicillin".into()]);
        f.classes
            .insert("cephalexin".into(), vec!["class:cephalosporin".into()]);
        let rule = |id, kind: &str, a: &str, b: &str, severity| Rule {
            id,
            kind: kind.into(),
            a: a.into(),
            b: b.into(),
            severity,
            description: "d".into(),
        };
        f.rules = vec![
            rule(1, "drug", "warfarin", "aspirin", Severity::Major),
            rule(2, "drug", "warfarin", "class:nsaid", Severity::Major),
            rule(
                14,
                "allergy",
                "class:penicillin",
                "class:cephalosporin",
                Severity::Moderate,
            ),
        ];
        f
    }

    fn existing(source: Source, terms: BTreeSet<String>) -> Existing {
        Existing {
            source,
            prescription_id: None,
            terms,
        }
    }

    #[test]
    fn normalises_and_finds_words() {
        assert_eq!(
            normalise("  Co-Trimoxazole   480MG "),
            "co trimoxazole 480mg"
        );
        let f = formulary();
        assert!(f
            .terms("Warfarin sodium 5 mg tablet", None)
            .contains("warfarin"));
        assert!(f.terms("COUMADIN", None).contains("warfarin"));
        assert!(f
            .terms("unknown brand", Some(" 11289 "))
            .contains("warfarin"));
        let t = f.terms("Co-trimoxazole", None);
        assert!(t.contains("trimethoprim") && t.contains("sulfamethoxazole"));
        assert!(f.terms("Ibuprofen", None).contains("class:nsaid"));
        assert!(f.terms("paracetamol", None).is_empty());
    }

    #[test]
    fn drug_drug_both_directions_and_classes() {
        let f = formulary();
        let warfarin = f.terms("warfarin", None);
        let aspirin = f.terms("aspirin", None);
        let found = f.check(
            &aspirin,
            &[existing(Source::Prescription, warfarin.clone())],
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].interaction_id, Some(1));
        assert_eq!(found[0].terms, ["aspirin".to_string(), "warfarin".into()]);
        let found = f.check(
            &warfarin,
            &[existing(
                Source::MedicationList,
                f.terms("Advil ibuprofen", None),
            )],
        );
        assert_eq!(found[0].interaction_id, Some(2));
        assert!(f
            .check(
                &f.terms("paracetamol", None),
                &[existing(Source::Prescription, warfarin)]
            )
            .is_empty());
    }

    #[test]
    fn allergies_direct_class_and_cross() {
        let f = formulary();
        let allergy = existing(Source::Allergy, f.terms("Penicillin (rash)", None));
        let found = f.check(&f.terms("Amoxicillin 500 mg", None), &[allergy]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Major);
        assert_eq!(found[0].kind, "allergy");
        let allergy = existing(Source::Allergy, f.terms("penicillin", None));
        let found = f.check(&f.terms("cephalexin", None), &[allergy]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Moderate);
        assert_eq!(found[0].interaction_id, Some(14));
        // drug rules never fire against allergies, allergy rules never against drugs
        let found = f.check(
            &f.terms("cephalexin", None),
            &[existing(Source::Prescription, f.terms("penicillin", None))],
        );
        assert!(found.is_empty());
    }
}

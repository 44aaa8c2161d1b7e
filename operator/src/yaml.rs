//! YAML output (`render`, `crd`), written through JSON text.
//!
//! Serialising a `serde_json::Value` (rendered objects, the CRD's schema) straight into another
//! format depends on serde_json's feature set: with `arbitrary_precision` — which the API's FHIR
//! model (`fhir-r4`) turns on for every crate built in the same `cargo` invocation — a JSON
//! number serialises to YAML as a `$serde_json::private::Number` map. Going through JSON text
//! and a YAML value gives the same document whatever serde_json's features.

use serde::ser::Error as _;
use serde::Serialize;

/// `value` as a YAML document (no leading `---`).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_norway::Error> {
    let json = serde_json::to_string(value).map_err(serde_norway::Error::custom)?;
    let doc: serde_norway::Value = serde_norway::from_str(&json)?;
    serde_norway::to_string(&doc)
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_strings_and_order_survive() {
        let v = serde_json::json!({"port": 53, "ratio": 1.5, "name": "yes", "z": null, "a": [1, "2"], "text": "a\nb"});
        let yaml = super::to_string(&v).expect("yaml");
        assert_eq!(
            yaml,
            "a:\n- 1\n- '2'\nname: yes\nport: 53\nratio: 1.5\ntext: |-\n  a\n  b\nz: null\n"
        );
    }
}

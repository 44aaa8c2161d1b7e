"""Validates FHIR R4 JSON documents against the Python FHIR models (fhir.resources 6.4.0, whose
models are generated from FHIR 4.0.1; pydantic 1, unknown elements forbidden).

    fhir_validate.py DOCUMENTS.json

DOCUMENTS.json is a list of {"label": ..., "resource": {...}}; every resource (and every Bundle
entry's resource, on its own too) is parsed by the model class of its resourceType. Prints one
line per invalid document with the model's messages and exits 1 when any is invalid; run by
api-server/tests/fhir_validation.rs (the tool is installed by scripts/tools.sh).
"""

import json
import sys

import fhir.resources
from fhir.resources import get_fhir_model_class
from pydantic import ValidationError


def check(label, resource, failures):
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(kind, str):
        failures.append(f"{label}: no resourceType")
        return
    try:
        model = get_fhir_model_class(kind)
    except KeyError:
        failures.append(f"{label}: unknown resourceType {kind!r}")
        return
    try:
        model.parse_obj(resource)
    except ValidationError as e:
        failures.append(f"{label} ({kind}): {e}")
    for i, entry in enumerate(resource.get("entry") or []):
        if isinstance(entry, dict) and "resource" in entry:
            check(f"{label} entry[{i}]", entry["resource"], failures)


def main():
    if fhir.resources.__fhir_version__ != "4.0.1":
        sys.exit(f"fhir.resources models FHIR {fhir.resources.__fhir_version__}, not 4.0.1")
    with open(sys.argv[1], encoding="utf-8") as f:
        documents = json.load(f)
    failures = []
    for doc in documents:
        check(doc["label"], doc["resource"], failures)
    for line in failures:
        print(line)
    print(f"fhir.resources {fhir.resources.__version__} (FHIR 4.0.1): "
          f"{len(failures)} problem(s) in {len(documents)} documents")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

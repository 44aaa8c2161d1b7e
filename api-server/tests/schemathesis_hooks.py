"""Loaded by tests/schemathesis.rs through SCHEMATHESIS_HOOKS (schemathesis 4.32.5, pinned in
scripts/tools.sh).

Works around one schemathesis defect: a link it infers from a list (`$response.body#/items/*/x`)
picks among every item's `x`, nulls included, and a null lands in a URL as the text `None`
(`GET /patients/None`, a 400 it then reports as a valid request refused). A single null is
already skipped by schemathesis itself; this drops nulls from the candidates of a list the same
way. Remove it when a schemathesis release filters them.
"""

from schemathesis.specs.openapi import expressions as _expressions

_resolve_pointer_all = _expressions.resolve_pointer_all


def _resolve_without_nulls(document, pointer):
    matches = _resolve_pointer_all(document, pointer)
    if isinstance(matches, list):
        return [m for m in matches if m is not None]
    return matches


_expressions.resolve_pointer_all = _resolve_without_nulls

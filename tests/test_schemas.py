"""The committed JSON Schemas (stream_app/schemas/) are those the models generate, and valid schemas."""

from __future__ import annotations

import jsonschema

from stream_app.schemas import SCHEMA_DIR, generate, stale


def test_committed_schemas_are_up_to_date() -> None:
    assert not stale(), f"run `python -m stream_app.schemas` to regenerate {stale()} in {SCHEMA_DIR}"
    for schema in generate().values():
        jsonschema.Draft202012Validator.check_schema(schema)

"""JSON Schemas of the topics, generated from the pydantic models of `stream_app.messages`.

``python -m stream_app.schemas`` rewrites the committed ``*.schema.json`` files; a test checks that
they are up to date (`generate()` must equal what is on disk).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def generate() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for the four topics."""
    from stream_app.messages import CategorizedProduct, DeadLetter, ProductEvent, drift_alert_adapter

    schemas = {
        "products.schema.json": (ProductEvent.model_json_schema(mode="validation"), "products"),
        "categories.schema.json": (CategorizedProduct.model_json_schema(mode="serialization"), "categories"),
        "drift.schema.json": (drift_alert_adapter().json_schema(mode="serialization"), "drift"),
        "dead-letter.schema.json": (DeadLetter.model_json_schema(mode="serialization"), "products.dlq"),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (schema, topic) in schemas.items():
        description = f"Value of the `{topic}` topic. " + schema.pop("description", "")
        out[name] = {"$schema": _DIALECT, "$id": name, "description": description.strip(), **schema}
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file; return the paths written."""
    written = []
    for name, schema in generate().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files missing or different from what the models generate."""
    return [
        name
        for name, schema in generate().items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != render(schema)
    ]

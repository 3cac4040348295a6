"""The exact text the model sees, built the same way at training and at serving time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The product fields a template may join into the model's text (a product event has more: see
# stream_app.tools.produce.EVENT_FIELDS).
CANONICAL_FIELDS = ("title", "tags", "description")


def normalize_value(value: object) -> str:
    """One field value as text: lists are space-joined, None/NaN become '', whitespace is collapsed."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from pandas
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        text = " ".join(normalize_value(v) for v in value)
    else:
        text = str(value)
    return " ".join(text.split())


class TextTemplate(BaseModel):
    """Joins the non-empty canonical fields, in order, with a separator.

    Contract: `render` is total (missing fields are empty) and deterministic; the same template is
    stored in the bundle manifest and used by both `export` and the worker.
    """

    model_config = ConfigDict(frozen=True)

    fields: tuple[str, ...] = Field(default=("title", "tags"), min_length=1)
    separator: str = " | "

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in fields if f not in CANONICAL_FIELDS]
        if unknown:
            raise ValueError(f"unknown text field(s) {unknown}; canonical fields are {list(CANONICAL_FIELDS)}")
        if len(set(fields)) != len(fields):
            raise ValueError(f"text fields repeat: {list(fields)}")
        return fields

    def render(self, values: Mapping[str, Any]) -> str:
        """Text for one product from its canonical field values."""
        parts = (normalize_value(values.get(name)) for name in self.fields)
        return self.separator.join(p for p in parts if p)

    def describe(self) -> str:
        """Human-readable form recorded in the manifest, e.g. '{title} | {tags}'."""
        return self.separator.join("{" + f + "}" for f in self.fields)

"""The text template (`stream_app.core.text.TextTemplate`): renders a product as training rendered it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_app.core.text import TextTemplate

TEMPLATE = TextTemplate()


def test_template_renders_like_training() -> None:
    rendered = TEMPLATE.render({"title": " Caneca  ", "tags": ["caneca", "personalizada"]})
    assert rendered == "Caneca | caneca personalizada"
    assert TEMPLATE.render({"title": "Caneca", "tags": None}) == "Caneca"
    assert TEMPLATE.render({"title": "Caneca", "tags": float("nan")}) == "Caneca"
    assert TEMPLATE.describe() == "{title} | {tags}"


def test_template_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="price"):
        TextTemplate(fields=("title", "price"))


@given(st.dictionaries(st.sampled_from(["title", "tags", "description", "other"]), st.text(max_size=20)))
def test_template_render_is_total(values: dict) -> None:
    text = TEMPLATE.render(values)
    assert text == text.strip() and "  " not in text.replace(" | ", "|")

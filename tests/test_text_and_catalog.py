"""Text template, catalog reading, label specs and grouped splits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from export.catalog import CatalogError, LabelSpec, label_vocabulary, load_examples, read_table
from stream_app.core.splits import SplitSpec, side_of, split_indices
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


def _write(tmp_path: Path, frame: pd.DataFrame, name: str) -> Path:
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("name", ["c.csv", "c.jsonl", "c.parquet"])
def test_reads_every_format_and_counts_skips(tmp_path: Path, name: str) -> None:
    frame = pd.DataFrame({
        "product_id": [1, 2, 3, 4],
        "title": ["Caneca", "", "Vaso", "Laço"],
        "concatenated_tags": ["caneca", "", "vaso flor", None],
        "category": ["Decoração", "Bebê", None, "Bebê"],
    })
    examples = load_examples(_write(tmp_path, frame, name), {"title": "title", "tags": "concatenated_tags"}, TEMPLATE,
                             LabelSpec())
    assert examples.texts == ["Caneca | caneca", "Laço"]
    assert examples.label_sets == [("Decoração",), ("Bebê",)]
    assert examples.skipped == {"no_text": 1, "no_label": 1}


def test_multi_label_column_forms(tmp_path: Path) -> None:
    frame = pd.DataFrame({"title": ["a", "b", "c"], "cats": ["x|y", '["y", "z"]', "z"]})
    examples = load_examples(_write(tmp_path, frame, "m.csv"), {"title": "title"}, TEMPLATE,
                             LabelSpec("multi", ("cats",)), id_column=None)
    assert examples.label_sets == [("x", "y"), ("y", "z"), ("z",)]


def test_hierarchy_labels_are_path_prefixes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"title": ["shirt", "watch"], "m": ["Apparel", "Accessories"], "s": ["Topwear", None],
                          "a": ["Shirts", "Watches"]})
    examples = load_examples(_write(tmp_path, frame, "h.csv"), {"title": "title"}, TEMPLATE,
                             LabelSpec("hierarchy", ("m", "s", "a")), id_column=None)
    assert examples.label_sets == [("Apparel", "Apparel/Topwear", "Apparel/Topwear/Shirts"), ("Accessories",)]


def test_misspelt_column_is_named_with_suggestion(tmp_path: Path) -> None:
    frame = pd.DataFrame({"title": ["a"], "category": ["x"]})
    with pytest.raises(CatalogError, match="'categry' not found; did you mean \\['category'\\]"):
        load_examples(_write(tmp_path, frame, "x.csv"), {"title": "title"}, TEMPLATE, LabelSpec("single", ("categry",)),
                      id_column=None)


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file"):
        read_table(tmp_path / "missing.parquet")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CatalogError, match=r"empty\.csv: the file is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "x.xlsx").write_text("a")
    with pytest.raises(CatalogError, match="unsupported file type"):
        read_table(tmp_path / "x.xlsx")


def test_no_usable_labels_and_single_category(tmp_path: Path) -> None:
    frame = pd.DataFrame({"title": ["a", "b"], "category": [None, None]})
    with pytest.raises(CatalogError, match="no usable rows"):
        load_examples(_write(tmp_path, frame, "n.csv"), {"title": "title"}, TEMPLATE, LabelSpec(), id_column=None)
    with pytest.raises(CatalogError, match="1 distinct label"):
        label_vocabulary([("x",), ("x",)], "one.csv")


def test_wrong_label_type_names_the_row(tmp_path: Path) -> None:
    frame = pd.DataFrame({"title": ["a", "b"], "category": [["x"], 3.5]})
    with pytest.raises(CatalogError, match="row 0: label column 'category'"):
        load_examples(_write(tmp_path, frame, "w.jsonl"), {"title": "title"}, TEMPLATE, LabelSpec(), id_column=None)


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=50), st.integers(0, 100))
def test_split_is_grouped_and_deterministic(groups: list[str], seed: int) -> None:
    spec = SplitSpec(seed=seed)
    sides = split_indices(groups, spec)
    assert sorted(i for rows in sides.values() for i in rows) == list(range(len(groups)))
    for side, rows in sides.items():
        assert all(side_of(groups[i], spec) == side for i in rows)  # a product never sits on two sides
    assert split_indices(list(reversed(groups)), spec)["test"] == sorted(len(groups) - 1 - i for i in sides["test"])

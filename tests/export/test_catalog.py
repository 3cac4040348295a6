"""Catalog rows into training examples (`export.catalog`): column mapping, label specs, skipped rows.

Reading the files themselves (`stream_app.catalog.read_table`) is in tests/test_catalog.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from export.catalog import CatalogError, LabelSpec, label_vocabulary, load_examples
from stream_app.core.text import TextTemplate

TEMPLATE = TextTemplate()


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

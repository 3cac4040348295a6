"""Reading a product catalog into texts and label sets.

Contract: `read_table` accepts Parquet, CSV or JSON Lines (by suffix) and raises `CatalogError`
naming the file; `load_examples` maps catalog columns onto the canonical text fields, builds label
sets in one of three ways (one category per row, several per row, or hierarchy columns turned into
path labels), skips rows with no text or no label and counts them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

# The reader and its error are shared with the replay tool (stream_app must not import export).
from stream_app.catalog import ELO7_COLUMNS, ELO7_LABEL_COLUMN, CatalogError, read_table
from stream_app.core.text import CANONICAL_FIELDS, TextTemplate


@dataclass(frozen=True)
class LabelSpec:
    """How labels are read.

    kind="single": `columns[0]` holds one category per row.
    kind="multi": `columns[0]` holds several: a list, a JSON list string, or a string split on `delimiter`.
    kind="hierarchy": `columns` are levels (e.g. masterCategory, subCategory, articleType); a row gets
    every path prefix as a label: "A", "A/B", "A/B/C".
    """

    kind: Literal["single", "multi", "hierarchy"] = "single"
    columns: tuple[str, ...] = (ELO7_LABEL_COLUMN,)
    delimiter: str = "|"
    path_separator: str = "/"

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "columns": list(self.columns), "delimiter": self.delimiter,
                "path_separator": self.path_separator}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LabelSpec:
        return cls(kind=data["kind"], columns=tuple(data["columns"]), delimiter=str(data["delimiter"]),
                   path_separator=str(data["path_separator"]))


# The text part of Elo7's column mapping (title, tags): the default text columns of a build.
ELO7_TEXT_COLUMNS = {name: column for name, column in ELO7_COLUMNS.items() if name in CANONICAL_FIELDS}


@dataclass
class Examples:
    """Usable rows of a catalog, aligned lists."""

    ids: list[str]
    texts: list[str]
    label_sets: list[tuple[str, ...]]
    row_numbers: list[int]
    skipped: dict[str, int] = field(default_factory=dict)
    total_rows: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int]) -> Examples:
        return Examples(
            ids=[self.ids[i] for i in indices],
            texts=[self.texts[i] for i in indices],
            label_sets=[self.label_sets[i] for i in indices],
            row_numbers=[self.row_numbers[i] for i in indices],
            skipped=dict(self.skipped),
            total_rows=self.total_rows,
        )


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and not value.strip()


def _labels_of(value: object, spec: LabelSpec, row: int) -> tuple[str, ...]:
    if _missing(value):
        return ()
    if spec.kind == "single":
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise CatalogError(f"row {row}: label column {spec.columns[0]!r} holds {type(value).__name__}, "
                               "expected text")
        return (str(value).strip(),)
    # multi
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise CatalogError(f"row {row}: label column {spec.columns[0]!r} is not a valid JSON list: "
                                   f"{exc}") from exc
        else:
            value = re.split(re.escape(spec.delimiter), text)
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise CatalogError(f"row {row}: label column {spec.columns[0]!r} holds {type(value).__name__}, expected a list")
    labels = [str(v).strip() for v in value if not _missing(v)]
    return tuple(dict.fromkeys(labels))


def _hierarchy_labels(values: list[object], spec: LabelSpec) -> tuple[str, ...]:
    labels: list[str] = []
    path: list[str] = []
    for value in values:
        if _missing(value):
            break  # a gap ends the path: deeper levels without a parent are meaningless
        path.append(str(value).strip())
        labels.append(spec.path_separator.join(path))
    return tuple(labels)


def check_columns(frame: pd.DataFrame, wanted: dict[str, str], source: Path) -> None:
    """Raise naming each wanted column that the frame lacks, with the closest existing names."""
    import difflib

    for role, column in wanted.items():
        if column not in frame.columns:
            close = difflib.get_close_matches(column, [str(c) for c in frame.columns], n=3)
            hint = f"; did you mean {close}?" if close else f"; columns are {list(frame.columns)}"
            raise CatalogError(f"{source}: {role} column {column!r} not found{hint}")


def load_examples(
    path: Path,
    text_columns: dict[str, str],
    template: TextTemplate,
    label_spec: LabelSpec | None,
    id_column: str | None = "product_id",
    frame: pd.DataFrame | None = None,
) -> Examples:
    """Read usable rows. With `label_spec=None` labels are not read (serving-style input).

    `text_columns` maps canonical field -> catalog column. Rows whose rendered text is empty or whose
    label set is empty are skipped and counted under `skipped`.
    """
    path = Path(path)
    frame = read_table(path) if frame is None else frame
    wanted = {f"text field {k!r}": v for k, v in text_columns.items()}
    if label_spec is not None:
        wanted.update({f"label ({label_spec.kind})": c for c in label_spec.columns})
    if id_column:
        wanted["product id"] = id_column
    check_columns(frame, wanted, path)
    for canonical in text_columns:
        if canonical not in template.fields:
            raise CatalogError(f"text field {canonical!r} is mapped but not in the template {template.describe()}")

    records = frame.to_dict("records")
    examples = Examples([], [], [], [], {"no_text": 0, "no_label": 0}, len(records))
    for row, record in enumerate(records):
        text = template.render({k: record.get(col) for k, col in text_columns.items()})
        if not text:
            examples.skipped["no_text"] += 1
            continue
        if label_spec is None:
            labels: tuple[str, ...] = ()
        elif label_spec.kind == "hierarchy":
            labels = _hierarchy_labels([record.get(c) for c in label_spec.columns], label_spec)
        else:
            labels = _labels_of(record.get(label_spec.columns[0]), label_spec, row)
        if label_spec is not None and not labels:
            examples.skipped["no_label"] += 1
            continue
        raw_id = record.get(id_column) if id_column else None
        examples.ids.append(str(row) if _missing(raw_id) else str(raw_id))
        examples.texts.append(text)
        examples.label_sets.append(labels)
        examples.row_numbers.append(row)
    if label_spec is not None and not examples.texts:
        raise CatalogError(
            f"{path}: no usable rows (skipped {examples.skipped['no_text']} without text, "
            f"{examples.skipped['no_label']} without a label in {list(label_spec.columns)})"
        )
    return examples


def label_vocabulary(label_sets: list[tuple[str, ...]], source: str) -> list[str]:
    """Sorted label names; at least two are needed to learn anything."""
    labels = sorted({label for labels in label_sets for label in labels})
    if len(labels) < 2:
        raise CatalogError(f"{source}: found {len(labels)} distinct label(s) {labels}; at least 2 are needed")
    return labels

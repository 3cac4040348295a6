"""The one catalog reader: a Parquet, CSV or JSON Lines file into a pandas DataFrame.

Shared by the replay tool (``stream_app.tools.produce``) and the model build (``export.catalog``), so a
catalog the model was trained on can always be replayed. Pure pandas/pyarrow: no torch, no ``export``.

Contract:

* The format comes from the suffix: ``.parquet`` / ``.pq``, ``.csv``, ``.jsonl`` / ``.ndjson`` / ``.json``
  (JSON Lines). CSV cells are read as strings (an empty cell is missing); JSON keeps its types.
* ``limit`` keeps the first N rows (CSV and JSON Lines stop reading there).
* Every failure raises ``CatalogError`` whose message starts with the path: missing file, unsupported
  suffix, empty file, unreadable content, no rows.

``ELO7_COLUMNS`` and ``ELO7_LABEL_COLUMN`` name the Elo7 catalog's columns: the defaults of the replay
tool's column mapping and of the model build's text and label columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import pandas as pd

# Suffix -> reader; ".json" is read as JSON Lines, like the catalogs the model is built from.
READERS = {
    ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}

# Product event field -> the Elo7 catalog column that holds it (Elo7 has no description column).
ELO7_COLUMNS: Mapping[str, str] = MappingProxyType({
    "product_id": "product_id", "title": "title", "tags": "concatenated_tags", "event_time": "creation_date",
})
# The Elo7 column with each product's one category (the label).
ELO7_LABEL_COLUMN = "category"


class CatalogError(ValueError):
    """Bad catalog input; the message names the file, column or row."""


def read_table(path: Path, limit: int | None = None) -> pd.DataFrame:
    """Read a Parquet, CSV or JSON Lines file (at most ``limit`` rows). Errors name the file."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise CatalogError(f"{path}: unsupported file type {path.suffix!r} (use .parquet, .csv or .jsonl)")
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
            frame = frame.head(limit) if limit is not None else frame
        elif kind == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], nrows=limit)
        else:
            frame = pd.read_json(path, lines=True, dtype=False, nrows=limit)
    except pd.errors.EmptyDataError as exc:
        raise CatalogError(f"{path}: the file is empty") from exc
    except (ValueError, OSError) as exc:  # pandas' ParserError is a ValueError
        raise CatalogError(f"{path}: cannot read as {kind}: {exc}") from exc
    if frame.empty:
        raise CatalogError(f"{path}: the file has no rows")
    return frame


def read_joined(path: Path, other: Path, limit: int | None = None) -> pd.DataFrame:
    """``path`` and the row-aligned ``other`` side by side (row i with row i); ``path``'s columns win a clash.

    Raises ``CatalogError`` when the two files do not have the same number of rows (within ``limit``).
    """
    frame = read_table(path, limit)
    extra = read_table(other, limit)
    if len(extra) != len(frame):
        raise CatalogError(
            f"{other} has {len(extra)} rows but {path} has {len(frame)}: a join by position needs row-aligned files"
        )
    extra = extra.drop(columns=[c for c in extra.columns if c in frame.columns])
    return pd.concat([frame.reset_index(drop=True), extra.reset_index(drop=True)], axis=1)

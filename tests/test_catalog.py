"""The one catalog reader (`stream_app.catalog.read_table`): every failure names the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.catalog import CatalogError, read_table


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file"):
        read_table(tmp_path / "missing.parquet")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CatalogError, match=r"empty\.csv: the file is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "x.xlsx").write_text("a")
    with pytest.raises(CatalogError, match="unsupported file type"):
        read_table(tmp_path / "x.xlsx")

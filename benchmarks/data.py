"""Elo7 products for the benchmarks: the same sample feeds the model-only, end-to-end and naive runs.

Contract: `load_products(n, seed)` returns ``n`` distinct products (distinct ``product_id``, non-empty
title) sampled reproducibly from ``$DATASETS_DIR/elo7/products.parquet``. `event_bytes` is the JSON
the worker consumes (docs/worker.md, input contract); `render_texts` gives the exact model texts
(`TextTemplate.render` of title and tags), so every stage sees the same inputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stream_app.core.text import TextTemplate

ROOT = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    """``$DATASETS_DIR`` (a relative value is taken relative to the repository root), default ../shared/datasets."""
    path = Path(os.environ.get("DATASETS_DIR", "../shared/datasets"))
    return path if path.is_absolute() else (ROOT / path).resolve()


def elo7_path() -> Path:
    return datasets_dir() / "elo7" / "products.parquet"


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    title: str
    tags: str  # space-separated tags, whitespace collapsed (what ProductEvent would turn it into)


def load_products(n: int, seed: int = 7, path: Path | None = None) -> list[Product]:
    """``n`` distinct Elo7 products in random (seeded) order. Raises ValueError if the catalog has fewer."""
    source = path or elo7_path()
    if not source.is_file():
        raise FileNotFoundError(f"Elo7 catalog not found at {source} (set DATASETS_DIR)")
    frame = pd.read_parquet(source, columns=["product_id", "title", "concatenated_tags"])
    frame = frame[frame["title"].fillna("").str.strip() != ""]
    # The catalog has one row per search click: the same product appears several times.
    frame = frame.drop_duplicates("product_id")
    if n > len(frame):
        raise ValueError(f"asked for {n} products but {source} has {len(frame)} distinct ones with a title")
    frame = frame.sample(n=n, random_state=seed)
    return [
        Product(str(pid), " ".join(str(title).split()), " ".join(tags.split()) if isinstance(tags, str) else "")
        for pid, title, tags in zip(frame["product_id"], frame["title"], frame["concatenated_tags"], strict=True)
    ]


def render_texts(template: TextTemplate, products: Sequence[Product]) -> list[str]:
    """The exact texts the worker feeds the model for these products."""
    return [template.render({"title": p.title, "tags": p.tags}) for p in products]


def event_bytes(product: Product, product_id: str | None = None, event_time_ms: int | None = None) -> bytes:
    """One ``products`` message value. ``event_time`` is epoch milliseconds when given, else absent."""
    event: dict[str, Any] = {"product_id": product_id or product.product_id, "title": product.title,
                             "tags": product.tags}
    if event_time_ms is not None:
        event["event_time"] = event_time_ms
    return json.dumps(event, ensure_ascii=False).encode()

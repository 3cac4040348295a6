"""Messages of the ``drift`` topic (pydantic v2). ``stream_app.messages`` re-exports them.

Two alert types share a ``window`` description and the ``consecutive_windows`` / ``recommendation``
logic: ``investigate`` on the first drifting window, ``retrain`` once ``retrain_after`` consecutive
windows drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Recommendation = Literal["investigate", "retrain"]


class _Frozen(BaseModel):
    # Frozen; unknown fields are ignored so that older consumers read newer alerts.
    model_config = ConfigDict(frozen=True)


class PartitionRange(_Frozen):
    """Offsets of one partition covered by the window (inclusive)."""

    partition: int = Field(ge=0)
    start_offset: int = Field(ge=0)
    end_offset: int = Field(ge=0)
    count: int = Field(ge=1, description="messages of this partition in the window")


class AlertWindow(_Frozen):
    """Which messages the window covered and when."""

    partitions: list[PartitionRange] = Field(description="per partition, sorted by partition")
    first_event_time: datetime | None = Field(description="earliest event_time in the window, if any")
    last_event_time: datetime | None = Field(description="latest event_time in the window, if any")
    first_processed_at: datetime
    last_processed_at: datetime


class MovedCentroid(_Frozen):
    """A centroid that attracted more of the window's messages than in the reference."""

    centroid: int = Field(ge=0)
    count: int = Field(ge=0)
    expected_count: float = Field(ge=0)
    share: float = Field(ge=0, le=1)
    reference_share: float = Field(ge=0, le=1)


class CategoryCount(_Frozen):
    """Observed vs reference frequency of one top category in the window."""

    name: str
    count: int = Field(ge=0)
    expected_count: float = Field(ge=0)
    share: float = Field(ge=0, le=1)
    reference_share: float = Field(ge=0, le=1)


class EmbeddingDriftAlert(_Frozen):
    """Too many embeddings far from every centroid: outliers >= critical_count in a window."""

    type: Literal["embedding_drift"] = "embedding_drift"
    window: AlertWindow
    n: int = Field(ge=1, description="observations in the window when the alert fired")
    outliers: int = Field(ge=0)
    expected: float = Field(ge=0, description="n * p0")
    critical_count: int = Field(ge=1, description="c: outlier count that decides drift for the window size")
    p_value: float = Field(ge=0, le=1, description="P(Binomial(n, p0) >= outliers)")
    top_moved_centroids: list[MovedCentroid]
    outlier_sample: list[str] = Field(description="product_ids of some outliers of the window")
    model_version: str
    consecutive_windows: int = Field(ge=1)
    recommendation: Recommendation
    created_at: datetime


class CategoryMixAlert(_Frozen):
    """The mix of predicted top categories departs from the reference (chi-square goodness of fit)."""

    type: Literal["category_mix"] = "category_mix"
    window: AlertWindow
    n: int = Field(ge=1)
    chi_square: float = Field(ge=0)
    degrees_of_freedom: int = Field(ge=1)
    p_value: float = Field(ge=0, le=1)
    categories: list[CategoryCount] = Field(description="every label, largest |Pearson residual| first")
    model_version: str
    consecutive_windows: int = Field(ge=1)
    recommendation: Recommendation
    created_at: datetime


DriftAlert = EmbeddingDriftAlert | CategoryMixAlert

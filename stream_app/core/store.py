"""Bundle store: immutable bundle versions on disk and the pointer naming the one to serve.

Pure: no Kafka, no asyncio, no torch. The worker imports it; `python -m export promote | rollback |
shadow | versions` write through it.

Layout of a store directory (``STREAM_BUNDLE_STORE``)::

    ROOT/<bundle_version>/   one complete bundle (manifest.json + the files it lists), written once
    ROOT/serving.json        the pointer: {"version", "previous", "promoted_at", "sequence", "action", ...}
    ROOT/shadow.json         optional: {"version", "set_at", "sequence"} a candidate scored beside serving
    ROOT/.lock               writers' lock (flock); readers never take it
    ROOT/.incoming-*         copies in progress (ignored by readers; left over only by a crash)

Contract (what the worker's hot swap may rely on):

- **Versions are immutable.** `add` copies a bundle into a hidden temporary directory, verifies the
  copy with `Bundle.load`, and renames it to ``ROOT/<bundle_version>``; a version directory that
  exists is complete. The store never rewrites or deletes a version directory that a pointer names
  (serving, its history, shadow); there is no garbage collection yet.
- **Pointers are replaced atomically**: written to a temporary file in ROOT, fsynced, then
  `os.replace`d over the old one, and ROOT is fsynced. A reader sees the old pointer or the new one,
  never a torn file. Clearing the shadow deletes ``shadow.json`` (also atomic).
- **A pointer names only verified versions**: `promote` and `rollback` run `Bundle.load` (every
  checksum) on the target before writing the pointer, and refuse, naming the file, otherwise. The
  worker must still `Bundle.load` the new version itself before swapping (disks rot, people copy
  files by hand) and keep serving the old one when that fails.
- **Change check**: `pointer_stamp()` is a short string that changes whenever ``serving.json`` or
  ``shadow.json`` is written or removed (a digest of both files' bytes; the files are a few hundred
  bytes, so the check costs two small reads; every write carries a new ``sequence``, so even
  promoting the same version again changes it). Poll it every few seconds; on a change, call
  `read_pointer()` (and `read_shadow()`) and swap only if the version differs from the one served.
  `None` versions mean "nothing promoted yet" / "no shadow".
- ``serving.json`` fields: ``version`` (the bundle_version to serve), ``previous`` (versions that
  served before it, most recent first; `rollback` goes to ``previous[0]`` and pops it),
  ``promoted_at`` (UTC ISO-8601), ``sequence`` (increases by one on every write), ``action``
  (``promote`` or ``rollback``).
- Writers (`add`, `promote`, `rollback`, `set_shadow`, `clear_shadow`) serialize on ``ROOT/.lock``;
  they are for one operator or CI job at a time, the lock only makes two at once safe.

Without a store (``STREAM_BUNDLE_STORE`` unset) `resolve_bundle_path` returns ``STREAM_BUNDLE_PATH``
as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream_app.core.bundle import MANIFEST, Bundle, BundleError

SERVING_FILE = "serving.json"
SHADOW_FILE = "shadow.json"
LOCK_FILE = ".lock"
INCOMING_PREFIX = ".incoming-"
HISTORY_LIMIT = 50
STORE_ENV = "STREAM_BUNDLE_STORE"
PATH_ENV = "STREAM_BUNDLE_PATH"
DEFAULT_BUNDLE_PATH = Path("models/default")
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class StoreError(Exception):
    """A store operation that cannot be done; the message names the file or version at fault."""


@dataclass(frozen=True)
class Pointer:
    """The content of ``serving.json``."""

    version: str
    previous: list[str] = field(default_factory=list)
    promoted_at: str = ""
    sequence: int = 0
    action: str = "promote"

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "previous": list(self.previous), "promoted_at": self.promoted_at,
                "sequence": self.sequence, "action": self.action}


@dataclass(frozen=True)
class Shadow:
    """The content of ``shadow.json``."""

    version: str
    set_at: str = ""
    sequence: int = 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write `payload` to `path` so that a reader sees the old file or the new one, never a mix."""
    data = (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _copy_synced(source: Path, dest: Path) -> None:
    with source.open("rb") as src, dest.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


class BundleStore:
    """A directory of bundle versions plus the serving (and shadow) pointer. See the module docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- reading (no lock; safe while writers run) ---------------------------------------------

    @property
    def serving_file(self) -> Path:
        return self.root / SERVING_FILE

    @property
    def shadow_file(self) -> Path:
        return self.root / SHADOW_FILE

    def version_path(self, version: str) -> Path:
        """ROOT/<version>; raises StoreError for a name that is not a plain version name."""
        if not isinstance(version, str) or not _VERSION_NAME.fullmatch(version):
            raise StoreError(f"{version!r} is not a bundle version name (expected e.g. 944a4eac02196e31)")
        return self.root / version

    def versions(self) -> list[str]:
        """Complete versions in the store (directories holding a manifest), oldest first by created_at."""
        if not self.root.is_dir():
            return []
        found: list[tuple[str, str]] = []
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or not entry.is_dir() or not _VERSION_NAME.fullmatch(entry.name):
                continue
            manifest = entry / MANIFEST
            if not manifest.is_file():
                continue
            try:
                created = str(json.loads(manifest.read_text(encoding="utf-8")).get("created_at", ""))
            except (OSError, ValueError, AttributeError):
                created = ""
            found.append((created, entry.name))
        return [name for _, name in sorted(found)]

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({exc})") from exc
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise StoreError(f"{path}: expected a JSON object")
        return data

    def read_pointer(self) -> Pointer | None:
        """The serving pointer, or None when nothing was promoted yet."""
        data = self._read_json(self.serving_file)
        if data is None:
            return None
        version = data.get("version")
        previous = data.get("previous", [])
        if not isinstance(version, str) or not isinstance(previous, list):
            raise StoreError(f"{self.serving_file}: expected {{'version': str, 'previous': list, ...}}, got {data}")
        return Pointer(version=version, previous=[str(v) for v in previous],
                       promoted_at=str(data.get("promoted_at", "")), sequence=int(data.get("sequence", 0)),
                       action=str(data.get("action", "promote")))

    def read_shadow(self) -> Shadow | None:
        data = self._read_json(self.shadow_file)
        if data is None or data.get("version") is None:
            return None
        if not isinstance(data["version"], str):
            raise StoreError(f"{self.shadow_file}: 'version' must be a string, got {data['version']!r}")
        return Shadow(version=data["version"], set_at=str(data.get("set_at", "")),
                      sequence=int(data.get("sequence", 0)))

    def serving_version(self) -> str | None:
        pointer = self.read_pointer()
        return None if pointer is None else pointer.version

    def serving_path(self) -> Path | None:
        """Directory of the serving version (None when nothing was promoted yet)."""
        version = self.serving_version()
        return None if version is None else self.version_path(version)

    def shadow_version(self) -> str | None:
        shadow = self.read_shadow()
        return None if shadow is None else shadow.version

    def shadow_path(self) -> Path | None:
        version = self.shadow_version()
        return None if version is None else self.version_path(version)

    def pointer_stamp(self) -> str:
        """Changes whenever serving.json or shadow.json is written or removed (see the module docstring)."""
        parts = []
        for path in (self.serving_file, self.shadow_file):
            try:
                parts.append(hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest())
            except FileNotFoundError:
                parts.append("-")
            except OSError as exc:
                raise StoreError(f"{path}: cannot read ({exc})") from exc
        return ":".join(parts)

    def load(self, version: str) -> Bundle:
        """`Bundle.load` of a stored version; StoreError naming the file when it is missing or corrupt."""
        path = self.version_path(version)
        if not path.is_dir():
            known = self.versions()
            raise StoreError(f"{path}: version {version} is not in the store {self.root} "
                             f"(versions: {', '.join(known) if known else 'none'})")
        try:
            bundle = Bundle.load(path)
        except BundleError as exc:
            raise StoreError(f"version {version} is not usable: {exc}") from exc
        if bundle.version != version:
            raise StoreError(
                f"{path / MANIFEST}: bundle_version {bundle.version} does not match its directory name {version}"
            )
        return bundle

    # --- writing (under the lock) ----------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as handle:
            try:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            except ImportError:  # not POSIX: no inter-process lock
                pass
            yield

    def add(self, bundle_dir: str | Path) -> str:
        """Copy a verified bundle in as ROOT/<bundle_version> (atomic, idempotent); returns the version.

        Already present and intact: nothing is copied. Present but corrupt: replaced by the good copy.
        """
        source = Path(bundle_dir)
        try:
            bundle = Bundle.load(source)
        except BundleError as exc:
            raise StoreError(f"cannot add {source}: {exc}") from exc
        version = bundle.version
        dest = self.version_path(version)
        with self._locked():
            if dest.exists() and source.resolve() == dest.resolve():
                return version
            if dest.is_dir():
                try:
                    self.load(version)
                    return version  # idempotent: the same content hash is already here, intact
                except StoreError:
                    pass  # corrupt copy: replaced below
            tmp = Path(tempfile.mkdtemp(prefix=f"{INCOMING_PREFIX}{version}-", dir=self.root))
            try:
                for name in [MANIFEST, *bundle.manifest.files]:
                    _copy_synced(source / name, tmp / name)
                os.chmod(tmp, 0o755)
                try:
                    Bundle.load(tmp)
                except BundleError as exc:
                    raise StoreError(f"copy of {source} into {self.root} does not verify: {exc}") from exc
                _fsync_dir(tmp)
                if dest.exists():  # a corrupt earlier copy: move it aside, then put the good one in
                    trash = Path(tempfile.mkdtemp(prefix=f".corrupt-{version}-", dir=self.root))
                    dest.rename(trash / version)
                    tmp.rename(dest)
                    shutil.rmtree(trash, ignore_errors=True)
                else:
                    tmp.rename(dest)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            _fsync_dir(self.root)
        return version

    def promote(self, version: str) -> Pointer:
        """Point serving at `version` after verifying it; the old one goes to the front of `previous`."""
        with self._locked():
            self.load(version)  # refuses a missing or corrupt bundle, naming the file
            old = self.read_pointer()
            if old is not None and old.version == version:
                return old  # already serving: nothing to write
            previous = [] if old is None else [old.version, *old.previous]
            pointer = Pointer(version=version, previous=previous[:HISTORY_LIMIT], promoted_at=_now(),
                              sequence=(0 if old is None else old.sequence) + 1, action="promote")
            write_json_atomic(self.serving_file, pointer.to_json())
            shadow = self.read_shadow()
            if shadow is not None and shadow.version == version:
                self._remove(self.shadow_file)  # the candidate is serving now
            return pointer

    def rollback(self) -> Pointer:
        """Serve the previous version again (verified first); pops it from the history."""
        with self._locked():
            old = self.read_pointer()
            if old is None:
                raise StoreError(f"{self.serving_file}: nothing is serving in {self.root}, nothing to roll back")
            if not old.previous:
                raise StoreError(f"{self.serving_file}: version {old.version} has no previous version to roll back to")
            target = old.previous[0]
            self.load(target)
            pointer = Pointer(version=target, previous=old.previous[1:], promoted_at=_now(), sequence=old.sequence + 1,
                              action="rollback")
            write_json_atomic(self.serving_file, pointer.to_json())
            return pointer

    def set_shadow(self, version: str) -> Shadow:
        """Name a verified version to be scored beside the serving one (the worker decides what to do with it)."""
        with self._locked():
            self.load(version)
            old = self.read_shadow()
            shadow = Shadow(version=version, set_at=_now(), sequence=(0 if old is None else old.sequence) + 1)
            write_json_atomic(self.shadow_file, {"version": shadow.version, "set_at": shadow.set_at,
                                                 "sequence": shadow.sequence})
            return shadow

    def clear_shadow(self) -> bool:
        """Remove the shadow pointer; False when there was none."""
        with self._locked():
            return self._remove(self.shadow_file)

    def _remove(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.root)
        return True

    def status(self) -> dict[str, Any]:
        """Versions, serving pointer and shadow, as plain data (for `python -m export versions`)."""
        pointer = self.read_pointer()
        return {
            "store": str(self.root),
            "versions": self.versions(),
            "serving": None if pointer is None else pointer.to_json(),
            "shadow": self.shadow_version(),
            "stamp": self.pointer_stamp(),
        }


def resolve_bundle_path(environ: Mapping[str, str] | None = None) -> Path:
    """The bundle directory to serve: the store's serving version when ``STREAM_BUNDLE_STORE`` is set
    (StoreError when nothing was promoted), else ``STREAM_BUNDLE_PATH`` (default models/default)."""
    env = os.environ if environ is None else environ
    store_dir = env.get(STORE_ENV, "").strip()
    if store_dir:
        store = BundleStore(store_dir)
        path = store.serving_path()
        if path is None:
            raise StoreError(f"{STORE_ENV}={store_dir}: {store.serving_file} is missing; promote a version first "
                             f"(python -m export promote --store {store_dir} --from BUNDLE)")
        return path
    return Path(env.get(PATH_ENV, "").strip() or DEFAULT_BUNDLE_PATH)


__all__ = [
    "SERVING_FILE",
    "SHADOW_FILE",
    "STORE_ENV",
    "BundleStore",
    "Pointer",
    "Shadow",
    "StoreError",
    "resolve_bundle_path",
    "write_json_atomic",
]

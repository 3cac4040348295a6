"""The bundle store: atomic pointer, verified promotion, rollback history, idempotent add, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from stream_app.core.bundle import Bundle
from stream_app.core.store import BundleStore, StoreError, resolve_bundle_path, write_json_atomic
from tests.support.export_cli import invoke_export, run_export


def output_of(result: subprocess.CompletedProcess) -> str:
    return " ".join((result.stdout + result.stderr).split())  # rich may wrap lines


def versions_of(variants: list[Path]) -> list[str]:
    return [Bundle.load(v).version for v in variants]


def test_promote_and_rollback_keep_a_history(tmp_path: Path, variants: list[Path]) -> None:
    store = BundleStore(tmp_path / "store")
    v1, v2, v3 = (store.add(v) for v in variants)
    assert set(store.versions()) == {v1, v2, v3}
    assert store.serving_version() is None and store.serving_path() is None
    with pytest.raises(StoreError, match="nothing is serving"):
        store.rollback()

    for version in (v1, v2, v3):
        store.promote(version)
    pointer = store.read_pointer()
    assert (pointer.version, pointer.previous, pointer.sequence, pointer.action) == (v3, [v2, v1], 3, "promote")
    assert store.serving_path() == tmp_path / "store" / v3
    assert Bundle.load(store.serving_path()).version == v3

    assert store.rollback().version == v2
    assert store.read_pointer().previous == [v1]
    assert store.rollback().version == v1
    pointer = store.read_pointer()
    assert (pointer.previous, pointer.action, pointer.sequence) == ([], "rollback", 5)
    with pytest.raises(StoreError, match=f"{v1} has no previous version"):
        store.rollback()

    # promoting what already serves writes nothing
    stamp = store.pointer_stamp()
    store.promote(v1)
    assert store.pointer_stamp() == stamp
    # the pointer file is plain JSON with the documented fields
    assert set(json.loads(store.serving_file.read_text())) >= {"version", "previous", "promoted_at", "sequence"}


def test_add_is_atomic_and_idempotent(tmp_path: Path, variants: list[Path]) -> None:
    store = BundleStore(tmp_path / "store")
    version = store.add(variants[0])
    folder = store.version_path(version)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert store.add(variants[0]) == version  # again: nothing copied
    assert store.add(folder) == version  # from inside the store itself
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert [p.name for p in store.root.iterdir() if p.is_dir()] == [version]  # no temporary folders left
    assert Bundle.load(folder).version == version
    # a half-copied folder (a crash before the rename) is not a version
    (store.root / f".incoming-{version}-x").mkdir()
    assert store.versions() == [version]


def test_a_corrupt_bundle_is_refused_naming_the_file(tmp_path: Path, variants: list[Path], flip_byte) -> None:
    store = BundleStore(tmp_path / "store")
    good, bad = store.add(variants[0]), store.add(variants[1])
    store.promote(good)
    stamp = store.pointer_stamp()
    flip_byte(store.version_path(bad) / "model.int8.onnx")

    with pytest.raises(StoreError, match=r"model\.int8\.onnx"):
        store.promote(bad)
    with pytest.raises(StoreError, match=r"model\.int8\.onnx"):
        store.set_shadow(bad)
    assert store.serving_version() == good and store.pointer_stamp() == stamp  # pointer untouched

    result = run_export("promote", "--store", str(store.root), "--version", bad)
    assert result.returncode != 0 and "model.int8.onnx" in output_of(result) and bad in output_of(result)
    assert store.serving_version() == good

    # adding the intact bundle again repairs the corrupt copy; then it promotes
    assert store.add(variants[1]) == bad
    store.promote(bad)
    assert store.serving_version() == bad

    # rollback verifies its target too
    flip_byte(store.version_path(good) / "tokenizer.json", 10)
    with pytest.raises(StoreError, match=r"tokenizer\.json"):
        store.rollback()
    assert store.serving_version() == bad


def test_a_corrupt_source_is_not_added(tmp_path: Path, variants: list[Path], flip_byte) -> None:
    source = tmp_path / "copy"
    source.mkdir()
    for path in variants[2].iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    flip_byte(source / "centroids.faiss", 100)
    result = invoke_export("promote", "--store", str(tmp_path / "store"), "--from", str(source))
    assert result.returncode != 0 and "centroids.faiss" in output_of(result)
    assert BundleStore(tmp_path / "store").versions() == []


def test_missing_version_and_bad_names_are_named(tmp_path: Path, variants: list[Path]) -> None:
    store = BundleStore(tmp_path / "store")
    version = store.add(variants[0])
    with pytest.raises(StoreError, match=f"0123456789abcdef is not in the store.*{version}"):
        store.promote("0123456789abcdef")
    with pytest.raises(StoreError, match="not a bundle version name"):
        store.promote("../escape")


def test_cli_promote_from_rollback_and_shadow(tmp_path: Path, variants: list[Path]) -> None:
    root = tmp_path / "store"
    v1, v2 = versions_of(variants[:2])
    assert invoke_export("promote", "--store", str(root), "--from", str(variants[0])).returncode == 0
    result = invoke_export("promote", "--store", str(root), "--from", str(variants[1]), "--version", v2)
    assert result.returncode == 0, output_of(result)
    store = BundleStore(root)
    assert store.read_pointer().previous == [v1] and store.serving_version() == v2

    result = invoke_export("rollback", "--store", str(root))
    assert result.returncode == 0 and store.serving_version() == v1, output_of(result)
    result = invoke_export("rollback", "--store", str(root))
    assert result.returncode != 0 and "no previous version" in output_of(result) and "serving.json" in output_of(result)

    assert invoke_export("shadow", "--store", str(root), "--version", v2).returncode == 0
    assert store.shadow_version() == v2 and store.shadow_path() == root / v2
    status = json.loads(invoke_export("versions", "--store", str(root), "--json").stdout)
    assert status["serving"]["version"] == v1 and status["shadow"] == v2 and set(status["versions"]) == {v1, v2}
    assert invoke_export("shadow", "--store", str(root), "--clear").returncode == 0
    assert store.shadow_version() is None


def test_shadow_and_stamp(tmp_path: Path, variants: list[Path]) -> None:
    store = BundleStore(tmp_path / "store")
    v1, v2 = store.add(variants[0]), store.add(variants[1])
    seen = {store.pointer_stamp()}
    store.promote(v1)
    seen.add(store.pointer_stamp())
    store.set_shadow(v2)
    seen.add(store.pointer_stamp())
    assert store.shadow_version() == v2
    store.promote(v2)  # promoting the shadow candidate clears the shadow
    assert store.shadow_version() is None
    seen.add(store.pointer_stamp())
    store.rollback()
    seen.add(store.pointer_stamp())
    assert len(seen) == 5  # every write changed the stamp
    assert store.pointer_stamp() == store.pointer_stamp()  # reading changes nothing
    assert store.clear_shadow() is False


def test_pointer_is_never_torn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader polling the pointer while it is rewritten sees only whole pointers; a write that fails
    half-way leaves the old one and no temporary file."""
    path = tmp_path / "serving.json"
    payloads = [{"version": "v" * (1 + i % 7) * 50, "sequence": i, "previous": ["x"] * (i % 13)} for i in range(150)]
    write_json_atomic(path, payloads[0])
    allowed = {json.dumps(p, sort_keys=True) for p in payloads}
    torn: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            raw = path.read_bytes()
            try:
                if json.dumps(json.loads(raw), sort_keys=True) not in allowed:
                    torn.append(raw.decode())
            except ValueError:
                torn.append(raw.decode(errors="replace"))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for payload in payloads[1:]:
            write_json_atomic(path, payload)
    finally:
        done.set()
        thread.join()
    assert torn == []

    def crash(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_json_atomic(path, {"version": "new"})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == payloads[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving.json"]


def test_resolve_bundle_path(tmp_path: Path, variants: list[Path]) -> None:
    assert resolve_bundle_path({"STREAM_BUNDLE_PATH": "/somewhere"}) == Path("/somewhere")
    assert resolve_bundle_path({}) == Path("models/default")
    root = tmp_path / "store"
    with pytest.raises(StoreError, match=r"serving\.json is missing"):
        resolve_bundle_path({"STREAM_BUNDLE_STORE": str(root), "STREAM_BUNDLE_PATH": "/ignored"})
    store = BundleStore(root)
    store.promote(store.add(variants[0]))
    assert resolve_bundle_path({"STREAM_BUNDLE_STORE": str(root)}) == store.serving_path()

"""The chart's bundle sync script (helm/product-categorizer/files/bundle-sync.sh), run for real.

The script is taken from the rendered sidecar's command (what ships) and run with `sh -c` as the
container runs it, against a stand-in `aws` that implements `aws s3 sync` over local folders
(filters, --delete, --exact-timestamps, the download rule for same-size files). What is checked is
the store contract the worker relies on: a pointer reaches the store only after every file of the
version it names is there with its sha256, pointers are snapshotted before the versions are synced,
the shadow follows S3 (set and cleared), and nothing reaches the store when S3 cannot be read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_app.core.store import BundleStore, Pointer, write_json_atomic
from tests.deploy.test_helm_chart import CHART_DIR, one

BUCKET_PREFIX = "acme-ml-bundles/product-categorizer/store"
S3_URI = f"s3://{BUCKET_PREFIX}"
SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]

FAKE_AWS = '''#!{python}
"""Stand-in for `aws s3 sync SRC DST [filters]` where s3://X is $FAKE_S3_ROOT/X (tests only)."""
import fnmatch, os, runpy, shutil, sys

args = sys.argv[1:]
log = os.environ["FAKE_AWS_LOG"]
with open(log, "a") as handle:
    handle.write(" ".join(args) + "\\n")
calls = sum(1 for _ in open(log))
if os.environ.get("FAKE_AWS_FAIL"):
    print("fatal error: Could not connect to the endpoint URL", file=sys.stderr)
    sys.exit(1)
assert args[:2] == ["s3", "sync"], args
src, dst, rest = args[2], args[3], args[4:]
filters, delete, exact, i = [], False, False, 0
while i < len(rest):
    if rest[i] in ("--exclude", "--include"):
        filters.append((rest[i], rest[i + 1]))
        i += 2
        continue
    if rest[i] == "--delete":
        delete = True
    elif rest[i] == "--exact-timestamps":
        exact = True
    elif rest[i] not in ("--only-show-errors", "--no-progress"):
        sys.exit("fake aws: unsupported option " + rest[i])
    i += 1

def local(path):
    return os.path.join(os.environ["FAKE_S3_ROOT"], path[5:]) if path.startswith("s3://") else path

def included(rel):
    keep = True
    for kind, pattern in filters:  # the last matching filter wins, as in the aws CLI
        if fnmatch.fnmatchcase(rel, pattern):
            keep = kind == "--include"
    return keep

def files(root):
    found = {{}}
    for base, _, names in os.walk(root):
        for name in names:
            full = os.path.join(base, name)
            found[os.path.relpath(full, root)] = full
    return found

source, target = local(src), local(dst)
have = files(source) if os.path.isdir(source) else {{}}
there = files(target) if os.path.isdir(target) else {{}}
for rel, path in sorted(have.items()):
    if not included(rel):
        continue
    out = os.path.join(target, rel)
    if rel in there:
        s, d = os.stat(path), os.stat(out)
        same_size = s.st_size == d.st_size
        same_time = s.st_mtime == d.st_mtime if exact else d.st_mtime <= s.st_mtime
        if same_size and same_time:
            continue
    os.makedirs(os.path.dirname(out), exist_ok=True)
    shutil.copyfile(path, out + ".part")
    os.replace(out + ".part", out)
    os.utime(out, (os.stat(path).st_mtime, os.stat(path).st_mtime))
if delete:
    for rel, path in there.items():
        if included(rel) and rel not in have:
            os.remove(path)
hook = os.environ.get("FAKE_AWS_HOOK")
if hook:
    runpy.run_path(hook, init_globals={{"call": calls}})
'''


def script() -> str:
    """The script of the rendered sidecar's command (sh -c SCRIPT bundle-sync loop)."""
    containers = one("bundle-store", "Deployment")["spec"]["template"]["spec"]["containers"]
    sidecar = next(c for c in containers if c["name"] == "bundle-sync")
    assert sidecar["command"][:2] == ["/bin/sh", "-c"] and sidecar["command"][3:] == ["bundle-sync", "loop"]
    return sidecar["command"][2]


class Rig:
    """A fake S3 prefix, the pod's store folder and the stand-in aws CLI."""

    def __init__(self, root: Path, shell: str) -> None:
        self.root = root
        self.shell = shell
        self.s3 = root / "s3" / BUCKET_PREFIX
        self.s3.mkdir(parents=True)
        self.store = root / "store"
        self.store.mkdir()
        bin_dir = root / "bin"
        bin_dir.mkdir()
        aws = bin_dir / "aws"
        aws.write_text(FAKE_AWS.format(python=sys.executable))
        aws.chmod(0o755)
        self.log = root / "aws.log"
        self.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(root),
            "FAKE_S3_ROOT": str(root / "s3"),
            "FAKE_AWS_LOG": str(self.log),
            "BUNDLE_S3_URI": S3_URI + "/",
            "BUNDLE_STORE": str(self.store),
            "BUNDLE_SYNC_INTERVAL_SECONDS": "1",
            "BUNDLE_SYNC_ATTEMPTS": "1",
            "BUNDLE_SYNC_RETRY_SECONDS": "0",
        }
        self.sequence = 0
        self.history: list[str] = []

    # -- what an operator puts in S3 ----------------------------------------------------------------

    def upload_version(self, version: str, *, skip: str | None = None, corrupt: str | None = None) -> None:
        """A bundle-like folder: files plus a manifest listing their sha256 (as bundle_writer writes it)."""
        folder = self.s3 / version
        folder.mkdir(parents=True, exist_ok=True)
        contents = {"model.int8.onnx": f"onnx {version}".encode() * 100, "tokenizer.json": b'{"v": 1}',
                    "centroids.faiss": os.urandom(256)}
        manifest = {"schema_version": 1, "bundle_version": version,
                    "files": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(contents.items())}}
        for name, data in contents.items():
            if name == skip:
                continue
            if name == corrupt:
                data = bytes(len(data))  # same size, other bytes
            (folder / name).write_bytes(data)
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    def point_to(self, version: str) -> None:
        """serving.json as `python -m export promote` writes it (same module, same format)."""
        self.sequence += 1
        pointer = Pointer(version=version, previous=list(self.history), promoted_at="2025-01-01T00:00:00.000+00:00",
                          sequence=self.sequence)
        self.history.insert(0, version)
        write_json_atomic(self.s3 / "serving.json", pointer.to_json())

    def shadow(self, version: str | None) -> None:
        path = self.s3 / "shadow.json"
        if version is None:
            path.unlink(missing_ok=True)
            return
        write_json_atomic(path, {"version": version, "set_at": "2025-01-01T00:00:00.000+00:00", "sequence": 1})

    # -- the pod ------------------------------------------------------------------------------------

    def run(self, mode: str = "once", **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.shell, "-c", script(), "bundle-sync", mode], env={**self.env, **env},
                              capture_output=True, text=True, timeout=60, check=False)

    def serving(self) -> str | None:
        return BundleStore(self.store).serving_version()

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture(params=SHELLS)
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Rig:
    return Rig(tmp_path, request.param)


def test_the_script_that_ships_is_the_chart_file() -> None:
    assert script() == (CHART_DIR / "files" / "bundle-sync.sh").read_text(encoding="utf-8")


@pytest.mark.parametrize("shell", SHELLS)
def test_script_is_valid_posix_shell(shell: str) -> None:
    result = subprocess.run([shell, "-n", "-c", script()], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_init_fills_the_store_pointer_last(rig: Rig) -> None:
    rig.upload_version("v1")
    rig.point_to("v1")
    result = rig.run("once")
    assert result.returncode == 0, result.stdout + result.stderr
    assert rig.serving() == "v1"
    assert (rig.store / "serving.json").read_bytes() == (rig.s3 / "serving.json").read_bytes()
    assert sorted(p.name for p in (rig.store / "v1").iterdir()) == ["centroids.faiss", "manifest.json",
                                                                   "model.int8.onnx", "tokenizer.json"]
    # Pointers are read first (into the hidden staging folder), versions after, without the pointers.
    pointers, versions = rig.calls()
    assert "--include serving.json --include shadow.json" in pointers and "/.sync/pointers/" in pointers
    assert "--exact-timestamps" in pointers
    assert "--exclude serving.json --exclude shadow.json" in versions
    # The store's readers ignore the staging folder (hidden).
    assert BundleStore(rig.store).versions() == ["v1"]
    assert "store ready: serving v1" in result.stdout


def test_init_fails_until_something_is_promoted(rig: Rig) -> None:
    rig.upload_version("v1")
    result = rig.run("once")
    assert result.returncode == 1
    assert "serving.json does not exist: promote a version first" in result.stdout
    assert not (rig.store / "serving.json").exists()


@pytest.mark.parametrize("damage", ["skip", "corrupt"])
def test_a_pointer_to_an_incomplete_version_is_held_back(rig: Rig, damage: str) -> None:
    rig.upload_version("v1")
    rig.point_to("v1")
    assert rig.run("once").returncode == 0
    # The operator pushed the pointer before the version was complete (or a file is damaged).
    rig.upload_version("v2", **{damage: "model.int8.onnx"})
    rig.point_to("v2")
    stamp = BundleStore(rig.store).pointer_stamp()
    result = rig.run("once")
    assert result.returncode == 1
    assert "serving.json -> v2 held back until v2 is complete" in result.stdout
    assert rig.serving() == "v1" and BundleStore(rig.store).pointer_stamp() == stamp, "the worker must not see v2 yet"
    # The upload is repaired: the next pass replaces the local copy and publishes the pointer.
    rig.upload_version("v2")
    result = rig.run("once")
    assert result.returncode == 0, result.stdout + result.stderr
    assert rig.serving() == "v2" and BundleStore(rig.store).read_pointer().previous == ["v1"]


def test_the_pointer_is_snapshotted_before_the_versions_sync(rig: Rig) -> None:
    rig.upload_version("v1")
    rig.point_to("v1")
    assert rig.run("once").returncode == 0
    # Prepare v2 and its pointer aside; they land in S3 right after this pass read the pointers.
    live, pending = rig.s3, rig.root / "pending"
    rig.s3 = pending
    rig.upload_version("v2")
    rig.point_to("v2")
    rig.s3 = live
    hook = rig.root / "hook.py"
    hook.write_text("import shutil\nif call == 1:\n"
                    f"    shutil.copytree({str(pending)!r}, {str(live)!r}, dirs_exist_ok=True)\n")
    result = rig.run("once", FAKE_AWS_HOOK=str(hook), FAKE_AWS_LOG=str(rig.root / "race.log"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((live / "serving.json").read_text())["version"] == "v2", "v2 was promoted in S3 mid-pass"
    # This pass publishes the pointer it read before syncing the versions (v1: nothing to do) ...
    assert rig.serving() == "v1"
    # ... and the next one the new pointer, whose version it has.
    result = rig.run("once")
    assert result.returncode == 0 and rig.serving() == "v2"


def test_the_shadow_follows_s3(rig: Rig) -> None:
    rig.upload_version("v1")
    rig.upload_version("v2")
    rig.point_to("v1")
    rig.shadow("v2")
    assert rig.run("once").returncode == 0
    assert BundleStore(rig.store).shadow_version() == "v2"
    rig.shadow(None)  # python -m export shadow --clear, pushed with --delete
    result = rig.run("once")
    assert result.returncode == 0 and "shadow cleared" in result.stdout
    assert BundleStore(rig.store).shadow_version() is None


def test_a_rewritten_pointer_of_the_same_size_is_seen(rig: Rig) -> None:
    rig.upload_version("v1")
    rig.upload_version("v2")
    rig.point_to("v1")
    assert rig.run("once").returncode == 0
    # Rollback-like rewrite: another version of the same name length, same file size.
    before = (rig.s3 / "serving.json").stat().st_size
    write_json_atomic(rig.s3 / "serving.json", json.loads((rig.s3 / "serving.json").read_text()) | {"version": "v2"})
    assert (rig.s3 / "serving.json").stat().st_size == before
    assert rig.run("once").returncode == 0
    assert rig.serving() == "v2"


def test_a_pointer_cannot_escape_the_store(rig: Rig) -> None:
    rig.upload_version("v1")
    write_json_atomic(rig.s3 / "serving.json", {"version": "../../etc", "previous": [], "sequence": 1})
    result = rig.run("once")
    assert result.returncode == 1 and "not a version name" in result.stdout
    assert not (rig.store / "serving.json").exists()


def test_nothing_changes_when_s3_cannot_be_read(rig: Rig) -> None:
    rig.upload_version("v1")
    rig.point_to("v1")
    assert rig.run("once").returncode == 0
    rig.upload_version("v2")
    rig.point_to("v2")
    result = rig.run("once", FAKE_AWS_FAIL="1")
    assert result.returncode == 1 and "reading the pointers of" in result.stdout
    assert rig.serving() == "v1"


def test_the_sidecar_loops_and_stops_at_once_on_sigterm(rig: Rig) -> None:
    rig.upload_version("v1")
    rig.point_to("v1")
    assert rig.run("once").returncode == 0
    rig.upload_version("v2")
    rig.point_to("v2")
    process = subprocess.Popen([rig.shell, "-c", script(), "bundle-sync", "loop"], env=rig.env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while rig.serving() != "v2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rig.serving() == "v2", "the sidecar did not publish the new pointer"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    # Kubernetes waits terminationGracePeriodSeconds for a container that ignores SIGTERM.
    assert process.returncode == 0 and time.monotonic() - started < 5, output
    assert "serving.json -> v2" in output and "stopping" in output

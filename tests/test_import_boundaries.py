"""The runtime package stands alone: importing any module of stream_app loads neither export (build
time) nor torch (docs/architecture.md: "stream_app never imports export", "no torch anywhere under here").

In a fresh interpreter, because this test process has imported export already (tests/fixtures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Every module of stream_app except the ``__main__`` entry points: importing one runs it
# (stream_app.schemas.__main__ rewrites the schema files).
PROBE = """
import importlib, json, pkgutil, sys
import stream_app

FORBIDDEN = ("export", "torch")
culprits = {}  # forbidden package -> what loaded it


def blame(importer):
    for package in FORBIDDEN:
        if package not in culprits and any(m.split(".")[0] == package for m in sys.modules):
            culprits[package] = importer


# walk_packages imports every package (its __init__) to look inside.
names = [m.name for m in pkgutil.walk_packages(stream_app.__path__, "stream_app.")
         if m.name.rsplit(".", 1)[-1] != "__main__"]
blame("a package __init__ of stream_app")
for name in names:
    importlib.import_module(name)
    blame(name)
print(json.dumps({"imported": names, "culprits": culprits}))
"""


def test_no_stream_app_module_imports_export_or_torch() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "stream_app.core.drift.monitor" in result["imported"] and "stream_app.worker.drift" in result["imported"]
    assert result["culprits"] == {}, f"stream_app loads build-time packages (package: importing module): {result}"

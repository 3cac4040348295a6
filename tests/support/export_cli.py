"""The export command line in tests, two ways.

`run_export` runs ``python -m export`` in a subprocess: the real entry point, exit code and all (the
build commands, which load torch and train, and one check per command that the module runs).
`invoke_export` runs the same typer app in this process: no interpreter start-up per call (~2 s
here), for the many checks of options and errors.
"""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures.bundle import ROOT


def run_export(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "export", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def invoke_export(*args: str) -> subprocess.CompletedProcess[str]:
    from typer.testing import CliRunner

    from export.cli import app

    result = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def assert_fails_naming(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """The command failed, and its output (stdout and stderr, rich's wrapping undone) names every needle."""
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    for needle in needles:
        assert needle in output, f"{needle!r} not in: {output[-1500:]}"

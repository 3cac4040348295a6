"""The Dockerfile and .dockerignore, checked statically (no Docker engine on this machine)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pytest

from tests.deploy._support import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name!r} has no {keyword}"
        return found[-1]


def parse_dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and build stages; continuation lines joined, comments dropped."""
    logical: list[str] = []
    buffer = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    assert not buffer, "Dockerfile ends inside a line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert match, f"unparsed FROM: {line}"
            stages.append(Stage(name=match.group(2) or str(len(stages)), base=match.group(1)))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, got {line}"
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, args.strip()))
    return global_args, stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


def test_multi_stage_with_slim_python_3_11() -> None:
    global_args, stages = parse_dockerfile()
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    bases = {s.name: s.base.replace("${PYTHON_IMAGE}", global_args.get("PYTHON_IMAGE", "")) for s in stages}
    for name, base in bases.items():
        assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base), f"stage {name}: base {base}"
    runtime = stages[-1]
    assert any("--from=builder" in c for c in runtime.all("COPY")), "runtime must copy the venv from the builder"


def test_runtime_installs_no_build_extras_and_no_compilers() -> None:
    _, stages = parse_dockerfile()
    builder = next(s for s in stages if s.name == "builder")
    runs = " ".join(builder.all("RUN"))
    pip_installs = re.findall(r"pip install ([^&]*)", runs)
    assert pip_installs, "the builder installs nothing"
    for command in pip_installs:
        assert "[" not in command, f"extras in the image: pip install {command}"
        assert "torch" not in command and "-e " not in command
    # Dependencies come from [project].dependencies, never from the optional extras.
    assert "['project']['dependencies']" in runs and "optional-dependencies" not in runs
    runtime = stages[-1]
    runtime_runs = " ".join(runtime.all("RUN"))
    for forbidden in ("build-essential", "gcc", "g++", "pip install", "curl", "wget"):
        assert forbidden not in runtime_runs, f"runtime stage installs {forbidden}"
    copied = " ".join(runtime.all("COPY"))
    assert "export" not in copied and "tests" not in copied


def test_runs_as_a_numeric_non_root_user() -> None:
    _, stages = parse_dockerfile()
    runtime = stages[-1]
    args = dict(a.split("=", 1) for a in runtime.all("ARG") if "=" in a)
    user = runtime.last("USER")
    user = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), user)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: numeric non-root uid needed for runAsNonRoot"
    # Must match the chart's default pod securityContext.
    assert int(uid) == 10001


def test_healthcheck_probes_livez_with_python() -> None:
    _, stages = parse_dockerfile()
    healthcheck = stages[-1].last("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD")
    assert "--interval=" in options and "--start-period=" in options
    argv = exec_form(command.strip())
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    compile(code, "<healthcheck>", "exec")
    assert "urllib.request" in code and "/livez" in code and "6066" in code
    assert "curl" not in healthcheck


def test_entrypoint_runs_the_worker() -> None:
    _, stages = parse_dockerfile()
    runtime = stages[-1]
    argv = exec_form(runtime.last("ENTRYPOINT")) + exec_form(runtime.last("CMD"))
    if argv[:2] == ["tini", "--"]:
        argv = argv[2:]
    assert argv == ["python", "-m", "stream_app", "worker"]


def test_bundle_is_baked_from_a_build_arg_or_mounted() -> None:
    _, stages = parse_dockerfile()
    runtime = stages[-1]
    args = dict(a.split("=", 1) for a in runtime.all("ARG") if "=" in a)
    assert "BUNDLE_DIR" in args
    assert any(c.split()[-1].rstrip("/") == "/models/default" and "${BUNDLE_DIR}" in c for c in runtime.all("COPY"))
    assert (REPO / args["BUNDLE_DIR"]).is_dir(), f"default BUNDLE_DIR {args['BUNDLE_DIR']} must exist"
    env = " ".join(runtime.all("ENV"))
    assert "STREAM_BUNDLE_PATH=/models/default" in env
    assert "STREAM_DATA_DIR=/tmp/" in env
    assert "6066" in runtime.last("EXPOSE")


# ---- .dockerignore ------------------------------------------------------------------------------


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip("/")))
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                if pattern.startswith("/", i):
                    regex += "/?"
                    i += 1
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i:end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((negate, re.compile(regex)))
    return rules


def excluded(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negate, regex in dockerignore_rules():
        if any(regex.fullmatch(c) for c in candidates):
            verdict = not negate
    return verdict


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python", ".git/HEAD", "tests/deploy/test_compose.py", "export/train.py", "data/x.parquet",
        "models/other/model.int8.onnx", "models/default/model.fp32.onnx", "stream_app/__pycache__/x.pyc",
        ".pytest_cache/v/cache", "helm/product-categorizer/values.yaml", "docs/deployment.md",
        "benchmarks/run.py", ".broker/pid", "secrets.env",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert excluded(path), f"{path} would be sent to the Docker build context"


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "README.md", "stream_app/__main__.py", "stream_app/core/bundle.py",
     "stream_app/schemas/products.json", "models/default/model.int8.onnx", "models/default/manifest.json",
     "deploy/docker/no-bundle/README.md"],
)
def test_dockerignore_keeps_what_the_build_needs(path: str) -> None:
    assert not excluded(path), f"{path} is needed by the Dockerfile but excluded by .dockerignore"

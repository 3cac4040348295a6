"""yamllint over the chart values, the compose file and the monitoring configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

from tests.deploy._support import CHART_DIR, REPO

CONFIG = YamlLintConfig(file=str(Path(__file__).with_name("yamllint.yml")))
FILES = sorted(
    [
        CHART_DIR / "Chart.yaml",
        CHART_DIR / "values.yaml",
        CHART_DIR / "values-eks.yaml",
        REPO / "docker-compose.yml",
        *(REPO / "deploy").rglob("*.yml"),
        *(REPO / "deploy").rglob("*.yaml"),
    ]
)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(REPO)) for p in FILES])
def test_yamllint(path: Path) -> None:
    problems = list(linter.run(path.read_text(encoding="utf-8"), CONFIG, str(path)))
    assert not problems, "\n".join(f"{path.relative_to(REPO)}:{p.line}:{p.column}: {p.desc} ({p.rule})"
                                   for p in problems)


def test_yamllint_config_finds_problems() -> None:
    problems = list(linter.run("a:  1\nb: yes\n", CONFIG))
    assert {p.rule for p in problems} >= {"colons", "truthy"}

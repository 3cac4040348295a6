"""The README stays true to the code: every setting listed, every linked file present."""

from __future__ import annotations

import re

from stream_app.settings import ENV_PREFIX, Settings
from tests.fixtures.bundle import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_first_lines_give_the_two_fresh_machine_commands() -> None:
    head = "\n".join(README.splitlines()[:8])
    assert "make run" in head and "make test" in head


def test_every_setting_is_documented() -> None:
    missing = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields
               if f"{ENV_PREFIX}{name.upper()}" not in README]
    assert not missing, f"settings missing from README: {missing}"


def test_linked_files_exist() -> None:
    links = re.findall(r"\]\(((?!https?:)[^)#]+)\)", README)
    assert links
    assert [link for link in links if not (ROOT / link).exists()] == []

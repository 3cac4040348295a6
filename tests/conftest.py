"""Shared pytest configuration. Fixtures live in tests/fixtures/, one module per concern."""

import pytest
from hypothesis import settings

from tests.support.examples import QUICK_MAX_EXAMPLES

# make test-unit loads this profile (--hypothesis-profile=quick): a tenth of the draws, see
# tests/support/examples.py; make test and CI run the default profile.
settings.register_profile("quick", max_examples=QUICK_MAX_EXAMPLES)

pytest_plugins = [
    "tests.fixtures.bundle",
    "tests.fixtures.broker",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by what it needs, from its fixtures, so the tiers cannot drift from the code:
    ``broker`` (a real broker over TCP) and ``bundle`` (the frozen test bundle, built once, minutes)."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "broker" in names:
            item.add_marker(pytest.mark.broker)
        if "test_bundle" in names:
            item.add_marker(pytest.mark.bundle)

"""How many examples a property test draws, by test tier.

Under hypothesis' default profile (``make test``, CI) a test draws the count it asks for. Under the
``quick`` profile (``make test-unit``: the tier run between edits) every count is scaled by the
profile's ``max_examples`` / 100 (a tenth), at least 10: the same properties, fewer draws. The
profile is registered in tests/conftest.py.
"""

from __future__ import annotations

from hypothesis import settings

_DEFAULT_MAX_EXAMPLES = 100  # hypothesis' default: the scale's 1.0
QUICK_MAX_EXAMPLES = 10


def examples(count: int) -> int:
    """``count`` scaled to the loaded profile (module docstring)."""
    scale = settings.default.max_examples / _DEFAULT_MAX_EXAMPLES
    return max(min(count, QUICK_MAX_EXAMPLES), round(count * scale))

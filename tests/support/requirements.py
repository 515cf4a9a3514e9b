"""Skip a test whose environment is missing, unless CI says that environment is required.

``.ci/run`` sets ``PYCONPRO_REQUIRE_<WHAT>=1`` for every capability it installs (tshark,
network namespaces, packet capture, ...): there a missing capability is a failure, not a
quiet skip that would let the test stop running unnoticed.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def skip_or_fail(what: str, reason: str) -> NoReturn:
    """``pytest.skip(reason)``, or ``pytest.fail`` when PYCONPRO_REQUIRE_<WHAT> is set."""
    if os.environ.get(f"PYCONPRO_REQUIRE_{what.upper()}") == "1":
        pytest.fail(f"{reason} (required here: PYCONPRO_REQUIRE_{what.upper()}=1)", pytrace=False)
    pytest.skip(reason)

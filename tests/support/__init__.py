"""Test-only helpers: a small capture reader (``pcap``) and a tshark driver (``tshark``).

Nothing here is imported by pyconpro itself; these modules let the golden tests read the
reference captures in ``tests/golden/pcaps/`` and compare our codec with Wireshark's dissectors.
"""

from __future__ import annotations

from pathlib import Path

#: ``tests/golden/`` — frame files, the reference captures and their provenance.
GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
#: ``tests/golden/pcaps/`` — public reference captures (see PROVENANCE.md there).
PCAP_DIR = GOLDEN_DIR / "pcaps"


def golden_pcap(name: str) -> Path:
    """Path of a reference capture by file name, e.g. ``golden_pcap("eipscanner_opener.pcap")``."""
    path = PCAP_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the reference captures live in tests/golden/pcaps/ "
            "(see tests/golden/PROVENANCE.md for each one's source)"
        )
    return path

"""``python -m simulator ...``: the same as ``pyconpro sim ...`` (see simulator/cli.py)."""

import sys

from simulator.cli import main

sys.exit(main())

"""``python -m pyconpro.simulator ...``: the same as ``pyconpro sim ...`` (see simulator/cli.py)."""

import sys

from pyconpro.simulator.cli import main

sys.exit(main())

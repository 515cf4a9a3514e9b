"""``pyconpro discover``: ListIdentity on each local interface (see pyconpro.discovery_cli)."""

from pyconpro.discovery_cli import add_discover_arguments as add_arguments
from pyconpro.discovery_cli import run_discover as run

__all__ = ["add_arguments", "run"]

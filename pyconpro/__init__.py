"""pyconpro: consume Allen-Bradley Logix produced tags over EtherNet/IP Class 1.

The user-facing front: the seed-compatible in-process API (``pyconpro.api``, docs/api.md) and
the ``pyconpro`` CLI. The API names are imported lazily so that ``pyconpro --help`` and the
other commands do not pay for ZeroMQ and the engine.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "PLC",
    "AssemblyConsumer",
    "AssemblyHint",
    "CommError",
    "Connection",
    "Consumer",
    "ConsumerHint",
    "DatasizeError",
    "PleaseResetError",
    "Producer",
    "TagSample",
    "__version__",
]

if TYPE_CHECKING:
    from pyconpro.api import (
        PLC,
        AssemblyConsumer,
        AssemblyHint,
        CommError,
        Connection,
        Consumer,
        ConsumerHint,
        DatasizeError,
        PleaseResetError,
        Producer,
        TagSample,
    )


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        from pyconpro import api

        return getattr(api, name)
    raise AttributeError(f"module 'pyconpro' has no attribute {name!r}")

"""Every sink kind: its option schema and the factory that builds it from validated options.

Each sink module declares its kinds as ``SINK_KINDS`` (a tuple of ``SinkKind``) next to the
sink class; this module lists those modules, in the order kinds are offered to users. Adding a
kind is one line here plus the module. A sink module imports its backend library (a database
driver, a client) inside the factory or ``open()``, never at module level, so a config file
naming any kind can be validated where that backend is not installed.

``sink_schemas()`` is what the config model validates ``[[sink]]`` sections with
(``pyconpro.config_file.load_config`` passes it to ``acquisition.config.parse_config``);
``sinks/cli.py`` derives the flags of ``pyconpro sink KIND`` from the same schemas.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pyconpro.acquisition.sink_config import OptionValue, SinkConfig, SinkSchema

if TYPE_CHECKING:
    from pyconpro.sinks.base import Sink

__all__ = ["SinkKind", "make_sink", "sink_kinds", "sink_schemas"]

# The modules that declare SINK_KINDS, in the order their kinds are listed.
_MODULES = (
    "pyconpro.sinks.sqlite", "pyconpro.sinks.postgres", "pyconpro.sinks.mqtt",
    "pyconpro.sinks.nats",
    "pyconpro.sinks.files", "pyconpro.sinks.stdout",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SinkKind:
    """One sink kind: what its section may hold, and how to build it from those options."""

    schema: SinkSchema
    make: Callable[[Mapping[str, OptionValue]], Sink]


@cache
def sink_kinds() -> Mapping[str, SinkKind]:
    """Kind name -> ``SinkKind``, every module of ``_MODULES`` imported."""
    out: dict[str, SinkKind] = {}
    for name in _MODULES:
        declared: Any = importlib.import_module(name).SINK_KINDS
        for kind in declared:
            if not isinstance(kind, SinkKind) or kind.schema.kind in out:
                raise TypeError(f"{name}.SINK_KINDS: {kind!r} is not a new SinkKind")
            out[kind.schema.kind] = kind
    return MappingProxyType(out)


def sink_schemas() -> Mapping[str, SinkSchema]:
    """Kind name -> option schema (the parameter ``parse_config`` validates sinks with)."""
    return MappingProxyType({name: kind.schema for name, kind in sink_kinds().items()})


def make_sink(config: SinkConfig) -> Sink:
    """The sink ``config`` describes (not opened yet)."""
    return sink_kinds()[config.kind].make(config.options)

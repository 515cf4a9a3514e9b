"""Consumer definitions moved to ``pyconpro.acquisition.control`` (with the worker's control
protocol that carries them); these names stay importable from here."""

from __future__ import annotations

from pyconpro.acquisition.control import (
    KEYS,
    ConsumerDef,
    consumer_from_map,
    consumer_from_spec,
    consumer_from_text,
    consumer_to_map,
    parse_type,
)

__all__ = [
    "KEYS",
    "ConsumerDef",
    "consumer_from_map",
    "consumer_from_spec",
    "consumer_from_text",
    "consumer_to_map",
    "parse_type",
]

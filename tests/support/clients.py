"""What the tests of well-known clients against the simulator share (pycomm3, pylogix).

``simulator_fixture(address)`` makes a pytest fixture that runs the real simulator process on
``address`` for one test; ``visible_tags`` is what a client lists of a tag store; ``same``
compares a client's values with ours, allowing float32 rounding; ``assert_pylogix_tag_list``
checks what pylogix's ``GetTagList`` made of the store's tags.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from pyconpro.acquisition.logix_objects import ExternalAccess
from pyconpro.acquisition.logix_types import ArrayType, StructType
from pyconpro.simulator.tags import SimTag, TagStore
from pyconpro.simulator.testing import SimulatorProcess, start_simulator


def simulator_fixture(address: str) -> Callable[[], Iterator[SimulatorProcess]]:
    """A fixture: the simulator with its built-in tags on ``address`` (TCP port 0)."""

    @pytest.fixture
    def sim() -> Iterator[SimulatorProcess]:
        with start_simulator(address) as proc:
            yield proc

    return sim


def visible_tags(store: TagStore) -> dict[str, SimTag]:
    """The tags a client lists: all but those with External Access None."""
    return {t.name: t for t in store if t.external_access != ExternalAccess.NONE}


def same(a: object, b: object) -> bool:
    """Equal, with float32 rounding allowed, through lists and dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and math.isclose(a, b, rel_tol=1e-6)
        )
    return a == b and type(a) is type(b)


def assert_pylogix_tag_list(listed: Mapping[str, Any], store: TagStore) -> None:
    """pylogix's tags (by ``TagName``) are the store's visible ones, each with its type name
    (``DataType``), structure flag and dimensions as pylogix derives them."""
    visible = visible_tags(store)
    assert {n for n in listed if not n.startswith("Program:") or "." in n} == set(visible)
    for name, tag in visible.items():
        t, got = tag.type, listed[name]
        elem = t.element if isinstance(t, ArrayType) else t
        if isinstance(t, ArrayType) and t.is_bool_array:
            assert (got.DataType, got.Size) == ("DWORD", t.count // 32), name
            continue
        # The predefined STRING is template ASCIISTRING82, as a Logix names it.
        assert got.DataType == ("ASCIISTRING82" if elem.name == "STRING" else elem.name), name
        assert got.Struct == isinstance(elem, StructType), name
        assert got.Array == (len(t.dims) if isinstance(t, ArrayType) else 0), name
        assert got.Size == (t.dims[0] if isinstance(t, ArrayType) else 0), name

"""What the tests of well-known clients against the simulator share (pycomm3, pylogix).

``simulator_fixture(address)`` makes a pytest fixture that runs the real simulator process on
``address`` for one test; ``many_tags_file`` writes a tag file large enough for listings of
several replies and fragmented reads; ``visible_tags`` is what a client lists of a tag store;
``same`` compares a client's values with ours, allowing float32 rounding; ``ATOMIC_WRITES``
are values for the built-in atomic tags;
``assert_pylogix_tag_list`` checks what pylogix's ``GetTagList`` made of the store's tags;
``class3_fo`` is pycomm3's class-3 Large_Forward_Open.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pyconpro.acquisition import cm
from pyconpro.acquisition.logix_objects import ExternalAccess
from pyconpro.acquisition.logix_types import ArrayType, StructType
from pyconpro.simulator.tags import SimTag, TagStore
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

#: A write to each fixed atomic tag of the built-in set, at the edges of its type's range.
ATOMIC_WRITES: list[tuple[str, Any]] = [
    ("Setpoint", 0.5),  # REAL
    ("Flag", False),  # BOOL
    ("Small", -128),  # SINT
    ("Medium", 32767),  # INT
    ("Large", -(1 << 62)),  # LINT
    ("Precise", math.e),  # LREAL
]


def simulator_fixture(address: str) -> Callable[[], Iterator[SimulatorProcess]]:
    """A fixture: the simulator with its built-in tags on ``address`` (TCP port 0)."""

    @pytest.fixture
    def sim() -> Iterator[SimulatorProcess]:
        with start_simulator(address) as proc:
            yield proc

    return sim


def many_tags_file(path: Path, program_name: str = "MANY") -> Path:
    """A tag file with ``Huge`` (DINT[2000], 0..1999), 150 ``Tag_NNN`` of a UDT ``Pair``
    (A DINT = NNN, Ok BOOL) and 90 ``Program:Cell1.Local_NN`` (INT = NN): several 0x55 replies
    in each scope, Read/Write Tag Fragmented for ``Huge``."""
    body = [
        textwrap.dedent(f"""
        [controller]
        program_name = "{program_name}"
        programs = ["Cell1"]
        [types.Pair]
        members = [{{ name = "A", type = "DINT" }}, {{ name = "Ok", type = "BOOL" }}]
        [[tags]]
        name = "Huge"
        type = "DINT[2000]"
        """)
        + f"value = {list(range(2000))}\n"
    ]
    for i in range(150):
        body.append(f'[[tags]]\nname = "Tag_{i:03d}"\ntype = "Pair"\nvalue = {{ A = {i} }}\n')
    for i in range(90):
        body.append(f'[[tags]]\nname = "Program:Cell1.Local_{i:02d}"\ntype = "INT"\nvalue = {i}\n')
    path.write_text("".join(body))
    return path


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


def class3_fo(serial: int = 0x0427, large: bool = True, **changes: object) -> cm.ForwardOpenRequest:
    """pycomm3's class-3 Large_Forward_Open (protocol.md 10.2 row 4)."""
    size = 4000 if large else 500
    ncp = cm.NetworkParameters(cm.ConnectionType.POINT_TO_POINT, cm.Priority.LOW, True, size)
    req = cm.ForwardOpenRequest(
        0,
        0x11223344,
        serial,
        0x1009,
        0x10090000,
        7,
        2_113_537,
        ncp,
        2_113_537,
        ncp,
        0xA3,
        bytes.fromhex("01002002 2401"),
        0x0A,
        0x05,
        large,
    )
    return dataclasses.replace(req, **changes) if changes else req  # type: ignore[arg-type]

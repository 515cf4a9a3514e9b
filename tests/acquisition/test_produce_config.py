"""``[[produce]]`` entries (acquisition/produce_config.py) and their placement on workers."""

from __future__ import annotations

import pytest
from pyconpro.acquisition.config import group_by_local_address
from pyconpro.acquisition.produce import ProduceSpec

from tests.support.configs import file_issues as issues_of
from tests.support.configs import parse_file as parse

PLC = """\
[[plc]]
name = "line1"
address = "10.0.0.5"

  [[plc.tag]]
  name = "Speed"
"""

PRODUCE = """\
[[produce]]
name = "PcSetpoints"
type = "Setpoints"
members = [{ name = "Speed", type = "REAL" }, { name = "Run", type = "BOOL" },
           { name = "Recipe", type = "DINT[4]" }]
max_consumers = 1
rpi_min_ms = 5
consumer_address = "10.0.0.5"
"""


def test_entry_is_read_with_its_layout_and_defaults() -> None:
    c = parse(PLC + PRODUCE + '[[produce]]\nname = "Count"\ntype = "DINT"\n'
              'local_address = "10.0.0.1"\n')
    (spec, where), (count, where2) = c.produce
    assert spec == ProduceSpec("PcSetpoints", "Setpoints", (("Speed", "REAL"), ("Run", "BOOL"),
                               ("Recipe", "DINT[4]")), 1, 5_000, 750_000_000)
    assert where.consumer_address == "10.0.0.5" and where.local_address is None
    assert (count.max_consumers, count.rpi_min_us) == (2, 1_000)
    assert where2.local_address == "10.0.0.1"
    assert c.worker.tcp_port == 44818


def test_a_file_may_only_produce() -> None:
    c = parse(PRODUCE)
    assert c.plcs == () and len(c.produce) == 1


def test_placement_follows_the_route_to_the_consuming_plc() -> None:
    c = parse(PLC + PRODUCE + '[[produce]]\nname = "Other"\ntype = "INT"\n'
              'local_address = "192.168.1.2"\n')
    groups = group_by_local_address(c, lambda addr: {"10.0.0.5": "10.0.0.1"}[addr])
    assert [(g.local_address, g.plcs, [p.name for p in g.produce]) for g in groups] == [
        ("10.0.0.1", ("line1",), ["PcSetpoints"]), ("192.168.1.2", (), ["Other"])]


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ('[[produce]]\nname = "X"\ntype = "DINT"\n', "produce[1]", "which interface"),
        ('[[produce]]\nname = "X"\ntype = "DUNNO"\nlocal_address = "10.0.0.1"\n',
         "produce[1].type", "unknown type"),
        ('[[produce]]\nname = "X"\ntype = "DINT[300]"\nlocal_address = "10.0.0.1"\n',
         "produce[1].type", "at most 500"),
        ('[[produce]]\nname = "pcsetpoints"\ntype = "DINT"\nlocal_address = "10.0.0.1"\n',
         "produce[1].name", "produced twice"),
        ('[[produce]]\nname = "X"\ntype = "DINT"\nlocal_address = "10.0.0.1"\n'
         'rpi_min_ms = 10\nrpi_max_ms = 5\n', "produce[1].rpi_min_ms", "above rpi_max_ms"),
        ('[[produce]]\nname = "X"\ntype = "DINT"\nlocal_address = "10.0.0.1"\nmax_consumer = 3\n',
         "produce[1].max_consumer", "did you mean"),
        ('[[produce]]\nname = "X"\ntype = "S"\nmembers = [1]\nlocal_address = "10.0.0.1"\n',
         "produce[1].members[0]", "inline table"),
        ('[[produce]]\nname = "X"\ntype = "DINT"\nlocal_address = "10.0.0.1"\n'
         'interface = "eth0"\n', "produce[1].interface", "are all set"),
    ],
)
def test_bad_entries_name_the_key_and_the_fix(extra: str, key: str, words: str) -> None:
    (issue,) = issues_of(PRODUCE + extra)
    assert issue.key == key and words in str(issue), str(issue)

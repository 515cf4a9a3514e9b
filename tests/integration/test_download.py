"""A "download" noticed by the worker (issue 6): the simulated controller is replaced by a new
process, on the same address and ports, whose tag file gives the consumed UDT a new member. The
worker, which learned the type from the controller, must learn it again before reconnecting,
publish a "tag type changed" event and go on publishing samples decoded with the new layout.

The simulator listens on 127.61.9.2 with OS-chosen ports (the second process takes the same
ones); the worker binds 127.61.9.1 with UDP port 0 and publishes on a free loopback TCP port.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyconpro.acquisition import wire
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.simulator.tags import load_store
from pyconpro.simulator.testing import start_simulator

from tests.workers.worker_process import start_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKER = "127.61.9.1"
SIM = "127.61.9.2"

TAGS_BEFORE = """
[types.Drive]
members = [
  { name = "Running", type = "BOOL" },
  { name = "Speed", type = "REAL" },
  { name = "Count", type = "DINT" },
]

[[tags]]
name = "Drive1"
type = "Drive"
produced = true
max_consumers = 2
generators = { "Count" = { kind = "counter", interval_s = 0.05 } }
"""

# The same tag after a download: the UDT gained a member (and so 4 bytes).
TAGS_AFTER = """
[types.Drive]
members = [
  { name = "Running", type = "BOOL" },
  { name = "Speed", type = "REAL" },
  { name = "Count", type = "DINT" },
  { name = "Batch", type = "DINT" },
]

[[tags]]
name = "Drive1"
type = "Drive"
produced = true
max_consumers = 2
value = { Batch = 4711 }
generators = { "Count" = { kind = "counter", interval_s = 0.05 } }
"""


def test_a_download_that_changes_the_udt_is_noticed_and_decoded_anew(tmp_path: Path) -> None:
    before, after = tmp_path / "before.toml", tmp_path / "after.toml"
    before.write_text(TAGS_BEFORE)
    after.write_text(TAGS_AFTER)
    old_tag, new_tag = load_store(before).find("Drive1"), load_store(after).find("Drive1")
    assert old_tag is not None and new_tag is not None
    old_size, new_size = old_tag.size(), new_tag.size()
    assert new_size > old_size

    sim = start_simulator(SIM, config=before)
    try:
        spec = (f"plc=line,address={SIM},port={sim.tcp_port},udp_port={sim.udp_port},"
                "tag=Drive1,rpi_ms=20,multiplier=4")
        with start_worker(WORKER, [spec]) as w:
            first = w.wait_for(lambda m: isinstance(m, wire.Sample), 10, "a first sample")
            assert isinstance(first, wire.Sample)
            assert len(first.raw) == old_size
            assert isinstance(first.value, dict)
            assert set(first.value) == {"Running", "Speed", "Count"}
            assert first.value == compile_decoder(old_tag.type)(first.raw)

            # The download: the controller goes away and comes back with a new tag table.
            ports = (sim.tcp_port, sim.udp_port)
            sim.close()
            sim = start_simulator(SIM, tcp_port=ports[0], udp_port=ports[1], config=after)

            changed = w.wait_for(
                lambda m: isinstance(m, wire.Event) and m.tag == "Drive1"
                and "tag type changed after a download" in (m.message or ""), 20,
                "the type-changed event")
            assert isinstance(changed, wire.Event)
            assert (changed.kind, changed.state_from, changed.state_to) == ("state", "RESOLVING",
                                                                            "OPENING")
            assert f"{old_size} -> {new_size} bytes" in changed.message
            new = w.wait_for(lambda m: isinstance(m, wire.Sample) and len(m.raw) == new_size,
                             10, "a sample of the new layout")
            assert isinstance(new, wire.Sample)
            assert isinstance(new.value, dict)
            assert set(new.value) == {"Running", "Speed", "Count", "Batch"}
            assert new.value["Batch"] == 4711
            assert new.value == compile_decoder(new_tag.type)(new.raw)
            # the reconnection went through discovery again; nothing failed for good
            assert w.events("Drive1", "error") or w.events("Drive1", "timeout")
            assert not [e for e in w.events("Drive1") if e.state_to == "FAILED"]
            w.collect(0.3)
            later = [m for m in w.messages[w.messages.index(new):]
                     if isinstance(m, wire.Sample)]
            assert len(later) > 2 and all(len(s.raw) == new_size for s in later)
            status = w.control("status")["consumers"][0]
            assert (status["state"], status["size"], status["learned"]) == ("RUNNING", new_size,
                                                                            True)
    finally:
        sim.close()


def test_a_given_size_that_a_download_outgrew_is_adopted_with_the_new_type(
    tmp_path: Path,
) -> None:
    before, after = tmp_path / "before.toml", tmp_path / "after.toml"
    before.write_text(TAGS_BEFORE)
    after.write_text(TAGS_AFTER)
    old_tag, new_tag = load_store(before).find("Drive1"), load_store(after).find("Drive1")
    assert old_tag is not None and new_tag is not None
    sim = start_simulator(SIM, config=before)
    try:
        spec = (f"plc=line,address={SIM},port={sim.tcp_port},udp_port={sim.udp_port},"
                f"tag=Drive1,rpi_ms=20,multiplier=4,size={old_tag.size()}")
        with start_worker(WORKER, [spec]) as w:
            # a given size is a check: the type is learned all the same, the samples decoded
            first = w.wait_for(lambda m: isinstance(m, wire.Sample), 10, "a first sample")
            assert isinstance(first, wire.Sample) and isinstance(first.value, dict)
            assert first.value == compile_decoder(old_tag.type)(first.raw)
            ports = (sim.tcp_port, sim.udp_port)
            sim.close()
            sim = start_simulator(SIM, tcp_port=ports[0], udp_port=ports[1], config=after)
            # after the outage the type is learned again, before any Forward_Open: its size is
            # not the given one, so it is adopted, with the setting to fix in the message, and
            # the controller never has to refuse the old size
            adopted = w.wait_for(
                lambda m: isinstance(m, wire.Event) and m.state_from == "RESOLVING"
                and "adopting" in m.message, 20, "the adopted size")
            assert isinstance(adopted, wire.Event) and adopted.kind == "error"
            assert adopted.state_to == "OPENING"
            assert f"Set size = {new_tag.size()}" in adopted.message
            assert f"given size, {old_tag.size()} bytes" in adopted.message
            sample = w.wait_for(lambda m: isinstance(m, wire.Sample)
                                and len(m.raw) == new_tag.size(), 20, "a sample of the new size")
            assert isinstance(sample, wire.Sample) and isinstance(sample.value, dict)
            assert sample.value["Batch"] == 4711 and sample.type_name == "Drive"
            assert not w.events("Drive1", "reject")
    finally:
        sim.close()

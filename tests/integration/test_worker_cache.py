"""The worker's per-PLC type cache against a real simulator (issue 6): 50 consumers of one PLC,
sizes learned, share one walk of the symbol table instead of one each; after a download (the
simulator replaced by one whose UDT gained a member) the cache is filled once more and every
consumer resumes with the new type.

The simulator listens on 127.61.13.2 with OS-chosen ports (the second process takes the same
ones) and serves 150 produced tags from a generated tag file; the worker binds 127.61.13.1
with UDP port 0. Requests are counted on both sides: the worker's ``types`` status of the PLC
and the simulator's encapsulation request counter.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pyconpro.acquisition import cip, wire
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.logix_controller import UNCONNECTED_REPLY_LIMIT, LogixController
from pyconpro.acquisition.resolve import CacheRequest, ResolverRequest, TagResolver, TypeCache
from pyconpro.simulator.tags import TagStore, load_store
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from tests.workers.worker_process import WorkerProcess, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WORKER = "127.61.13.1"
SIM = "127.61.13.2"
N_TAGS = 150
CONSUMED = [f"T{i:03d}" for i in range(1, N_TAGS, 3)][:50]  # spread over the whole listing


def tag_file(batch: bool) -> str:
    """150 produced tags, every other one a Drive UDT; ``batch``: Drive gained a member."""
    members = ['{ name = "Running", type = "BOOL" }', '{ name = "Speed", type = "REAL" }',
               '{ name = "Count", type = "DINT" }']
    if batch:
        members.append('{ name = "Batch", type = "DINT" }')
    out = [f"[types.Drive]\nmembers = [{', '.join(members)}]\n"]
    for i in range(N_TAGS):
        udt = i % 2 == 1
        out.append(f'[[tags]]\nname = "T{i:03d}"\ntype = "{"Drive" if udt else "DINT"}"\n'
                   "produced = true\nmax_consumers = 2\n")
        if udt:
            out.append(f"value = {{ Count = {i}{', Batch = 4711' if batch else ''} }}\n")
        else:
            out.append(f'generator = {{ kind = "counter", start = {i}, interval_s = 0.05 }}\n')
    return "\n".join(out)


def one_fill_cost(store: TagStore, tags: list[str]) -> tuple[int, int]:
    """(requests of one shared fill, requests of one TagResolver per tag) against the pure
    explicit target the simulator runs, with its unconnected reply limit."""
    target = LogixController(store)

    def answer(message: bytes) -> cip.Reply:
        return cip.Reply.decode(target.handle(message, 0.0, reply_limit=UNCONNECTED_REPLY_LIMIT))

    cache = TypeCache()
    for i, tag in enumerate(tags):
        cache.resolve(tag, i)
    answered = 0
    while outs := cache.take_outputs():
        for out in outs:
            if isinstance(out, CacheRequest):
                cache.on_reply(out.token, answer(out.message))
            else:
                answered += 1
    assert answered == len(tags)
    separate = 0
    for tag in tags:
        r = TagResolver(tag)
        r.start()
        while steps := r.take_outputs():
            for step in steps:
                if isinstance(step, ResolverRequest):
                    r.on_reply(answer(step.message))
        separate += r.requests
    return cache.requests, separate


def states(w: WorkerProcess) -> dict[str, Any]:
    return {c["tag"]: c for c in w.control("status")["consumers"]}


def wait_running(w: WorkerProcess, timeout: float, size_of: dict[str, int]) -> dict[str, Any]:
    """Until every consumer is RUNNING with the expected size (reads the bus meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        got = states(w)
        if all(c["state"] == "RUNNING" and c["size"] == size_of[t] for t, c in got.items()):
            return got
        if time.monotonic() > deadline:
            bad = {t: (c["state"], c["size"], c["failure"]) for t, c in got.items()
                   if c["state"] != "RUNNING" or c["size"] != size_of[t]}
            raise AssertionError(f"not all RUNNING with the right size within {timeout} s: {bad}")
        w.collect(0.2)


def plc_types(w: WorkerProcess) -> dict[str, Any]:
    (plc,) = w.control("status")["plcs"]
    types: dict[str, Any] = plc["types"]
    return types


def explicit_requests(sim: SimulatorProcess) -> int:
    """Encapsulation requests the simulator served that were not RegisterSession or
    Connection Manager requests: the explicit (type discovery) ones."""
    st = sim.control.status()
    target = st["target"]
    cm_requests = target["forward_opens"] + target["forward_closes"]  # rejects included
    return int(st["server"]["encap_requests"] - st["server"]["sessions_registered"]
               - cm_requests)


def test_fifty_consumers_share_one_lookup_and_a_download_refills_it_once(tmp_path: Path) -> None:
    before, after = tmp_path / "before.toml", tmp_path / "after.toml"
    before.write_text(tag_file(batch=False))
    after.write_text(tag_file(batch=True))
    old_store, new_store = load_store(before), load_store(after)
    old_size = {t: old_store.find(t).size() for t in CONSUMED}  # type: ignore[union-attr]
    new_size = {t: new_store.find(t).size() for t in CONSUMED}  # type: ignore[union-attr]
    assert old_size != new_size
    fill, separate = one_fill_cost(old_store, CONSUMED)
    assert separate > 10 * fill  # what 50 one-tag lookups would cost

    sim = start_simulator(SIM, config=before)
    try:
        specs = [f"plc=line,address={SIM},port={sim.tcp_port},udp_port={sim.udp_port},"
                 f"tag={t},rpi_ms=50,multiplier=4" for t in CONSUMED]
        drive, dint = CONSUMED[0], CONSUMED[1]
        assert old_size[drive] > 4 and old_size[dint] == 4
        with start_worker(WORKER, specs, subscribe=(b"event/", b"stats/",
                                                    f"sample/line/{drive}/".encode())) as w:
            first = wait_running(w, 60, old_size)
            assert all(c["learned"] for c in first.values())
            types = plc_types(w)
            # one shared fill: what the pure cache needs against the same tag table, on both
            # sides of the wire, not one listing per consumer
            assert types["requests"] == types["generation_requests"] == fill
            assert types["listings"] == 1 and types["hits"] + types["misses"] == len(CONSUMED)
            assert explicit_requests(sim) == fill

            # The download: the controller goes away and comes back with a new tag table.
            ports = (sim.tcp_port, sim.udp_port)
            sim.close()
            sim = start_simulator(SIM, tcp_port=ports[0], udp_port=ports[1], config=after)

            resumed = wait_running(w, 90, new_size)
            assert all(c["learned"] for c in resumed.values())
            types = plc_types(w)
            # the new generation was filled once for all 50 consumers
            assert types["generation"] >= 2
            new_fill, _ = one_fill_cost(new_store, CONSUMED)
            assert types["generation_requests"] == new_fill
            assert explicit_requests(sim) == new_fill
            changed = [e for e in w.events() if "tag type changed after a download" in
                       (e.message or "")]
            assert {e.tag for e in changed} == {t for t in CONSUMED
                                                if new_size[t] != old_size[t]}
            assert not [e for e in w.events() if e.state_to == "FAILED"]
            new = w.wait_for(lambda m: isinstance(m, wire.Sample) and m.tag == drive
                             and len(m.raw) == new_size[drive], 10, "a sample of the new Drive")
            assert isinstance(new, wire.Sample)
            assert new.value == compile_decoder(new_store.find(drive).type)(new.raw)  # type: ignore[union-attr]
            assert isinstance(new.value, dict) and new.value["Batch"] == 4711
    finally:
        sim.close()

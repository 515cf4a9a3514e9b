"""The live page in a real browser: headless Chromium (tests/support/browser.py) opens the page
of a whole pipeline (``pyconpro run``: two simulated PLCs, one I/O worker each, the SQLite sink,
the web process with a token) on a phone-sized screen and sees what a person would:

- the values of several tags change on screen; a UDT opens as a tree and stays open while its
  value updates; a numeric tag draws its sparkline; nothing is wider than the screen;
- a PLC that stops turns its tag to a visible error state (the card and its state in red, the
  reason written), while the other PLC's tags stay fine;
- the web process restarted (the supervisor's ``restart`` op) and the page reconnects by itself
  and goes on updating;
- ``/metrics`` of that pipeline parses with the Prometheus parser and counts its samples.

A screenshot is saved under the test's temporary directory (its path is printed). Skips without
Chromium (``apt-get install -y chromium``), fails in CI (PYCONPRO_REQUIRE_CHROMIUM).
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyconpro.workers.process import Child, spawn

from pyconpro.status_cli import request
from tests.support.browser import Browser, Page, require_chromium
from tests.support.ports import free_port, free_subnet
from tests.support.wait import wait_for

simulator_testing = pytest.importorskip("pyconpro.simulator.testing")
prometheus_parser = pytest.importorskip(
    "prometheus_client.parser", reason="prometheus_client comes with the test extras")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
TOKEN = "browser-test-token-2718281828"
ERROR_RED = "rgb(198, 40, 40)"  # app.css --error






@pytest.fixture
def plant(tmp_path: Path) -> Iterator[tuple[str, list[Any], Child]]:
    """Two simulated PLCs (line1, line2) and ``pyconpro run`` with [web]: (url, sims, run)."""
    net = free_subnet(75, (2, 3))
    sims: list[Any] = []
    run: Child | None = None
    try:
        for host in (2, 3):
            sims.append(simulator_testing.start_simulator(f"127.75.{net}.{host}",
                                                          tcp_port=44818))  # fmt: skip
        port = free_port("127.0.0.1")
        (tmp_path / "web.token").write_text(TOKEN + "\n")
        (tmp_path / "pipeline.toml").write_text(f"""
[bus]
endpoint = "ipc://{tmp_path}/bus"
control_base = "ipc://{tmp_path}/ctl"
[worker]
udp_port = {free_port(f"127.75.{net}.1", socket.SOCK_DGRAM)}
[supervisor]
start_s = 0.5
backoff_initial_s = 0.2
[web]
port = {port}
token_file = "web.token"
updates_per_s = 5
[[plc]]
name = "line1"
address = "127.75.{net}.2"
local_address = "127.75.{net}.1"
udp_port = {sims[0].udp_port}
  [[plc.tag]]
  name = "Counter"
  rpi_ms = 50
  [[plc.tag]]
  name = "Sine"
  rpi_ms = 20
  [[plc.tag]]
  name = "Motor"
  rpi_ms = 100
[[plc]]
name = "line2"
address = "127.75.{net}.3"
local_address = "127.75.{net}.1"
udp_port = {sims[1].udp_port}
  [[plc.tag]]
  name = "Counter"
  rpi_ms = 50
[[sink]]
kind = "sqlite"
name = "db"
path = "out.sqlite3"
""")
        log = tmp_path / "run.log"
        run = spawn([sys.executable, "-m", "pyconpro.cli", "run", str(tmp_path / "pipeline.toml")],
                    stdout=log, stderr=log, cwd=REPO)  # fmt: skip
        yield f"http://127.0.0.1:{port}/", sims, run
    finally:
        if run is not None:
            run.stop(60.0)
        for sim in sims:
            sim.close()


def get(url: str, *, token: str | None = TOKEN) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as reply:
        body: bytes = reply.read()
    return body


def running(url: str) -> bool:
    try:
        status = json.loads(get(url + "api/status"))
    except OSError:
        return False
    states = {t["key"]: t["state"] for t in status["tags"]}
    return all(states.get(k) == "RUNNING" for k in (
        "line1/Counter", "line1/Sine", "line1/Motor", "line2/Counter"))  # fmt: skip


def card(key: str, inside: str = "") -> str:
    """JavaScript for the element ``inside`` the card of tag ``key``."""
    return f"document.querySelector('[data-key=\"{key}\"] {inside}')"


def text(page: Page, key: str, inside: str) -> str:
    value = page.evaluate(f"{card(key, inside)}?.textContent ?? ''")
    return str(value)


def wait_changed(page: Page, key: str, timeout: float = 15.0) -> None:
    """The value shown for ``key`` changes on screen (it is there first)."""
    before = page.wait_for(f"{card(key, '.value')}?.textContent", f"a value of {key}")
    page.wait_for(f"{card(key, '.value')}.textContent !== {json.dumps(before)}",
                  f"the value of {key} to change from {before!r}", timeout)  # fmt: skip


@pytest.fixture
def chromium() -> str:
    """Chromium's path, asked before anything starts (a skip then costs nothing)."""
    return require_chromium()


def test_the_live_page_in_a_real_browser(
    chromium: str, tmp_path: Path, plant: tuple[str, list[Any], Child]
) -> None:
    url, sims, run = plant
    wait_for(lambda: running(url) or run.poll() is not None,
             "every tag RUNNING on /api/status", 40.0)  # fmt: skip
    assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
    browser = Browser.start(chromium, tmp_path / "chromium", log=tmp_path / "chromium.log")
    try:
        # A phone-sized screen; the token comes in the link's fragment (the page keeps it).
        page = browser.new_page(url + "#token=" + TOKEN, width=390, height=844, mobile=True)
        page.wait_for("document.getElementById('conn')?.dataset.conn === 'live'", "the stream")
        for key in ("line1/Counter", "line1/Sine", "line2/Counter"):
            wait_changed(page, key)
        assert page.evaluate("location.hash") == ""  # the token is not left in the address bar
        # A UDT is a tree: opened, it shows its members, and stays open while it updates.
        page.wait_for(f"{card('line1/Motor', '.value details summary')} !== null", "Motor's tree")
        page.evaluate(f"{card('line1/Motor', '.value details summary')}.click()")
        page.wait_for(f"{card('line1/Motor', '.value details')}.open", "Motor's tree to open")
        opened = text(page, "line1/Motor", ".value")
        assert "Speed:" in opened and "Running:" in opened, opened
        wait_changed(page, "line1/Motor")
        assert page.evaluate(f"{card('line1/Motor', '.value details')}.open") is True
        # The REAL draws its sparkline; the counters are shown.
        page.wait_for(f"({card('line1/Sine', 'polyline')}.getAttribute('points') || '')"
                      ".split(' ').length > 3", "Sine's sparkline")  # fmt: skip
        assert text(page, "line1/Sine", ".type") == "REAL"
        # RUNNING (a worker starved on a busy machine may show its PLC down for a moment).
        page.wait_for(f"{card('line1/Sine', '.state')}?.textContent === 'RUNNING'",
                      "Sine RUNNING on the page")  # fmt: skip
        page.wait_for(f"{card('line1/Sine', '[data-stat=rate] dd')}.textContent !== '–'",
                      "Sine's rate")  # fmt: skip
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

        # line2's PLC stops: its tag turns to a visible error state; line1's stay fine.
        sims[1].stop()
        page.wait_for(f"{card('line2/Counter')}.dataset.health === 'error'",
                      "line2/Counter in the error state")  # fmt: skip
        badge = card("line2/Counter", ".state")
        assert page.evaluate(f"getComputedStyle({badge}).backgroundColor") == ERROR_RED
        assert page.evaluate(f"getComputedStyle({card('line2/Counter')}).borderLeftColor") == (
            ERROR_RED)
        assert page.evaluate(f"{badge}.getBoundingClientRect().height") > 0
        assert text(page, "line2/Counter", ".state") != "RUNNING"
        page.wait_for(f"{card('line2/Counter', '.problem')}.textContent.length > 0",
                      "the reason written on line2/Counter")  # fmt: skip
        assert page.evaluate(f"{card('line1/Counter')}.dataset.health") == "ok"
        shot = page.screenshot(tmp_path / "live-page.png")
        print(f"\nscreenshot of the live page: {shot}")

        # The web process restarts: the page reconnects by itself and goes on.
        assert page.evaluate("document.body.dataset.streams") == "1"
        control = f"ipc://{tmp_path}/ctl-supervisor"
        reply = request(control, {"op": "restart", "child": "web"}, 5.0)
        assert reply is not None and reply["ok"], reply
        page.wait_for("document.body.dataset.streams === '2' && "
                      "document.getElementById('conn').dataset.conn === 'live'",
                      "the page to reconnect to the restarted web process", 30.0)  # fmt: skip
        wait_changed(page, "line1/Counter")
        assert page.errors() == []
    finally:
        browser.close()

    # /metrics of the running pipeline, through the official parser.
    families = {f.name: f for f in prometheus_parser.text_string_to_metric_families(
        get(url + "metrics").decode())}  # fmt: skip
    samples = {(s.labels.get("plc"), s.labels.get("tag")): s.value
               for s in families["pyconpro_tag_samples"].samples}  # fmt: skip
    assert samples[("line1", "Counter")] > 0 and samples[("line1", "Sine")] > 0
    assert families["pyconpro_up"].samples[0].value == 1
    web_state = {s.labels["state"]: s.value for s in families["pyconpro_process_state"].samples
                 if s.labels["process"] == "web"}  # fmt: skip
    assert sum(web_state.values()) == 1
    cpu = {s.labels["process"] for s in families["pyconpro_process_cpu_seconds"].samples}
    assert {"supervisor", "sink-db"} <= cpu
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(url + "metrics", token="not-the-token-at-all")
    assert refused.value.code == 401
    assert run.stop(60.0) == 0  # a graceful stop, the web process included

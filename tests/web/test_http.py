"""The web process over real HTTP: ``python -m pyconpro.web.server`` as a child, fed by a real
PUB socket (the bus), asked by a plain HTTP client and an event-stream reader: the page and its
files, the bearer token (refused, accepted, as a header and as the page's cookie), the event
stream and its throttle, /metrics through the Prometheus parser, a clean stop with a page
connected, and the errors it starts with.

There is no supervisor here (no ``--control``): the page then shows what the bus brings, and
says the supervisor does not answer. tests/integration/test_web_browser.py runs the whole
pipeline."""

from __future__ import annotations

import hashlib
import http.client
import json
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq
from pyconpro.acquisition.wire import Sample
from pyconpro.workers.process import Child, json_ready, spawn

from tests.support.wait import wait_for

prometheus_parser = pytest.importorskip(
    "prometheus_client.parser", reason="prometheus_client comes with the test extras")

pytestmark = [pytest.mark.timeout(90)]

TOKEN = "t0k-EN_for/the+web;test"  # with characters a cookie must carry URL-encoded
UPDATES_PER_S = 4.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Web:
    child: Child
    port: int
    pub: zmq.Socket[Any]
    seq: dict[str, int] = field(default_factory=dict)

    def get(self, path: str, *, token: str | None = None, cookie: str | None = None,
            method: str = "GET") -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            headers["Cookie"] = cookie
        try:
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def publish(self, tag: str, value: Any, *, plc: str = "line1") -> None:
        topic = f"sample/{plc}/{tag}/"
        seq = self.seq.get(topic, 0)
        self.seq[topic] = seq + 1
        now = time.time_ns()
        _, body = Sample(seq=seq, publisher="worker-test", plc=plc, tag=tag, t_wall_ns=now,
                         t_mono_ns=time.monotonic_ns(), cip_seq=seq & 0xFFFF, gap=0,
                         value=value, raw=b"", type_name="DINT").encode()  # fmt: skip
        self.pub.send_multipart([topic.encode(), body])


def start_web(tmp_path: Path, *args: str) -> Child:
    return spawn([sys.executable, "-m", "pyconpro.web.server", "--port", "0",
                  "--connect", f"ipc://{tmp_path}/bus", "--updates-per-s", str(UPDATES_PER_S),
                  *args], ready=json_ready, stderr=tmp_path / "web.log")  # fmt: skip


@pytest.fixture
def pub(tmp_path: Path) -> Iterator[zmq.Socket[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"ipc://{tmp_path}/bus")
    try:
        yield sock
    finally:
        sock.close(0)
        ctx.term()


def _web(tmp_path: Path, pub: zmq.Socket[Any], *args: str) -> Iterator[Web]:
    child = start_web(tmp_path, *args)
    try:
        yield Web(child, int(child.ready["port"]), pub)
    finally:
        code = child.stop(10.0)
        assert code == 0, (tmp_path / "web.log").read_text()


@pytest.fixture
def web(tmp_path: Path, pub: zmq.Socket[Any]) -> Iterator[Web]:
    sha = hashlib.sha256(TOKEN.encode()).hexdigest()
    yield from _web(tmp_path, pub, "--token-sha256", sha)


@pytest.fixture
def open_web(tmp_path: Path, pub: zmq.Socket[Any]) -> Iterator[Web]:
    yield from _web(tmp_path, pub)


class EventStream:
    """``/events`` read by a thread into a queue of (receive time, event, data)."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", "/events", headers={"Authorization": f"Bearer {token}"})
        self.sock = self.conn.sock  # the response takes it over (HTTP/1.0: read to the end)
        assert self.sock is not None
        self.resp = self.conn.getresponse()
        self.events: queue.Queue[tuple[float, str, Any]] = queue.Queue()
        self.first_lines: list[str] = []
        self.thread = threading.Thread(target=self._read, name="test-sse")
        self.thread.start()

    def _read(self) -> None:
        name, data = "message", ""
        try:
            while True:
                line = self.resp.readline().decode()
                if not line:
                    break
                if len(self.first_lines) < 3:
                    self.first_lines.append(line)
                line = line.rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    self.events.put((time.monotonic(), name, json.loads(data)))
                    name, data = "message", ""
        except OSError:
            pass
        self.events.put((time.monotonic(), "<closed>", None))

    def next(self, timeout: float = 10.0) -> tuple[float, str, Any]:
        return self.events.get(timeout=timeout)

    def until(self, what: str, pred: Any, timeout: float = 20.0) -> list[tuple[float, str, Any]]:
        """Events up to and including the first for which ``pred(name, data)`` holds."""
        seen: list[tuple[float, str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.next(max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}; got {seen[-5:]}") from None
            seen.append(item)
            if item[1] == "<closed>" or pred(item[1], item[2]):
                return seen

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(10)
        self.conn.close()


def _values_for(key: str) -> Any:
    return lambda name, data: name == "values" and key in data


def wait_subscribed(web: Web, stream: EventStream) -> None:
    """Publish a probe until the web process's subscription has reached our PUB socket."""

    def probe() -> bool:
        web.publish("Probe", 1)
        try:
            stream.until("the probe", _values_for("line1/Probe"), timeout=0.2)
        except AssertionError:
            return False
        return True

    wait_for(probe, "the web process to subscribe to the bus", 20.0, interval=0.0)


# ------------------------------------------------------------------ the page and the token


def test_the_page_and_its_files_are_served_to_anyone(web: Web) -> None:
    page = web.get("/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script src="app.js" defer></script>' in page.body
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for path, ctype in (("/app.js", "text/javascript"), ("/app.css", "text/css"),
                        ("/favicon.svg", "image/svg+xml")):  # fmt: skip
        reply = web.get(path)
        assert reply.status == 200 and reply.headers["content-type"].startswith(ctype), path
        assert len(reply.body) > 100
    head = web.get("/", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == len(page.body)


def test_data_needs_the_token(web: Web) -> None:
    refused = 0
    for path in ("/api/status", "/api/last", "/metrics", "/events"):
        for token in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
            reply = web.get(path, token=token)
            refused += 1
            assert reply.status == 401, (path, token)
            assert reply.headers["www-authenticate"] == 'Bearer realm="pyconpro"'
            assert "Authorization: Bearer TOKEN" in reply.json()["error"]
    assert web.get("/api/status", cookie="pyconpro_token=wrong-token-0123456").status == 401
    refused += 1
    ok = web.get("/api/status", token=TOKEN)
    assert ok.status == 200 and ok.headers["content-type"] == "application/json"
    assert ok.headers["cache-control"] == "no-store"
    # The page's cookie carries the token URL-encoded (app.js: encodeURIComponent).
    cookie = "theme=dark; pyconpro_token=" + urllib.parse.quote(TOKEN, safe="")
    assert web.get("/api/last", cookie=cookie).status == 200
    metrics = web.get("/metrics", token=TOKEN)
    assert metrics.status == 200
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in prometheus_parser.text_string_to_metric_families(
        metrics.body.decode())}  # fmt: skip
    assert families["pyconpro_up"].samples[0].value == 0  # no supervisor here
    assert families["pyconpro_web_requests_refused"].samples[0].value == refused


def test_without_a_token_configured_everything_is_open(open_web: Web) -> None:
    assert open_web.get("/api/status").status == 200
    assert open_web.get("/metrics").status == 200


def test_only_reading_is_served(web: Web) -> None:
    for method in ("POST", "PUT", "DELETE"):
        reply = web.get("/api/status", token=TOKEN, method=method)
        assert reply.status == 405 and reply.headers["allow"] == "GET, HEAD"
    missing = web.get("/admin", token=TOKEN)
    assert missing.status == 404 and "/api/status" in missing.json()["error"]


# ------------------------------------------------------------------ the event stream


def test_the_event_stream_starts_with_a_snapshot_then_pushes_values(web: Web) -> None:
    web.publish("Before", 41)  # may be lost to the subscription's start: that is PUB/SUB
    stream = EventStream(web.port, TOKEN)
    try:
        assert stream.resp.status == 200
        assert stream.resp.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        _, name, hello = stream.next()
        assert name == "hello" and stream.first_lines[0] == "retry: 1000\n"
        assert set(hello) == {"status", "values", "history"}
        assert hello["status"]["supervisor"]["answering"] is False
        wait_subscribed(web, stream)
        web.publish("Counter", 7)
        [*_, (_, _, update)] = stream.until("Counter = 7", _values_for("line1/Counter"))
        assert update["line1/Counter"]["v"] == 7 and update["line1/Counter"]["ty"] == "DINT"
        assert update["line1/Counter"]["p"][1] == 7.0
        last = web.get("/api/last", token=TOKEN).json()
        assert last["line1/Counter"]["value"] == 7
        status = web.get("/api/status", token=TOKEN).json()
        assert "line1/Counter" in {t["key"] for t in status["tags"]}
        # A second page gets the values so far in its snapshot.
        second = EventStream(web.port, TOKEN)
        try:
            _, name, hello2 = second.next()
            assert name == "hello" and hello2["values"]["line1/Counter"]["v"] == 7
            assert hello2["history"]["line1/Counter"][-1][1] == 7.0
        finally:
            second.close()
    finally:
        stream.close()


def test_a_fast_tag_is_throttled_and_its_last_value_arrives(web: Web) -> None:
    stream = EventStream(web.port, TOKEN)
    try:
        stream.next()  # hello
        wait_subscribed(web, stream)
        n = 0
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # about 500 samples a second
            web.publish("Fast", n)
            n += 1
            time.sleep(0.002)
        published_for = time.monotonic() - started
        last = n - 1
        events = stream.until(f"Fast = {last}", lambda name, data: name == "values"
                              and data.get("line1/Fast", {}).get("v") == last)  # fmt: skip
        fast = [(t, d["line1/Fast"]["v"]) for t, name, d in events
                if name == "values" and "line1/Fast" in d]  # fmt: skip
        # At most UPDATES_PER_S a second over the time samples came, plus the first and the
        # last; never one per sample.
        assert len(fast) <= published_for * UPDATES_PER_S + 2, (len(fast), published_for)
        assert n > 20 * len(fast), (n, len(fast))
        assert [v for _, v in fast] == sorted(v for _, v in fast)
    finally:
        stream.close()


def test_it_stops_cleanly_with_a_page_connected(tmp_path: Path, pub: zmq.Socket[Any]) -> None:
    child = start_web(tmp_path)
    stream = EventStream(int(child.ready["port"]), "-")
    try:
        assert stream.next()[1] == "hello"
        assert child.stop(10.0) == 0  # SIGTERM: the stream ends, every thread is joined
        assert stream.until("the end of the stream", lambda n, d: False)[-1][1] == "<closed>"
    finally:
        stream.close()
        child.stop(1.0)


# ------------------------------------------------------------------ what it refuses


def _fails(tmp_path: Path, *args: str) -> str:
    child = spawn([sys.executable, "-m", "pyconpro.web.server", "--connect",
                   f"ipc://{tmp_path}/bus", *args],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out, err = child.communicate(30)
    assert child.returncode == 2, out + err
    return err


def test_a_port_in_use_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        err = _fails(tmp_path, "--port", str(taken.getsockname()[1]))
    assert "cannot listen on 127.0.0.1 port" in err and "set [web].port to a free port" in err


def test_an_unusable_token_file_is_an_error(tmp_path: Path) -> None:
    err = _fails(tmp_path, "--token-file", str(tmp_path / "missing.token"))
    assert "the token file" in err and "cannot be read: No such file or directory" in err
    weak = tmp_path / "weak.token"
    weak.write_text("secret\n")
    err = _fails(tmp_path, "--token-file", str(weak))
    assert "the token has 6 characters, fewer than 16" in err

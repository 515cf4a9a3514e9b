"""Run ``python -m pyconpro.workers.io_worker`` as a subprocess for tests, with a SUB socket on
its bus
and a client for its control socket. Every wait has a timeout; ``close()`` always ends the
process (SIGTERM, then SIGKILL: ``pyconpro.workers.process``) and closes every socket.

    with start_worker("127.61.4.1", ["plc=a,address=127.61.4.2,..."]) as w:
        w.wait_for(lambda m: isinstance(m, wire.Sample), timeout=5)
        w.control("list")
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import msgpack
import zmq
from pyconpro.acquisition import wire
from pyconpro.acquisition.control import consumer_from_text, consumer_to_map
from pyconpro.workers.process import Child, SpawnError, json_ready, source_env, spawn_with_log

_ROOT = Path(__file__).resolve().parent.parent.parent


class WorkerError(RuntimeError):
    pass


class WorkerProcess:
    def __init__(self, proc: Child, info: dict[str, Any], subscribe: Sequence[bytes]) -> None:
        self.proc = proc  # from spawn_with_log: its stderr is the log, deleted by close()
        self.info = info
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 1_000_000)
        for prefix in subscribe:
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix)
        self.sub.connect(info["pub"])
        self.messages: list[wire.Message] = []
        self.received_at: list[float] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.proc.stderr_text()

    # ------------------------------------------------------------------ bus

    def poll(self, timeout: float) -> wire.Message | None:
        if not self.sub.poll(int(timeout * 1000)):
            return None
        topic, body = self.sub.recv_multipart()
        msg = wire.decode(topic, body)
        self.messages.append(msg)
        self.received_at.append(time.monotonic())
        return msg

    def wait_for(
        self,
        predicate: Callable[[wire.Message], bool],
        timeout: float,
        what: str = "a matching message",
    ) -> wire.Message:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {what} within {timeout:g} s; worker log:\n" + self.log_text()[-4000:]
                )
            msg = self.poll(left)
            if msg is not None and predicate(msg):
                return msg

    def collect(self, duration: float) -> list[wire.Message]:
        """Every message received during ``duration`` seconds from now."""
        out = []
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            msg = self.poll(left)
            if msg is not None:
                out.append(msg)
        return out

    def samples(self, plc: str | None = None, tag: str | None = None) -> list[wire.Sample]:
        return [
            m
            for m in self.messages
            if isinstance(m, wire.Sample)
            and (plc is None or m.plc == plc)
            and (tag is None or m.tag == tag)
        ]

    def events(self, tag: str | None = None, kind: str | None = None) -> list[wire.Event]:
        return [
            m
            for m in self.messages
            if isinstance(m, wire.Event)
            and (tag is None or m.tag == tag)
            and (kind is None or m.kind == kind)
        ]

    # ------------------------------------------------------------------ control

    def control(self, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        req.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
        try:
            req.connect(self.info["control"])
            req.send(msgpack.packb({"op": op, **fields}))
            reply: dict[str, Any] = msgpack.unpackb(req.recv(), raw=False)
            return reply
        finally:
            req.close()

    def raw_control(self, body: bytes, timeout: float = 5.0) -> dict[str, Any]:
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        try:
            req.connect(self.info["control"])
            req.send(body)
            reply: dict[str, Any] = msgpack.unpackb(req.recv(), raw=False)
            return reply
        finally:
            req.close()

    def state_of(self, key: str) -> str | None:
        for c in self.control("list")["consumers"]:
            if c["key"] == key:
                return str(c["state"])
        return None

    def wait_state(self, key: str, state: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state_of(key) == state:
                return
            self.poll(0.05)
        raise AssertionError(
            f"{key} not {state} within {timeout:g} s (is {self.state_of(key)});"
            f" log:\n{self.log_text()[-4000:]}"
        )

    # ------------------------------------------------------------------ life

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit status."""
        return self.proc.stop(timeout)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.sub.close()
            self.ctx.term()
            self.proc.close()  # stopped already: deletes the log

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def worker_command(
    local_address: str,
    consumers: Sequence[str],
    *,
    udp_port: int = 0,
    extra_args: Sequence[str] = (),
    pub: str = "tcp://127.0.0.1:0",
    control: str = "tcp://127.0.0.1:0",
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pyconpro.workers.io_worker",
        "--local-address",
        local_address,
        "--udp-port",
        str(udp_port),
        "--pub",
        pub,
        "--control",
        control,
        "--log-level",
        "DEBUG",
    ]
    for c in consumers:
        cmd += ["--consumer", c]
    return cmd + list(extra_args)


def start_worker(
    local_address: str,
    consumers: Sequence[str] = (),
    *,
    udp_port: int = 0,
    extra_args: Sequence[str] = (),
    subscribe: Sequence[bytes] = (b"",),
    timeout: float = 15.0,
    prefix: Sequence[str] = (),
    pub: str = "tcp://127.0.0.1:0",
    control: str = "tcp://127.0.0.1:0",
    via_control: bool = True,
) -> WorkerProcess:
    """Start the worker (``prefix`` e.g. ``["ip", "netns", "exec", "ns1"]``; use ``ipc://``
    endpoints then, they are reachable across network namespaces) and wait for its ready
    line.

    With ``via_control`` (the default) the consumers are added through the control socket once
    the SUB socket provably receives (a first stats message), so no early event is lost to
    ZeroMQ's slow-joiner window; otherwise they go on the command line.
    """
    if via_control and consumers:
        if "--stats-interval" not in extra_args:
            extra_args = [*extra_args, "--stats-interval", "0.2"]
        w = start_worker(
            local_address,
            (),
            udp_port=udp_port,
            extra_args=extra_args,
            subscribe=subscribe,
            timeout=timeout,
            prefix=prefix,
            pub=pub,
            control=control,
            via_control=False,
        )
        try:
            if b"" not in subscribe and not any(b"stats/".startswith(p) for p in subscribe):
                w.sub.setsockopt(zmq.SUBSCRIBE, b"stats/")
            w.wait_for(lambda m: isinstance(m, wire.Stats), timeout, "a first stats message")
            for text in consumers:
                # The command line's text as the map a client sends: typed values.
                spec = consumer_to_map(consumer_from_text(text))
                reply = w.control("add", consumer=spec)
                if not reply.get("ok"):
                    raise WorkerError(f"add {text!r}: {reply.get('error')}")
        except BaseException:
            w.close()
            raise
        return w
    cmd = [
        *prefix,
        *worker_command(
            local_address,
            consumers,
            udp_port=udp_port,
            extra_args=extra_args,
            pub=pub,
            control=control,
        ),
    ]
    try:
        proc = spawn_with_log(cmd, log_prefix="pyconpro-worker-", ready=json_ready, cwd=_ROOT,
                              env=source_env(_ROOT), ready_timeout_s=timeout)
    except SpawnError as err:
        raise WorkerError(f"worker did not start: {err}") from None
    # A test run on one receive path (tests/support/receive_paths.py) gets a worker on it.
    wanted = {"0": "python", "1": "compiled"}.get(os.environ.get("PYCONPRO_FASTPATH", ""))
    if wanted is not None and proc.ready.get("receive_path") != wanted:
        proc.close(0)
        raise WorkerError(f"the worker runs the {proc.ready.get('receive_path')} receive path,"
                          f" not {wanted}")
    try:
        return WorkerProcess(proc, proc.ready, subscribe)
    except BaseException:
        proc.close(0)
        raise

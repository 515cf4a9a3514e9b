"""workers/guard.py: key files, the CURVE allow-list at work on real sockets, ipc file modes,
and the config loader's check of the key files."""

from __future__ import annotations

import argparse
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from pyconpro.acquisition.config import ConfigError
from pyconpro.acquisition.security import SecurityConfig
from pyconpro.workers.guard import (
    ClientKeys,
    CurveError,
    ServerGuard,
    client_keys_from_args,
    keygen,
    load_allowed,
    load_key_pair,
    load_public_key,
    restrict_ipc,
)

from pyconpro.config_file import load_config
from tests.support.configs import ONE_PLC


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_keygen_writes_a_private_secret_and_refuses_to_overwrite(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path / "plant")
    assert (public.name, secret.name) == ("plant.key", "plant.key_secret")
    assert (_mode(public), _mode(secret)) == (0o644, 0o600)
    pair = load_key_pair(secret)
    assert load_public_key(public) == pair.public == load_public_key(secret)
    assert len(pair.secret) == 40 and pair.secret != pair.public
    with pytest.raises(CurveError, match="already exists"):
        keygen(tmp_path / "plant")
    with pytest.raises(CurveError, match="not a directory"):
        keygen(tmp_path / "missing" / "plant")


def test_key_file_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    public, _ = keygen(tmp_path / "a")
    with pytest.raises(CurveError, match="only a public key.*key_secret"):
        load_key_pair(public)
    junk = tmp_path / "junk.key"
    junk.write_text("not a certificate\n")
    with pytest.raises(CurveError, match="junk.key.*pyconpro keygen"):
        load_public_key(junk)
    with pytest.raises(CurveError, match="cannot read.*nope"):
        load_key_pair(tmp_path / "nope")
    with pytest.raises(CurveError, match="not a directory"):
        load_allowed(tmp_path / "clients")
    (tmp_path / "clients").mkdir()
    public.rename(tmp_path / "clients" / "a.key")
    assert load_allowed(tmp_path / "clients") == {load_public_key(tmp_path / "clients/a.key")}


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    c: zmq.Context[Any] = zmq.Context()
    yield c
    c.term()


def _plant_guard(tmp_path: Path) -> tuple[ServerGuard, dict[str, ClientKeys | None]]:
    """A guard with the pipeline's key and one allowed client, and the clients to try: the
    allowed one, the pipeline's own, a stranger's key and no CURVE at all."""
    keygen(tmp_path / "plant")
    (tmp_path / "clients").mkdir()
    ok_public, ok_secret = keygen(tmp_path / "ok")
    ok_public.rename(tmp_path / "clients" / ok_public.name)
    bad_secret = keygen(tmp_path / "bad")[1]
    guard = ServerGuard(SecurityConfig(str(tmp_path / "plant.key_secret"),
                                       str(tmp_path / "clients")))  # fmt: skip
    assert guard.keys is not None
    server = guard.keys.public
    return guard, {
        "allowed": ClientKeys(load_key_pair(ok_secret), server),
        "pipeline": guard.client_keys("tcp://0.0.0.0:0"),
        "stranger": ClientKeys(load_key_pair(bad_secret), server),
        "plain": None,
    }


def _answered(guard: ServerGuard, ctx: zmq.Context[Any],
              clients: dict[str, ClientKeys | None]) -> dict[str, bool]:
    """Which clients a CURVE REP socket in ``ctx``, set up by ``guard``, answers."""
    rep = ctx.socket(zmq.REP)
    socks = [rep]
    try:
        assert guard.secure_bind(rep, "tcp://0.0.0.0:0")  # a network endpoint: CURVE
        rep.bind("tcp://127.0.0.1:*")
        endpoint = rep.getsockopt_string(zmq.LAST_ENDPOINT)
        answered = {}
        for name, keys in clients.items():
            req = ctx.socket(zmq.REQ)
            socks.append(req)
            req.setsockopt(zmq.LINGER, 0)
            if keys is not None:
                keys.apply(req)
            req.connect(endpoint)
            req.send(name.encode())
            # An allowed client gets its answer within 10 s even on a busy machine; a refused
            # one never does, so 2 s of silence is enough to say it was kept out.
            deadline = time.monotonic() + (10 if keys is not None and name != "stranger" else 2)
            got = False
            while time.monotonic() < deadline and not got:
                if rep.poll(50):
                    rep.send(rep.recv())
                got = bool(req.poll(50))
            answered[name] = got
        return answered
    finally:
        for s in socks:
            s.close(0)


EXPECTED = {"allowed": True, "pipeline": True, "stranger": False, "plain": False}


def test_only_allowed_keys_get_through(tmp_path: Path, ctx: zmq.Context[Any]) -> None:
    guard, clients = _plant_guard(tmp_path)
    try:
        assert _answered(guard, ctx, clients) == EXPECTED
        assert guard.stats()["curve_refused"] >= 1 and guard.stats()["curve_admitted"] == 2
    finally:
        guard.close()


def test_every_context_gets_its_own_zap_handler(tmp_path: Path, ctx: zmq.Context[Any]) -> None:
    """The bus forwarder's sockets live in a context of their own: a socket there, and one in
    the first context, each keep a stranger out; closing one context's handler lets that
    context be terminated while the other's keeps working."""
    guard, clients = _plant_guard(tmp_path)
    other: zmq.Context[Any] = zmq.Context()
    try:
        assert _answered(guard, other, clients) == EXPECTED
        assert _answered(guard, ctx, clients) == EXPECTED
        guard.close(other)
        ended = threading.Thread(target=other.term, daemon=True)
        ended.start()
        ended.join(30)
        assert not ended.is_alive(), "the context waited for its ZAP thread's socket"
        assert _answered(guard, ctx, {"stranger": clients["stranger"]}) == {"stranger": False}
    finally:
        guard.close()
        if not other.closed:
            other.term()


def test_loopback_and_ipc_stay_plain_unless_asked() -> None:
    guard = ServerGuard(SecurityConfig())
    assert not guard.uses_curve("tcp://0.0.0.0:1") and guard.client_keys("tcp://0.0.0.0:1") is None


def test_ipc_socket_files_are_private(tmp_path: Path, ctx: zmq.Context[Any]) -> None:
    old = os.umask(0)  # the worst case: libzmq would create the file 0777
    sock = ctx.socket(zmq.ROUTER)
    try:
        endpoint = f"ipc://{tmp_path}/ctl"
        sock.bind(endpoint)
        os.umask(old)
        restrict_ipc(endpoint)
        assert _mode(tmp_path / "ctl") == 0o600
    finally:
        os.umask(old)
        sock.close(0)


def test_client_flags_need_both_keys(tmp_path: Path) -> None:
    secret = keygen(tmp_path / "me")[1]
    args = argparse.Namespace(curve_key=str(secret))
    with pytest.raises(CurveError, match="give both"):
        client_keys_from_args(args, None, None)
    args.curve_server_key = str(tmp_path / "me.key")
    keys = client_keys_from_args(args, None, None)
    assert keys is not None and keys.server_public == keys.own.public
    assert client_keys_from_args(argparse.Namespace(), None, None) is None


def test_load_config_checks_the_key_files(tmp_path: Path) -> None:
    path = tmp_path / "plant.toml"
    path.write_text("""
[security]
server_key = "plant.key_secret"
client_keys = "clients"
""" + ONE_PLC)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert [(i.key, i.line) for i in exc.value.issues] == [
        ("security.server_key", 3), ("security.client_keys", 4)]  # fmt: skip
    assert "pyconpro keygen" in exc.value.issues[0].problem
    keygen(tmp_path / "plant")
    (tmp_path / "clients").mkdir()
    assert load_config(path).security.server_key == str(tmp_path / "plant.key_secret")

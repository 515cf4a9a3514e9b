"""Who may connect to the pipeline's ZeroMQ sockets: CURVE keys, the allow-list, the ZAP
handler, and the permissions of ipc socket files.

``acquisition/security.py`` decides which endpoints use CURVE (``uses_curve``); this module
does it. The pipeline has one key pair (``pyconpro keygen NAME`` writes ``NAME.key``, the
public key, and ``NAME.key_secret``, 0600, which holds both); ``[security] server_key`` names
the secret file. Every socket the pipeline binds on a CURVE endpoint is a CURVE server with
that key pair, and a ZAP handler (libzmq's authentication hook; pyzmq's
``ThreadAuthenticator``, one thread per ZeroMQ context that binds) admits a client only when its
public key is the pipeline's own or one of ``[security] client_keys/*.key``; anyone else is
refused during the handshake, before a single message, and counted (``refused``).

The pipeline's own processes (supervisor, workers, sinks) connect as clients with the pipeline's
key pair. A tool on another host (``pyconpro tail``, ``status``, a sink, a program of yours)
uses a key pair of its own whose public file is in ``client_keys``, and the pipeline's public
key: ``--curve-server-key NAME.key --curve-key ME.key_secret``.

``ipc://`` sockets are files: ``restrict_ipc`` makes each one the pipeline binds 0600 (and a
directory created for them 0700), so only this user (and root) can connect.

Key files are ZeroMQ's ZPL certificate format, so other languages' ZeroMQ bindings (CZMQ's
``zcert``, for one) read them as they are.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.security import SecurityConfig, uses_curve
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85 as zmq_z85

__all__ = [
    "ClientKeys",
    "CurveError",
    "KeyPair",
    "ServerGuard",
    "add_client_arguments",
    "client_keys_from_args",
    "keygen",
    "load_allowed",
    "load_key_pair",
    "load_public_key",
    "private_directory",
    "restrict_ipc",
]

log = logging.getLogger("pyconpro.curve")

_ZAP_DOMAIN = "pyconpro"


class CurveError(UsageError):
    """A key file or directory cannot be used; the message names it and the fix."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair, both halves Z85 text as bytes (40 characters each)."""

    public: bytes
    secret: bytes


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a client needs: its own key pair and the public key of the server it trusts."""

    own: KeyPair
    server_public: bytes

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client (before it connects)."""
        sock.curve_secretkey = self.own.secret
        sock.curve_publickey = self.own.public
        sock.curve_serverkey = self.server_public


def keygen(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new key pair: ``PATH.key`` (public, 0644) and ``PATH.key_secret`` (0600).

    Refuses to overwrite an existing pair (a pipeline's clients trust its public key).
    """
    base = Path(path)
    public, secret = base.with_name(base.name + ".key"), base.with_name(base.name + ".key_secret")
    for f in (public, secret):
        if f.exists():
            raise CurveError(f"{f} already exists; remove it first or choose another name "
                             "(clients that trust the old public key would be locked out)")
    directory = base.parent if str(base.parent) else Path(".")
    if not directory.is_dir():
        raise CurveError(f"{directory} is not a directory; create it first")
    old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        pub_name, sec_name = zmq.auth.create_certificates(directory, base.name)
    finally:
        os.umask(old)
    os.chmod(pub_name, 0o644)
    return Path(pub_name), Path(sec_name)


def _load(path: str | os.PathLike[str], what: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read the {what} {os.fspath(path)}: {exc}; "
                         "make one with `pyconpro keygen NAME`") from None
    if public is None or len(public) != 40:
        raise CurveError(f"{os.fspath(path)} holds no CURVE public key; "
                         "make one with `pyconpro keygen NAME`")
    return public, secret


def load_key_pair(path: str | os.PathLike[str]) -> KeyPair:
    """The key pair in a secret key file (``NAME.key_secret``)."""
    public, secret = _load(path, "secret key file")
    if secret is None:
        raise CurveError(f"{os.fspath(path)} holds only a public key; give the "
                         "NAME.key_secret file that `pyconpro keygen NAME` wrote beside it")
    mode = os.stat(path).st_mode & 0o077
    if mode:
        log.warning("%s can be read by other users (mode %o): chmod 600 it",
                    os.fspath(path), os.stat(path).st_mode & 0o777)
    return KeyPair(public, secret)


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The public key in a key file (either half of a pair)."""
    return _load(path, "public key file")[0]


def load_allowed(directory: str | os.PathLike[str] | None) -> frozenset[bytes]:
    """Public keys of the ``*.key`` files in ``directory`` (None: none)."""
    if directory is None:
        return frozenset()
    d = Path(directory)
    if not d.is_dir():
        raise CurveError(f"client_keys {d} is not a directory; create it and put the public key "
                         "file (NAME.key) of every client allowed to connect in it")
    return frozenset(load_public_key(f) for f in sorted(d.glob("*.key")))


class ServerGuard:
    """One process's CURVE server side: its key pair, the allow-list, the ZAP threads.

    Built from ``[security]`` (``CurveError`` when a key file is unusable), before any socket.

    ``secure_bind(sock, endpoint)`` before ``bind``: a CURVE server when ``uses_curve``,
    untouched otherwise. ``secure_connect(sock, endpoint)`` before ``connect`` to one of the
    pipeline's own endpoints: a client with the pipeline's key pair when that endpoint uses
    CURVE. A ZAP handler serves one ZeroMQ context, so each context gets its own thread, started
    with its first CURVE server socket (the bus forwarder's sockets live in a context of their
    own: without its own handler a socket there would admit every key). ``close(ctx)`` stops
    that context's thread, which must happen before the context is terminated (``term`` waits
    for the thread's socket); ``close()`` stops every one.
    """

    def __init__(self, security: SecurityConfig) -> None:
        self.security = security
        self.keys: KeyPair | None = None
        self._allowed: frozenset[bytes] = frozenset()
        if security.server_key is not None:
            self.keys = load_key_pair(security.server_key)
            self._allowed = load_allowed(security.client_keys) | {self.keys.public}
        self._auths: dict[int, ThreadAuthenticator] = {}  # id(context) -> its ZAP thread
        self._auth_lock = threading.Lock()  # sockets may be bound from several threads
        self._lock = threading.Lock()
        self.admitted = 0
        self.refused = 0

    def uses_curve(self, endpoint: str) -> bool:
        return self.keys is not None and uses_curve(endpoint, self.security)

    def secure_bind(self, sock: zmq.Socket[Any], endpoint: str) -> bool:
        """Set ``sock`` up as a CURVE server if ``endpoint`` needs it; True when it did."""
        if not self.uses_curve(endpoint) or self.keys is None:
            return False
        self._start_zap(sock.context)
        sock.zap_domain = _ZAP_DOMAIN.encode()
        sock.curve_server = True
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        return True

    def secure_connect(self, sock: zmq.Socket[Any], endpoint: str) -> bool:
        """Set ``sock`` up as a CURVE client of the pipeline if ``endpoint`` (as bound by the
        pipeline, not as connected to) uses CURVE; True when it did."""
        client = self.client_keys(endpoint)
        if client is None:
            return False
        client.apply(sock)
        return True

    def client_keys(self, endpoint: str) -> ClientKeys | None:
        """The pipeline's own client keys for ``endpoint``, None when it needs none."""
        if not self.uses_curve(endpoint) or self.keys is None:
            return None
        return ClientKeys(self.keys, self.keys.public)

    def callback(self, domain: str, key: Any) -> bool:
        """ZAP decision (called on the authenticator's thread): is ``key`` allowed?"""
        z85 = key if isinstance(key, bytes) else str(key).encode()
        if len(z85) == 32:
            z85 = zmq_z85.encode(z85)
        ok = z85 in self._allowed
        with self._lock:
            if ok:
                self.admitted += 1
            else:
                self.refused += 1
        if not ok:
            log.warning("refused a CURVE client with public key %s: not the pipeline's key and "
                        "not in [security] client_keys", z85.decode(errors="replace"))
        return ok

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"curve_admitted": self.admitted, "curve_refused": self.refused}

    def _start_zap(self, ctx: zmq.Context[Any]) -> None:
        with self._auth_lock:
            if id(ctx) in self._auths:
                return
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("pyconpro.curve.zap"))
            auth.start()
            auth.configure_curve_callback(domain=_ZAP_DOMAIN, credentials_provider=self)
            self._auths[id(ctx)] = auth

    def close(self, ctx: zmq.Context[Any] | None = None) -> None:
        """Stop the ZAP thread of ``ctx`` (of every context when None); idempotent."""
        with self._auth_lock:
            keys = list(self._auths) if ctx is None else [id(ctx)]
            stopping = [self._auths.pop(k) for k in keys if k in self._auths]
        for auth in stopping:
            auth.stop()


def restrict_ipc(endpoint: str) -> None:
    """Make the socket file of a bound ``ipc://`` endpoint 0600 (no-op for other transports).

    libzmq creates it with the process umask (often 0755: others cannot connect, as connecting
    needs write permission, but a umask of 0 would let them); this makes it explicit.
    """
    if not endpoint.startswith("ipc://"):
        return
    path = endpoint[len("ipc://"):]
    if path.startswith("@"):  # Linux abstract namespace: no file, no permissions
        return
    try:
        os.chmod(path, 0o600)
    except OSError as exc:
        log.warning("cannot make %s private (chmod 600): %s", path, exc.strerror)


def private_directory(path: str) -> None:
    """Create ``path`` (and its parents) for ipc sockets: the last level 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)


def add_client_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """``--curve-server-key`` / ``--curve-key`` for a tool that connects to a pipeline (a
    parser or an argument group; absent flags leave no attribute, so a sub-parser's own
    copy does not reset the main parser's)."""
    parser.add_argument("--curve-server-key", metavar="FILE", default=argparse.SUPPRESS,
                        help="CURVE: the pipeline's public key file (NAME.key from `pyconpro "
                             "keygen`), when its endpoint uses CURVE")
    parser.add_argument("--curve-key", metavar="FILE", default=argparse.SUPPRESS,
                        help="CURVE: this client's secret key file (its NAME.key must be in the "
                             "pipeline's [security] client_keys directory)")


def client_keys_from_args(
    args: argparse.Namespace, security: SecurityConfig | None, endpoint: str | None
) -> ClientKeys | None:
    """Client keys from ``--curve-server-key``/``--curve-key``, else from the config's
    ``[security]`` (``security``) when the pipeline's ``endpoint`` uses CURVE; None: plain."""
    server, own = getattr(args, "curve_server_key", None), getattr(args, "curve_key", None)
    if server is not None or own is not None:
        if server is None or own is None:
            raise CurveError("give both --curve-server-key (the pipeline's NAME.key) and "
                             "--curve-key (this client's NAME.key_secret)")
        return ClientKeys(load_key_pair(own), load_public_key(server))
    if security is None or endpoint is None or security.server_key is None:
        return None
    if not uses_curve(endpoint, security):
        return None
    pair = load_key_pair(security.server_key)
    return ClientKeys(pair, pair.public)

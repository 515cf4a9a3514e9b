"""Who may talk to the pipeline's ZeroMQ sockets: the ``[security]`` model (pure).

Two kinds of socket face the outside: the **bus endpoint** (``[bus].endpoint``: anyone
connected reads every sample) and the **control sockets** (``[bus].control_base``: the
supervisor's and each worker's; whoever reaches them can read status, add consumers, stop
workers and shut the pipeline down). Both are safe on ``ipc://`` (a socket file only this
user can open) and on loopback (this host only). Anywhere else they are protected by ZeroMQ
CURVE: the pipeline has one key pair (``pyconpro keygen``), every client proves a key in an
allow-list, and traffic is encrypted.

Rules (``endpoint_exposure`` / ``exposure_issues``):

- a **control** socket on a non-loopback TCP address without ``[security] server_key`` is an
  error: ``check`` reports it and ``run`` refuses to start;
- a **bus** endpoint on a non-loopback TCP address without a key is a warning (publishing a
  plant's data in clear to its own network can be intended, but it is said);
- with ``server_key`` set, every non-loopback TCP socket uses CURVE, and so does loopback
  when ``curve_on_loopback = true`` (other local users then need a key too). ``ipc://``
  endpoints never use CURVE: their socket files are created 0600.

This module only decides; ``workers/guard.py`` reads the key files and sets the sockets up.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from pyconpro.acquisition.toml_check import ConfigIssue, IssueLog, Table, join, relative_to

__all__ = [
    "SECURITY_KEYS",
    "Exposure",
    "SecurityConfig",
    "check_exposure",
    "endpoint_exposure",
    "endpoint_host",
    "read_security",
    "uses_curve",
]

SECURITY_KEYS: Final = ("server_key", "client_keys", "curve_on_loopback")

_TCP = re.compile(r"tcp://(?P<host>.+):(?P<port>\d+|\*)")


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """``[security]``: the pipeline's CURVE key pair and the public keys allowed to connect.

    ``server_key``: the secret key file ``pyconpro keygen`` wrote (``NAME.key_secret``; the
    public key is in it too); None: no CURVE. ``client_keys``: a directory of public key files
    (``*.key``) of clients allowed to connect (the pipeline's own processes use the server key
    and are always allowed). ``curve_on_loopback``: CURVE also on 127.0.0.0/8 and ::1.
    """

    server_key: str | None = None
    client_keys: str | None = None
    curve_on_loopback: bool = False


class Exposure(Enum):
    """Who can reach an endpoint at the network level."""

    LOCAL_FILE = "ipc"  # a socket file: this user (and root)
    LOOPBACK = "loopback"  # anyone on this host
    NETWORK = "network"  # other hosts


def endpoint_host(endpoint: str) -> str | None:
    """The host part of a ``tcp://HOST:PORT`` endpoint (brackets kept off), else None."""
    m = _TCP.fullmatch(endpoint)
    if m is None:
        return None
    host = m.group("host")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def endpoint_exposure(endpoint: str) -> Exposure:
    """``ipc://`` and ``inproc://`` are local files; a TCP host is loopback only when it is
    127.0.0.0/8, ``::1`` or ``localhost``. ``*``, ``0.0.0.0``, names and interfaces are
    the network."""
    host = endpoint_host(endpoint)
    if host is None:
        return Exposure.LOCAL_FILE
    if host == "localhost":
        return Exposure.LOOPBACK
    try:
        return Exposure.LOOPBACK if ipaddress.ip_address(host).is_loopback else Exposure.NETWORK
    except ValueError:
        return Exposure.NETWORK


def uses_curve(endpoint: str, security: SecurityConfig) -> bool:
    """True when a socket bound (or a client connecting) at ``endpoint`` uses CURVE."""
    if security.server_key is None:
        return False
    exposure = endpoint_exposure(endpoint)
    if exposure is Exposure.NETWORK:
        return True
    return exposure is Exposure.LOOPBACK and security.curve_on_loopback


def read_security(ctx: IssueLog, data: Mapping[str, Any], base_dir: str | None) -> SecurityConfig:
    """``[security]`` from its TOML table; paths are resolved against ``base_dir``."""
    t = Table(ctx, "security", data, SECURITY_KEYS)
    server_key = t.string("server_key", None) or None
    client_keys = t.string("client_keys", None) or None
    on_loopback = t.boolean("curve_on_loopback", False)
    if client_keys is not None and server_key is None:
        ctx.error(
            t.key("client_keys"),
            "client_keys is set but server_key is not, so no socket uses CURVE",
            "add server_key = \"FILE.key_secret\" (make one with `pyconpro keygen FILE`)",
        )
    if on_loopback and server_key is None:
        ctx.error(
            t.key("curve_on_loopback"),
            "curve_on_loopback = true needs the pipeline's key pair",
            "add server_key = \"FILE.key_secret\" (make one with `pyconpro keygen FILE`)",
        )
    return SecurityConfig(
        server_key=relative_to(base_dir, server_key),
        client_keys=relative_to(base_dir, client_keys),
        curve_on_loopback=on_loopback,
    )


def check_exposure(
    log: IssueLog, security: SecurityConfig, *, bus: str, control_base: str
) -> list[ConfigIssue]:
    """Errors go to ``log`` (``run`` refuses them); the warnings are returned.

    ``bus`` / ``control_base``: ``[bus].endpoint`` and ``[bus].control_base`` as configured.
    """
    fix_key = "add a [security] section with server_key (`pyconpro keygen NAME` makes the key)"
    if security.server_key is None and endpoint_exposure(control_base) is Exposure.NETWORK:
        log.error(
            join("bus", "control_base"),
            f"control_base = {control_base!r} lets any host that reaches it read status, add "
            "consumers, stop workers and shut the pipeline down",
            f'use "ipc:///tmp/pyconpro" or a loopback address, or {fix_key}',
        )
    warnings = []
    if security.server_key is None and endpoint_exposure(bus) is Exposure.NETWORK:
        key = join("bus", "endpoint")
        warnings.append(ConfigIssue(
            log.filename, key, log.keylines.find(key),
            f"endpoint = {bus!r} publishes every sample unencrypted to any host that connects",
            f"if that is intended, fine; otherwise {fix_key}, or bind a loopback address",
        ))  # fmt: skip
    return warnings

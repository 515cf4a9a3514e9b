"""``[web]``: the live page and Prometheus metrics of a pipeline (pure).

A ``[web]`` section in the config file turns on one more child of ``pyconpro run``: the web
process (``pyconpro.web.server``), which subscribes to the bus, asks the supervisor for its
status and serves a live page, ``/metrics`` and ``/api/*`` over HTTP. No section, or
``enabled = false``: no web process.

Who may read it: the page and its data are read-only (nothing on it changes the pipeline), but
they show the plant's values. Bound to a loopback address (the default) only this host reaches
it. Bound anywhere else without a bearer token (``token`` or ``token_file``) it is a warning:
``check`` prints it and ``run`` logs it, as for a bus endpoint without CURVE
(``acquisition/security.py``). The token travels in clear over plain HTTP: across a network
that is not trusted, put a TLS reverse proxy in front.

This module only reads and checks the section; ``workers/supervisor.py`` plans the process and
``web/`` serves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pyconpro.acquisition.toml_check import ConfigIssue, IssueLog, Table, relative_to

__all__ = [
    "TOKEN_MIN_CHARS",
    "WEB_KEYS",
    "WebConfig",
    "is_loopback_host",
    "read_web",
    "token_problem",
    "web_warnings",
]

WEB_KEYS: Final = (
    "enabled", "address", "port", "token", "token_file", "history_s", "updates_per_s",
)  # fmt: skip
#: A bearer token shorter than this is refused: it could be guessed.
TOKEN_MIN_CHARS: Final = 16
_TOKEN_FIX: Final = (
    "use a random one of at least 16 characters, e.g. the output of "
    "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The validated ``[web]`` section. ``token_file`` is resolved against the config file's
    directory; the file itself is read by the web process (and checked by ``check``)."""

    address: str = "127.0.0.1"
    port: int = 8780
    token: str | None = None
    token_file: str | None = None
    history_s: float = 300.0  # how far back the page's sparklines reach
    updates_per_s: float = 4.0  # the most value updates per tag and second the page gets

    @property
    def authenticated(self) -> bool:
        return self.token is not None or self.token_file is not None

    @property
    def url(self) -> str:
        """Where a browser on this host finds the page."""
        host = self.address
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: only this host can connect there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a bearer token, or None. It is compared byte for byte with an
    HTTP header, so it must be printable ASCII without spaces."""
    if len(token) < TOKEN_MIN_CHARS:
        return f"the token has {len(token)} characters, fewer than {TOKEN_MIN_CHARS}"
    if not all(33 <= ord(ch) <= 126 for ch in token):
        return "the token holds spaces or characters other than printable ASCII"
    return None


def _address(t: Table, default: str) -> str:
    value = t.string("address", default)
    if value == "localhost":
        return str(value)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        t.ctx.error(
            t.key("address"),
            f"address = {value!r} is not an IP address",
            'write the address to listen on: "127.0.0.1" (this host only, the default), '
            '"0.0.0.0" (every IPv4 interface) or one of this host\'s addresses',
        )
        return default


def read_web(ctx: IssueLog, data: Mapping[str, Any], base_dir: str | None) -> WebConfig | None:
    """``[web]`` from its TOML table (present in the file); None when ``enabled = false``."""
    t = Table(ctx, "web", data, WEB_KEYS)
    d = WebConfig()
    enabled = t.boolean("enabled", True)
    address = _address(t, d.address)
    port = t.integer("port", d.port, 1, 65535)
    token = t.string("token", None)
    token_file = t.string("token_file", None) or None
    if token is not None and token_file is not None:
        ctx.error(t.key("token"), "token and token_file are both set",
                  "keep one: token_file keeps the secret out of the config file")  # fmt: skip
        token = None
    if token is not None:
        why = token_problem(token)
        if why is not None:
            ctx.error(t.key("token"), why, _TOKEN_FIX)
            token = None
    web = WebConfig(
        address=address,
        port=port,
        token=token,
        token_file=relative_to(base_dir, token_file),
        history_s=t.number("history_s", d.history_s, 10.0, 3600.0, "s"),
        updates_per_s=t.number("updates_per_s", d.updates_per_s, 0.2, 50.0),
    )
    return web if enabled else None


def web_warnings(log: IssueLog, web: WebConfig | None) -> list[ConfigIssue]:
    """The page on a non-loopback address without a token: anyone who reaches the port reads
    every value (``check`` prints it, ``run`` logs it)."""
    if web is None or web.authenticated or is_loopback_host(web.address):
        return []
    key = "web.address"
    return [ConfigIssue(
        log.filename, key, log.keylines.find(key),
        f"address = {web.address!r} serves the live page, /metrics and /api to any host that "
        "reaches port " + str(web.port) + " without authentication",
        "if that is intended, fine; otherwise set token_file (a file holding a random token of "
        f'at least {TOKEN_MIN_CHARS} characters), or bind "127.0.0.1"',
    )]  # fmt: skip

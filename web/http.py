"""The web process's HTTP side: the page, its event stream, ``/api/*`` and ``/metrics``.

Standard library only (``http.server``): one thread per connection (``ThreadingHTTPServer``),
at most ``MAX_CONNECTIONS`` at once (more get 503), every socket operation bounded by
``SOCKET_TIMEOUT_S`` so a client that stops reading cannot hold a thread. The bus loop never
waits on HTTP: it publishes each frame once into a ``Broadcaster`` (a ring of the last frames,
numbered), and each event-stream connection copies from its own position; a page that falls
more than ``FRAMES_KEPT`` frames behind is disconnected and, like any page that lost its
stream, reconnects and starts over from a fresh snapshot.

Routes (GET or HEAD; anything else is 405):

=================  ==========================================================  =========
path               what                                                        token
=================  ==========================================================  =========
``/``              the live page (``static/index.html``), its script and style  no
``/events``        Server-Sent Events: ``hello``, then ``values`` / ``status``  yes
``/api/status``    JSON: the page's view of the pipeline (``LiveView``)         yes
``/api/last``      JSON: every tag's last value                                 yes
``/metrics``       Prometheus text (``web/metrics.py``)                         yes
=================  ==========================================================  =========

The page and its files hold no data, so they are served to anyone; the rest needs the bearer
token when one is configured: ``Authorization: Bearer TOKEN`` (scripts, Prometheus'
``authorization`` setting), or the ``pyconpro_token`` cookie, which the page sets from the token
the user gives it (an ``EventSource`` cannot send headers). The token is compared as its SHA-256
with ``hmac.compare_digest``: the time taken does not depend on how much of it was right.
"""

from __future__ import annotations

import hashlib
import hmac
import http.cookies
import json
import logging
import socket
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Final, Protocol

from pyconpro.acquisition.web_config import token_problem

__all__ = [
    "COOKIE",
    "Broadcaster",
    "StreamEnded",
    "WebApp",
    "WebHTTPServer",
    "read_token_file",
    "sse_frame",
    "token_digest",
]

log = logging.getLogger("pyconpro.web")

COOKIE: Final = "pyconpro_token"
MAX_CONNECTIONS: Final = 64
SOCKET_TIMEOUT_S: Final = 30.0
KEEPALIVE_S: Final = 15.0  # a comment line on an idle event stream (proxies close silent ones)
FRAMES_KEPT: Final = 512
RETRY_MS: Final = 1000  # how soon a page's EventSource reconnects after losing its stream

_STATIC: Final = {  # path -> (file, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
# Everything the page loads comes from here: no inline script or style, no other origin.
_CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def read_token_file(path: str) -> str:
    """The token in file ``path``, surrounding white space ignored; ``ValueError`` saying
    what is wrong with the file (``pyconpro check`` and the web process both read it so)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
    why = token_problem(token)
    if why is not None:
        raise ValueError(f"is not usable: {why}")
    return token


def token_digest(token: str) -> bytes:
    """What a token is compared as (``--token-sha256`` carries its hex)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def sse_frame(event: str, data: Any) -> bytes:
    """One Server-Sent Event: ``event: NAME`` and the JSON on one ``data:`` line."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=str)  # fmt: skip
    return f"event: {event}\ndata: {body}\n\n".encode()


class StreamEnded(Exception):
    """The broadcaster closed, or the reader fell too far behind: end the stream."""


class Broadcaster:
    """Frames for every event stream: the last ``keep`` frames, numbered; readers wait for the
    ones after their position. ``publish`` never blocks on a reader."""

    def __init__(self, keep: int = FRAMES_KEPT) -> None:
        self._cond = threading.Condition()
        self._frames: deque[bytes] = deque(maxlen=keep)
        self._next = 0  # number of the next frame published
        self._closed = False
        self.clients = 0

    def position(self) -> int:
        with self._cond:
            return self._next

    def publish(self, frame: bytes) -> None:
        with self._cond:
            self._frames.append(frame)
            self._next += 1
            self._cond.notify_all()

    def wait(self, position: int, timeout: float) -> tuple[list[bytes], int]:
        """The frames after ``position`` and the new position; none after ``timeout`` s.
        ``StreamEnded`` once closed, or when frames after ``position`` were dropped."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._next > position, timeout)
            if self._closed:
                raise StreamEnded("the web process is stopping")
            first = self._next - len(self._frames)
            if position < first:
                raise StreamEnded(f"the page fell {self._next - position} frames behind")
            return list(self._frames)[position - first:], self._next

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def attach(self) -> None:
        """A stream started (``clients`` counts them for /metrics)."""
        with self._cond:
            self.clients += 1

    def detach(self) -> None:
        with self._cond:
            self.clients -= 1


class WebApp(Protocol):
    """What the HTTP side asks the web process for (``web/server.py``)."""

    broadcaster: Broadcaster
    token_sha256: bytes | None

    def status_json(self) -> bytes: ...

    def last_json(self) -> bytes: ...

    def metrics_text(self) -> bytes: ...

    def hello(self) -> tuple[bytes, int]:
        """The first frame of a new event stream and the broadcaster position it is current
        at (taken together, so nothing falls between them)."""
        ...

    def refused(self) -> None:
        """Count a request refused for its token."""
        ...


def _static(name: str) -> bytes:
    return resources.files("pyconpro.web").joinpath("static", name).read_bytes()


@dataclass(frozen=True, slots=True)
class _Reply:
    code: int
    body: bytes
    content_type: str
    extra: tuple[tuple[str, str], ...] = ()


def _json_error(code: int, message: str, *extra: tuple[str, str]) -> _Reply:
    body = json.dumps({"error": message}).encode()
    return _Reply(code, body, "application/json", extra)


class WebHTTPServer(ThreadingHTTPServer):
    """The listening socket and its handler threads (joined on ``server_close``)."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], app: WebApp) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        self.files = {path: (_static(name), ctype) for path, (name, ctype) in _STATIC.items()}
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 5\r\n"
                                b"Content-Length: 0\r\n\r\n")  # fmt: skip
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def authorized(self, headers: Any) -> bool:
        expected = self.app.token_sha256
        if expected is None:
            return True
        presented = _presented_token(headers)
        if presented is None:
            return False
        return hmac.compare_digest(token_digest(presented), expected)


def _presented_token(headers: Any) -> str | None:
    auth = headers.get("Authorization")
    if isinstance(auth, str):
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    cookie = headers.get("Cookie")
    if isinstance(cookie, str):
        jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        try:
            jar.load(cookie)
        except http.cookies.CookieError:
            return None
        morsel = jar.get(COOKIE)
        if morsel is not None and morsel.value:
            return urllib.parse.unquote(morsel.value)  # the page sets it URL-encoded
    return None


class _Handler(BaseHTTPRequestHandler):
    server: WebHTTPServer
    server_version = "pyconpro"
    sys_version = ""
    timeout = SOCKET_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def _not_allowed(self) -> None:
        self._send(_json_error(405, "only GET and HEAD are served: the page is read-only",
                               ("Allow", "GET, HEAD")), head=False)  # fmt: skip

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    _ROUTES: Final[dict[str, tuple[Callable[[WebApp], bytes], str]]] = {
        "/api/status": (lambda app: app.status_json(), "application/json"),
        "/api/last": (lambda app: app.last_json(), "application/json"),
        "/metrics": (lambda app: app.metrics_text(), "text/plain; version=0.0.4; charset=utf-8"),
    }

    def _serve(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        static = self.server.files.get(path)
        if static is not None:
            body, ctype = static
            self._send(_Reply(200, body, ctype, (("Cache-Control", "no-cache"),)), head=head)
            return
        if path != "/events" and path not in self._ROUTES:
            self._send(_json_error(404, f"no page {path!r}: try /, /api/status, /api/last, "
                                        "/metrics or /events"), head=head)  # fmt: skip
            return
        if not self.server.authorized(self.headers):
            self.server.app.refused()
            self._send(_json_error(
                401, "this page needs the pipeline's token: send 'Authorization: Bearer TOKEN' "
                "(the [web] token or token_file of the config)",
                ("WWW-Authenticate", 'Bearer realm="pyconpro"')), head=head)  # fmt: skip
            return
        if path == "/events":
            self._events(head=head)
            return
        produce, ctype = self._ROUTES[path]
        self._send(_Reply(200, produce(self.server.app), ctype), head=head)

    def _headers(self, code: int, ctype: str, extra: tuple[tuple[str, str], ...]) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if ctype.startswith("text/html"):
            self.send_header("Content-Security-Policy", _CSP)
        names = {k.lower() for k, _ in extra}
        if "cache-control" not in names:
            self.send_header("Cache-Control", "no-store")
        for k, v in extra:
            self.send_header(k, v)

    def _send(self, reply: _Reply, *, head: bool) -> None:
        try:
            self._headers(reply.code, reply.content_type, reply.extra)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if not head:
                self.wfile.write(reply.body)
        except OSError:  # the client went away
            pass

    def _events(self, *, head: bool) -> None:
        """The event stream: ``retry``, the ``hello`` snapshot, then every frame published,
        with a comment line when nothing came for ``KEEPALIVE_S``; until the client goes, the
        web process stops, or the client falls too far behind."""
        app = self.server.app
        self._headers(200, "text/event-stream; charset=utf-8", (("X-Accel-Buffering", "no"),))
        self.end_headers()
        if head:
            return
        hello, position = app.hello()
        broadcaster = app.broadcaster
        broadcaster.attach()
        try:
            self.wfile.write(f"retry: {RETRY_MS}\n\n".encode() + hello)
            self.wfile.flush()
            while True:
                frames, position = broadcaster.wait(position, KEEPALIVE_S)
                self.wfile.write(b"".join(frames) if frames else b": keepalive\n\n")
                self.wfile.flush()
        except StreamEnded as why:
            log.debug("event stream to %s ended: %s", self.address_string(), why)
        except OSError:  # the page went away (closed, reloaded, timed out)
            pass
        finally:
            broadcaster.detach()

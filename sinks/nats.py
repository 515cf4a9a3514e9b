"""NATS JetStream sink: every record a message on a subject mapped from its bus topic, in one
stream, with a ``Nats-Msg-Id`` made of the record's own fields so that the stream stores a
record sent twice once; through the store-and-forward spool (``sinks/spool.py``) while the
server is away.

Subjects (``<p>`` is ``subject_prefix``, default ``pyconpro``; docs/sinks.md "NATS")::

    <p>.sample.<plc>.<tag>       a sample
    <p>.event.<plc>.<tag>        a connection event (``<tag>`` is ``~`` for the PLC's own)
    <p>.stats.<worker>           worker counters
    <p>.gap.<bus topic names>    loss: ``<p>.gap.sample.<plc>.<tag>`` (cause in the payload)

Each name is one subject token, escaped reversibly (``subject_token``): ASCII letters, digits
and ``- _ : [ ]`` stay, every other byte of the name's UTF-8 becomes ``~XX`` (two upper-case
hex digits), and the empty name is ``~``. ``Program:Main.Arr[3]`` is ``Program:Main~2EArr[3]``.

Payload: the record's fields as ``sinks/records.py`` names them, JSON (``payload = "json"``:
NaN and infinities as strings, ``raw`` in hex, as the file sinks write) or MessagePack
(``"msgpack"``: the value as decoded, floats as they are, ``raw`` as bytes).

Idempotency: ``Nats-Msg-Id`` is the hex BLAKE2b-128 digest of the record's kind, publisher,
bus topic, ``sq`` and receive time (``msg_id``); JetStream drops a second message with the same
id inside the stream's duplicate window (``duplicate_window_s``), so a batch sent again after a
lost acknowledgement, a crash between the acknowledgement and the spool's delete, or a bus
replay that overlaps, is stored once. A record leaves the spool only after the server
acknowledged every message of its batch (``PubAck``).

asyncio: nats-py runs in a thread of its own with its own event loop (``_IoThread``); the SUB
loop's calls (``open``, ``flush``, ``close``) hand it coroutines and wait for their outcome.
The connection does not reconnect by itself: after any failure it is closed, the records go to
the spool, and the SUB loop's backoff decides when the next ``flush`` connects again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import ssl
import threading
import urllib.parse
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import msgpack
from pyconpro.acquisition.errors import MalformedPacket
from pyconpro.acquisition.sink_config import Option, OptionValue, Output, SinkSchema
from pyconpro.acquisition.wire import Event, Sample, Stats, parse_topic
from pyconpro.sinks.base import BusGap, OutputUnavailable, Sink
from pyconpro.sinks.records import (
    event_record,
    gap_record,
    message_topic,
    sample_record,
    stats_record,
    to_json,
    value_real,
)
from pyconpro.sinks.registry import SinkKind
from pyconpro.sinks.spool import SPOOL_OPTIONS

if TYPE_CHECKING:
    import nats.aio.client
    import nats.js

log = logging.getLogger("pyconpro.sink")

T = TypeVar("T")

MSG_ID_HEADER: Final = "Nats-Msg-Id"
_EXPECTED_STREAM: Final = "Nats-Expected-Stream"  # the server refuses a subject of another
_DUPLICATE: Final = re.compile(rb'"duplicate"\s*:\s*true')  # in an acknowledgement
DEFAULT_SERVERS: Final = "nats://127.0.0.1:4222"
DEFAULT_STREAM: Final = "PYCONPRO"
DEFAULT_PREFIX: Final = "pyconpro"
# JetStream's own default is 2 minutes; it must cover a sink restart or a server restart (what
# is sent again after either is then recognised), and costs the server memory for every id
# inside it (docs/sinks.md "NATS").
DEFAULT_DUPLICATE_WINDOW_S: Final = 120.0
# A stop waits this long for the I/O thread to close the connection.
_CLOSE_TIMEOUT_S: Final = 10.0
# Characters a subject token keeps as they are; every other byte is escaped.
_TOKEN_KEEP: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_:[]"
)
_TOKEN = re.compile(r"[A-Za-z0-9\-_:\[\]]+")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_\-]{1,255}")
_URL_SCHEMES: Final = ("nats", "tls", "ws", "wss")


# -- subjects and ids ------------------------------------------------------------------------


# What reaches the server: every record but report by exception's Skipped marks (the spool
# keeps those).
Sent: TypeAlias = Sample | Event | Stats | BusGap

def subject_token(name: str) -> str:
    """``name`` as one NATS subject token, reversibly (``name_of_token`` is the inverse)."""
    if not name:
        return "~"
    out: list[str] = []
    for ch in name:
        if ch in _TOKEN_KEEP:
            out.append(ch)
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def name_of_token(token: str) -> str:
    """The name ``subject_token`` made ``token`` from; ``ValueError`` for a token it cannot
    have made."""
    if token == "~":
        return ""
    raw = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "~":
            hx = token[i + 1 : i + 3]
            if len(hx) != 2 or not all(c in "0123456789ABCDEF" for c in hx):
                raise ValueError(f"{token!r}: ~ is followed by two upper-case hex digits")
            raw.append(int(hx, 16))
            i += 3
        else:
            raw += ch.encode("utf-8")
            i += 1
    name = raw.decode("utf-8")
    if subject_token(name) != token:
        raise ValueError(f"{token!r} is not the canonical token of {name!r}")
    return name


def subject_of(prefix: str, record: Sent) -> str:
    """The subject ``record`` is published on (module docstring)."""
    if isinstance(record, Sample):
        return f"{prefix}.sample.{subject_token(record.plc)}.{subject_token(record.tag)}"
    if isinstance(record, Event):
        return f"{prefix}.event.{subject_token(record.plc)}.{subject_token(record.tag)}"
    if isinstance(record, Stats):
        return f"{prefix}.stats.{subject_token(record.worker)}"
    try:
        kind, names = parse_topic(record.topic.encode("utf-8"))
        tokens = [kind.value, *map(subject_token, names)]
    except MalformedPacket:  # not a topic of this bus version: the whole text, one token
        tokens = [subject_token(record.topic)]
    return f"{prefix}.gap.{'.'.join(tokens)}"


def msg_id(record: Sent) -> str:
    """The ``Nats-Msg-Id`` of ``record``: the same for the same record however often it is
    sent, different for any two records (a restarted worker's ``sq`` starts at 0 again, its
    receive times are new)."""
    key: tuple[object, ...]
    if isinstance(record, BusGap):
        key = ("gap", record.cause, record.publisher, record.topic, record.expected_seq,
               record.t_wall_ns)  # fmt: skip
    else:
        kind = "sample" if isinstance(record, Sample) else "event" if isinstance(
            record, Event) else "stats"  # fmt: skip
        key = (kind, record.publisher, message_topic(record).decode("utf-8"), record.seq,
               record.t_wall_ns)  # fmt: skip
    text = "\x1f".join(map(str, key)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).hexdigest()


def payload_of(record: Sent, fmt: str) -> bytes:
    """The message body of ``record`` in ``fmt`` (``json`` or ``msgpack``)."""
    if fmt == "json":
        if isinstance(record, Sample):
            body = sample_record(record)
        elif isinstance(record, Event):
            body = event_record(record)
        elif isinstance(record, Stats):
            body = stats_record(record)
        else:
            body = {**gap_record(record), "cause": record.cause}
        return to_json(body).encode("utf-8")
    packed: bytes = msgpack.packb(_native(record), use_bin_type=True)
    return packed


def _native(record: Sent) -> dict[str, Any]:
    """The MessagePack body: the JSON body's keys, the values as decoded (no NaN strings, no
    hex)."""
    if isinstance(record, Sample):
        return {**sample_record(record), "value": record.value,
                "value_real": value_real(record.value), "raw": record.raw}  # fmt: skip
    if isinstance(record, Event):
        return event_record(record)
    if isinstance(record, Stats):
        return {**stats_record(record), "counters": record.counters}
    return {**gap_record(record), "cause": record.cause}


def covers(pattern: str, subject: str) -> bool:
    """Whether the subject filter ``pattern`` (``*`` one token, ``>`` the rest) takes every
    subject ``subject`` stands for (``subject`` may end in ``>`` itself)."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return i < len(s)
        if i >= len(s) or s[i] == ">" or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


# -- options ---------------------------------------------------------------------------------


def server_urls(text: str) -> list[str]:
    """The comma-separated ``servers`` as URLs (``host:port`` becomes ``nats://host:port``)."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if item:
            out.append(item if "://" in item else f"nats://{item}")
    return out


def _check_servers(value: Any) -> tuple[str, str] | None:
    urls = server_urls(str(value))
    if not urls:
        return ("servers is empty", 'name at least one server, e.g. servers = "nats://db1:4222"')
    for url in urls:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in _URL_SCHEMES or not parts.hostname:
            return (f"servers: {url!r} is not a NATS server URL",
                    "write nats://HOST:PORT (tls://, ws://, wss:// too), several separated by"
                    " commas")  # fmt: skip
        if parts.username is not None or parts.password is not None:
            return (f"servers: {url!r} holds a user, password or token, which would sit in the"
                    " config file and in the process list",
                    "remove it and use user with password_file, token_file, creds_file or"
                    " nkey_file")  # fmt: skip
    return None


def _check_stream(value: Any) -> tuple[str, str] | None:
    if _STREAM_NAME.fullmatch(str(value)):
        return None
    return (f"stream = {value!r} is not a JetStream stream name",
            "use letters, digits, - and _ (no dots, spaces, * or >), e.g. stream = \"PYCONPRO\"")


def _check_prefix(value: Any) -> tuple[str, str] | None:
    tokens = str(value).split(".")
    if all(_TOKEN.fullmatch(t) for t in tokens) and not str(value).startswith("$"):
        return None
    return (f"subject_prefix = {value!r} is not a plain NATS subject",
            "use tokens of letters, digits, - _ : [ ] separated by dots (no *, >, spaces or a"
            " leading $), e.g. subject_prefix = \"site1.pyconpro\"")


_LOGINS: Final = ("user", "token_file", "creds_file", "nkey_file")


def _check_together(o: Mapping[str, OptionValue]) -> list[tuple[str, str, str]]:
    """The rules between the options (``SinkSchema.check``): one login, a password only with
    its user, a client certificate only with its key."""
    out = []
    logins = [key for key in _LOGINS if o[key]]
    if len(logins) > 1:
        others = "the other" if len(logins) == 2 else "the others"
        named = f"{', '.join(logins[:-1])} and {logins[-1]}"
        out.append((logins[-1], f"{named} are set: a NATS login is one of user"
                    " (with password_file), token_file, creds_file, nkey_file",
                    f"keep one of them and remove {others}"))  # fmt: skip
    if o["password_file"] and not o["user"]:
        out.append(("password_file", "password_file is set without user",
                    "set user too (password_file holds that user's password), or remove"
                    " password_file"))  # fmt: skip
    for have, lack, what in (("tls_cert", "tls_key", "the certificate's private key file"),
                             ("tls_key", "tls_cert", "the client certificate file")):
        if o[have] and not o[lack]:
            out.append((have, f"{have} is set without {lack}",
                        f"tls_cert and tls_key go together: set {lack} to {what}, or remove"
                        f" {have}"))  # fmt: skip
    return out


NATS_SCHEMA = SinkSchema(
    kind="nats",
    help="publish to a NATS JetStream stream (acknowledged, deduplicated, store-and-forward"
    " spool)",
    options=(
        Option(
            "servers", "string", DEFAULT_SERVERS,
            "NATS server URLs, separated by commas (`nats://`, `tls://`, `ws://`, `wss://`;"
            " `host:port` means `nats://host:port`), tried in order at each connection."
            " Never a user, password or token: see user, token_file.",
            check=_check_servers,
        ),
        Option(
            "stream", "string", DEFAULT_STREAM,
            "JetStream stream the messages go to (each publish names it: a subject that"
            " another stream takes is refused).",
            check=_check_stream,
        ),
        Option(
            "subject_prefix", "string", DEFAULT_PREFIX,
            "First token(s) of every subject: `<prefix>.sample.<plc>.<tag>`,"
            " `<prefix>.event.<plc>.<tag>`, `<prefix>.stats.<worker>`, `<prefix>.gap.<...>`.",
            check=_check_prefix,
        ),
        Option(
            "create_stream", "boolean", True,
            "Create the stream (file storage, subjects `<prefix>.>`, duplicate_window_s) when"
            " the server has none of that name; false: it must exist (records wait in the"
            " spool until it does).",
        ),
        Option(
            "duplicate_window_s", "number", DEFAULT_DUPLICATE_WINDOW_S,
            "Duplicate window of the stream this sink creates: a message whose Nats-Msg-Id"
            " the stream saw this recently is not stored again. It must cover a sink or"
            " server restart; the server keeps every id inside it in memory.",
            lo=1.0, hi=86_400.0, unit="s",
        ),
        Option(
            "payload", "choice", "json",
            "Message body: `json` (the file sinks' fields; NaN as a string, raw in hex) or"
            " `msgpack` (values as decoded, raw as bytes).",
            choices=("json", "msgpack"),
        ),
        Option(
            "user", "string", "",
            "User name of a user/password login (the password in password_file). Empty:"
            " none.",
        ),
        Option(
            "password_file", "path", "",
            "File holding the password of `user` (its first line), read at each connection;"
            " readable by this user only.",
        ),
        Option(
            "token_file", "path", "",
            "File holding an authentication token (its first line). Empty: none.",
        ),
        Option(
            "creds_file", "path", "",
            "NATS credentials file (user JWT and NKey seed, `nsc generate creds`); needs"
            " `pip install 'nats-py[nkeys]'`. Empty: none.",
        ),
        Option(
            "nkey_file", "path", "",
            "File holding an NKey seed (`SU...`) for NKey authentication; needs"
            " `pip install 'nats-py[nkeys]'`. Empty: none.",
        ),
        Option(
            "tls_ca", "path", "",
            "CA certificate file (PEM) the server's certificate is checked against; set, or"
            " a `tls://` server, or tls_cert: the connection uses TLS. Empty: the system's"
            " CAs.",
        ),
        Option(
            "tls_cert", "path", "",
            "Client certificate file (PEM) for servers that verify clients; with tls_key.",
        ),
        Option(
            "tls_key", "path", "",
            "Private key file (PEM) of tls_cert.",
        ),
        Option(
            "connect_timeout_s", "number", 5.0,
            "Longest wait for a connection to a server to open; then the next server, and"
            " after the last one the records go to the spool and the sink retries with"
            " backoff.",
            lo=0.5, hi=300.0, unit="s",
        ),
        Option(
            "ack_timeout_s", "number", 10.0,
            "Longest wait for the acknowledgements of one batch; past it the connection is"
            " dropped and the batch sent again (the duplicate window keeps it stored once).",
            lo=0.5, hi=300.0, unit="s",
        ),
        *SPOOL_OPTIONS,
    ),
    output=Output(
        keys=("servers", "stream", "subject_prefix"),
        what="stream {stream!r} subjects {subject_prefix}.> on {servers}",
        fix='give each nats sink its own subject_prefix, e.g. subject_prefix = "pyconpro2"',
        where="nats {servers} stream {stream} subjects {subject_prefix}.>",
    ),
    check=_check_together,
)  # fmt: skip


# -- the I/O thread --------------------------------------------------------------------------


class _IoThread:
    """An asyncio event loop in a thread of its own; ``run`` hands it a coroutine and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="nats-io", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        """Cancel what still runs (nats-py's own tasks of a connection already closed), stop
        the loop and join the thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            try:
                self.run(cancel_all(), _CLOSE_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - stopping anyway
                log.debug("nats: cancelling the I/O tasks failed", exc_info=True)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


# -- acknowledgements ------------------------------------------------------------------------


class _Acks:
    """The acknowledgements of one connection's publishes: one subscription on
    ``<inbox>.*``, each message of a batch asking for its reply on ``<inbox>.<batch>_<i>``.
    Lighter than a future per message (nats-py's ``publish_async``): the acknowledgement is
    only looked at for an error and the duplicate flag."""

    def __init__(self, inbox: str) -> None:
        self.inbox = inbox
        self.batch = 0
        self.duplicates = 0
        self.error: Exception | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seen: bytearray = bytearray()
        self._count = 0

    @property
    def missing(self) -> int:
        return len(self._seen) - self._count

    def start(self, n: int) -> str:
        """A new batch of ``n`` messages; the reply subject's prefix (append the index)."""
        self.batch += 1
        self.duplicates, self.error, self._count = 0, None, 0
        self._seen = bytearray(n)
        self.done = asyncio.get_running_loop().create_future()
        if n == 0:
            self.done.set_result(None)
        return f"{self.inbox}.{self.batch}_"

    async def on_reply(self, msg: Any) -> None:
        batch, _, index = msg.subject.rpartition(".")[2].partition("_")
        if batch != str(self.batch) or self.done.done():
            return  # a late reply of a batch already given up
        i = int(index)
        if self._seen[i]:
            return
        self._seen[i] = 1
        self._count += 1
        data: bytes = msg.data
        if msg.headers and msg.headers.get("Status") == "503":
            self.error = self.error or _no_stream()
        elif b'"error"' in data:
            self.error = self.error or _api_error(data)
        elif b'"duplicate"' in data and _DUPLICATE.search(data):
            self.duplicates += 1
        if self._count == len(self._seen):
            self.done.set_result(None)


def _no_stream() -> Exception:
    import nats.js.errors

    return nats.js.errors.NoStreamResponseError()


def _api_error(data: bytes) -> Exception:
    import json

    import nats.js.errors

    try:
        error: Exception = nats.js.errors.APIError.from_error(json.loads(data)["error"])
        return error
    except (ValueError, KeyError, TypeError):
        return nats.js.errors.APIError(description=data[:200].decode("utf-8", "replace"))


# -- the sink --------------------------------------------------------------------------------


def _read_secret(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as exc:
        raise OutputUnavailable(
            f"{what} file",
            f"cannot read {what}_file {path}: {exc.strerror}: create it (one line, readable by"
            " this user only) or fix the path",
        ) from exc


def _needs_nkeys(option: str) -> None:
    try:
        import nkeys  # noqa: F401
    except ImportError:
        raise RuntimeError(
            f"{option} needs the nkeys package, which is not installed: pip install"
            " 'nats-py[nkeys]'"
        ) from None


class NatsSink(Sink):
    """One connection (opened on first use and again after any failure) and the messages
    handed since the last flush; ``flush`` publishes them in order and waits for every
    acknowledgement."""

    def __init__(
        self,
        servers: str = DEFAULT_SERVERS,
        *,
        stream: str = DEFAULT_STREAM,
        subject_prefix: str = DEFAULT_PREFIX,
        create_stream: bool = True,
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        payload: str = "json",
        user: str = "",
        password_file: str = "",
        token_file: str = "",
        creds_file: str = "",
        nkey_file: str = "",
        tls_ca: str = "",
        tls_cert: str = "",
        tls_key: str = "",
        connect_timeout_s: float = 5.0,
        ack_timeout_s: float = 10.0,
    ) -> None:
        # The config file's rules (NATS_SCHEMA): a sink built here, not from a section, too.
        NATS_SCHEMA.validate({
            "servers": servers, "stream": stream, "subject_prefix": subject_prefix,
            "user": user, "password_file": password_file, "token_file": token_file,
            "creds_file": creds_file, "nkey_file": nkey_file, "tls_cert": tls_cert,
            "tls_key": tls_key,
        })  # fmt: skip
        if payload not in ("json", "msgpack"):
            raise ValueError(f"payload {payload!r}: json or msgpack")
        if creds_file:
            _needs_nkeys("creds_file")
        if nkey_file:
            _needs_nkeys("nkey_file")
        try:
            import nats  # noqa: F401
        except ImportError:
            raise RuntimeError("the nats sink needs nats-py, which is not installed: pip"
                               " install 'pyconpro[nats]'") from None  # fmt: skip
        self.servers = server_urls(servers)
        self.stream = stream
        self.prefix = subject_prefix
        self.create_stream = create_stream
        self.duplicate_window_s = duplicate_window_s
        self.payload = payload
        self.user = user
        self.password_file = password_file
        self.token_file = token_file
        self.creds_file = creds_file
        self.nkey_file = nkey_file
        self.tls_ca, self.tls_cert, self.tls_key = tls_ca, tls_cert, tls_key
        self.connect_timeout_s = connect_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.duplicates = 0  # messages the stream had stored already (sent again)
        self.published = 0  # messages the stream acknowledged
        self._batch: list[tuple[str, bytes, dict[str, str]]] = []
        self._nc: nats.aio.client.Client | None = None
        self._js: nats.js.JetStreamContext | None = None
        self._acks: _Acks | None = None  # the acknowledgements' inbox of this connection
        self._io: _IoThread | None = None
        self._window_warned = False
        self._ssl = self._tls()  # bad TLS files are refused now, not at the first connection

    @property
    def where(self) -> str:
        return f"NATS {','.join(self.servers)} stream {self.stream}"

    # -- the connection --------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext | None:
        tls_url = any(u.startswith(("tls://", "wss://")) for u in self.servers)
        if not (self.tls_ca or self.tls_cert or tls_url):
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.tls_ca or None)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise RuntimeError(
                f"cannot load the TLS files (tls_ca {self.tls_ca!r}, tls_cert"
                f" {self.tls_cert!r}, tls_key {self.tls_key!r}): {exc}: fix the paths, or make"
                " them PEM files readable by this user"
            ) from exc
        return ctx

    def _login(self) -> dict[str, Any]:
        if self.user:
            out: dict[str, Any] = {"user": self.user}
            if self.password_file:
                out["password"] = _read_secret(self.password_file, "password")
            return out
        if self.token_file:
            return {"token": _read_secret(self.token_file, "token")}
        if self.creds_file:
            _read_secret(self.creds_file, "creds")  # readable: else the cause, not a traceback
            return {"user_credentials": self.creds_file}
        if self.nkey_file:
            _read_secret(self.nkey_file, "nkey")
            return {"nkeys_seed": self.nkey_file}
        return {}

    async def _connect(self) -> None:
        """Connect to the first server that answers (each tried once, in order), then make
        sure of the stream."""
        import nats
        import nats.errors

        seen: list[Exception] = []

        async def note(exc: Exception) -> None:  # instead of nats-py's own error log
            seen.append(exc)
            log.debug("nats: %s", exc)

        options = {**self._login(), "tls": self._ssl}
        for url in self.servers:
            seen.clear()
            try:
                # Without reconnects, but nats-py still tries a server twice: at once, then
                # it gives up (the SUB loop's backoff decides when to try again).
                nc = await nats.connect(
                    url, allow_reconnect=False, max_reconnect_attempts=1,
                    reconnect_time_wait=0, connect_timeout=self.connect_timeout_s,
                    name="pyconpro-sink", error_cb=note, **options,
                )  # fmt: skip
            except nats.errors.NoServersError:
                if url == self.servers[-1]:
                    raise seen[-1] if seen else nats.errors.NoServersError() from None
                continue
            except Exception:
                if url == self.servers[-1]:
                    raise
                continue
            self._nc = nc
            self._js = nc.jetstream()
            await self._ensure_stream()
            return

    async def _ensure_stream(self) -> None:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        assert self._js is not None
        mine = f"{self.prefix}.>"
        try:
            info = await self._js.stream_info(self.stream)
        except NotFoundError:
            if not self.create_stream:
                raise OutputUnavailable(
                    "no stream",
                    f"{self.where}: the server has no stream {self.stream}: create it (subjects"
                    f" {mine}), or set create_stream = true",
                ) from None
            await self._js.add_stream(StreamConfig(
                name=self.stream, subjects=[mine], storage=StorageType.FILE,
                duplicate_window=self.duplicate_window_s,
            ))  # fmt: skip
            log.info("nats: created stream %s (subjects %s, duplicate window %.0f s)",
                     self.stream, mine, self.duplicate_window_s)  # fmt: skip
            return
        subjects = list(info.config.subjects or [])
        if not any(covers(s, mine) for s in subjects):
            raise OutputUnavailable(
                "stream subjects",
                f"{self.where}: stream {self.stream} takes {subjects}, not {mine}: add {mine}"
                f" to its subjects (nats stream edit {self.stream} --subjects ...), or set"
                " subject_prefix to one it takes",
            )
        window = info.config.duplicate_window or 0.0
        if window < self.duplicate_window_s and not self._window_warned:
            self._window_warned = True
            log.warning("nats: stream %s has a duplicate window of %.0f s (this sink's"
                        " duplicate_window_s: %.0f s): a batch sent again after a longer"
                        " outage may be stored twice; raise it with nats stream edit %s"
                        " --dupe-window", self.stream, window, self.duplicate_window_s,
                        self.stream)  # fmt: skip

    async def _close_connection(self) -> None:
        nc, self._nc, self._js, self._acks = self._nc, None, None, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), _CLOSE_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - a broken connection may fail to close too
                log.debug("nats: closing the connection failed", exc_info=True)

    # -- publishing ------------------------------------------------------------------------

    async def _publish(self, batch: list[tuple[str, bytes, dict[str, str]]]) -> tuple[int, int]:
        """Publish ``batch`` in order and wait for every acknowledgement; (stored,
        duplicates)."""
        if self._nc is None or not self._nc.is_connected:
            await self._close_connection()
            await self._connect()
        nc = self._nc
        assert nc is not None
        if self._acks is None:
            self._acks = _Acks(nc.new_inbox())
            await nc.subscribe(f"{self._acks.inbox}.*", cb=self._acks.on_reply)
        acks = self._acks
        reply = acks.start(len(batch))
        expected = {_EXPECTED_STREAM: self.stream}
        for i, (subject, data, headers) in enumerate(batch):
            await nc.publish(subject, data, reply=f"{reply}{i}", headers={**headers, **expected})
        await nc.flush(math.ceil(self.ack_timeout_s))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_timeout_s
        while not acks.done.done():
            left = deadline - loop.time()
            if not nc.is_connected:
                raise OutputUnavailable(
                    "unreachable",
                    f"{self.where}: cannot reach the server (the connection was lost with"
                    f" {acks.missing} of {len(batch)} message(s) not acknowledged): they are"
                    " sent again once it answers",
                )
            if left <= 0:
                raise OutputUnavailable(
                    "no acknowledgement",
                    f"{self.where}: {acks.missing} of {len(batch)} message(s) not acknowledged"
                    f" within {self.ack_timeout_s:g} s (ack_timeout_s): see the server's load"
                    " and log; they are sent again",
                )
            await asyncio.wait([acks.done], timeout=min(left, 0.2))
        if acks.error is not None:
            raise acks.error
        return len(batch) - acks.duplicates, acks.duplicates

    def _io_run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run ``coro`` in the I/O thread; a failure that may pass closes the connection and
        becomes ``OutputUnavailable``."""
        if self._io is None:
            self._io = _IoThread()
        try:
            return self._io.run(coro, timeout_s)
        except OutputUnavailable:
            self._io.run(self._close_connection(), _CLOSE_TIMEOUT_S)
            raise
        except Exception as exc:
            self._io.run(self._close_connection(), _CLOSE_TIMEOUT_S)
            problem = diagnose(exc, self.where)
            if problem is None:
                raise
            raise problem from exc

    def _budget_s(self, n: int) -> float:
        """How long one call into the I/O thread may take before it is abandoned: every server
        tried once, the stream looked up, the acknowledgements awaited, with room to spare."""
        return (len(self.servers) * self.connect_timeout_s + 2 * self.ack_timeout_s + 10.0
                + n / 1000)  # fmt: skip

    def open(self) -> None:
        async def connect() -> None:
            if self._nc is None or not self._nc.is_connected:
                await self._close_connection()
                await self._connect()

        self._io_run(connect(), self._budget_s(0))

    def _add(self, records: list[Any]) -> None:
        fmt, prefix = self.payload, self.prefix
        self._batch += [(subject_of(prefix, r), payload_of(r, fmt), {MSG_ID_HEADER: msg_id(r)})
                        for r in records]  # fmt: skip

    def write_samples(self, samples: list[Sample]) -> None:
        self._add(samples)

    def write_events(self, events: list[Event]) -> None:
        self._add(events)

    def write_gaps(self, gaps: list[BusGap]) -> None:
        self._add(gaps)

    def write_stats(self, stats: list[Stats]) -> None:
        self._add(stats)

    def flush(self) -> None:
        """Publish everything handed since the last flush and wait for the acknowledgements;
        the same records are handed again after a failure, so they are dropped here whatever
        happens."""
        batch, self._batch = self._batch, []
        if not batch:
            self.open()  # a retry with nothing to write: is the server back?
            return
        stored, dup = self._io_run(self._publish(batch), self._budget_s(len(batch)))
        self.published += stored
        if dup:
            self.duplicates += dup
            log.info("%d of %d message(s) were in the stream already (a batch sent again after"
                     " a failure): not stored twice", dup, len(batch))  # fmt: skip

    def close(self) -> None:
        io, self._io = self._io, None
        if io is None:
            return
        try:
            io.run(self._close_connection(), _CLOSE_TIMEOUT_S + 1)
        except Exception:  # noqa: BLE001 - closing anyway
            log.debug("nats: closing failed", exc_info=True)
        finally:
            io.close()


def diagnose(exc: BaseException, where: str) -> OutputUnavailable | None:
    """What a nats-py error means when it may pass (the server away, restarting, refusing the
    login for now, its stream unavailable); None for anything else (the process ends)."""
    import nats.errors as ne
    import nats.js.errors as je

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, je.APIError):
        if exc.err_code == 10060:  # expected stream does not match
            return None
        return OutputUnavailable(
            "stream refused",
            f"{where}: the server refused the message(s) ({exc.description or text},"
            f" code {exc.err_code}): see the server's log; retried until it takes them",
        )
    if isinstance(exc, je.NoStreamResponseError | ne.NoRespondersError):
        return OutputUnavailable(
            "no stream",
            f"{where}: no stream answered (JetStream not enabled on the server, or the stream"
            " deleted): start the server with JetStream (-js), or recreate the stream; retried"
            " until it answers",
        )
    if isinstance(exc, ne.AuthorizationError) or "authorization" in text.lower():
        return OutputUnavailable(
            "login refused",
            f"{where}: login refused ({text}): check user and password_file, token_file,"
            " creds_file or nkey_file, and the server's authorization",
        )
    if isinstance(exc, ssl.SSLError | ne.SecureConnRequiredError | ne.SecureConnWantedError
                  | ne.SecureConnFailedError):  # fmt: skip
        return OutputUnavailable(
            "tls failed",
            f"{where}: TLS failed ({text}): check tls_ca / tls_cert / tls_key against the"
            " server's TLS settings, and tls:// in servers",
        )
    if isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError | ne.Error):
        return OutputUnavailable(
            "unreachable",
            f"{where}: cannot reach the server ({text or type(exc).__name__}): check that it"
            " runs and the network; retried until it answers",
        )
    return None


def from_options(options: Mapping[str, OptionValue]) -> NatsSink:
    return NatsSink(
        str(options["servers"]),
        stream=str(options["stream"]),
        subject_prefix=str(options["subject_prefix"]),
        create_stream=bool(options["create_stream"]),
        duplicate_window_s=float(options["duplicate_window_s"]),
        payload=str(options["payload"]),
        user=str(options["user"]),
        password_file=str(options["password_file"]),
        token_file=str(options["token_file"]),
        creds_file=str(options["creds_file"]),
        nkey_file=str(options["nkey_file"]),
        tls_ca=str(options["tls_ca"]),
        tls_cert=str(options["tls_cert"]),
        tls_key=str(options["tls_key"]),
        connect_timeout_s=float(options["connect_timeout_s"]),
        ack_timeout_s=float(options["ack_timeout_s"]),
    )


SINK_KINDS = (SinkKind(NATS_SCHEMA, from_options),)

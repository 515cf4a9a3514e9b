"""Drive tshark (Wireshark's dissectors: an implementation independent of ours) from tests.

``dissect(path)`` runs ``tshark -r FILE -T json`` once per file and process (results are
cached) and returns, per frame number, the decoded fields flattened into
``field name -> [string values in tree order]`` (``FrameFields``). Preferences are pinned
(``PREFS``) and tshark runs with an empty private configuration directory, so a developer's
Wireshark profile cannot change what the tests see.

Decode-as is not needed for our captures: tshark dissects TCP/UDP 44818 as ENIP and UDP 2222
as ENIP CPF I/O ("cipio") on its own. The CIP I/O payload (``cip.seq``, ``cip.32bitheader``,
``cipio.data``) is only split into sequence count / run-idle header / data when the
Forward_Open that created the connection is in the same capture; without it tshark shows
``cipio.data`` = the whole connected-data item (see ``ndpi_cip_io.pcap``).

``start_capture(argv)`` starts a capture program (``dumpcap`` or ``tshark -w FILE``) and returns
once it captures.

When tshark is missing, ``require_tshark()`` skips the test with the reason, unless the
environment sets ``PYCONPRO_REQUIRE_TSHARK=1`` (CI does, in ``.ci/run``): then it fails.

Field names worth knowing (``tshark -G fields``): encapsulation ``enip.command``,
``enip.length``, ``enip.session``, ``enip.status``, ``enip.context``, ``enip.options``; CPF
``enip.cpf.itemcount``, ``enip.cpf.typeid``, ``enip.cpf.length``, ``enip.cpf.sai.connid``,
``enip.cpf.sai.seq``, ``enip.cpf.cai.connid``, ``enip.sinfamily``/``sinport``/``sinaddr``;
ListIdentity ``enip.lir.*``; CIP ``cip.service``, ``cip.genstat``, ``cip.addstat``;
Connection Manager ``cip.cm.sc``, ``cip.cm.genstat``, ``cip.cm.addstat_size``,
``cip.cm.ext_status``, ``cip.cm.addstat``, ``cip.cm.ext127_size``, ``cip.cm.priority``,
``cip.cm.tick_time``, ``cip.cm.timeout_tick``, ``cip.cm.ot_connid``, ``cip.cm.to_connid``,
``cip.cm.conn_serial_num``, ``cip.cm.vendor``, ``cip.cm.orig_serial_num``,
``cip.cm.timeout_multiplier``, ``cip.cm.otrpi``, ``cip.cm.torpi``, ``cip.cm.ot_net_params``,
``cip.cm.to_net_params`` (with ``cip.cm.fwo.owner``/``type``/``prio``/``f_v``/``consize``, one
per direction), ``cip.cm.transport_type_trigger`` (``cip.cm.fwo.dir``/``trigger``/
``transport``), ``cip.cm.connpath_size``, ``cip.cm.otapi``, ``cip.cm.toapi``,
``cip.cm.app_reply_size``, ``cip.cm.remain_path_size``; I/O ``cip.seq``, ``cip.32bitheader``,
``cipio.data``. Caution: a reply's tree also repeats its request's connection path as
generated fields (``cip.path_segment`` ... under "Connection Information").
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyconpro.workers.process import Child, SpawnError, regex_ready, spawn

ENV_REQUIRE = "PYCONPRO_REQUIRE_TSHARK"

#: Preferences pinned on every run; the values are tshark 4.0's defaults, made explicit.
PREFS: tuple[tuple[str, str], ...] = (
    ("enip.desegment", "TRUE"),  # reassemble encapsulation frames spanning TCP segments
    ("enip.o2t_run_idle", "TRUE"),  # O->T class-1 data carries the 32-bit run/idle header
    ("enip.t2o_run_idle", "FALSE"),  # T->O class-1 data does not
    ("tcp.desegment_tcp_streams", "TRUE"),
    ("tcp.analyze_sequence_numbers", "TRUE"),
    ("tcp.check_checksum", "FALSE"),  # loopback captures have offloaded (wrong) checksums
    ("udp.check_checksum", "FALSE"),
    ("ip.check_checksum", "FALSE"),
)

#: ``_ws.expert.severity`` values (epan/proto.h PI_*).
SEVERITY_ERROR = 0x00800000
SEVERITY_WARN = 0x00600000
SEVERITY_NOTE = 0x00400000
SEVERITY_CHAT = 0x00200000

_TIMEOUT_S = 300


class TsharkError(RuntimeError):
    """tshark ran but failed (bad file, bad option)."""


def find_tshark() -> str | None:
    """Path of the tshark executable, or None."""
    return shutil.which("tshark")


def require_tshark() -> str:
    """The tshark path; skip the calling test when it is missing (fail when CI requires it)."""
    path = find_tshark()
    if path is None:
        reason = (
            "tshark is not installed (apt-get install tshark); the golden tests compare our "
            "codec with Wireshark's dissectors"
        )
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"{reason}, and {ENV_REQUIRE}=1 says it must be there")
        pytest.skip(reason)
    return path


@functools.cache
def tshark_version() -> tuple[int, ...]:
    """(major, minor, patch) of the installed tshark."""
    out = subprocess.run(
        [require_tshark(), "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    word = out.split("\n", 1)[0].split()[2]  # "TShark (Wireshark) 4.0.17 (Git ...)"
    return tuple(int(x) for x in word.split(".")[:3] if x.isdigit())


# Lines a capture program may print on stderr before "Capturing on" (tshark run as root warns
# "Running as user "root" and group "root". This could be dangerous." first).
_CAPTURE_READY_LINES = 5


def start_capture(argv: Sequence[str], timeout_s: float) -> Child:
    """Start ``argv`` (``dumpcap`` or ``tshark``, writing a file with ``-w``) and return once it
    says "Capturing on" on its stderr; fail the test when it does not within ``timeout_s``.
    Stop it with ``Child.stop`` (SIGTERM: it closes its file)."""
    try:
        return spawn(argv, ready=regex_ready("Capturing on"), stderr=subprocess.STDOUT,
                     ready_lines=_CAPTURE_READY_LINES, ready_timeout_s=timeout_s)
    except SpawnError as err:
        pytest.fail(f"{Path(argv[0]).name} did not start capturing: {err}")


# ---------------------------------------------------------------------------------------------
# JSON flattening


class _Obj(list[tuple[str, object]]):
    """A JSON object kept as its ordered (key, value) pairs: tshark repeats keys."""


@dataclass(frozen=True, slots=True)
class Expert:
    """One expert-info item (``_ws.expert``)."""

    severity: int
    group: int
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity >= SEVERITY_ERROR


@dataclass(slots=True)
class FrameFields:
    """The fields tshark decoded in one frame (or in one protocol layer of it).

    ``fields`` maps a field name to its values as tshark prints them, in tree order; text-only
    tree nodes ("Command Specific Data") are descended into but not recorded.
    """

    number: int
    fields: dict[str, list[str]] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)  # protocol layers, in order, repeated
    expert: list[Expert] = field(default_factory=list)
    _layer_trees: list[tuple[str, object]] = field(default_factory=list, repr=False)

    # -- raw access
    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def values(self, name: str) -> list[str]:
        """All values of ``name`` (empty when tshark did not show it)."""
        return self.fields.get(name, [])

    def one(self, name: str) -> str:
        """The single value of ``name``; AssertionError when absent or repeated."""
        vals = self.values(name)
        assert len(vals) == 1, f"frame {self.number}: expected one {name!r}, tshark shows {vals}"
        return vals[0]

    # -- typed access
    def int_value(self, name: str) -> int:
        """The single value of an integer field (``"0x006f"`` and ``"86"`` both parse)."""
        return parse_int(self.one(name))

    def int_values(self, name: str) -> list[int]:
        return [parse_int(v) for v in self.values(name)]

    def bytes_value(self, name: str) -> bytes:
        """The single value of a byte-string field (``"00:0a:ff"`` or ``"000aff"``)."""
        return parse_bytes(self.one(name))

    # -- structure
    def layer(self, name: str, skip: Sequence[str] = ()) -> list[FrameFields]:
        """One ``FrameFields`` per occurrence of protocol layer ``name`` (e.g. several
        ``enip`` PDUs in one TCP segment). Text nodes whose label starts with one of ``skip``
        are left out with everything below them: e.g. ``GENERATED`` drops what tshark copies
        from the matching request (a Forward_Close repeats its Forward_Open's path)."""
        out = []
        for lname, tree in self._layer_trees:
            if lname == name:
                sub = FrameFields(self.number, layers=[lname])
                _flatten(tree, sub, tuple(skip))
                out.append(sub)
        return out

    @property
    def malformed(self) -> bool:
        return "_ws.malformed" in self.layers or "_ws.malformed" in self.fields

    @property
    def errors(self) -> list[Expert]:
        return [e for e in self.expert if e.is_error]


def parse_int(text: str) -> int:
    return int(text, 0) if text[:2].lower() == "0x" else int(text)


def parse_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


#: Labels of tshark tree nodes that hold generated copies of another frame's fields.
GENERATED = ("Connection Information",)


def _flatten(tree: object, out: FrameFields, skip: tuple[str, ...] = ()) -> None:
    if not isinstance(tree, _Obj):
        return
    for key, value in tree:
        if skip and key.startswith(skip):
            continue
        if key == "_ws.expert" and isinstance(value, _Obj):
            d = {k: v for k, v in value if isinstance(v, str)}
            out.expert.append(
                Expert(
                    severity=int(d.get("_ws.expert.severity", "0")),
                    group=int(d.get("_ws.expert.group", "0")),
                    message=d.get("_ws.expert.message", ""),
                )
            )
        if isinstance(value, str):
            out.fields.setdefault(key, []).append(value)
        elif isinstance(value, _Obj):
            _flatten(value, out, skip)
        elif isinstance(value, list):  # a JSON array of values
            for v in value:
                if isinstance(v, str):
                    out.fields.setdefault(key, []).append(v)
                else:
                    _flatten(v, out, skip)


def _parse_json(text: str) -> dict[int, FrameFields]:
    packets = json.loads(text, object_pairs_hook=_Obj)
    frames: dict[int, FrameFields] = {}
    for pkt in packets:
        source = dict(pkt).get("_source")
        layers = dict(source).get("layers") if isinstance(source, _Obj) else None
        if not isinstance(layers, _Obj):
            continue
        ff = FrameFields(0)
        for lname, tree in layers:
            ff.layers.append(lname)
            ff._layer_trees.append((lname, tree))
            if isinstance(tree, str):  # e.g. "_ws.malformed": "Malformed Packet"
                ff.fields.setdefault(lname, []).append(tree)
            else:
                _flatten(tree, ff)
        ff.number = parse_int(ff.one("frame.number"))
        frames[ff.number] = ff
    return frames


# ---------------------------------------------------------------------------------------------
# Running tshark


def tshark_command(path: str | Path, extra_args: Sequence[str] = ()) -> list[str]:
    cmd = [require_tshark(), "-n", "-r", str(path), "-T", "json"]
    for key, value in PREFS:
        cmd += ["-o", f"{key}:{value}"]
    return cmd + list(extra_args)


def dissect(path: str | Path, extra_args: Sequence[str] = ()) -> dict[int, FrameFields]:
    """Every frame of ``path`` as tshark decodes it, keyed by frame number (cached)."""
    p = Path(path).resolve()
    st = p.stat()
    return _dissect_cached(str(p), st.st_mtime_ns, st.st_size, tuple(extra_args))


@functools.lru_cache(maxsize=32)
def _dissect_cached(
    path: str, _mtime: int, _size: int, extra_args: tuple[str, ...]
) -> dict[int, FrameFields]:
    cmd = tshark_command(path, extra_args)
    with tempfile.TemporaryDirectory(prefix="pyconpro-tshark-") as confdir:
        # An empty private configuration: no user preferences, decode-as or profiles.
        env = dict(os.environ, WIRESHARK_CONFIG_DIR=confdir, XDG_CONFIG_HOME=confdir)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_TIMEOUT_S, env=env, check=False
        )
    if proc.returncode != 0:
        raise TsharkError(
            f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        )
    return _parse_json(proc.stdout)


def frame(path: str | Path, number: int) -> FrameFields:
    """One frame's fields; KeyError with a useful message when it does not exist."""
    frames = dissect(path)
    if number not in frames:
        raise KeyError(f"{path} has no frame {number} (it has {len(frames)})")
    return frames[number]


def frames_with(path: str | Path, field_name: str) -> list[FrameFields]:
    """The frames in which tshark shows ``field_name``, in frame order."""
    return [f for _, f in sorted(dissect(path).items()) if field_name in f]


# ---------------------------------------------------------------------------------------------
# Capture health


def capture_problems(path: str | Path) -> list[str]:
    """Every frame tshark marks malformed or flags with an expert item of severity error,
    as readable lines (empty when the capture is clean)."""
    out = []
    for number, ff in sorted(dissect(path).items()):
        msgs = [e.message for e in ff.errors]
        if ff.malformed and not msgs:
            msgs = ["malformed packet"]
        if msgs:
            summary = "/".join(dict.fromkeys(x for x in ff.layers if not x.startswith("_ws")))
            out.append(f"frame {number} ({summary}): " + "; ".join(dict.fromkeys(msgs)))
    return out


def assert_capture_clean(path: str | Path, limit: int = 20) -> None:
    """Fail when tshark finds a malformed frame or an expert error in ``path``.

    Integration tests use this on captures of our own traffic: Wireshark accepting every
    frame is an independent check of our encoders.
    """
    problems = capture_problems(path)
    if problems:
        shown = "\n  ".join(problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        pytest.fail(f"tshark finds {len(problems)} bad frame(s) in {path}:\n  {shown}{more}")


def iter_layers(path: str | Path, layer: str) -> Iterator[tuple[int, FrameFields]]:
    """(frame number, fields of one occurrence of ``layer``) for the whole capture."""
    for number, ff in sorted(dissect(path).items()):
        for sub in ff.layer(layer):
            yield number, sub


#: The ``tshark_frames`` fixture: capture name -> {frame number: FrameFields}.
FramesOf = Callable[[str], dict[int, FrameFields]]

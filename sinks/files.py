"""JSON Lines and CSV sinks, with rotation by size and by age.

Each record kind goes to its own stream of files in one directory::

    <dir>/<prefix>-samples-20240102T030405Z-0001.jsonl
    <dir>/<prefix>-events-...    <dir>/<prefix>-gaps-...    <dir>/<prefix>-stats-...

A stream starts a new file when the current one would exceed ``max_bytes`` or is older than
``max_seconds`` (either limit may be 0 = off). Files are created exclusively, so a restarted sink
never appends to or overwrites an earlier file; the sequence number in the name orders files
created within the same second. A file is only created when its stream has something to write.

Fields are those of ``sinks.records`` (time, t_wall_ns, plc, tag, value, raw as hex, ...).
JSONL writes ``value`` as JSON; CSV writes it as a JSON text column next to ``value_real``.
Every ``flush()`` hands the bytes to the OS (and fsyncs with ``fsync=True``).
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from pyconpro.acquisition.sink_config import Option, OptionValue, Output, SinkSchema
from pyconpro.acquisition.wire import Event, Sample, Stats
from pyconpro.sinks.base import BusGap, Sink
from pyconpro.sinks.records import (
    EVENT_FIELDS,
    GAP_FIELDS,
    SAMPLE_FIELDS,
    STATS_FIELDS,
    event_record,
    gap_record,
    sample_json,
    sample_record,
    stats_record,
    to_json,
)
from pyconpro.sinks.registry import SinkKind

STREAMS: dict[str, Sequence[str]] = {
    "samples": SAMPLE_FIELDS,
    "events": EVENT_FIELDS,
    "gaps": GAP_FIELDS,
    "stats": STATS_FIELDS,
}


class RotatingFile:
    """One output stream split into files by size and age; writes whole records only."""

    def __init__(
        self,
        directory: Path,
        stem: str,
        suffix: str,
        *,
        max_bytes: int,
        max_seconds: float,
        header: bytes = b"",
        fsync: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.stem = stem
        self.suffix = suffix
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.header = header
        self.fsync = fsync
        self._clock = clock
        self._wall = wall
        self._file: IO[bytes] | None = None
        self._size = 0
        self._opened_at = 0.0
        self._counter = 0
        self.paths: list[Path] = []  # every file this stream created, oldest first

    def _open_new(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._wall()))
        while True:
            self._counter += 1
            path = self.directory / f"{self.stem}-{stamp}-{self._counter:04d}{self.suffix}"
            try:
                self._file = open(path, "xb")  # noqa: SIM115 - lifetime spans many calls
                break
            except FileExistsError:
                continue
        self.paths.append(path)
        self._opened_at = self._clock()
        self._size = 0
        if self.header:
            self._file.write(self.header)
            self._size += len(self.header)

    def _too_big(self, incoming: int) -> bool:
        return (
            self.max_bytes > 0
            and self._size > len(self.header)
            and (self._size + incoming > self.max_bytes)
        )

    def _too_old(self) -> bool:
        return self.max_seconds > 0 and self._clock() - self._opened_at >= self.max_seconds

    def _due(self, incoming: int) -> bool:
        return self._file is not None and (self._too_big(incoming) or self._too_old())

    def write(self, record: bytes) -> None:
        self.write_all((record,))

    def write_all(self, records: Iterable[bytes]) -> None:
        """``records`` in order, a new file started before one that would not fit; the age is
        looked at once, before the first (a batch is written in a moment)."""
        if self._file is not None and self._too_old():
            self._close_current()
        for record in records:
            if self._file is not None and self._too_big(len(record)):
                self._close_current()
            if self._file is None:
                self._open_new()
            assert self._file is not None
            self._file.write(record)
            self._size += len(record)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        # An idle stream still rotates on age, so no file stays open for days.
        if self._file is not None and self._due(0):
            self._close_current()

    def _close_current(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
            f.close()

    def close(self) -> None:
        self._close_current()


class _FileSink(Sink):
    suffix = ""

    def __init__(
        self,
        directory: str | Path,
        *,
        prefix: str = "pyconpro",
        max_bytes: int = 64 * 1024 * 1024,
        max_seconds: float = 3600.0,
        fsync: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 0 or max_seconds < 0:
            raise ValueError("rotation limits must be >= 0 (0 turns a limit off)")
        self.directory = Path(directory)
        self.prefix = prefix
        self.streams: dict[str, RotatingFile] = {
            name: RotatingFile(
                self.directory,
                f"{prefix}-{name}",
                self.suffix,
                max_bytes=max_bytes,
                max_seconds=max_seconds,
                header=self.header(fields),
                fsync=fsync,
                clock=clock,
                wall=wall,
            )
            for name, fields in STREAMS.items()
        }

    def header(self, fields: Sequence[str]) -> bytes:
        return b""

    def encode(self, fields: Sequence[str], record: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(f"cannot create output directory {self.directory}: {exc}") from exc
        if not os.access(self.directory, os.W_OK):
            raise RuntimeError(f"output directory {self.directory} is not writable")

    def _write(self, stream: str, records: Iterable[dict[str, Any]]) -> None:
        fields = STREAMS[stream]
        self.streams[stream].write_all([self.encode(fields, r) for r in records])

    def write_samples(self, samples: list[Sample]) -> None:
        self._write("samples", map(sample_record, samples))

    def write_events(self, events: list[Event]) -> None:
        self._write("events", map(event_record, events))

    def write_gaps(self, gaps: list[BusGap]) -> None:
        self._write("gaps", map(gap_record, gaps))

    def write_stats(self, stats: list[Stats]) -> None:
        self._write("stats", map(stats_record, stats))

    def flush(self) -> None:
        for s in self.streams.values():
            s.flush()

    def close(self) -> None:
        for s in self.streams.values():
            s.close()


class JsonlSink(_FileSink):
    """One JSON object per line, keys in ``sinks.records`` order."""

    suffix = ".jsonl"

    def encode(self, fields: Sequence[str], record: dict[str, Any]) -> bytes:
        return (to_json(record) + "\n").encode("utf-8")

    def write_samples(self, samples: list[Sample]) -> None:
        # The same lines as encode(sample_record(s)), without the dict (sinks.records).
        lines = [(sample_json(s) + "\n").encode("utf-8") for s in samples]
        self.streams["samples"].write_all(lines)


def _csv_cell(x: Any) -> Any:
    if x is None:
        return ""
    if isinstance(x, bool):
        return int(x)
    return x


class CsvSink(_FileSink):
    """RFC 4180 CSV with a header line per file; ``value`` and ``counters`` as JSON text."""

    suffix = ".csv"

    def header(self, fields: Sequence[str]) -> bytes:
        return self._row(list(fields))

    @staticmethod
    def _row(cells: list[Any]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerow(cells)
        return buf.getvalue().encode("utf-8")

    def encode(self, fields: Sequence[str], record: dict[str, Any]) -> bytes:
        cells = []
        for f in fields:
            x = record[f]
            # value is always JSON text (so "1" the string and 1 the number stay distinct).
            cells.append(to_json(x) if f in ("value", "counters") else _csv_cell(x))
        return self._row(cells)


# --------------------------------------------------------------------------------------------
# the [[sink]] options of both kinds

_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _check_prefix(prefix: str) -> tuple[str, str] | None:
    if _PREFIX.fullmatch(prefix):
        return None
    return (
        f"prefix = {prefix!r} is not a plain file name prefix",
        "use 1-64 characters from A-Z a-z 0-9 _ . - (no '/')",
    )


def _check_rotate_bytes(n: int) -> tuple[str, str] | None:
    if 0 < n < 4096:
        return (
            f"rotate_bytes = {n} would start a new file every few records",
            "use 0 (never rotate by size) or at least 4096",
        )
    return None


def _schema(kind: str, help_text: str) -> SinkSchema:
    return SinkSchema(
        kind=kind,
        help=help_text,
        options=(
            Option(
                "directory", "path", "data", "Output directory (created if missing).",
                flag="--dir", cli_required=True, creates="directory",
            ),
            Option("prefix", "string", "pyconpro", "File name prefix.", check=_check_prefix),
            Option(
                "rotate_bytes", "integer", 64 * 1024 * 1024,
                "Start a new file past this size; `0` = never. At least 4096 when not 0.",
                lo=0, hi=1 << 50, unit="bytes", check=_check_rotate_bytes, flag="--max-bytes",
                doc_default="`67108864` (64 MiB)",
            ),
            Option(
                "rotate_s", "number", 3600.0, "Start a new file after this age; `0` = never.",
                lo=0.0, hi=366 * 86400.0, unit="s", flag="--max-seconds",
            ),
            Option("fsync", "boolean", False, "fsync the files on every flush."),
        ),
        # Each kind names its files <prefix>-<stream>-....<kind>, so only the same kind collides.
        output=Output(
            keys=("directory", "prefix"),
            what=f"the files {{prefix}}-*.{kind} in {{directory!r}}",
            fix=f"give each {kind} sink its own directory or prefix",
            where=f"{{directory}}/{{prefix}}-*.{kind}",
        ),
    )  # fmt: skip


def _file_options(options: Mapping[str, OptionValue]) -> dict[str, Any]:
    return {
        "directory": str(options["directory"]),
        "prefix": str(options["prefix"]),
        "max_bytes": int(options["rotate_bytes"]),
        "max_seconds": float(options["rotate_s"]),
        "fsync": bool(options["fsync"]),
    }


def jsonl_from_options(options: Mapping[str, OptionValue]) -> JsonlSink:
    return JsonlSink(**_file_options(options))


def csv_from_options(options: Mapping[str, OptionValue]) -> CsvSink:
    return CsvSink(**_file_options(options))


JSONL_SCHEMA = _schema("jsonl", "write JSON Lines files, rotated by size/age")
CSV_SCHEMA = _schema("csv", "write CSV files, rotated by size/age")
SINK_KINDS = (SinkKind(JSONL_SCHEMA, jsonl_from_options), SinkKind(CSV_SCHEMA, csv_from_options))

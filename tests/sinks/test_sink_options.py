"""The option schemas of the real sink kinds: what ``[[sink]]`` sections of each kind take,
and the two ways a sink process is described (flags derived from the schema for hand use, the
section as JSON as the supervisor passes it) building the same sink."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyconpro.acquisition.config import ConfigError
from pyconpro.acquisition.sink_config import SinkConfig, parse_sink_section
from pyconpro.sinks.base import Sink
from pyconpro.sinks.cli import build_parser, sink_from_args
from pyconpro.sinks.files import _FileSink
from pyconpro.sinks.registry import make_sink, sink_kinds, sink_schemas
from pyconpro.sinks.sqlite import SqliteSink
from pyconpro.sinks.stdout import StdoutSink

from tests.support.configs import ONE_PLC
from tests.support.configs import parse_file as parse

BASE = '[bus]\nendpoint = "tcp://*:5591"\n\n' + ONE_PLC
EP = "tcp://127.0.0.1:5555"


def test_every_kind_is_registered_in_order() -> None:
    assert list(sink_kinds()) == ["sqlite", "postgres", "mqtt", "nats", "jsonl", "csv", "stdout"]
    assert all(k.schema.kind == name for name, k in sink_kinds().items())


def test_sink_options_and_defaults() -> None:
    c = parse(
        BASE
        + """
[[sink]]
kind = "sqlite"
synchronous = "full"

[[sink]]
kind = "csv"
name = "csv-out"
topics = ["sample/line1/Speed/", "event/line1/", "stats/"]
directory = "/tmp/x"
rotate_bytes = 0
rotate_s = 60
fsync = true

[[sink]]
kind = "stdout"
raw = true
""",
        base_dir="/srv/pp",
    )
    sqlite, csv, out = c.sinks
    assert (sqlite.name, dict(sqlite.options)) == (
        "sqlite-0",
        {"path": "/srv/pp/pyconpro.sqlite3", "synchronous": "FULL", "max_pending": 100_000},
    )
    assert sqlite.topics == ("sample/", "event/", "stats/") and sqlite.flush_interval_s == 1.0
    assert dict(csv.options) == {
        "directory": "/tmp/x", "prefix": "pyconpro", "rotate_bytes": 0, "rotate_s": 60.0,
        "fsync": True,
    }  # fmt: skip
    assert (out.name, dict(out.options), out.flush_interval_s) == (
        "stdout-2",
        {"raw": True, "utc": False},
        0.1,
    )


def test_sinks_writing_different_files_are_fine() -> None:
    c = parse(
        BASE + '\n[[sink]]\nkind = "sqlite"\n\n[[sink]]\nkind = "sqlite"\npath = "b.sqlite3"\n'
        '\n[[sink]]\nkind = "jsonl"\n\n[[sink]]\nkind = "csv"\n'  # same dir, other suffix
        '\n[[sink]]\nkind = "jsonl"\nprefix = "second"\n'
        '\n[[sink]]\nkind = "stdout"\n\n[[sink]]\nkind = "stdout"\n',
        "plant.toml",
    )
    assert len(c.sinks) == 7


# ----------------------------------------------------------------------------- two descriptions

SINKS = """
[[sink]]
kind = "sqlite"
name = "db"
path = "db.sqlite3"
batch_size = 7
synchronous = "OFF"
max_pending = 5000

[[sink]]
kind = "jsonl"
topics = ["sample/line1/"]
rotate_bytes = 8192
rotate_s = 0.5
fsync = true

[[sink]]
kind = "csv"
directory = "/abs/csv"
prefix = "c"
drain_max_s = 0

[[sink]]
kind = "stdout"
raw = true
"""


def flags_for(sink: SinkConfig) -> list[str]:
    """``pyconpro sink KIND ...`` for ``sink``, every value spelled as the flag the kind's
    schema derives."""
    argv = [sink.kind, "--connect", EP, "--log-level", "DEBUG"]
    for topic in sink.topics:
        argv += ["--topic", topic]
    argv += ["--rcvhwm", str(sink.rcvhwm), "--batch-size", str(sink.batch_size),
             "--flush-interval", repr(sink.flush_interval_s),
             "--drain-max", repr(sink.drain_max_s), "--replay-mode", sink.replay]  # fmt: skip
    for o in sink_schemas()[sink.kind].options:
        value = sink.options[o.key]
        if o.type == "boolean":
            argv += [o.cli_flag] if value else []
        else:
            argv += [o.cli_flag, str(value)]
    return argv


def built(sink: Sink) -> tuple[Any, ...]:
    """What a constructed sink will do, comparable."""
    if isinstance(sink, SqliteSink):
        return ("sqlite", sink.path, sink.synchronous, sink.max_pending)
    if isinstance(sink, _FileSink):
        streams = {n: (s.max_bytes, s.max_seconds, s.fsync) for n, s in sink.streams.items()}
        return (type(sink).__name__, sink.directory, sink.prefix, streams)
    assert isinstance(sink, StdoutSink)
    return ("stdout", sink.raw)


def test_schema_flags_and_the_section_build_the_same_sink(tmp_path: Path) -> None:
    c = parse(BASE + SINKS, base_dir=str(tmp_path))
    parser = build_parser()
    for sink in c.sinks:
        section_argv = ["--section", json.dumps(sink.section()), "--connect", EP]
        from_section, eps, *_ = sink_from_args(parser.parse_args(section_argv))
        assert from_section == sink and eps == [EP]
        from_flags, eps, *_ = sink_from_args(parser.parse_args(flags_for(sink)))
        assert replace(from_flags, name=sink.name) == sink and eps == [EP]
        assert built(make_sink(from_flags)) == built(make_sink(from_section))
    assert built(make_sink(c.sinks[0])) == ("sqlite", tmp_path / "db.sqlite3", "OFF", 5000)
    assert built(make_sink(c.sinks[1]))[3]["samples"] == (8192, 0.5, True)


def test_flags_left_out_take_the_schema_defaults() -> None:
    args = build_parser().parse_args(["jsonl", "--connect", EP, "--dir", "out"])
    sink, *_ = sink_from_args(args)
    assert sink == parse_sink_section({"kind": "jsonl", "directory": "out"}, sink_schemas())
    assert sink.name == "jsonl" and sink.options["rotate_bytes"] == 64 * 1024 * 1024


def test_flags_are_validated_by_the_schema() -> None:
    parser = build_parser()
    with pytest.raises(ConfigError) as info:
        sink_from_args(parser.parse_args(["csv", "--connect", EP, "--dir", "d", "--max-bytes",
                                          "100", "--batch-size", "0"]))  # fmt: skip
    assert [(i.file, i.key) for i in info.value.issues] == [
        ("pyconpro sink", "batch_size"), ("pyconpro sink", "rotate_bytes")]  # fmt: skip
    assert "would start a new file every few records" in info.value.issues[1].problem
    with pytest.raises(SystemExit):  # hand use: the output is not left to a default
        parser.parse_args(["sqlite", "--connect", EP])


def test_report_by_exception_flags_build_the_keys_of_a_section() -> None:
    parser = build_parser()
    args = parser.parse_args([
        "stdout", "--connect", EP, "--deadband", "0.5", "--max-interval", "60",
        "--min-spacing", "0.1", "--by-tag", "line1/Sp*", "deadband=false,min_spacing_s=0",
        "--by-tag", "*/*", "deadband=2",
    ])  # fmt: skip
    sink, *_ = sink_from_args(args)
    assert sink == parse_sink_section({
        "kind": "stdout", "deadband": 0.5, "max_interval_s": 60, "min_spacing_s": 0.1,
        "by_tag": {"line1/Sp*": {"deadband": False, "min_spacing_s": 0}, "*/*": {"deadband": 2}},
    }, sink_schemas())  # fmt: skip
    with pytest.raises(ConfigError) as info:
        sink_from_args(parser.parse_args(["stdout", "--connect", EP, "--by-tag", "a/b",
                                          "deadband=much,spacing=1"]))  # fmt: skip
    assert [(i.key, i.problem) for i in info.value.issues] == [
        ("by_tag.a/b.spacing", "unknown key 'spacing' in [by_tag.a/b]"),
        ("by_tag.a/b.deadband", "deadband = 'much' is not a number >= 0"),
    ]


def test_the_config_file_and_sink_name_build_the_same_sink(tmp_path: Path) -> None:
    from pyconpro.config_file import load_config

    path = tmp_path / "plant.toml"
    path.write_text(BASE + SINKS, encoding="utf-8")
    config = load_config(path)
    parser = build_parser()
    sink, eps, *_ = sink_from_args(parser.parse_args(["--config", str(path), "--sink", "db"]))
    assert sink == config.sinks[0] and eps == ["tcp://127.0.0.1:5591"]  # [bus].endpoint
    with pytest.raises(Exception, match="--sink takes one of: db, jsonl-1, csv-2, stdout-3"):
        sink_from_args(parser.parse_args(["--config", str(path), "--sink", "nope"]))


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ({"kind": "sqlite", "rotate_s": 1}, "rotate_s", "not an option of sink kind 'sqlite'"),
        ({"kind": "sqlite", "paht": "x"}, "paht", "unknown key 'paht'"),
        ({"kind": "pg"}, "kind", "kind = 'pg' is not one of"),
        ({"kind": "stdout", "topics": []}, "topics", "topics is empty"),
        ({"kind": "csv", "prefix": "a/b"}, "prefix", "is not a plain file name prefix"),
        ({"kind": "sqlite", "path": ""}, "path", "path is empty"),
        (["kind", "stdout"], "", "a sink section must be a table"),
        ({"kind": "postgres", "conninfo": "host=db1 password=secret"}, "conninfo",
         "conninfo holds a password"),
        ({"kind": "postgres", "conninfo": "postgresql://u:secret@db1/plant"}, "conninfo",
         "conninfo holds a password"),
        ({"kind": "postgres", "schema": "Plant Data"}, "schema", "not a plain PostgreSQL name"),
        ({"kind": "mqtt", "group_id": "a/b"}, "group_id", "is not a Sparkplug id"),
        ({"kind": "mqtt", "sample_topic": "x/{tag}"}, "sample_topic",
         "is not a usable topic template"),
        ({"kind": "mqtt", "sample_topic": "x/{plc}/{tag}/#"}, "sample_topic",
         "is not a usable topic template"),
        ({"kind": "mqtt", "payload": "xml"}, "payload", "one of"),
        ({"kind": "mqtt", "qos": 3}, "qos", ""),
        ({"kind": "nats", "servers": "nats://u:secret@hub1:4222"}, "servers",
         "holds a user, password or token"),
        ({"kind": "nats", "servers": "http://hub1"}, "servers", "is not a NATS server URL"),
        ({"kind": "nats", "servers": " , "}, "servers", "servers is empty"),
        ({"kind": "nats", "stream": "plant.data"}, "stream", "not a JetStream stream name"),
        ({"kind": "nats", "subject_prefix": "site1.>"}, "subject_prefix",
         "not a plain NATS subject"),
        ({"kind": "nats", "subject_prefix": "a..b"}, "subject_prefix", "not a plain NATS subject"),
        ({"kind": "nats", "payload": "xml"}, "payload", "payload"),
        # options that do not go together: refused by the file's check, not at the sink's start
        ({"kind": "nats", "user": "u", "token_file": "/t"}, "token_file",
         "user and token_file are set: a NATS login is one of"),
        ({"kind": "nats", "user": "u", "password_file": "/p", "creds_file": "/c",
          "nkey_file": "/k"}, "nkey_file", "user, creds_file and nkey_file are set"),
        ({"kind": "nats", "password_file": "/p"}, "password_file",
         "password_file is set without user"),
        ({"kind": "nats", "tls_cert": "/c.pem"}, "tls_cert", "tls_cert is set without tls_key"),
        ({"kind": "nats", "tls_key": "/k.pem"}, "tls_key", "tls_key is set without tls_cert"),
        ({"kind": "mqtt", "cert_file": "/c.pem"}, "cert_file", "cert_file is set but tls = false"),
        ({"kind": "mqtt", "tls": True, "key_file": "/k.pem"}, "key_file",
         "key_file is set without cert_file"),
        ({"kind": "mqtt", "password_env": "X"}, "password_env",
         "a password is given (password_env) without a username"),
        ({"kind": "mqtt", "password_file": "/p"}, "password_file",
         "a password is given (password_file) without a username"),
    ],
)
def test_a_bad_section_is_refused_with_the_key(section: Any, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_sink_section(section, sink_schemas(), "--section")
    issue = info.value.first
    assert (issue.file, issue.key, issue.line) == ("--section", key, None)
    assert problem in issue.problem


def test_a_bad_pair_of_options_has_its_line_and_fix_in_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        parse(BASE + '\n[[sink]]\nkind = "nats"\ntls_cert = "client.pem"\nuser = "u"\n'
              'token_file = "token"\n')
    found = [(i.key, i.problem, i.fix) for i in info.value.issues]
    lines = (BASE + "\n").count("\n")
    assert found == [
        ("sink[0].token_file", "user and token_file are set: a NATS login is one of user (with"
         " password_file), token_file, creds_file, nkey_file",
         "keep one of them and remove the other"),
        ("sink[0].tls_cert", "tls_cert is set without tls_key",
         "tls_cert and tls_key go together: set tls_key to the certificate's private key"
         " file, or remove tls_cert"),
    ]  # fmt: skip
    assert [i.line for i in info.value.issues] == [lines + 5, lines + 3]


def test_a_nats_sink_built_in_code_is_held_to_the_same_rules() -> None:
    """NatsSink's constructor runs the schema's rules (before it needs nats-py)."""
    from pyconpro.sinks.nats import NatsSink

    with pytest.raises(ValueError, match="^user and nkey_file are set: .*: keep one of them"):
        NatsSink(user="u", nkey_file="/k")
    with pytest.raises(ValueError, match="^tls_key is set without tls_cert: "):
        NatsSink(tls_key="/k.pem")
    with pytest.raises(ValueError, match="^stream = 'a.b' is not a JetStream stream name: "):
        NatsSink(stream="a.b")


@pytest.mark.parametrize("kind", sorted(sink_schemas()))
def test_the_section_the_supervisor_hands_a_sink_is_valid_as_it_is(kind: str) -> None:
    """``pyconpro run`` starts a sink with ``--section`` holding every option, defaults
    included (an optional path left empty among them): it must parse back to the same."""
    sink = parse_sink_section({"kind": kind}, sink_schemas())
    assert parse_sink_section(sink.section(), sink_schemas()) == sink


def test_configuration_md_sink_tables_are_generated_from_the_schemas() -> None:
    """docs/configuration.md's per-kind key tables are what ``options_markdown`` renders from
    each kind's schema (regenerate them with scripts/doc_tables.py)."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("doc_tables", root / "scripts" / "doc_tables.py")
    assert spec is not None and spec.loader is not None
    doc_tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(doc_tables)
    text = (root / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert doc_tables.blocks_in(text) == [f"sink {kind}" for kind in sink_kinds()]
    new, stale = doc_tables.regenerate(text)
    assert stale == [], f"run scripts/doc_tables.py: {stale}"
    assert new == text
    for schema in sink_schemas().values():  # every flag is in the table next to its key
        assert all(f"| `{o.key}` |" in text and f"`{o.cli_flag}`" in text for o in schema.options)


def test_where_a_sink_asks_for_its_replay(tmp_path: Path) -> None:
    from pyconpro.sinks.cli import loop_options, replay_from_args
    from pyconpro.workers.guard import keygen

    parser = build_parser()
    path = tmp_path / "plant.toml"
    path.write_text(BASE + SINKS, encoding="utf-8")
    # --config: that file's supervisor (ipc: never CURVE), unless the file keeps no buffer
    args = parser.parse_args(["--config", str(path), "--sink", "db"])
    assert replay_from_args(args, sink_from_args(args)) == ("ipc:///tmp/pyconpro-supervisor", None)
    path.write_text(BASE.replace("[bus]\n", "[bus]\nreplay_s = 0\n") + SINKS, encoding="utf-8")
    assert replay_from_args(args, sink_from_args(args)) == (None, None)
    # by hand: --replay, with the bus's client keys for a tcp:// one
    keygen(tmp_path / "plant")
    keygen(tmp_path / "me")
    hand = ["sqlite", "--connect", EP, "--db", "x.db", "--curve-server-key",
            str(tmp_path / "plant.key"), "--curve-key", str(tmp_path / "me.key_secret")]
    args = parser.parse_args([*hand, "--replay", "tcp://10.0.0.5:5600"])
    endpoint, keys = replay_from_args(args, sink_from_args(args))
    assert endpoint == "tcp://10.0.0.5:5600" and keys is not None
    args = parser.parse_args([*hand, "--replay", "ipc:///run/p-supervisor"])
    assert replay_from_args(args, sink_from_args(args)) == ("ipc:///run/p-supervisor", None)
    # the section's replay mode: "none" asks nothing, "all" asks for new streams too
    run = sink_from_args(parser.parse_args([*hand, "--replay-mode", "all"]))
    options = loop_options(run.sink, run.endpoints, replay="ipc:///r")
    assert (options.replay, options.replay_new) == ("ipc:///r", True)
    run = sink_from_args(parser.parse_args([*hand, "--replay-mode", "none"]))
    assert loop_options(run.sink, run.endpoints, replay="ipc:///r").replay is None

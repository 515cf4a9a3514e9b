"""MQTT sink: samples to an MQTT broker, as a Sparkplug B 3.0 edge node (``payload =
"sparkplug"``) or as plain JSON per tag (``payload = "json"``), through the store-and-forward
spool (``sinks/spool.py``) while the broker is away, slow, or (Sparkplug) the primary host
application is offline. docs/sinks.md "MQTT" describes topics, payloads and guarantees.

The package: this module declares the ``[[sink]]`` options and builds the sink (no import of
paho or protobuf here, so a config naming the kind is checked where they are not installed);
``sparkplug.py`` is the Sparkplug edge node as data (births, data, deaths, aliases, sequence
numbers) over the generated ``sparkplug_b_pb2``; ``connection.py`` is one paho-mqtt connection;
``sink.py`` the sink the SUB loop drives.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from pyconpro.acquisition.sink_config import Option, OptionValue, Output, SinkSchema
from pyconpro.acquisition.wire import escape_name
from pyconpro.sinks.password import password_options
from pyconpro.sinks.registry import SinkKind
from pyconpro.sinks.spool import SPOOL_OPTIONS

if TYPE_CHECKING:  # paho is imported by the factory only
    from pyconpro.sinks.mqtt.sink import MqttSink

PAYLOADS: Final = ("sparkplug", "json")
_BAD_ID: Final = re.compile(r"[/+#]")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")


@functools.lru_cache(maxsize=1 << 16)
def topic_name(name: str) -> str:
    """A PLC or tag name as one MQTT topic level (and a Sparkplug device id): the bus's topic
    escaping (``/`` -> ``%2F``, whitespace, ``%``; docs/wire-format.md) and ``+`` / ``#``
    too, which a published topic may not hold."""
    return escape_name(name).replace("+", "%2B").replace("#", "%23")


def _check_id(what: str, allow_empty: bool = False) -> Any:
    def check(value: Any) -> tuple[str, str] | None:
        text = str(value)
        if (text or allow_empty) and not _BAD_ID.search(text):
            return None
        return (f"{what} = {text!r} is not a Sparkplug id (empty, or holds / + #)",
                f"write a name without / + #, e.g. {what} = \"line1\"")  # fmt: skip

    return check


def _check_template(key: str, need: tuple[str, ...], allow_empty: bool) -> Any:
    def check(value: Any) -> tuple[str, str] | None:
        text = str(value)
        if not text and allow_empty:
            return None
        names = _PLACEHOLDER.findall(text)
        bad = [n for n in names if n not in ("plc", "tag")]
        missing = [n for n in need if n not in names]
        rest = _PLACEHOLDER.sub("", text)
        if not text or bad or missing or "{" in rest or "}" in rest or "+" in rest \
                or "#" in rest or text.startswith("$"):  # fmt: skip
            need_text = " and ".join("{" + n + "}" for n in need) or "no placeholder"
            return (
                f"{key} = {text!r} is not a usable topic template",
                f"write MQTT topic levels with {need_text} ({{plc}} and {{tag}} are the only"
                " placeholders), no + or # and no $ at the start"
                + ("" if need else ", or \"\" for none"),
            )
        return None

    return check


def _check_together(o: Mapping[str, OptionValue]) -> list[tuple[str, str, str]]:
    """The rules between the options (``SinkSchema.check``): TLS files only with tls, a key
    file only with its certificate, a password only with its username."""
    out = []
    for key in ("ca_file", "cert_file", "key_file"):
        if o[key] and not o["tls"]:
            out.append((key, f"{key} is set but tls = false",
                        f"set tls = true to use it, or remove {key}"))  # fmt: skip
    if o["key_file"] and not o["cert_file"]:
        out.append(("key_file", "key_file is set without cert_file",
                    "give the client certificate in cert_file too (or both in cert_file, and"
                    " remove key_file)"))  # fmt: skip
    for key in ("password_file", "password_env"):
        if o[key] and not o["username"]:
            out.append((key, f"a password is given ({key}) without a username",
                        f"set username (the password is that user's), or remove {key}"))
    return out


MQTT_SCHEMA = SinkSchema(
    kind="mqtt",
    help="publish to an MQTT broker: Sparkplug B 3.0 edge node or JSON per tag"
         " (store-and-forward spool)",
    options=(
        Option("host", "string", "localhost", "Broker host name or address."),
        Option("port", "integer", 1883, "Broker port (8883 is the usual one with TLS).",
               lo=1, hi=65535),
        Option(
            "payload", "choice", "sparkplug",
            "`sparkplug`: a Sparkplug B 3.0 edge node (births, DDATA per sample, deaths);"
            " `json`: one JSON message per sample on `topic`.",
            choices=PAYLOADS,
        ),
        Option(
            "qos", "integer", 1,
            "MQTT QoS of what is published (0, 1, 2). At 1 and 2 a record leaves the spool"
            " only once the broker acknowledged it; 0 trusts TCP.",
            lo=0, hi=2,
        ),
        Option(
            "client_id", "string", "",
            "MQTT client id; empty: `pyconpro-<edge_node_id>` (sparkplug),"
            " `pyconpro-<edge_node_id>-<process id>` (json). Two clients with one id push each"
            " other off the broker.",
        ),
        Option("username", "string", "", "User name to log in with; empty: none."),
        *password_options(""),
        Option("tls", "boolean", False, "Connect with TLS (verifying the broker's certificate)."),
        Option("ca_file", "path", "",
               "CA certificates (PEM) to verify the broker with; empty: the system's. TLS only."),
        Option("cert_file", "path", "",
               "Client certificate (PEM) for brokers that ask for one; empty: none. TLS only."),
        Option("key_file", "path", "",
               "The client certificate's private key (PEM); empty: in cert_file. TLS only."),
        Option(
            "keepalive_s", "integer", 30,
            "MQTT keepalive: the broker drops (and publishes the Will of) a client silent"
            " 1.5 times this long.",
            lo=5, hi=3600, unit="s",
        ),
        Option(
            "connect_timeout_s", "number", 5.0,
            "Longest wait for the broker to accept a connection; then it is retried with"
            " backoff while records go to the spool.",
            lo=1.0, hi=300.0, unit="s",
        ),
        Option(
            "ack_timeout_s", "number", 30.0,
            "Longest wait for the broker to acknowledge a batch (QoS 1, 2); then the"
            " connection is dropped and the batch goes to the spool.",
            lo=1.0, hi=3600.0, unit="s",
        ),
        Option("group_id", "string", "pyconpro", "Sparkplug group id.",
               check=_check_id("group_id")),
        Option(
            "edge_node_id", "string", "",
            "Sparkplug edge node id (the pipeline); empty: this machine's host name.",
            check=_check_id("edge_node_id", allow_empty=True),
        ),
        Option(
            "primary_host_id", "string", "",
            "Sparkplug primary host application id: publish only while its STATE"
            " (`spBv1.0/STATE/<id>`) says online, spool meanwhile. Empty: none.",
            check=_check_id("primary_host_id", allow_empty=True),
        ),
        Option(
            "sample_topic", "string", "pyconpro/{plc}/{tag}",
            "JSON: the topic of a tag's samples, `{plc}` and `{tag}` replaced by the names"
            " (`/ + # % whitespace` in them escaped as `%XX`).",
            check=_check_template("sample_topic", ("plc", "tag"), False),
        ),
        Option(
            "event_topic", "string", "pyconpro/{plc}/_events",
            "JSON: the topic of connection events (`{tag}` is empty for a PLC's own); empty:"
            " not published.",
            check=_check_template("event_topic", (), True),
        ),
        Option(
            "gap_topic", "string", "pyconpro/_gaps",
            "JSON: the topic of known loss (bus gaps, spool drops); empty: not published.",
            check=_check_template("gap_topic", (), True),
        ),
        Option("retain", "boolean", False,
               "JSON: publish samples retained (the broker keeps each tag's last value)."),
        *SPOOL_OPTIONS,
    ),
    output=Output(
        keys=("host", "port", "payload", "group_id", "edge_node_id", "sample_topic"),
        what="{payload} messages on {host}:{port} (group {group_id!r}, node {edge_node_id!r},"
             " topic {sample_topic!r})",
        fix='give each mqtt sink its own edge_node_id (sparkplug) or sample_topic (json)',
        where="mqtt {host}:{port} {payload}",
    ),
    check=_check_together,
)  # fmt: skip


def from_options(options: Mapping[str, OptionValue]) -> MqttSink:
    from pyconpro.sinks.mqtt.sink import MqttSink, settings_from_options

    return MqttSink(settings_from_options(options))


SINK_KINDS = (SinkKind(MQTT_SCHEMA, from_options),)

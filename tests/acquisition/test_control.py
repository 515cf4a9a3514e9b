"""The worker's control protocol (acquisition/control.py): every request round-trips through
its map and MessagePack, consumer maps round-trip, and malformed requests name the fix."""

from __future__ import annotations

import msgpack
import pytest
from pyconpro.acquisition import control
from pyconpro.acquisition.control import (
    AddRequest,
    ConsumerListing,
    ErrorReply,
    ListReply,
    ListRequest,
    ProduceRequest,
    RecorderRequest,
    RemoveRequest,
    SetRequest,
    StatusRequest,
    StopRequest,
    consumer_from_map,
    consumer_from_text,
    consumer_to_map,
    decode_request,
    encode_request,
)
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.originator import SessionPolicy
from pyconpro.acquisition.produce import ProduceSpec

DEFN = consumer_from_text("plc=p1,address=10.0.0.5,port=1234,udp_port=2300,slot=none,"
                          "route=1/2;2/10.0.0.9,tag=Count,alias=C2,rpi_ms=20,ot_rpi_ms=40,"
                          "multiplier=16,transport=multicast,size=4")


@pytest.mark.parametrize("req", [
    AddRequest(DEFN), AddRequest(consumer_from_text("address=10.0.0.5,tag=T,type=REAL[10]")),
    AddRequest(DEFN, outage_since=12345.5),
    AddRequest(consumer_from_text("address=10.0.0.5,tag=T,reconnect_min_s=0.2,"
                                  "reconnect_max_s=3,connect_timeout_s=0.5,max_in_flight=2")),
    RemoveRequest("p1/C2"), ListRequest(), StatusRequest(), StatusRequest(recorder=True),
    RecorderRequest("p1/C2"), control.OutputRequest("io/drive", b"\x01\x02"), StopRequest(),
    AddRequest(control.consumer_from_map({
        "address": "10.0.0.5", "plc": "io", "tag": "drive-1", "assembly": {
            "connection": "exclusive_owner", "input": 100, "output": 150, "config": 151,
            "layout": [{"name": "speed", "type": "INT"}]}})),
], ids=lambda r: type(r).__name__)
def test_every_request_round_trips(req: control.Request) -> None:
    assert decode_request(encode_request(req)) == req
    assert req.to_map()["op"] == req.OP
    assert control.REQUESTS[req.OP] is type(req)


def test_consumer_map_round_trips_and_keeps_defaults_out() -> None:
    assert consumer_from_map(consumer_to_map(DEFN)) == DEFN
    plain = consumer_to_map(consumer_from_text("address=10.0.0.5,tag=T"))
    assert plain == {"plc": "10.0.0.5", "address": "10.0.0.5", "tag": "T", "rpi_us": 100_000,
                     "multiplier": 8, "transport": "unicast", "slot": 0, "udp_port": 2222}


def test_an_assembly_consumer_is_named_by_a_topic_segment_and_has_no_slot_by_default() -> None:
    d = consumer_from_map({"address": "10.0.0.5", "plc": "io", "tag": "drive-1.a",
                           "assembly": {"connection": "input_only", "input": 100, "output": 152}})
    assert (d.key, d.slot) == ("io/drive-1.a", None)
    with pytest.raises(control.ConsumerKeyError, match="cannot be a topic segment"):
        consumer_from_map({"address": "10.0.0.5", "tag": "a/b",
                           "assembly": {"connection": "input_only", "input": 100, "output": 152}})
    with pytest.raises(UsageError, match="'output' needs 'key'"):
        control.request_from_map({"op": "output", "key": "io/drive", "data": "0102"})
    assert control.request_from_map({"op": "output", "plc": "io", "tag": "d", "data": b"x"}) \
        == control.OutputRequest("io/d", b"x")


def test_remove_and_recorder_take_plc_and_tag_instead_of_key() -> None:
    assert control.request_from_map({"op": "remove", "plc": "a", "tag": "T"}) == RemoveRequest(
        "a/T"
    )
    assert control.request_from_map({"op": "recorder", "plc": "a", "tag": "T"}) == RecorderRequest(
        "a/T"
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"\xc1", "control request is not MessagePack: send a map like {'op': 'list'}"),
        (
            msgpack.packb([1]),
            "control request must be a map with an 'op' string (add, remove, list, status, stop)",
        ),
        (msgpack.packb({"op": 3}), "must be a map with an 'op' string"),
        (
            msgpack.packb({"op": "nope"}),
            "unknown op 'nope': use add, remove, list, status, recorder, output, stop, produce"
            " or set",
        ),
        (msgpack.packb({"op": "produce"}), "'produce' needs 'produce'"),
        (msgpack.packb({"op": "produce", "produce": {"name": "X"}}), "give at least name and type"),
        (msgpack.packb({"op": "set", "value": 1}), "'set' needs 'tag'"),
        (msgpack.packb({"op": "set", "tag": "X"}), "give 'value'"),
        (msgpack.packb({"op": "set", "tag": "X", "raw": 5}), "'raw' must be bytes"),
        (
            msgpack.packb({"op": "add"}),
            "'add' needs 'consumer': a map with at least address and tag",
        ),
        (
            msgpack.packb(
                {"op": "add", "consumer": {"address": "10.0.0.5", "tag": "T", "colour": 1}}
            ),
            "consumer.colour: unknown key 'colour' in [consumer]; the keys allowed here are: ",
        ),
        (
            msgpack.packb({"op": "remove"}),
            "'remove' needs 'key' (<plc>/<tag or alias>) or 'plc' and 'tag'",
        ),
        (
            msgpack.packb({"op": "recorder", "key": 5}),
            "'recorder' needs the 'key' of a consumer"
            " (<plc>/<tag or alias>), got 5; 'list' shows"
            " the keys",
        ),
    ],
)
def test_malformed_requests_name_the_fix(body: bytes, error: str) -> None:
    with pytest.raises(UsageError) as info:
        decode_request(body)
    assert error in str(info.value)


def test_replies_are_the_documented_maps() -> None:
    listing = ConsumerListing(
        key="a/T", plc="a", tag="T", address="10.0.0.5", state="RUNNING", failure=None
    )
    assert ListReply((listing,)).to_map() == {
        "ok": True,
        "consumers": [
            {
                "key": "a/T",
                "plc": "a",
                "tag": "T",
                "address": "10.0.0.5",
                "state": "RUNNING",
                "failure": None,
            }
        ],
    }
    assert control.ConsumerReply("a/T", "OPENING").to_map() == {
        "ok": True,
        "key": "a/T",
        "state": "OPENING",
    }
    assert control.StopReply().to_map() == {"ok": True, "stopping": True}
    assert msgpack.unpackb(control.encode_reply(ErrorReply("no"))) == {"ok": False, "error": "no"}
    assert msgpack.unpackb(control.encode_reply(control.StatusReply({"x": object}))) == {
        "ok": True,
        "x": str(object),
    }


def test_session_keys_travel_with_the_consumer_and_default_to_the_policy() -> None:
    d = consumer_from_text("address=10.0.0.5,tag=T,reconnect_max_s=2,max_in_flight=4")
    assert d.session_policy() == SessionPolicy(0.1, 2.0, 2.0, 4)
    assert consumer_to_map(d)["reconnect_max_s"] == 2.0
    assert "reconnect_min_s" not in consumer_to_map(d)  # defaults stay out


@pytest.mark.parametrize(("text", "needle"), [
    ("reconnect_max_s=0.01", "reconnect_max_s"),
    ("reconnect_min_s=1,reconnect_max_s=0.5", "reconnect_max_s = 0.5 is below reconnect_min_s = 1"),
    ("connect_timeout_s=soon", "connect_timeout_s"),
    ("max_in_flight=0", "max_in_flight"),
])
def test_bad_session_keys_name_the_key(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        consumer_from_text(f"address=10.0.0.5,tag=T,{text}")


@pytest.mark.parametrize("since", [-1, "yesterday", True, float("nan")])
def test_add_refuses_an_outage_since_that_is_no_time(since: object) -> None:
    with pytest.raises(UsageError, match="outage_since"):
        control.request_from_map({"op": "add", "consumer": {"address": "10.0.0.5", "tag": "T"},
                                  "outage_since": since})


def test_produce_and_set_requests_round_trip() -> None:
    spec = ProduceSpec("PcSetpoint", "REAL", max_consumers=3)
    for req in (ProduceRequest(spec), SetRequest("PcSetpoint", 1.5), SetRequest("X", b"\0" * 4)):
        assert decode_request(encode_request(req)) == req

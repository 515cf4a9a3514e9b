"""Tests of the tshark driver (tests/support/tshark.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import golden_pcap, pcap, tshark

# tshark repeats keys inside one object; a plain json.loads would keep only the last one.
_JSON = """[{"_source": {"layers": {
  "frame": {"frame.number": "7"},
  "enip": {"enip.command": "0x006f", "Command Specific Data": {
      "enip.cpf.typeid": "0x0000", "enip.cpf.typeid_tree": {"enip.cpf.length": "0"},
      "enip.cpf.typeid": "0x00b2", "enip.cpf.typeid_tree": {"enip.cpf.length": "30"}}},
  "enip": {"enip.command": "0x0070", "enip.context": "00:01:ff"},
  "_ws.malformed": {"_ws.expert": {"_ws.expert.message": "Malformed Packet",
      "_ws.expert.severity": "8388608", "_ws.expert.group": "117440512"},
      "_ws.malformed": "Malformed Packet"}
}}}]"""


def test_flattening_keeps_repeated_keys_in_order() -> None:
    (f,) = tshark._parse_json(_JSON).values()
    assert f.number == 7
    assert f.values("enip.cpf.typeid") == ["0x0000", "0x00b2"]
    assert f.int_values("enip.cpf.length") == [0, 30]
    assert f.int_values("enip.command") == [0x6F, 0x70]
    assert "Command Specific Data" not in f
    assert f.layers == ["frame", "enip", "enip", "_ws.malformed"]
    first, second = f.layer("enip")
    assert (
        first.int_value("enip.command") == 0x6F
        and second.bytes_value("enip.context") == b"\x00\x01\xff"
    )
    assert f.malformed and [e.message for e in f.errors] == ["Malformed Packet"]
    with pytest.raises(AssertionError, match="expected one 'enip.command'"):
        f.one("enip.command")
    assert f.values("absent") == []


def test_value_parsers() -> None:
    assert tshark.parse_int("0x00ff") == 255 and tshark.parse_int("42") == 42
    assert tshark.parse_bytes("0a:0b") == b"\n\x0b" == tshark.parse_bytes("0a0b")
    assert tshark.parse_bytes("") == b""


def test_missing_tshark_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tshark, "find_tshark", lambda: None)
    monkeypatch.delenv(tshark.ENV_REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="tshark is not installed"):
        tshark.require_tshark()
    monkeypatch.setenv(tshark.ENV_REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match="PYCONPRO_REQUIRE_TSHARK=1"):
        tshark.require_tshark()


@pytest.mark.tshark
def test_dissect_reference_capture(tshark_bin: str) -> None:
    frames = tshark.dissect(golden_pcap("eipscanner_opener.pcap"))
    assert len(frames) == 220
    fo = frames[8]
    assert fo.int_value("cip.cm.to_connid") == 0xCE5C0001
    assert fo.int_value("cip.cm.ot_net_params") == 0x4826
    assert fo.int_values("cip.cm.fwo.consize") == [38, 34]
    assert frames[13].int_value("enip.cpf.sai.connid") == 0x42300013
    assert frames[13].int_value("enip.cpf.sai.seq") == 1
    assert tshark.dissect(golden_pcap("eipscanner_opener.pcap")) is frames  # cached


@pytest.mark.tshark
def test_capture_problems(tshark_bin: str) -> None:
    assert tshark.capture_problems(golden_pcap("eipscanner_opener.pcap")) == []
    problems = tshark.capture_problems(
        golden_pcap("cipdip_baseline_io_logix_like_NONCOMPLIANT.pcap")
    )
    assert len(problems) == 1901
    assert problems[0].startswith("frame 8 ")
    assert "CPF Item Length Mismatch" in problems[1]
    with pytest.raises(pytest.fail.Exception, match="1901 bad frame"):
        tshark.assert_capture_clean(golden_pcap("cipdip_baseline_io_logix_like_NONCOMPLIANT.pcap"))
    tshark.assert_capture_clean(golden_pcap("eipscanner_opener.pcap"))


@pytest.mark.tshark
def test_capture_problems_on_written_capture(tshark_bin: str, tmp_path: Path) -> None:
    """A class-1 datagram whose data item length overruns the datagram is flagged."""
    good = bytes.fromhex("0200 0280 0800 01000000 01000000 b100 0200 0100")
    bad = good[:-4] + b"\x09\x00\x01\x00"  # connected data length 9, only 2 bytes follow
    path = pcap.write_pcap(
        tmp_path / "x.pcap",
        [
            pcap.ipv4_udp_frame("127.0.0.1", 2222, "127.0.0.2", 2222, good),
            pcap.ipv4_udp_frame("127.0.0.1", 2222, "127.0.0.2", 2222, bad),
        ],
    )
    problems = tshark.capture_problems(path)
    assert [p.split()[1] for p in problems] == ["2"]

"""Common Packet Format items (protocol.md 2.5, 2.6, 2.8)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition import cpf
from pyconpro.acquisition.errors import MalformedPacket, UsageError

from tests.acquisition.codec_helpers import assert_prefixes_malformed

# A Forward_Open reply's trailing T->O sockaddr item for multicast group 239.192.1.32:2222
# (protocol.md 2.8: big-endian body), as in the EIPScanner/OpENer capture, scenario 5.
SOCKADDR_T2O = bytes.fromhex("0180 1000 0002 08ae efc00120 0000000000000000")


def test_decode_sockaddr_item() -> None:
    items = cpf.decode_items(b"\x01\x00" + SOCKADDR_T2O)
    assert items == (cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("239.192.1.32", 2222)),)


def test_encode_sockaddr_item() -> None:
    item = cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("239.192.1.32", 2222))
    assert cpf.encode_items((item,)) == b"\x01\x00" + SOCKADDR_T2O


def test_sockaddr_prefixes() -> None:
    assert_prefixes_malformed(cpf.decode_items, b"\x01\x00" + SOCKADDR_T2O)


# ListIdentity reply items from protocol.md 2.5 (a 1756-L83E at 192.168.1.10).
IDENTITY = cpf.IdentityItem(
    vendor_id=1, device_type=0x0E, product_code=166, revision_major=33, revision_minor=11,
    status=0x3060, serial_number=0xC0FFEE01, product_name="1756-L83E/B", state=3,
    sockaddr=cpf.Sockaddr("192.168.1.10", 44818),
)
IDENTITY_BYTES = (
    bytes.fromhex("0100 0c00 2d00 0100 0002 af12 c0a8010a 0000000000000000")
    + bytes.fromhex("0100 0e00 a600 21 0b 6030 01eeffc0 0b")
    + b"1756-L83E/B"
    + b"\x03"
)


def test_identity_item_decode_encode() -> None:
    assert cpf.decode_items(IDENTITY_BYTES) == (IDENTITY,)
    assert cpf.encode_items((IDENTITY,)) == IDENTITY_BYTES
    assert_prefixes_malformed(cpf.decode_items, IDENTITY_BYTES)


def test_services_item() -> None:
    data = bytes.fromhex("0100 0001 1400 0100 2001") + b"Communications\x00\x00"
    assert cpf.decode_items(data) == (cpf.ServicesItem(1, 0x0120, b"Communications\x00\x00"),)
    assert cpf.encode_items((cpf.ServicesItem(),)) == data
    assert_prefixes_malformed(cpf.decode_items, data)


def test_unknown_item_kept() -> None:
    data = bytes.fromhex("0100 3412 0300 aabbcc")
    assert cpf.decode_items(data) == (cpf.UnknownItem(0x1234, b"\xaa\xbb\xcc"),)
    assert cpf.encode_items(cpf.decode_items(data)) == data


@pytest.mark.parametrize(
    "data, what",
    [
        (bytes.fromhex("0100 a100 0300 010203"), "connected address item of length 4"),
        (bytes.fromhex("0100 0280 0400 01020304"), "sequenced address item of length 8"),
        (bytes.fromhex("0100 0000 0100 00"), "null address"),
        (bytes.fromhex("0100 0080 0200 0000"), "sockaddr info item of length 16"),
        (bytes.fromhex("0100 0000 0000 ff"), "trailing"),
    ],
)
def test_inconsistent_items(data: bytes, what: str) -> None:
    with pytest.raises(MalformedPacket, match=what):
        cpf.decode_items(data)


def test_bad_sockaddr_is_usage_error() -> None:
    with pytest.raises(UsageError, match="not an IPv4"):
        cpf.Sockaddr("plc.local").encode()


ipv4 = st.integers(0, 0xFFFFFFFF).map(
    lambda n: ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))
)
items = st.one_of(
    st.just(cpf.NullAddress()),
    st.builds(cpf.ConnectedAddress, st.integers(0, 0xFFFFFFFF)),
    st.builds(cpf.SequencedAddress, st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
    st.builds(cpf.UnconnectedData, st.binary(max_size=64)),
    st.builds(cpf.ConnectedData, st.binary(max_size=64)),
    st.builds(
        cpf.SockaddrInfo,
        st.sampled_from([cpf.ItemId.SOCKADDR_O2T, cpf.ItemId.SOCKADDR_T2O]),
        st.builds(
            cpf.Sockaddr,
            ipv4,
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFF),
            st.binary(min_size=8, max_size=8),
        ),
    ),
    st.builds(
        cpf.IdentityItem,
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.text(alphabet=st.characters(max_codepoint=255), max_size=40),
        st.integers(0, 255),
    ),
    st.builds(
        cpf.ServicesItem,
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.binary(min_size=16, max_size=16),
    ),
    st.builds(cpf.UnknownItem, st.integers(0x0200, 0x7FFF), st.binary(max_size=32)),
)


@given(st.lists(items, max_size=6))
def test_items_round_trip(xs: list[cpf.Item]) -> None:
    assert cpf.decode_items(cpf.encode_items(xs)) == tuple(xs)

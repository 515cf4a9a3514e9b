"""Status tables (protocol.md 2.3, 8)."""

from pyconpro.acquisition import status
from pyconpro.acquisition.errors import CipError, EncapsulationError


def test_every_enum_member_has_text() -> None:
    for code in status.GeneralStatus:
        assert status.general_status_text(code) != "unknown general status"
    for ext in status.ExtendedStatus:
        assert "unknown" not in status.extended_status_text(1, ext)
    for enc in status.EncapsulationStatus:
        assert status.encapsulation_status_text(enc) != "unknown encapsulation status"


def test_describe() -> None:
    assert status.describe_cip_status(0x08) == "0x08 service not supported"
    assert status.describe_cip_status(0x01, (0x031F,)).startswith(
        "0x01/0x031F no consumer resources configured"
    )
    assert status.describe_cip_status(0x01, (0x0112, 0x0000, 0x86A0, 0x0001, 0x4240, 0x000F)) == (
        "0x01/0x0112 RPI value(s) not acceptable: acceptable O->T RPI 100000 us,"
        " T->O RPI 1000000 us"
        " (RPI types 0x00/0x00)"
    )
    assert (
        status.describe_cip_status(0xFF, (0x2107,))
        == "0xFF/0x2107 tag type used in request does not match the tag"
    )
    assert (
        status.describe_cip_status(0x01, (0x0100, 7))
        == "0x01/0x0100 connection in use or duplicate Forward_Open [0x0007]"
    )
    assert status.describe_cip_status(0xE0) == "0xE0 object or vendor specific error"
    assert (
        status.describe_cip_status(0x01, (0x9999,))
        == "0x01/0x9999 unknown connection manager extended status"
    )


def test_error_objects_carry_codes() -> None:
    e = CipError(0x01, (0x0109, 6), 0x54, "Forward_Open for 'test'")
    assert (e.general, e.extended, e.additional, e.service) == (1, 0x0109, (0x0109, 6), 0x54)
    assert str(e).startswith("Forward_Open for 'test': 0x01/0x0109")
    assert EncapsulationError(2).status == 2

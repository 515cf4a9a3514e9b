"""Golden bytes constructed from the layouts of protocol.md, Appendix A (and two unit-tested
vectors it cites). Our encoders must reproduce them byte for byte; our decoders must read them.

Appendix A's assumptions: PLC 192.168.1.10, CPU slot 0, produced tag ``test`` (DINT, 4 bytes),
session handle 0x11223344, point-to-point, O->T RPI 1 100 000 us, T->O RPI 1 000 000 us,
timeout multiplier 0 (x4), connection serial 0x1234, vendor 0x0001, originator serial
0x0000002A, proposed T->O ID 0x8A000001, priority/tick 0x0A, time-out ticks 0x0E.

Where the appendix leaves a placeholder (``<8-byte sender context>``, ``<seq32>``, ...) the
value chosen here is named in ``PLACEHOLDERS`` and in the comment next to the bytes; nothing
else is invented. Every frame is spelled out field by field so a reviewer can check it
against the appendix line by line.
"""

from __future__ import annotations


def _hex(text: str) -> bytes:
    """Bytes from hex text; whitespace and ``|`` separators are ignored."""
    return bytes.fromhex(text.replace("|", " "))


# Values we chose for the appendix's placeholders.
SENDER_CONTEXT = bytes(8)  # A.1/A.2/A.3 "<8-byte sender context>": all zero
OT_CONNECTION_ID = 0xC35A0001  # A.2 "e.g. 01 00 5A C3"
SEQ32 = 1  # A.4/A.5 "<seq32>": first datagram of a connection
SEQ16 = 1  # A.4/A.5 "<seq16>"
PLACEHOLDERS: dict[str, object] = {
    "sender_context": SENDER_CONTEXT,
    "ot_connection_id": OT_CONNECTION_ID,
    "seq32": SEQ32,
    "seq16": SEQ16,
}

# Appendix A parameters, as plain values for building the same messages with our encoders.
SESSION_HANDLE = 0x11223344
PRIORITY_TICK = 0x0A
TIMEOUT_TICKS = 0x0E
OT_CONNECTION_ID_REQUEST = 0x00000000  # "target chooses"
TO_CONNECTION_ID = 0x8A000001
CONNECTION_SERIAL = 0x1234
VENDOR_ID = 0x0001
ORIGINATOR_SERIAL = 0x0000002A
TIMEOUT_MULTIPLIER = 0  # x4
OT_RPI_US = 1_100_000
OT_NCP = 0x4802  # P2P, scheduled, fixed, size 2 (heartbeat: sequence count only)
TO_RPI_US = 1_000_000
TO_NCP = 0x4806  # P2P, scheduled, fixed, size 6 (4 data + 2 sequence count)
TRANSPORT_TRIGGER = 0x81  # server, cyclic, class 1
TAG_NAME = "test"
SLOT = 0
OT_API_US = OT_RPI_US  # A.2 echoes the RPIs as APIs
TO_API_US = TO_RPI_US
TAG_VALUE = 42  # A.4

# --- protocol.md 4.2: connection path for produced tag "test" in slot 0 (9 words); the same
# bytes as rconpro's unit test `test_build_connection_path` (RCON eip.rs).
CONNECTION_PATH = _hex(
    "01 00"  # port segment: port 1 (backplane), link address = slot 0
    " 34 04 00 00 00 00 00 00 00 00"  # electronic key, format 4, all zero = no keying
    " 91 04 74 65 73 74"  # ANSI extended symbolic segment, 4 bytes, "test" (even: no pad)
)
CONNECTION_PATH_WORDS = 9

# --- protocol.md 5.1: request path to the Connection Manager (class 6, instance 1).
CM_PATH = _hex("20 06 24 01")

# --- A.1 Forward_Open request frame (100 bytes), SendRRData over TCP.
A1_CIP_FORWARD_OPEN = _hex(
    "54 02 20 06 24 01"  # Forward_Open -> Connection Manager (path 2 words)
    " 0A 0E"  # priority/tick, time-out ticks
    " 00 00 00 00"  # O->T ID (target chooses)
    " 01 00 00 8A"  # T->O ID 0x8A000001
    " 34 12 | 01 00 | 2A 00 00 00"  # triad: serial, vendor, originator serial
    " 00 | 00 00 00"  # timeout multiplier x4, reserved
    " E0 C8 10 00 | 02 48"  # O->T RPI 1.1 s, NCP 0x4802
    " 40 42 0F 00 | 06 48"  # T->O RPI 1.0 s, NCP 0x4806 (4 + 2)
    " 81"  # server, cyclic, class 1
    " 09"  # connection path: 9 words
    " 01 00 34 04 00 00 00 00 00 00 00 00 91 04 74 65 73 74"  # slot 0, no key, "test"
)
A1_FRAME = (
    _hex(
        "6F 00 4C 00 | 44 33 22 11 | 00 00 00 00"  # SendRRData, length 76, session, status
        " 00 00 00 00 00 00 00 00"  # sender context (placeholder: zero)
        " 00 00 00 00"  # options
        " 00 00 00 00 | 00 00 | 02 00"  # interface handle, timeout, 2 CPF items
        " 00 00 00 00"  # null address item
        " B2 00 3C 00"  # unconnected data item, length 60
    )
    + A1_CIP_FORWARD_OPEN
)

# --- A.2 Forward_Open success reply: the appendix gives frame offsets 40..69; the header and
# CPF around them follow 2.1/2.7/2.9 (SendRRData reply, length 16 + 30 = 46).
A2_CIP_REPLY = _hex(
    "D4 00 00 00"  # 40: reply to 0x54, status 0, 0 additional words
    " 01 00 5A C3"  # 44: O->T ID chosen by the target (placeholder 0xC35A0001)
    " 01 00 00 8A"  # 48: T->O ID echoed
    " 34 12 01 00 2A 00 00 00"  # 52: triad echoed
    " E0 C8 10 00"  # 60: O->T API
    " 40 42 0F 00"  # 64: T->O API
    " 00 00"  # 68: application reply size 0 words, reserved
)
A2_FRAME = (
    _hex(
        "6F 00 2E 00 | 44 33 22 11 | 00 00 00 00"  # SendRRData, length 46, session, status
        " 00 00 00 00 00 00 00 00 | 00 00 00 00"  # sender context, options
        " 00 00 00 00 | 00 00 | 02 00"  # interface handle, timeout, 2 CPF items
        " 00 00 00 00"  # null address item
        " B2 00 1E 00"  # unconnected data item, length 30
    )
    + A2_CIP_REPLY
)
A2_CIP_OFFSET_IN_FRAME = 40

# --- A.3 Forward_Open failure reply (size mismatch, Logix-like): 0x01/0x0109, wants 6 bytes.
A3_CIP_REPLY = _hex(
    "D4 00 01 02"  # 40: reply to 0x54, general 0x01, 2 additional words
    " 09 01 06 00"  # 44: extended 0x0109 invalid connection size, wanted size 6
    " 34 12 01 00 2A 00 00 00"  # 48: triad
    " 00 00"  # 56: remaining path size 0, reserved
)
A3_GENERAL_STATUS = 0x01
A3_ADDITIONAL_STATUS = (0x0109, 0x0006)
A3_FRAME = (
    _hex(
        "6F 00 22 00 | 44 33 22 11 | 00 00 00 00"  # SendRRData, length 34, session, status
        " 00 00 00 00 00 00 00 00 | 00 00 00 00"  # sender context, options
        " 00 00 00 00 | 00 00 | 02 00"  # interface handle, timeout, 2 CPF items
        " 00 00 00 00"  # null address item
        " B2 00 12 00"  # unconnected data item, length 18
    )
    + A3_CIP_REPLY
)

# --- A.4 T->O class-1 datagram from the PLC carrying DINT 42 (24 bytes, value at offset 20).
A4_DATAGRAM = _hex(
    "02 00"  # 2 CPF items
    " 02 80 08 00 | 01 00 00 8A | 01 00 00 00"  # sequenced address: T->O ID, seq32 = 1
    " B1 00 06 00 | 01 00"  # connected data, length 6: seq16 = 1
    " 2A 00 00 00"  # DINT 42
)
A4_VALUE_OFFSET = 20

# --- A.5 O->T heartbeat to 192.168.1.10:2222 (20 bytes): sequence count only.
A5_HEARTBEAT = _hex(
    "02 00"  # 2 CPF items
    " 02 80 08 00 | 01 00 5A C3 | 01 00 00 00"  # sequenced address: O->T ID from A.2, seq32 1
    " B1 00 02 00 | 01 00"  # connected data, length 2: seq16 = 1
)

# --- protocol.md 6.5: rconpro's unit-tested heartbeat bytes (RCON eip.rs
# `build_response_packet`): connection ID 0, seq32 0, seq16 1. Verbatim, no placeholder.
RCONPRO_HEARTBEAT = _hex("02 00 02 80 08 00 00 00 00 00 00 00 00 00 B1 00 02 00 01 00")

# --- A.6 Forward_Close request (CIP part). Note the reserved 00 after the path size.
A6_CIP_FORWARD_CLOSE = _hex(
    "4E 02 20 06 24 01"  # Forward_Close -> Connection Manager
    " 0A 0E"  # priority/tick, time-out ticks
    " 34 12 | 01 00 | 2A 00 00 00"  # triad
    " 09 00"  # path size 9 words, reserved
    " 01 00 34 04 00 00 00 00 00 00 00 00 91 04 74 65 73 74"  # the Forward_Open's path
)

ALL = {
    "CONNECTION_PATH": CONNECTION_PATH,
    "A1_CIP_FORWARD_OPEN": A1_CIP_FORWARD_OPEN,
    "A1_FRAME": A1_FRAME,
    "A2_CIP_REPLY": A2_CIP_REPLY,
    "A2_FRAME": A2_FRAME,
    "A3_CIP_REPLY": A3_CIP_REPLY,
    "A3_FRAME": A3_FRAME,
    "A4_DATAGRAM": A4_DATAGRAM,
    "A5_HEARTBEAT": A5_HEARTBEAT,
    "RCONPRO_HEARTBEAT": RCONPRO_HEARTBEAT,
    "A6_CIP_FORWARD_CLOSE": A6_CIP_FORWARD_CLOSE,
}

"""Status code tables: encapsulation status, CIP general status, Connection Manager extended status.

Implements protocol.md 2.3 (encapsulation status), 8.1 (CIP general status), 8.2 (Connection
Manager extended status) and 8.3 (Logix 0xFF extended codes). Unknown codes are values with a
generic text, never an exception: a controller may answer with anything.
"""

from __future__ import annotations

from enum import IntEnum


class EncapsulationStatus(IntEnum):
    SUCCESS = 0x0000
    INVALID_COMMAND = 0x0001
    INSUFFICIENT_MEMORY = 0x0002
    INCORRECT_DATA = 0x0003
    INVALID_SESSION_HANDLE = 0x0064
    INVALID_LENGTH = 0x0065
    UNSUPPORTED_PROTOCOL_VERSION = 0x0069
    ENCAPSULATION_HEADER_ERROR = 0x006A


_ENCAP_TEXT = {
    0x0000: "success",
    0x0001: "invalid or unsupported encapsulation command",
    0x0002: "insufficient memory (no free session on the target)",
    0x0003: "poorly formed or incorrect data",
    0x0064: "invalid session handle",
    0x0065: "invalid length",
    0x0069: "unsupported encapsulation protocol version",
    0x006A: "encapsulation header error",
}


def encapsulation_status_text(status: int) -> str:
    return _ENCAP_TEXT.get(status, "unknown encapsulation status")


class GeneralStatus(IntEnum):
    SUCCESS = 0x00
    CONNECTION_FAILURE = 0x01
    RESOURCE_UNAVAILABLE = 0x02
    INVALID_PARAMETER_VALUE = 0x03
    PATH_SEGMENT_ERROR = 0x04
    PATH_DESTINATION_UNKNOWN = 0x05
    PARTIAL_TRANSFER = 0x06
    CONNECTION_LOST = 0x07
    SERVICE_NOT_SUPPORTED = 0x08
    INVALID_ATTRIBUTE_VALUE = 0x09
    ATTRIBUTE_LIST_ERROR = 0x0A
    ALREADY_IN_REQUESTED_MODE = 0x0B
    OBJECT_STATE_CONFLICT = 0x0C
    OBJECT_ALREADY_EXISTS = 0x0D
    ATTRIBUTE_NOT_SETTABLE = 0x0E
    PRIVILEGE_VIOLATION = 0x0F
    DEVICE_STATE_CONFLICT = 0x10
    REPLY_DATA_TOO_LARGE = 0x11
    FRAGMENTATION_OF_PRIMITIVE = 0x12
    NOT_ENOUGH_DATA = 0x13
    ATTRIBUTE_NOT_SUPPORTED = 0x14
    TOO_MUCH_DATA = 0x15
    OBJECT_DOES_NOT_EXIST = 0x16
    FRAGMENTATION_NOT_IN_PROGRESS = 0x17
    NO_STORED_ATTRIBUTE_DATA = 0x18
    STORE_OPERATION_FAILURE = 0x19
    ROUTING_REQUEST_TOO_LARGE = 0x1A
    ROUTING_RESPONSE_TOO_LARGE = 0x1B
    MISSING_ATTRIBUTE_LIST_ENTRY = 0x1C
    INVALID_ATTRIBUTE_VALUE_LIST = 0x1D
    EMBEDDED_SERVICE_ERROR = 0x1E
    VENDOR_SPECIFIC = 0x1F
    INVALID_PARAMETER = 0x20
    WRITE_ONCE_ALREADY_WRITTEN = 0x21
    INVALID_REPLY_RECEIVED = 0x22
    KEY_FAILURE_IN_PATH = 0x25
    PATH_SIZE_INVALID = 0x26
    UNEXPECTED_ATTRIBUTE_IN_LIST = 0x27
    INVALID_MEMBER_ID = 0x28
    MEMBER_NOT_SETTABLE = 0x29
    GROUP2_ONLY_SERVER_FAILURE = 0x2A
    UNKNOWN_MODBUS_ERROR = 0x2B
    ATTRIBUTE_NOT_GETTABLE = 0x2C
    INSTANCE_NOT_DELETABLE = 0x2D
    SERVICE_NOT_SUPPORTED_FOR_PATH = 0x2E
    GENERAL_ERROR = 0xFF


_GENERAL_TEXT = {
    0x00: "success",
    0x01: "connection failure",
    0x02: "resource unavailable",
    0x03: "invalid parameter value",
    0x04: "path segment error (path not understood, e.g. unknown tag name)",
    0x05: "path destination unknown",
    0x06: "partial transfer (more data follows)",
    0x07: "connection lost",
    0x08: "service not supported",
    0x09: "invalid attribute value",
    0x0A: "attribute list error",
    0x0B: "already in requested mode/state",
    0x0C: "object state conflict",
    0x0D: "object already exists",
    0x0E: "attribute not settable",
    0x0F: "privilege violation",
    0x10: "device state conflict",
    0x11: "reply data too large",
    0x12: "fragmentation of a primitive value",
    0x13: "not enough data",
    0x14: "attribute not supported",
    0x15: "too much data",
    0x16: "object does not exist",
    0x17: "service fragmentation sequence not in progress",
    0x18: "no stored attribute data",
    0x19: "store operation failure",
    0x1A: "routing failure, request too large",
    0x1B: "routing failure, response too large",
    0x1C: "missing attribute list entry data",
    0x1D: "invalid attribute value list",
    0x1E: "embedded service error",
    0x1F: "vendor-specific error",
    0x20: "invalid parameter",
    0x21: "write-once value already written",
    0x22: "invalid reply received",
    0x25: "key failure in path",
    0x26: "path size invalid",
    0x27: "unexpected attribute in list",
    0x28: "invalid member ID",
    0x29: "member not settable",
    0x2A: "group 2 only server general failure",
    0x2B: "unknown Modbus error",
    0x2C: "attribute not gettable",
    0x2D: "instance not deletable",
    0x2E: "service not supported for the specified path",
    0xFF: "general error (see extended status)",
}


def general_status_text(code: int) -> str:
    if code in _GENERAL_TEXT:
        return _GENERAL_TEXT[code]
    if 0xD0 <= code <= 0xFF:
        return "object or vendor specific error"
    return "unknown general status"


class ExtendedStatus(IntEnum):
    """Connection Manager extended status (first additional-status word when general = 0x01)."""

    CONNECTION_IN_USE = 0x0100
    TRANSPORT_TRIGGER_NOT_SUPPORTED = 0x0103
    OWNERSHIP_CONFLICT = 0x0106
    CONNECTION_NOT_FOUND = 0x0107
    INVALID_NETWORK_CONNECTION_PARAMETER = 0x0108
    INVALID_CONNECTION_SIZE = 0x0109
    TARGET_NOT_CONFIGURED = 0x0110
    RPI_NOT_SUPPORTED = 0x0111
    RPI_NOT_ACCEPTABLE = 0x0112
    OUT_OF_CONNECTIONS = 0x0113
    VENDOR_OR_PRODUCT_MISMATCH = 0x0114
    DEVICE_TYPE_MISMATCH = 0x0115
    REVISION_MISMATCH = 0x0116
    INVALID_APPLICATION_PATH = 0x0117
    INVALID_CONFIGURATION_PATH = 0x0118
    NON_LISTEN_ONLY_NOT_OPENED = 0x0119
    TARGET_OUT_OF_CONNECTIONS = 0x011A
    RPI_SMALLER_THAN_INHIBIT = 0x011B
    TRANSPORT_CLASS_NOT_SUPPORTED = 0x011C
    PRODUCTION_TRIGGER_NOT_SUPPORTED = 0x011D
    DIRECTION_NOT_SUPPORTED = 0x011E
    INVALID_OT_FIXED_VARIABLE = 0x011F
    INVALID_TO_FIXED_VARIABLE = 0x0120
    INVALID_OT_PRIORITY = 0x0121
    INVALID_TO_PRIORITY = 0x0122
    INVALID_OT_CONNECTION_TYPE = 0x0123
    INVALID_TO_CONNECTION_TYPE = 0x0124
    INVALID_OT_REDUNDANT_OWNER = 0x0125
    INVALID_CONFIGURATION_SIZE = 0x0126
    INVALID_OT_SIZE = 0x0127
    INVALID_TO_SIZE = 0x0128
    INVALID_CONFIGURATION_APPLICATION_PATH = 0x0129
    INVALID_CONSUMING_APPLICATION_PATH = 0x012A
    INVALID_PRODUCING_APPLICATION_PATH = 0x012B
    CONFIGURATION_SYMBOL_DOES_NOT_EXIST = 0x012C
    CONSUMING_SYMBOL_DOES_NOT_EXIST = 0x012D
    PRODUCING_SYMBOL_DOES_NOT_EXIST = 0x012E
    INCONSISTENT_APPLICATION_PATH = 0x012F
    INCONSISTENT_CONSUME_FORMAT = 0x0130
    INCONSISTENT_PRODUCE_FORMAT = 0x0131
    NULL_FORWARD_OPEN_NOT_SUPPORTED = 0x0132
    CONNECTION_TIMED_OUT = 0x0203
    UNCONNECTED_REQUEST_TIMED_OUT = 0x0204
    UNCONNECTED_PARAMETER_ERROR = 0x0205
    MESSAGE_TOO_LARGE = 0x0206
    UNCONNECTED_ACK_WITHOUT_REPLY = 0x0207
    NO_BUFFER_MEMORY = 0x0301
    BANDWIDTH_NOT_AVAILABLE = 0x0302
    NO_CONSUMED_ID_FILTER = 0x0303
    NOT_CONFIGURED_FOR_SCHEDULED = 0x0304
    SCHEDULE_SIGNATURE_MISMATCH = 0x0305
    SCHEDULE_SIGNATURE_NOT_POSSIBLE = 0x0306
    PORT_NOT_AVAILABLE = 0x0311
    LINK_ADDRESS_NOT_VALID = 0x0312
    INVALID_SEGMENT_IN_PATH = 0x0315
    FORWARD_CLOSE_PATH_MISMATCH = 0x0316
    SCHEDULING_NOT_SPECIFIED = 0x0317
    LINK_ADDRESS_TO_SELF_INVALID = 0x0318
    SECONDARY_RESOURCES_UNAVAILABLE = 0x0319
    RACK_CONNECTION_ESTABLISHED = 0x031A
    MODULE_CONNECTION_ESTABLISHED = 0x031B
    MISCELLANEOUS = 0x031C
    REDUNDANT_CONNECTION_MISMATCH = 0x031D
    NO_CONSUMER_RESOURCES_AVAILABLE = 0x031E
    NO_CONSUMER_RESOURCES_CONFIGURED = 0x031F
    NETWORK_LINK_OFFLINE = 0x0800
    INCOMPATIBLE_MULTICAST_RPI = 0x0801
    NO_TARGET_APPLICATION_DATA = 0x0810
    NO_ORIGINATOR_APPLICATION_DATA = 0x0811
    NODE_ADDRESS_CHANGED = 0x0812
    NOT_CONFIGURED_FOR_OFF_SUBNET_MULTICAST = 0x0813
    INVALID_PRODUCE_CONSUME_FORMAT = 0x0814


_EXTENDED_TEXT = {
    0x0100: "connection in use or duplicate Forward_Open",
    0x0103: "transport class and trigger combination not supported",
    0x0106: "ownership conflict",
    0x0107: "target connection not found",
    0x0108: "invalid network connection parameter",
    0x0109: "invalid connection size",
    0x0110: "target for connection not configured",
    0x0111: "RPI not supported (RPI out of range)",
    0x0112: "RPI value(s) not acceptable",
    0x0113: "out of connections",
    0x0114: "vendor ID or product code mismatch",
    0x0115: "device type mismatch",
    0x0116: "revision mismatch",
    0x0117: "invalid produced or consumed application path",
    0x0118: "invalid or inconsistent configuration application path",
    0x0119: "non-listen-only connection not opened",
    0x011A: "target object out of connections",
    0x011B: "RPI smaller than production inhibit time",
    0x011C: "transport class not supported",
    0x011D: "production trigger not supported",
    0x011E: "direction not supported",
    0x011F: "invalid O->T fixed/variable",
    0x0120: "invalid T->O fixed/variable",
    0x0121: "invalid O->T priority",
    0x0122: "invalid T->O priority",
    0x0123: "invalid O->T connection type",
    0x0124: "invalid T->O connection type",
    0x0125: "invalid O->T redundant owner",
    0x0126: "invalid configuration size",
    0x0127: "invalid O->T size",
    0x0128: "invalid T->O size",
    0x0129: "invalid configuration application path",
    0x012A: "invalid consuming application path",
    0x012B: "invalid producing application path",
    0x012C: "configuration symbol does not exist",
    0x012D: "consuming symbol does not exist",
    0x012E: "producing symbol does not exist",
    0x012F: "inconsistent application path combination",
    0x0130: "inconsistent consume data format",
    0x0131: "inconsistent produce data format",
    0x0132: "null Forward_Open not supported",
    0x0203: "connection timed out",
    0x0204: "unconnected request timed out",
    0x0205: "parameter error in unconnected request",
    0x0206: "message too large for Unconnected_Send",
    0x0207: "unconnected acknowledge without reply",
    0x0301: "no buffer memory available",
    0x0302: "network bandwidth not available for data",
    0x0303: "no consumed connection ID filter available",
    0x0304: "not configured to send scheduled priority data",
    0x0305: "schedule signature mismatch",
    0x0306: "schedule signature validation not possible",
    0x0311: "port not available",
    0x0312: "link address not valid",
    0x0315: "invalid segment in connection path",
    0x0316: "Forward_Close connection path mismatch",
    0x0317: "scheduling not specified",
    0x0318: "link address to self invalid",
    0x0319: "secondary resources unavailable",
    0x031A: "rack connection already established",
    0x031B: "module connection already established",
    0x031C: "miscellaneous",
    0x031D: "redundant connection mismatch",
    0x031E: "no more consumer resources available in the producing module (max consumers reached)",
    0x031F: "no consumer resources configured in the producing module (tag not produced)",
    0x0800: "network link offline",
    0x0801: "incompatible multicast RPI",
    0x0810: "no target application data available",
    0x0811: "no originator application data available",
    0x0812: "node address changed since the network was scheduled",
    0x0813: "not configured for off-subnet multicast",
    0x0814: "invalid produce/consume data format",
}

# Logix general status 0xFF extended codes for tag services (protocol.md 8.3).
_LOGIX_FF_TEXT = {
    0x0007: "wrong data type",
    0x2001: "excessive IOI",
    0x2002: "bad parameter value",
    0x2018: "semaphore reject",
    0x201B: "size too small",
    0x201C: "invalid size",
    0x2100: "privilege failure",
    0x2101: "invalid keyswitch position",
    0x2102: "password invalid",
    0x2103: "no password issued",
    0x2104: "address out of range",
    0x2105: "access beyond end of the object",
    0x2106: "data in use",
    0x2107: "tag type used in request does not match the tag",
    0x2108: "controller in upload or download mode",
    0x2109: "attempt to change the number of array dimensions",
    0x210A: "invalid symbol name",
    0x210B: "symbol does not exist",
    0x210E: "search failed",
    0x210F: "task cannot start",
    0x2110: "unable to write",
    0x2111: "unable to read",
    0x2112: "shared routine not editable",
    0x2113: "controller in faulted mode",
    0x2114: "run mode inhibited",
}


def extended_status_text(general: int, extended: int) -> str:
    if general == 0x01:
        return _EXTENDED_TEXT.get(extended, "unknown connection manager extended status")
    if general == 0xFF:
        return _LOGIX_FF_TEXT.get(extended, "unknown vendor extended status")
    return ""


def describe_cip_status(general: int, additional: tuple[int, ...] = (), *,
                        device: bool = False) -> str:
    """Human text for a CIP status, e.g. ``0x01/0x0109 invalid connection size: the controller
    wants 6 bytes``. Additional words beyond the extended code are explained where their meaning
    is known (protocol.md 5.9). ``device``: the answer comes from a generic adapter (an
    assembly connection), so the words speak of a device and its connection size, not of a
    controller's tag."""
    if not additional:
        return f"0x{general:02X} {general_status_text(general)}"
    ext = additional[0]
    text = extended_status_text(general, ext) or general_status_text(general)
    out = f"0x{general:02X}/0x{ext:04X} {text}"
    extra = additional[1:]
    if general == 0x01 and extra:
        if ext in (0x0109, 0x0127, 0x0128) and len(extra) >= 1 and device:
            out += (f": the device wants {extra[0]} bytes (connection size: sequence count,"
                    " run/idle header if any, and data)")
        elif ext in (0x0109, 0x0127, 0x0128) and len(extra) >= 1:
            out += f": the controller wants {extra[0]} bytes"
            if ext in (0x0109, 0x0128):
                out += f" (connection size, i.e. {max(extra[0] - 2, 0)} bytes of tag data + 2)"
        elif ext == 0x0126 and len(extra) >= 1:
            out += f": the maximum configuration size is {extra[0]} bytes"
        elif ext == 0x0112 and len(extra) >= 5:
            types = extra[0]
            ot_rpi = extra[1] | (extra[2] << 16)
            to_rpi = extra[3] | (extra[4] << 16)
            out += (
                f": acceptable O->T RPI {ot_rpi} us, T->O RPI {to_rpi} us"
                f" (RPI types 0x{types & 0xFF:02X}/0x{types >> 8:02X})"
            )
        else:
            out += " [" + " ".join(f"0x{w:04X}" for w in extra) + "]"
    elif extra:
        out += " [" + " ".join(f"0x{w:04X}" for w in extra) + "]"
    return out

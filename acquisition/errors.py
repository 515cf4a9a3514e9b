"""Error types of the protocol core.

Two families, as in h11: the *peer* sent something we cannot accept (``MalformedPacket`` for
bytes that do not parse, ``CipError`` / ``EncapsulationError`` for well-formed refusals), or
*we* misused the API (``UsageError``). Parsers of network bytes raise only ``MalformedPacket``
(STYLE.md #7), so a receive loop needs exactly one ``except`` to survive garbage.
"""

from __future__ import annotations


class PyconproError(Exception):
    """Base of every error raised by pyconpro's core."""


class MalformedPacket(PyconproError):
    """Bytes from the network do not match the expected layout.

    ``offset`` is where parsing stopped (relative to the buffer handed to the parser),
    ``expected`` says what should have been there.
    """

    def __init__(self, expected: str, offset: int = 0, context: str = "") -> None:
        self.expected = expected
        self.offset = offset
        self.context = context
        where = f"{context}: " if context else ""
        super().__init__(f"{where}malformed packet at offset {offset}: expected {expected}")


class UsageError(PyconproError, ValueError):
    """The caller passed a value that cannot be encoded (local misuse, not a peer fault)."""


class RemoteError(PyconproError):
    """The peer answered with a well-formed refusal."""


class EncapsulationError(RemoteError):
    """An EtherNet/IP encapsulation reply carried a non-zero status (protocol.md 2.3)."""

    def __init__(self, status: int, command: int = 0, detail: str = "") -> None:
        from pyconpro.acquisition.status import encapsulation_status_text

        self.status = status
        self.command = command
        text = encapsulation_status_text(status)
        extra = f" ({detail})" if detail else ""
        super().__init__(f"encapsulation status 0x{status:04X} {text}{extra}")


class CipError(RemoteError):
    """A CIP reply carried a non-zero general status (protocol.md 8).

    ``extended`` is the first additional-status word (or None), ``additional`` all of them.
    ``str()`` reads like ``0x01/0x0109 invalid connection size: the controller wants 6 bytes``.
    """

    def __init__(
        self,
        general: int,
        additional: tuple[int, ...] = (),
        service: int | None = None,
        context: str = "",
    ) -> None:
        from pyconpro.acquisition.status import describe_cip_status

        self.general = general
        self.additional = tuple(additional)
        self.extended = self.additional[0] if self.additional else None
        self.service = service
        self.context = context
        prefix = f"{context}: " if context else ""
        super().__init__(prefix + describe_cip_status(general, self.additional))

# The compiled receive path (workers/_fastpath.c); workers/fastpath.py is its Python face.
from array import array
from collections.abc import Mapping
from typing import Any

BATCH: int
DGRAM_MAX: int

class Tap:
    key: Any
    express: int
    gap: int
    samples: int
    pending: int
    def __init__(self, key: Any) -> None: ...
    def stream(
        self,
        topic: bytes | None,
        fragments: tuple[bytes, ...] = ...,
        plan: bytes = ...,
        size: int = ...,
        table: dict[bytes, int] = ...,
    ) -> None: ...
    def recorder(self, buf: bytearray, slots: int, what_in: int) -> None: ...
    def encode(
        self, t_wall_ns: int, t_mono_ns: int, cip_seq: int, gap: int, raw: bytes
    ) -> bytes: ...
    def take(self) -> tuple[int, float]: ...

class Demux:
    accepted: int
    datagrams: int
    samples: int
    pub_drops: int
    recv_errors: int
    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def _add(
        self, source: tuple[str, int], connection_id: int, data_size: int, owner: Any,
        max_jump: int | None,
    ) -> str | None: ...
    def remove(self, source: tuple[str, int], connection_id: int, owner: Any) -> None: ...
    def _receive(
        self, data: bytes, source: tuple[str, int]
    ) -> tuple[tuple[Any, ...], int, int, int, int] | None: ...
    def drain(
        self, fds: list[int], clock: Any, wall_ns: Any, budget_s: float
    ) -> tuple[bool, list[tuple[Any, bytes, int, int, float, int]]]: ...
    def publisher(self, socket_address: int) -> None: ...
    def _drop_counts(self) -> tuple[tuple[int, ...], tuple[tuple[str, int] | None, ...]]: ...

def bind_libzmq(zmq_send_address: int, zmq_errno_address: int) -> None: ...
def sendmmsg(fd: int, datagrams: list[tuple[bytes, str, int]]) -> tuple[int, int]: ...

# The bus forwarder's loop (workers/forwarder.py, workers/fastpath.py CompiledForwarding).
FORWARDER_FUNCTIONS: tuple[str, ...]

def bind_forwarder(addresses: Mapping[str, int]) -> None: ...
def forward(
    xsub: int, xpub: int, capture: int, control: int, timeout_ms: int, batch: int,
    counts: array[int],
) -> int: ...

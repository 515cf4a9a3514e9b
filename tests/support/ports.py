"""Free ports and free loopback subnets for tests that start servers and simulators.

Every test that needs a port asks here, so that one rule (bind to port 0, let the kernel pick)
and one way to find a 127.x.N.0/24 nobody else in the suite is using live in one place.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable


def is_free(addr: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    """True when ``(addr, port)`` can be bound now for ``kind`` (SOCK_STREAM or SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


def free_port(addr: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel considers free on ``addr`` for ``kind`` right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((addr, 0))
        port: int = s.getsockname()[1]
    return port


def free_udp_port(*addrs: str) -> int:
    """A UDP port free on every one of ``addrs`` (default: 127.0.0.1)."""
    first, *rest = addrs or ("127.0.0.1",)
    for _ in range(100):
        port = free_port(first, socket.SOCK_DGRAM)
        if all(is_free(a, port, socket.SOCK_DGRAM) for a in rest):
            return port
    raise AssertionError(f"no UDP port free on every one of {addrs}")


def free_subnet(second_octet: int, hosts: Iterable[int] = (2,), port: int = 44818) -> int:
    """N such that TCP ``port`` is free on 127.<second_octet>.N.<h> for every host h.

    Each test module that starts simulators uses its own second octet, so two modules never
    pick the same subnet; N is random so a rerun does not meet a previous run's TIME_WAITs.
    """
    wanted = tuple(hosts)
    rng = random.Random()
    for _ in range(100):
        n = rng.randrange(2, 254)
        if all(is_free(f"127.{second_octet}.{n}.{h}", port) for h in wanted):
            return n
    raise AssertionError(f"no 127.{second_octet}.N.0/24 with TCP {port} free on hosts {wanted}")

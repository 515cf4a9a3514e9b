"""``[security]`` and the exposure rules (acquisition/security.py): which endpoints reach other
hosts, which use CURVE, what the config refuses and what it warns about."""

from __future__ import annotations

import pytest
from pyconpro.acquisition.security import (
    Exposure,
    SecurityConfig,
    endpoint_exposure,
    uses_curve,
)

from tests.support.configs import parse, problems


@pytest.mark.parametrize(
    ("endpoint", "exposure"),
    [
        ("ipc:///tmp/pyconpro", Exposure.LOCAL_FILE),
        ("inproc://x", Exposure.LOCAL_FILE),
        ("tcp://127.0.0.1:5555", Exposure.LOOPBACK),
        ("tcp://127.9.8.7:5555", Exposure.LOOPBACK),
        ("tcp://localhost:5555", Exposure.LOOPBACK),
        ("tcp://[::1]:5555", Exposure.LOOPBACK),
        ("tcp://0.0.0.0:5555", Exposure.NETWORK),
        ("tcp://*:5555", Exposure.NETWORK),
        ("tcp://192.168.1.5:5555", Exposure.NETWORK),
        ("tcp://plant-gw:5555", Exposure.NETWORK),
        ("tcp://eth0:5555", Exposure.NETWORK),
        ("tcp://[::]:5555", Exposure.NETWORK),
    ],
)
def test_endpoint_exposure(endpoint: str, exposure: Exposure) -> None:
    assert endpoint_exposure(endpoint) is exposure


def test_which_endpoints_use_curve() -> None:
    none = SecurityConfig()
    keyed = SecurityConfig(server_key="k.key_secret")
    everywhere = SecurityConfig(server_key="k.key_secret", curve_on_loopback=True)
    table = {
        "ipc:///tmp/x": (False, False, False),
        "tcp://127.0.0.1:1": (False, False, True),
        "tcp://0.0.0.0:1": (False, True, True),
    }
    for endpoint, expected in table.items():
        got = tuple(uses_curve(endpoint, s) for s in (none, keyed, everywhere))
        assert got == expected, endpoint


def test_security_section_is_read_and_paths_resolved() -> None:
    c = parse("""
[security]
server_key = "keys/plant.key_secret"
client_keys = "/etc/pyconpro/clients"
curve_on_loopback = true
""")
    assert c.security == SecurityConfig("/srv/pp/keys/plant.key_secret", "/etc/pyconpro/clients",
                                        True)  # fmt: skip
    assert parse("").security == SecurityConfig()


def test_network_control_socket_without_a_key_is_refused() -> None:
    (problem,) = problems('[bus]\ncontrol_base = "tcp://0.0.0.0:5600"\n')
    assert problem.startswith("bus.control_base: control_base = 'tcp://0.0.0.0:5600' lets any host")
    assert "pyconpro keygen" in problem and "ipc://" in problem
    # With a key pair, or on loopback, it is fine.
    parse('[bus]\ncontrol_base = "tcp://0.0.0.0:5600"\n[security]\nserver_key = "k.key_secret"\n')
    parse('[bus]\ncontrol_base = "tcp://127.0.0.1:5600"\n')


def test_network_bus_without_a_key_is_a_warning() -> None:
    c = parse('[bus]\nendpoint = "tcp://0.0.0.0:5555"\n')
    (warning,) = c.warnings
    assert (warning.key, warning.line) == ("bus.endpoint", 2)
    assert "unencrypted" in warning.problem and "pyconpro keygen" in warning.fix
    assert parse('[bus]\nendpoint = "tcp://127.0.0.1:5555"\n').warnings == ()
    keyed = parse('[bus]\nendpoint = "tcp://0.0.0.0:5555"\n[security]\nserver_key = "k"\n')
    assert keyed.warnings == ()


def test_security_keys_need_the_server_key() -> None:
    got = problems('[security]\nclient_keys = "clients"\ncurve_on_loopback = true\n')
    assert [p.split(":")[0] for p in got] == ["security.client_keys", "security.curve_on_loopback"]
    assert all("pyconpro keygen" in p for p in got)
    (typo,) = problems('[security]\nserver_keys = "k"\n')
    assert "did you mean 'server_key'" in typo

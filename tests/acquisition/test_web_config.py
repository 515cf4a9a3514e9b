"""``[web]`` (acquisition/web_config.py): off unless configured, its keys and checks, and the
warning for a page that any host can read."""

from __future__ import annotations

import pytest
from pyconpro.acquisition.web_config import WebConfig, is_loopback_host, token_problem

from tests.support.configs import parse, problems

TOKEN = "Zx9-4kQ_vT2mLp8sR1wY"


def test_no_section_means_no_web_process() -> None:
    assert parse("").web is None
    assert parse("[web]\nenabled = false\nport = 9000\n").web is None


def test_an_empty_section_serves_on_loopback_with_the_defaults() -> None:
    web = parse("[web]\n").web
    assert web == WebConfig()
    assert (web.address, web.port, web.authenticated) == ("127.0.0.1", 8780, False)
    assert web.url == "http://127.0.0.1:8780/"
    assert parse("[web]\n").warnings == ()


def test_every_key() -> None:
    web = parse(f"""[web]
address = "0.0.0.0"
port = 9100
token = "{TOKEN}"
history_s = 600
updates_per_s = 2
""").web
    assert web == WebConfig(address="0.0.0.0", port=9100, token=TOKEN, history_s=600.0,
                            updates_per_s=2.0)  # fmt: skip
    assert web.url == "http://127.0.0.1:9100/"  # what a browser on this host opens
    assert parse('[web]\naddress = "::"\nport = 9100\n').web.url == "http://[::1]:9100/"  # type: ignore[union-attr]


def test_token_file_is_relative_to_the_config_file() -> None:
    web = parse('[web]\ntoken_file = "secrets/web.token"\n').web
    assert web is not None and web.token_file == "/srv/pp/secrets/web.token"
    assert web.authenticated


def test_bad_values_are_errors_naming_the_key_and_the_fix() -> None:
    got = problems(lines=True, text="""[web]
address = "plc-gateway"
port = 70000
token = "short"
token_file = "t"
updates_per_s = 0
colour = "blue"
""")
    text = "\n".join(got)
    assert "2: web.address: address = 'plc-gateway' is not an IP address" in text
    assert "3: web.port: port = 70000 is above the 65535 maximum" in text
    assert "4: web.token: token and token_file are both set; keep one" in text
    assert "6: web.updates_per_s: updates_per_s = 0 is below the 0.2 minimum" in text
    assert "7: web.colour: unknown key 'colour' in [web]" in text


def test_a_weak_token_is_refused_with_a_way_to_make_a_good_one() -> None:
    [short] = problems('[web]\ntoken = "abc"\n')
    assert "web.token: the token has 3 characters, fewer than 16" in short
    assert "secrets.token_urlsafe(32)" in short
    [spaced] = problems('[web]\ntoken = "correct horse battery staple"\n')
    assert "spaces or characters other than printable ASCII" in spaced
    assert token_problem(TOKEN) is None


def test_a_page_any_host_reaches_without_a_token_is_a_warning() -> None:
    config = parse('[web]\naddress = "0.0.0.0"\n')
    [warning] = config.warnings
    assert (warning.key, warning.line) == ("web.address", 2)
    assert "serves the live page, /metrics and /api to any host that reaches port 8780" in str(
        warning)
    assert "token_file" in warning.fix and '"127.0.0.1"' in warning.fix
    assert parse(f'[web]\naddress = "0.0.0.0"\ntoken = "{TOKEN}"\n').warnings == ()
    assert parse('[web]\naddress = "127.0.0.9"\n').warnings == ()
    assert parse('[web]\naddress = "localhost"\n').warnings == ()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.9.8.7", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("plc-gw", False),
])  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback

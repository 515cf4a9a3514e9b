"""Headless Chromium driven over the DevTools protocol, for the tests of the live page.

Nothing but Chromium itself is needed (Debian's ``chromium`` package): the browser is started
with ``--remote-debugging-pipe`` and speaks the protocol over two pipes, the transport
Playwright uses: it reads commands on its file descriptor 3 and writes replies and events on 4,
each message JSON followed by a NUL byte. A two-line Python wrapper puts our pipe ends on those
numbers before it executes the browser (the one process helper keeps them open through its
parent-death wrapper: ``spawn(..., pass_fds=...)``).

The flags keep the browser off the network (no component updates, sync, QUIC or first-run
work) in a fresh profile directory; ``--no-sandbox`` because CI runs as root.

    browser = Browser.start(require_chromium(), tmp_path / "chromium")
    page = browser.new_page(url, width=390, height=844)   # a phone's screen
    page.wait_for("document.querySelector('h1') !== null", "the heading")
    page.screenshot(tmp_path / "page.png")
    browser.close()
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pyconpro.workers.process import Child, spawn

from tests.support.requirements import skip_or_fail

INSTALL_HINT = "apt-get install -y chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-pipe",
)  # fmt: skip
# Runs in the child: our pipe ends onto fds 3 and 4, then the browser in its place.
_ONTO_3_AND_4 = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
                 "os.execv(sys.argv[3], sys.argv[3:])")


def find_chromium() -> str | None:
    """Chromium's path: ``$PYCONPRO_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on
    PATH; None when there is none."""
    wanted = os.environ.get("PYCONPRO_CHROMIUM")
    if wanted:
        return wanted if os.access(wanted, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def require_chromium() -> str:
    """Chromium's path; skips the test without it (fails when PYCONPRO_REQUIRE_CHROMIUM=1)."""
    path = find_chromium()
    if path is None:
        skip_or_fail("chromium", f"the live page's browser test needs Chromium: {INSTALL_HINT}")
    return path


class DevToolsError(Exception):
    """The browser answered a command with an error, or did not answer in time."""


class Browser:
    """One headless Chromium process and its DevTools pipe."""

    def __init__(self, child: Child, to_browser: int, from_browser: int) -> None:
        self.child = child
        self._out = to_browser
        self._in = from_browser
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []  # every event received so far, in order

    @classmethod
    def start(cls, chromium: str, profile: Path, log: Path | None = None) -> Browser:
        profile.mkdir(parents=True, exist_ok=True)
        cmd_r, cmd_w = os.pipe()  # we write commands; the browser reads them on fd 3
        out_r, out_w = os.pipe()  # the browser writes on fd 4; we read
        try:
            child = spawn([sys.executable, "-c", _ONTO_3_AND_4, str(cmd_r), str(out_w), chromium,
                           *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                          pass_fds=(cmd_r, out_w), stdout=log, stderr=log)  # fmt: skip
        except BaseException:
            for fd in (cmd_r, cmd_w, out_r, out_w):
                os.close(fd)
            raise
        os.close(cmd_r)
        os.close(out_w)
        browser = cls(child, cmd_w, out_r)
        try:
            browser.send("Browser.getVersion", timeout=30.0)
        except BaseException:
            browser.close()
            raise
        return browser

    # ------------------------------------------------------------------ protocol

    def send(self, method: str, params: dict[str, Any] | None = None, *,
             session: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Send one command and return its ``result``; ``DevToolsError`` on an error reply or
        none within ``timeout`` seconds."""
        self._next_id += 1
        ident = self._next_id
        msg: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._out, data):]
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline, f"{method} (id {ident})")
            if reply.get("id") == ident:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def _read(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise DevToolsError(f"no answer from Chromium to {what}")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise DevToolsError(f"Chromium closed its DevTools pipe (waiting for {what})")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def new_page(self, url: str, *, width: int = 1200, height: int = 900,
                 mobile: bool = False) -> Page:
        """A new tab of ``width`` x ``height`` CSS pixels that has started loading ``url``."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]  # fmt: skip
        page = Page(self, session)
        page.send("Runtime.enable")
        page.send("Page.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        page.send("Page.navigate", {"url": url})
        return page

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5.0)
        except (DevToolsError, OSError):
            pass
        finally:
            self.child.stop(10.0)
            for fd in (self._out, self._in):
                try:
                    os.close(fd)
                except OSError:
                    pass


class Page:
    """One tab: its DevTools session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = 10.0) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})  # fmt: skip
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 20.0) -> Any:
        """The first truthy value of ``expression``, polled (one that throws, say before the
        page has loaded, counts as not yet); AssertionError naming ``what``, the last error
        and the page's text after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        error = ""
        while True:
            try:
                value = self.evaluate(expression)
            except DevToolsError as exc:
                value, error = None, f" (it threw: {str(exc)[:300]})"
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{error};"
                                     f" the page shows:\n{str(text)[:3000]}")  # fmt: skip
            time.sleep(0.1)

    def errors(self) -> list[str]:
        """Uncaught exceptions and console errors of the page so far."""
        out = []
        for e in self.browser.events:
            if e.get("sessionId") != self.session:
                continue
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(json.dumps(e["params"]["exceptionDetails"])[:500])
            elif (e.get("method") == "Runtime.consoleAPICalled"
                  and e["params"].get("type") == "error"):  # fmt: skip
                out.append(json.dumps(e["params"].get("args"))[:500])
        return out

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page at ``path``."""
        data = self.send("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True}, timeout=30.0)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

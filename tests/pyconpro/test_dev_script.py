"""``./dev`` says what it is doing while it builds ``.venv``, and only when it does.

The script runs in a copy of the checkout's top level with ``PYTHON`` pointing at a stand-in
interpreter: its ``-m venv`` makes a ``.venv`` whose python and pyconpro are small shell
scripts, so the test exercises the real ``dev`` without installing anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_FAKE_PYTHON = """#!/bin/sh
# Stand-in for python3: `-m venv DIR` makes DIR/bin/python (accepts `-m pip ...`) and
# DIR/bin/pyconpro (prints its arguments).
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin"
    printf '#!/bin/sh\\necho pip "$@" >> "%s/pip.log"\\n' "$PWD" > "$3/bin/python"
    printf '#!/bin/sh\\necho pyconpro "$@"\\n' > "$3/bin/pyconpro"
    chmod +x "$3/bin/python" "$3/bin/pyconpro"
    exit 0
fi
exit 3
"""


def _run(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=str(checkout / "fake-python"))
    return subprocess.run(
        [str(checkout / "dev"), *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_dev_announces_the_one_time_install_and_then_is_quiet(tmp_path: Path) -> None:
    shutil.copy(ROOT / "dev", tmp_path / "dev")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    fake = tmp_path / "fake-python"
    fake.write_text(_FAKE_PYTHON)
    fake.chmod(0o755)

    first = _run(tmp_path, "--version")
    assert "first run: creating" in first.stderr
    assert "once" in first.stderr
    assert ".venv is ready" in first.stderr
    assert first.stdout.strip() == "pyconpro --version"
    assert "install --quiet -e .[test]" in (tmp_path / "pip.log").read_text()

    again = _run(tmp_path, "--version")
    assert again.stderr == ""
    assert again.stdout.strip() == "pyconpro --version"

    # An edited pyproject.toml (newer than the install stamp) is announced as an update.
    stamp = tmp_path / ".venv" / ".installed"
    os.utime(stamp, (stamp.stat().st_atime - 10, stamp.stat().st_mtime - 10))
    updated = _run(tmp_path, "--version")
    assert "pyproject.toml, setup.py or workers/_fastpath.c changed" in updated.stderr
    assert "first run" not in updated.stderr

    # So is an edited C source of the compiled receive path (the install builds it).
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "_fastpath.c").write_text("/* edited */\n")
    os.utime(stamp, (stamp.stat().st_atime - 10, stamp.stat().st_mtime - 10))
    rebuilt = _run(tmp_path, "--version")
    assert "workers/_fastpath.c changed" in rebuilt.stderr
    quiet = _run(tmp_path, "--version")
    assert quiet.stderr == ""

    # An install that was interrupted (no stamp) is retried, and says so.
    stamp.unlink()
    retried = _run(tmp_path, "--version")
    assert "did not finish" in retried.stderr
    assert stamp.exists()

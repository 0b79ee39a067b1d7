"""The VS Code extension's own logic, without VS Code: its strict type check (`tsc --noEmit`,
the extension's lint) and its unit tests under node's test runner (settings → server
options, finding the server, streamed suggestions, status bar text and statistics page;
editors/vscode/test/*.test.ts). `scripts/install-vscode-test.sh` installs the node tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.editor

EXT = Path(__file__).resolve().parents[2] / "editors" / "vscode"


def _need_tools() -> None:
    if shutil.which("node") is None or not (EXT / "node_modules" / "typescript").is_dir():
        msg = "node or editors/vscode/node_modules missing: run scripts/install-vscode-test.sh"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def _npm(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nice", "-n", "19", "npm", "run", "--silent", *args], cwd=EXT, text=True, capture_output=True, timeout=timeout
    )


def test_extension_type_checks_under_strict_tsc():
    _need_tools()
    r = _npm("lint")
    assert r.returncode == 0, r.stdout + r.stderr


def test_extension_unit_tests_pass():
    _need_tools()
    r = _npm("test")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "# fail 0" in out and "# pass " in out, out[-3000:]

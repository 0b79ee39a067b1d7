"""The VS Code extension end to end, in a real VS Code: code-server from npm on 127.0.0.1
(auth none, XDG_* dirs in a temp dir), the packaged .vsix installed with
`--install-extension`, Debian's chromium driven by playwright-core, the real `speclsp --stdio`,
and the tiny model trained on a known corpus (speclsp.tools.tiny_trained), so the checks say
WHAT is shown. The driver, editors/vscode/e2e/run-e2e.mjs, gets the cases below (a document
that is the corpus cut after a line's indentation, and the exact suggestion there, as in
tests/editors/test_neovim.py), makes each the only open document, types its last character at its
end (which asks for a suggestion) and reads `.ghost-text-decoration` (and the view zone of the lines below) back:

- area: exactly `return self.width * self.height`; typing `return se` shows exactly the rest
  after each key with no new model run; Esc dismisses it for good; the saved file has only
  what was typed;
- describe (a 120-character line): every state drawn while it streams is a prefix of the
  next and of the line (SPECLSP_TEST_STEP_DELAY_S = 0.05 slows the model's steps so it grows
  on screen whatever the machine's speed), and the last is all of it; Ctrl+Right accepts
  `return` (VS Code's word rule) and the rest stays shown; Tab accepts the rest; the saved
  file is the document and the line;
- scale (three lines): the ghost text is the three lines; Ctrl+Alt+Right accepts the first
  line and its line break (VS Code's acceptNextLine), the other two stay shown; twice more
  takes them (Tab at column 0 before an indented rest indents: VS Code's rule); the saved
  file is exact;

plus the status bar (loading, then tokens/s), the statistics view, a setting changed live,
and disable/enable from the status bar menu (nothing shown while disabled; enabled again, the
exact rest of area's body after what was typed). Every wait is for a specific state, with
generous timeouts. Screenshots and logs land in artifacts/vscode-e2e/ (git-ignored).

`slow`: the default model in VS Code on real code (Python's textwrap.py, the body of
`fill` taken out), through the driver's pictures mode (what scripts/take-pictures.sh
runs): a suggestion shows, the status bar and the statistics view report it.
`scripts/install-vscode-test.sh` installs code-server, playwright-core and chromium.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from trainedcases import at_body

pytestmark = [pytest.mark.editor]

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "editors" / "vscode"
E2E = EXT / "e2e"
ARTIFACTS = REPO / "artifacts"
STEP_DELAY_S = "0.05"  # the describe line (~50 tokens) then streams for a few seconds


def _need_tools() -> None:
    missing = [
        str(p)
        for p in (
            E2E / "node_modules" / ".bin" / "code-server",
            E2E / "node_modules" / "playwright-core",
            EXT / "node_modules" / "esbuild",
            Path("/usr/bin/chromium"),
        )
        if not p.exists()
    ]
    if shutil.which("node") is None:
        missing.append("node")
    if missing:
        msg = f"missing {', '.join(missing)}: run scripts/install-vscode-test.sh"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def _server() -> str:
    exe = Path(sys.executable).parent / "speclsp"
    found = str(exe) if exe.exists() else shutil.which("speclsp")
    assert found, "the speclsp command is not installed (pip install -e .)"
    return found


def cases() -> dict:
    """What the driver checks: per case, the document, the exact suggestion at its end and
    what the partial accepts take (VS Code's own rules: the Python word definition; a line
    with its line break)."""
    area, describe, scale = (
        at_body(h) for h in ("    def area(self):", "    def describe(self):", "    def scale(self, factor):")
    )
    word = re.match(r"\w+", describe[1]).group(0)
    return {
        "area": {"doc": area[0], "want": area[1], "typed": "return se"},
        "describe": {"doc": describe[0], "want": describe[1], "word": word},
        "scale": {"doc": scale[0], "want": scale[1], "line": scale[1].split("\n")[0] + "\n"},
    }


def test_cases_are_what_the_driver_expects():
    c = cases()
    assert c["area"]["want"] == "return self.width * self.height"
    assert c["describe"]["word"] == "return" and len(c["describe"]["want"]) > 100
    assert c["scale"]["line"] == "width = self.width * factor\n" and c["scale"]["want"].count("\n") == 2


@pytest.fixture(scope="module")
def vsix(tmp_path_factory) -> Path:
    _need_tools()
    out = tmp_path_factory.mktemp("vsix") / "speclsp.vsix"
    r = subprocess.run(
        ["bash", str(EXT / "scripts" / "package.sh"), str(out)],
        text=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "SPECLSP_PACKAGE_NICE": "0"},
    )
    assert r.returncode == 0 and out.is_file(), r.stdout + r.stderr
    return out


def test_vscode_shows_streams_and_accepts_exactly_the_suggestion(vsix, trained_model_dir, tmp_path):
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(cases()))
    artifacts = ARTIFACTS / "vscode-e2e"
    cmd = [
        "node",
        str(E2E / "run-e2e.mjs"),
        "--vsix",
        str(vsix),
        "--server",
        _server(),
        "--model",
        str(trained_model_dir),
        "--dtype",
        "float32",
        "--max-tokens",
        "48",
        "--lookahead",
        "fixed:0",
        "--step-delay",
        STEP_DELAY_S,
        "--cases",
        str(cases_file),
        "--artifacts",
        str(artifacts),
    ]
    r = subprocess.run(cmd, text=True, capture_output=True, timeout=900)
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, f"VS Code end-to-end checks failed (artifacts in {artifacts}):\n{out[-8000:]}"


@pytest.mark.slow
def test_default_model_suggests_in_vscode_on_real_code(vsix, tmp_path):
    from speclsp.local import registry as models
    from speclsp.tools.real_code import textwrap_without_body

    if not models.is_ready(models.converted_dir(models.DEFAULT_MODEL)):
        msg = "default model not cached: run `speclsp models pull qwen2.5-coder-0.5b` (scripts/test.sh does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    line, col = textwrap_without_body(tmp_path / "textwrap.py")
    artifacts = ARTIFACTS / "vscode-e2e-default-model"
    cmd = [
        "node",
        str(E2E / "run-e2e.mjs"),
        "--vsix",
        str(vsix),
        "--server",
        _server(),
        "--model",
        "",
        "--dtype",
        "auto",
        "--device",
        "auto",
        "--lookahead",
        "auto",
        "--max-tokens",
        "64",
        "--context-budget",
        "1024",
        "--load-timeout",
        "420",
        "--pictures",
        str(tmp_path / "pictures"),
        "--file",
        str(tmp_path / "textwrap.py"),
        "--line",
        str(line),
        "--character",
        str(col),
        "--artifacts",
        str(artifacts),
    ]
    r = subprocess.run(cmd, text=True, capture_output=True, timeout=900)
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, f"VS Code with the default model failed (artifacts in {artifacts}):\n{out[-8000:]}"
    assert json.loads((tmp_path / "pictures" / "stream.json").read_text())[-1].strip()

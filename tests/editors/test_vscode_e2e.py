"""The VS Code extension end to end, in a real VS Code: code-server from npm on 127.0.0.1
(auth none, XDG_* dirs in a temp dir), the packaged .vsix installed with
`--install-extension`, Debian's chromium driven by playwright-core, the real `speclsp --stdio`
with a small random model. The driver, editors/vscode/e2e/run-e2e.mjs, types in a Python
file of a workspace with other files, waits for `.ghost-text-decoration`, checks that it
grows while streaming, dismisses one with Esc, accepts with Ctrl+Right and Tab and reads the
saved file back, checks the status bar, the statistics view and live settings. Screenshots
and logs land in artifacts/vscode-e2e/ (git-ignored). `scripts/install-vscode-test.sh`
installs code-server, playwright-core and chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.editor]

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "editors" / "vscode"
E2E = EXT / "e2e"
ARTIFACTS = REPO / "artifacts"


def _need_tools() -> None:
    missing = [str(p) for p in (E2E / "node_modules" / ".bin" / "code-server", E2E / "node_modules" / "playwright-core",
                                EXT / "node_modules" / "esbuild", Path("/usr/bin/chromium")) if not p.exists()]
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


@pytest.fixture(scope="module")
def vsix(tmp_path_factory) -> Path:
    _need_tools()
    out = tmp_path_factory.mktemp("vsix") / "speclsp.vsix"
    r = subprocess.run(["bash", str(EXT / "scripts" / "package.sh"), str(out)], text=True, capture_output=True,
                       timeout=600)
    assert r.returncode == 0 and out.is_file(), r.stdout + r.stderr
    return out


# What run-e2e.mjs types at the end of e2e/workspace/main.py before it watches the ghost text.
TYPED = "\ndef get_total(self, key):\n    if key is None:\n        return self."


def _printable_completion(model_dir: Path, work: Path) -> str | None:
    """The model's 16-token completion where the test first watches (speclsp complete), if it
    is printable text: the engine holds back undecodable bytes, which a random model often
    writes, until the end, so such text appears at once instead of growing."""
    work.mkdir(parents=True, exist_ok=True)
    main = work / "main.py"
    text = (E2E / "workspace" / "main.py").read_text() + TYPED
    main.write_text(text)
    lines = text.split("\n")
    cmd = [_server(), "complete", str(main), "--open", str(E2E / "workspace" / "util.py"),
           "--line", str(len(lines) - 1), "--character", str(len(lines[-1])), "--model", str(model_dir),
           "--dtype", "float32", "--device", "cpu", "--lookahead", "fixed:0", "--max-tokens", "16", "--json"]
    r = subprocess.run(["nice", "-n", "10", *cmd], text=True, capture_output=True, timeout=300)
    if r.returncode != 0:
        return None
    out = json.loads(r.stdout)["text"]
    return out if len(out.strip()) >= 4 and "\ufffd" not in out and out.isprintable() else None


@pytest.fixture(scope="module")
def streaming_model(tmp_path_factory) -> Path:
    """A random model big enough (~40M parameters, ~20 ms a token here) that a 16-token
    suggestion takes long enough to watch it grow, with the first seed whose text at the
    test's cursor is printable."""
    from speclsp.local import tiny

    root = tmp_path_factory.mktemp("e2e-model")
    for seed in (5, 6, 7, 8, 9, 10):
        d = tiny.build(root / f"seed{seed}", hidden=768, layers=8, heads=16, seed=seed)
        if _printable_completion(d, root / "probe") is not None:
            return d
        shutil.rmtree(d)
    return tiny.build(root / "seed5", hidden=768, layers=8, heads=16, seed=5)


def _run_e2e(vsix: Path, model: str, artifacts: Path, *extra: str, timeout: int = 900) -> None:
    cmd = ["nice", "-n", "10", "node", str(E2E / "run-e2e.mjs"), "--vsix", str(vsix), "--server", _server(),
           "--model", model, "--artifacts", str(artifacts), *extra]
    r = subprocess.run(cmd, text=True, capture_output=True, timeout=timeout)
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, f"VS Code end-to-end checks failed (artifacts in {artifacts}):\n{out[-8000:]}"


def test_ghost_text_streams_and_is_accepted_in_vscode(vsix, streaming_model):
    _run_e2e(vsix, str(streaming_model), ARTIFACTS / "vscode-e2e")


@pytest.mark.slow
def test_ghost_text_from_the_default_model_in_vscode(vsix):
    from speclsp.local import registry as models

    if not models.is_ready(models.converted_dir(models.DEFAULT_MODEL)):
        msg = "default model not cached: run `speclsp models pull qwen2.5-coder-0.5b` (scripts/test.sh does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    # Growth while streaming is asserted with the streaming test model, which is slow by
    # construction. The real model's short suggestions can arrive in one update, and text
    # typed into a suggestion shortens it, so here growth is logged, not required.
    _run_e2e(vsix, models.DEFAULT_MODEL, ARTIFACTS / "vscode-e2e-default-model", "--dtype", "auto",
             "--load-timeout", "420", "--growth-not-required")

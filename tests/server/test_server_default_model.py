"""End to end with the default model (qwen2.5-coder-0.5b from the cache): the real server
completes real code plausibly. Slow (loads a 0.5B model); run with `pytest -m slow`."""

from __future__ import annotations

import pytest
from conftest import default_model_ready, running_server

from speclsp.data import demo_text

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]

# The demo file ends with `def area(self):` of a Square; the cursor goes into its body.
SOURCE = demo_text() + "        return "


async def test_default_model_completes_real_code(tmp_path):
    if not default_model_ready():
        pytest.skip("default model not cached; run `speclsp models pull qwen2.5-coder-0.5b` (CI does)")
    async with running_server(
        "qwen2.5-coder-0.5b", tmp_path, "vscode", {"maxTokens": 16, "deadlineMs": 0}, args=()
    ) as ed:
        await ed.wait_ready()
        uri = (tmp_path / "shapes.py").as_uri()
        ed.open(uri, SOURCE)
        result = await ed.inline(uri, invoked=True, timeout=120)
        text = result.items[0].insert_text
        assert text.startswith("self.side"), text  # e.g. "self.side ** 2"
        stats = await ed.stats()
        assert stats["model"] == "qwen2.5-coder-0.5b" and stats["last"]["new_tokens"] <= 16

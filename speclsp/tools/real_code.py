"""Real code to show the default model on: Python's own textwrap.py with the body of
`fill` taken out (its docstring kept), the cursor where it was; `wrap`, just above, has the
same shape, so the workspace drafter has something to draft from. The README pictures (scripts/take-pictures.sh)
and the default-model VS Code test (tests/editors/test_vscode_e2e.py) use it.

    python -m speclsp.tools.real_code OUT.py      # writes OUT.py, prints "LINE COLUMN" (0-based)
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path


def textwrap_without_body(out: str | Path, function: str = "fill") -> tuple[int, int]:
    """Write textwrap.py less the body of `function` (kept: its signature and docstring, and
    the indentation of the body's first line) to `out`; return that cursor (0-based)."""
    src = Path(textwrap.__file__).read_text()
    head = src.index(f"\ndef {function}(")  # the module-level function
    body = src.index('    """\n', src.index('"""', head) + 3) + len('    """\n')  # after the docstring
    nxt = re.search(r"\n\n(?=\S)", src[body:])  # the next top-level statement
    assert nxt is not None, f"no top-level statement after {function} in {textwrap.__file__}"
    end = body + nxt.start()
    Path(out).write_text(src[:body] + "    " + src[end:])
    return src[:body].count("\n"), 4


if __name__ == "__main__":
    line, col = textwrap_without_body(sys.argv[1])
    print(line, col)

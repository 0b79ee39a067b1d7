"""Completion cases from real editing history: the hunks of a git repository's commits.

For each commit (newest first, merges skipped) and each changed file matching the globs,
every hunk that adds lines becomes a case: the document is the file after the commit with
the hunk's added lines taken out (so the text before and after the cursor is what the
author had around them), the cursor sits after the indentation of the first added line,
and the expected completion is what the author then wrote. The other files changed by the
same commit are open, as they were before the commit. Uses `git` through subprocess only.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
MAX_FILE_BYTES = 200_000


@dataclass(frozen=True)
class EditCase:
    commit: str
    path: str
    text: str  # the document with the added lines removed
    line: int  # cursor, 0-based
    character: int
    expected: str  # what the author wrote from the cursor on
    others: tuple[tuple[str, str], ...]  # (path, text before the commit) of other changed files
    removed: str = ""  # the lines the hunk replaced (the author's edit took them out)

    @property
    def name(self) -> str:
        return f"{self.commit[:7]}:{self.path}:{self.line + 1}"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, encoding="utf-8", errors="replace"
    ).stdout


def _show(repo: Path, rev: str, path: str) -> str | None:
    try:
        out = _git(repo, "show", f"{rev}:{path}")
    except subprocess.CalledProcessError:
        return None
    if len(out) > MAX_FILE_BYTES or "\0" in out:
        return None
    return out


def _hunks(diff: str) -> list[tuple[int, int, int, int]]:
    """(old_start, old_count, new_start, new_count), 1-based as in unified diffs."""
    out = []
    for line in diff.splitlines():
        if m := _HUNK.match(line):
            a, b, c, d = m.groups()
            out.append((int(a), int(b if b is not None else 1), int(c), int(d if d is not None else 1)))
    return out


def cases_from_commit(
    repo: Path, commit: str, globs: tuple[str, ...], min_chars: int = 12, max_lines: int = 12
) -> list[EditCase]:
    parent = f"{commit}^"
    names = [
        p
        for p in _git(repo, "diff", "--name-only", "--diff-filter=M", parent, commit).splitlines()
        if any(fnmatch.fnmatch(p, g) for g in globs)
    ]
    before = {p: _show(repo, parent, p) for p in names}
    out = []
    for path in names:
        after = _show(repo, commit, path)
        old = before[path]
        if after is None or old is None:
            continue
        others = tuple((p, t) for p, t in before.items() if p != path and t is not None)
        lines = after.split("\n")
        old_lines = old.split("\n")
        for old_start, old_count, new_start, new_count in _hunks(_git(repo, "diff", "-U0", parent, commit, "--", path)):
            if new_count == 0:
                continue
            # Leading blank lines stay in the document: the cursor goes to the first line
            # with code, where the author started writing something a model can guess.
            while new_count and not lines[new_start - 1].strip():
                new_start, new_count = new_start + 1, new_count - 1
            if new_count == 0:
                continue
            added = lines[new_start - 1 : new_start - 1 + min(new_count, max_lines)]
            first = added[0]
            indent = len(first) - len(first.lstrip(" \t"))
            expected = "\n".join([first[indent:]] + added[1:])
            if len(expected.strip()) < min_chars:
                continue
            kept = lines[: new_start - 1] + [first[:indent]] + lines[new_start - 1 + new_count :]
            removed = "\n".join(old_lines[old_start - 1 : old_start - 1 + old_count]) if old_count else ""
            out.append(EditCase(commit, path, "\n".join(kept), new_start - 1, indent, expected, others, removed))
    return out


def edit_cases(
    repo: str | Path,
    commits: int = 20,
    globs: tuple[str, ...] = ("*.py",),
    max_cases: int = 50,
    rev: str = "HEAD",
    per_commit: int = 3,
) -> list[EditCase]:
    """Up to `max_cases` cases from the newest `commits` non-merge commits touching `globs`."""
    repo = Path(repo)
    shas = _git(repo, "log", "--no-merges", "--format=%H", f"-n{commits}", rev, "--", *globs).split()
    out: list[EditCase] = []
    for sha in shas:
        try:
            found = cases_from_commit(repo, sha, globs)
        except subprocess.CalledProcessError:
            continue  # a root commit has no parent
        out.extend(found[:per_commit])
        if len(out) >= max_cases:
            break
    return out[:max_cases]


def exact_match(completion: str, expected: str) -> tuple[float, int]:
    """(fraction of the expected characters matched from the start, complete lines matched)."""
    n = 0
    while n < min(len(completion), len(expected)) and completion[n] == expected[n]:
        n += 1
    lines = 0
    for a, b in zip(completion.split("\n"), expected.split("\n")):
        if a.rstrip() != b.rstrip():
            break
        lines += 1
    return (n / len(expected) if expected else 1.0), lines

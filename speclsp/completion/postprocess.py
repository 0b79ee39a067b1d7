"""What is shown: turning raw model text into the suggestion an editor displays.

Rules, in the order they apply while text streams in (`ShowRules.cut`, used by the engine
to stop early) and once at the end (`ShowRules.finalize`):

- single line when non-blank text sits right of the cursor on its line;
- otherwise multi-line, ending where the indentation scope of the cursor ends (a line
  indented less than the cursor's line), or where a new top-level block starts after a
  blank line, or where the model starts repeating the text after the cursor;
- at most `max_lines` lines;
- trailing whitespace trimmed, text that duplicates what follows the cursor dropped;
- a suggestion that makes the cursor's line repeat the line above or the line below is
  dropped (after accepting a line and pressing Enter, the model often offers it again);
- an empty or whitespace-only suggestion is no suggestion.
"""

from __future__ import annotations

from dataclasses import dataclass


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


@dataclass(frozen=True)
class ShowRules:
    line_prefix: str  # text of the cursor's line before the cursor
    line_suffix: str  # text of the cursor's line after the cursor
    next_lines: str = ""  # a few lines after the cursor's line (to spot repetition)
    max_lines: int = 16
    prev_line: str = ""  # the line above the cursor's line

    @classmethod
    def at(cls, prefix: str, suffix: str, max_lines: int = 16) -> ShowRules:
        start = prefix.rfind("\n") + 1
        line_prefix = prefix[start:]
        prev_line = prefix[prefix.rfind("\n", 0, start - 1) + 1 : start - 1] if start else ""
        nl = suffix.find("\n")
        line_suffix = suffix if nl < 0 else suffix[:nl]
        rest = "" if nl < 0 else suffix[nl + 1 : nl + 1 + 2000]
        return cls(line_prefix, line_suffix, rest, max_lines, prev_line)

    @property
    def single_line(self) -> bool:
        return bool(self.line_suffix.strip())

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Strings after which nothing more is shown, for a server to stop on its side: the
        first newline of a single-line suggestion (the other rules need to see more text)."""
        return ("\n",) if self.single_line else ()

    @property
    def base_indent(self) -> int:
        if self.line_prefix.strip():
            return _indent(self.line_prefix)
        return len(self.line_prefix.expandtabs(4)) if self.line_prefix else 0

    def repeats_a_neighbour(self, first_line: str) -> bool:
        """Whether the cursor's line, completed with `first_line`, equals the line above or
        the line below it (ignoring indentation; lines without a letter or digit, such as
        closing brackets, may repeat)."""
        full = (self.line_prefix + first_line + (self.line_suffix if self.single_line else "")).strip()
        if len(full) < 4 or not any(c.isalnum() for c in full):
            return False
        below = self.next_lines.split("\n", 1)[0].strip()
        return full == self.prev_line.strip() or full == below

    def cut(self, text: str) -> int | None:
        """Where to stop showing `text`, or None to keep going. Safe on partial text."""
        lines = text.split("\n")
        if len(lines) > 1 and self.repeats_a_neighbour(lines[0]):
            return 0  # the first line is complete and repeats a neighbour: nothing to show
        if self.single_line:
            return len(lines[0]) if len(lines) > 1 else None
        first_code = next((s.strip() for s in self.next_lines.split("\n") if s.strip()), "")
        base = self.base_indent
        pos = len(lines[0]) + 1
        seen_blank = False
        for i, line in enumerate(lines[1:], start=1):
            complete = i < len(lines) - 1  # the last line may still grow
            stripped = line.strip()
            if i >= self.max_lines:
                return pos - 1
            if stripped:
                ind = _indent(line)
                if ind < base:  # indentation is known once a non-blank character shows
                    return pos - 1
                if seen_blank and ind <= base and base == 0 and complete:
                    return pos - 1
                if first_code and len(first_code) >= 6 and stripped == first_code and complete:
                    return pos - 1
                seen_blank = False
            elif complete:
                seen_blank = True
            pos += len(line) + 1
        return None

    def finalize(self, text: str) -> str:
        """The suggestion to show: cut, trimmed, de-duplicated against the line's suffix."""
        cut = self.cut(text)
        if cut is not None:
            text = text[:cut]
        if self.repeats_a_neighbour(text.split("\n", 1)[0]):
            return ""
        if self.single_line:
            text = text.split("\n", 1)[0]
            tail = self.line_suffix.strip()
            # The model often re-types the closing characters that already follow the
            # cursor, e.g. `foo(` + `bar)` with `)` already there: show `bar` only.
            if tail and text.rstrip().endswith(tail):
                text = text.rstrip()[: -len(tail)]
        text = "\n".join(s.rstrip() for s in text.split("\n")).rstrip()
        if not self.line_prefix.strip():
            # On a blank line, leading newlines would only push the text down.
            text = text.lstrip("\n")
        return text if text.strip() else ""

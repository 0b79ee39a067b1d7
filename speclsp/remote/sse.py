"""Server-sent events: lines in, events out, as the HTML standard's parser reads them.

Pure (no I/O), so the streaming client and the tests share it. Only what an
OpenAI-compatible completions stream uses is kept: `data` lines (joined with "\n" when an
event has several), comments (":" lines, used as keep-alives) ignored, `event`/`id`/`retry`
read and dropped, an event dispatched at a blank line.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EventReader:
    """Feed it lines (without their line ends); it returns each complete event's data."""

    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> str | None:
        """The event's data when `line` ends one (a blank line after data), else None."""
        if line == "":
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None  # a comment: keep-alive
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        return None  # event, id, retry and unknown fields change nothing we use

    def pending(self) -> bool:
        """Data was read but its event never ended (the stream stopped mid-event)."""
        return bool(self._data)

"""The session's cache and staleness rules, in process, against the tiny model's real completer.

The same rules are covered end to end over stdio in test_server.py; these run in a second
each and say which rule failed. The editor side is a recording channel (what the session
sends); everything else is the real state, session, worker and model.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from speclsp.completion.completer import Completer, CompletionRequest
from speclsp.local.backend import LocalBackend
from speclsp.lsp.config import Config
from speclsp.lsp.generations import Generation, Generations, Subscriber
from speclsp.lsp.session import Session
from speclsp.lsp.state import ServerState

URI = "file:///w/a.py"
TEXT = "class ValueStore:\n    def get_value(self, key):\n        return self.values[key]\n\n    def set_"


class Recorder:
    """The editor's side of the channel: records what the session sends."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.statuses: list[str] = []

    def status(self, state: str, message: str) -> None:
        self.statuses.append(state)

    def progress(self, kind: str, message: str) -> None:
        pass

    def inline_update(self, uri, version, line, character, text, done, request_id) -> None:
        self.updates.append({"uri": uri, "version": version, "text": text, "done": done, "id": request_id})

    def warn(self, message: str) -> None:
        pass


@pytest.fixture
async def session(tiny_lm):
    """A ready session over the tiny model (float32, CPU), with streaming on."""
    channel = Recorder()
    state = ServerState(
        Config(max_tokens=12, lookahead="fixed:4", deadline_ms=0),
        channel,
        load_model=lambda cfg, progress=None, calibrate=False: Completer(LocalBackend(tiny_lm)),
    )
    state.initialize({}, "utf-16", ["file:///w"], streaming_capability=True)
    state.start_loading()
    for _ in range(500):
        if state.model.ready:
            break
        await asyncio.sleep(0.01)
    assert state.model.ready
    yield Session(state)
    state.shutdown()


def expected(tiny_lm, text: str) -> str:
    lines = text.split("\n")
    req = CompletionRequest("/w/a.py", text, len(lines) - 1, len(lines[-1]), max_tokens=12, lookahead="fixed:4")
    return Completer(LocalBackend(tiny_lm)).complete(req).text


def end_of(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines) - 1, len(lines[-1])


async def test_a_completion_equals_the_pipeline_and_typing_through_it_is_served_from_the_cache(session, tiny_lm):
    want = expected(tiny_lm, TEXT)
    assert want.strip()
    st = session.state
    st.open(URI, "/w/a.py", "python", 1, TEXT)
    first = await session.complete(URI, *end_of(TEXT), request_id=1, invoked=True)
    assert (first.text, first.reason) == (want, "model")
    calls = st.stats.model_calls
    typed = TEXT + want[:2]
    st.change(URI, 2, [(None, typed)])
    second = await session.complete(URI, *end_of(typed), request_id=2)
    assert (second.text, second.reason) == (want[2:], "cache")
    assert st.stats.model_calls == calls  # no model call of its own


async def test_an_edit_during_the_request_makes_its_answer_stale(session):
    st = session.state
    st.open(URI, "/w/a.py", "python", 1, TEXT)
    task = asyncio.ensure_future(session.complete(URI, *end_of(TEXT), request_id=1, invoked=True))
    await asyncio.sleep(0)
    st.change(URI, 2, [(None, TEXT + "\n# elsewhere\n")])
    answer = await task
    assert answer.reason in ("stale", "cancelled") and answer.text == ""


async def test_a_newer_request_supersedes_one_still_debouncing(session):
    st = session.state
    st.open(URI, "/w/a.py", "python", 1, TEXT)
    st.clock.on_edit(URI, 0.0)
    st.clock.on_edit(URI, 0.1)  # a user typing every 100 ms: automatic requests debounce
    old = asyncio.ensure_future(session.complete(URI, *end_of(TEXT), request_id=1))
    await asyncio.sleep(0)
    new = asyncio.ensure_future(session.complete(URI, *end_of(TEXT), request_id=2))
    assert (await old).reason == "superseded"
    assert (await new).reason in ("model", "cache")


async def test_out_of_order_versions_drop_cached_suggestions(session, tiny_lm):
    st = session.state
    st.open(URI, "/w/a.py", "python", 5, TEXT)
    await session.complete(URI, *end_of(TEXT), request_id=1, invoked=True)
    assert st.generations.of(URI)
    st.change(URI, 3, [(None, TEXT)])  # a version number going back
    assert st.generations.of(URI) == []


async def test_a_cancelled_request_keeps_its_generation_for_the_grace_period_only(session):
    st = session.state
    st.open(URI, "/w/a.py", "python", 1, TEXT)
    task = asyncio.ensure_future(session.complete(URI, *end_of(TEXT), request_id=1, invoked=True))
    await asyncio.sleep(0)
    (gen,) = st.generations.of(URI)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if not gen.done:
        assert not gen.cancel.cancelled  # a typed-through successor may still come
        for _ in range(1000):  # the grace period ends: cancelled, or it finished first
            if gen.cancel.cancelled or gen.done:
                break
            await asyncio.sleep(0.01)
        assert gen.cancel.cancelled or gen.done


async def test_streaming_updates_carry_only_what_the_user_has_not_typed(session, tiny_lm):
    want = expected(tiny_lm, TEXT)
    st = session.state
    st.open(URI, "/w/a.py", "python", 1, TEXT)
    await session.complete(URI, *end_of(TEXT), request_id=1, invoked=True)
    assert st.client.updates and st.client.updates[-1]["done"] and st.client.updates[-1]["text"] == want
    assert all(want.startswith(u["text"]) for u in st.client.updates)


# --- the rules as plain data: no event loop, no model --------------------------------------


def test_a_subscriber_typing_ahead_sees_nothing_until_the_model_catches_up():
    gen = Generation(URI, 1, "x = \n", 4)
    sub = Subscriber(1, 2, typed=3, typed_text="ret", line=0, character=7)
    gen.grow("re")
    assert gen.visible(sub) == "" and not gen.diverged(sub)
    gen.grow("return value")
    assert gen.visible(sub) == "urn value"
    gen2 = Generation(URI, 1, "x = \n", 4)
    gen2.grow("None")
    assert gen2.diverged(sub) and gen2.visible(sub) == ""


def test_the_cache_keeps_a_few_generations_per_document_and_skips_failed_ones():
    cache = Generations(per_document=2)
    gens = [Generation(URI, 1, "a = ", 4) for _ in range(3)]
    for g in gens:
        g.grow("1 + 2")
        cache.add(g)
    assert cache.of(URI) == gens[1:]
    gens[2].finish("error")
    gens[1].finish("eos")
    assert cache.find(URI, "a = 1", "") is gens[1]  # the failed newest one is skipped
    cache.after_edit(URI, "a = 9")
    assert cache.find(URI, "a = 9", "") is None


def test_an_edit_elsewhere_cancels_a_running_generation_but_typing_into_it_does_not():
    cache = Generations()
    gen = Generation(URI, 1, "a = \nb", 4)
    gen.grow("1 + 2")
    cache.add(gen)
    cache.after_edit(URI, "a = 1 \nb")
    assert not gen.cancel.cancelled
    cache.after_edit(URI, "a = 1 \nbc")
    assert gen.cancel.cancelled

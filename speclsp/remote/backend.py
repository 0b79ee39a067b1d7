"""`OpenAIBackend`: the `Backend` seam over an OpenAI-compatible completions server.

Everything next to the editor stays in speclsp (prompt, budgets, cache, show rules,
streaming, cancel); only generation moves to the server:

    POST {endpoint}/completions   prompt = the FIM prompt's token ids (exactly the local
                                  engine's prompt; the server's prefix cache matches on
                                  tokens), temperature 0, stream, max_tokens, stop strings
    read server-sent events       text grows -> on_text; the show rules' stop_text cuts
    stop early                    cancel, deadline or stop_text: the request's task is
                                  cancelled, which closes the connection; vLLM aborts a
                                  request whose client went away

HTTP runs on one asyncio loop in a daemon thread (httpx's async client); `generate` runs on
the caller's thread (the server's model worker), waits on a queue of stream events and
checks the cancel token and the deadline between them, so nothing blocks longer than
`POLL_S` after a cancel. Faults become `BackendError` with one line for the user; a server
that cannot be reached is not asked again before a backoff (0.5 s doubling to 10 s) ends.

The API key is read from the environment variable named in the settings, sent only as the
`Authorization` header to the endpoint (redirects are not followed) and never logged.

This file is one concern (one OpenAI-compatible server as a backend) at ~460 lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..backend import BackendError, CancelToken, GenerationResult, GenerationStats, stop_requested
from ..drafting.controller import LookaheadPolicy
from ..drafting.drafter import Drafter
from ..drafting.tokens import shared_tokenizer
from .sse import EventReader
from .untrusted import (
    MAX_ERROR_BYTES,
    MAX_LINE_BYTES,
    MAX_STREAM_BYTES,
    RETRY_AFTER_MAX_S,
    capped_lines,
    read_capped,
    retry_after,
    untrusted_text,
)

log = logging.getLogger(__name__)

MAX_MODELS_BYTES = 1 << 20  # a model list is a few kB; more is not one
POLL_S = 0.05  # how often generate() looks at the cancel token and the deadline while it waits
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0


@dataclass(frozen=True)
class RemoteSettings:
    endpoint: str  # the API's base URL, e.g. http://127.0.0.1:8000/v1
    model: str = ""  # the served model's name; "" = the one the server lists first
    api_key_env: str = ""  # the environment variable that holds the key ("" = no key)
    connect_timeout_s: float = 3.0
    # No byte from the server for this long (not even a keep-alive): it is stuck. vLLM sends
    # the first event when the prompt is prefilled, so this also bounds a cold prefill.
    stall_timeout_s: float = 30.0
    # The model list must come whole within this: a server that never answers, or drips
    # bytes (each one would restart a per-read timeout), must not hold the load.
    probe_timeout_s: float = 10.0


def endpoint_host(url: str) -> str:
    """host:port of an endpoint URL (what statistics and messages name; no credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or url
    return f"{host}:{parts.port}" if parts.port else host


def check_endpoint(url: str) -> str:
    """The endpoint without a trailing slash; raises ValueError for anything but http(s)://host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint {url!r}: expected http(s)://HOST[:PORT]/v1")
    if parts.username or parts.password:
        raise ValueError("endpoint: put the key in the variable named by apiKeyEnv, not in the URL")
    return url.strip().rstrip("/")


def load_tokenizer(directory: Path) -> Any:
    """The model's tokenizer from `directory/tokenizer.json` alone (no weights, no torch);
    the one loaded before while the file is unchanged (`shared_tokenizer`: a tokenizer
    dropped after use leaves native memory behind)."""
    from tokenizers import Tokenizer

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise BackendError(
            f"no tokenizer.json in {directory}: set `model` to a directory with the served model's tokenizer"
        )
    return shared_tokenizer(path, lambda: Tokenizer.from_file(str(path)), "tokenizers")


def _error_detail(body: bytes) -> str:
    """The message in an OpenAI-style error body, or the body's start."""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:300]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace").strip() or "no details"


class OpenAIBackend:
    """Generation on an OpenAI-compatible server; tokenizer, prompt and rules stay here."""

    backend = "openai"
    drafter_kinds: tuple[str, ...] = ()  # the server speculates on its own side

    def __init__(
        self, settings: RemoteSettings, tokenizer: Any, special_tokens: Sequence[str], end_tokens: Sequence[str] = ()
    ):
        self.settings = settings
        self.endpoint = check_endpoint(settings.endpoint)
        self.host = endpoint_host(self.endpoint)
        self.name = settings.model
        self.device = self.host
        self.tokenizer = tokenizer
        self.special_ids = {t: tokenizer.token_to_id(t) for t in special_tokens}
        # The family's end and FIM tokens: a model that writes one has left the middle
        # (vLLM's `stop_token_ids`; servers without it stop at their EOS).
        self.stop_ids = sorted({i for t in end_tokens if (i := tokenizer.token_to_id(t)) is not None})
        # What ends a completion when it shows up in the streamed text: the family's special
        # tokens that this tokenizer has (a server may stream them as text).
        self.markers = tuple(
            t for t in dict.fromkeys([*special_tokens, *end_tokens]) if tokenizer.token_to_id(t) is not None
        )
        self.problem = ""  # why the server cannot be used now ("" = none known)
        self._problem_kind = "unreachable"  # its BackendError kind
        self._backoff = 0.0
        self._down_until = 0.0
        self._loop = asyncio.new_event_loop()
        self._client: httpx.AsyncClient | None = None
        threading.Thread(target=self._loop.run_forever, name="speclsp-remote", daemon=True).start()

    # --- the seam's small parts -------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def step_costs(self) -> dict[int, float]:
        return {0: 0.05}  # nominal: no local verify passes (`drafter_kinds` is empty)

    def describe(self) -> str:
        return f"{self.host} ({self.name})" + (f", {self.problem}" if self.problem else "")

    def stats(self) -> dict:
        return {}

    # Nothing is measured or learnt here: the server speculates on its own side.
    dtype = dtype_reason = ""

    def calibrate_step(self) -> bool:
        return False

    def calibrate(self, budget_s: float | None = None, max_pass_s: float | None = None) -> dict[int, float]:
        return self.step_costs()

    def learned(self) -> dict:
        return {}

    def save_learned(self, learned: dict) -> None:
        pass

    def close(self) -> None:
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(5)
        # A stream cut short leaves its line reader (an async generator) to be finalized
        # on this loop: finish that before stopping it.
        asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _headers(self) -> dict[str, str]:
        env = self.settings.api_key_env
        key = os.environ.get(env, "") if env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    # --- the server: is it there, which model ----------------------------------------

    def probe(self) -> None:
        """Ask the server which models it serves; pick or check ours. Sets `problem` when
        the server cannot be reached; raises `BackendError` for an answer that means the
        configuration is wrong (no such model, refused key)."""
        s = self.settings
        if s.api_key_env and not os.environ.get(s.api_key_env):
            log.warning("apiKeyEnv names %s, which is not set: sending no key", s.api_key_env)
        try:
            status, content = asyncio.run_coroutine_threadsafe(
                asyncio.wait_for(self._get_models(), s.probe_timeout_s), self._loop
            ).result()
        except (TimeoutError, httpx.ReadTimeout):
            self._mark_down(f"{self.endpoint}/models did not answer within {s.probe_timeout_s:.0f} s")
            return
        except httpx.HTTPError as e:
            self._mark_down(f"cannot reach {self.endpoint}: {type(e).__name__}")
            return
        if status != 200:
            raise BackendError(self._http_message(status, content), "http")
        try:
            if len(content) > MAX_MODELS_BYTES:
                raise ValueError("too large")
            served = [m["id"] for m in json.loads(content)["data"]]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise BackendError(f"{self.endpoint}/models did not answer a model list", "http") from None
        if not self.name:
            if not served:
                raise BackendError(f"{self.host} serves no model")
            self.name = served[0]
        elif self.name not in served:
            raise BackendError(f"{self.host} does not serve model {self.name!r} (it serves: {', '.join(served)[:200]})")
        self._mark_up()

    async def _get_models(self) -> tuple[int, bytes]:
        """GET /models: (status, at most MAX_MODELS_BYTES + 1 bytes of the body)."""
        s = self.settings
        timeout = httpx.Timeout(min(s.stall_timeout_s, s.probe_timeout_s), connect=s.connect_timeout_s)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            async with client.stream("GET", f"{self.endpoint}/models", headers=self._headers()) as resp:
                cap = MAX_MODELS_BYTES + 1 if resp.status_code == 200 else MAX_ERROR_BYTES
                return resp.status_code, await read_capped(resp, cap)

    def _mark_down(self, why: str, retry_after_s: float | None = None, kind: str = "unreachable") -> None:
        self._backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, 2 * self._backoff))
        wait = self._backoff if retry_after_s is None else max(self._backoff, min(retry_after_s, RETRY_AFTER_MAX_S))
        self._down_until = time.monotonic() + wait
        if why != self.problem:
            log.warning("remote: %s (next try in %.1f s)", why, wait)
        self.problem, self._problem_kind = why, kind

    def _mark_up(self) -> None:
        if self.problem:
            log.info("remote: %s reachable again", self.host)
        self._backoff, self._down_until, self.problem = 0.0, 0.0, ""

    def _http_message(self, status: int, body: bytes) -> str:
        detail = _error_detail(body)
        if status in (401, 403):
            return f"{self.host} refused the key (HTTP {status}): check apiKeyEnv"
        if status == 404:
            return f"{self.host}: HTTP 404 ({detail}); check endpoint and remoteModel"
        return f"{self.host} answered HTTP {status}: {detail}"

    # --- one streamed completion ------------------------------------------------------

    async def _stream(self, body: dict, out: queue.Queue) -> None:
        """Run the request; put ("up"|"chunk"|"usage"|"done"|"down"|"error", value) on `out`."""
        s = self.settings
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(s.stall_timeout_s, connect=s.connect_timeout_s), follow_redirects=False
            )
        try:
            async with self._client.stream(
                "POST", f"{self.endpoint}/completions", json=body, headers=self._headers()
            ) as resp:
                if resp.status_code != 200:
                    message = self._http_message(resp.status_code, await read_capped(resp, MAX_ERROR_BYTES))
                    wait = retry_after(resp.headers.get("retry-after")) if resp.status_code in (429, 503) else None
                    out.put(("busy", (message, wait)) if wait is not None else ("error", ("http", message)))
                    return
                out.put(("up", None))
                reader, finished = EventReader(), False
                async for line in capped_lines(resp):
                    if line is None:
                        out.put(
                            (
                                "error",
                                (
                                    "stream",
                                    f"{self.host} sent a stream line over {MAX_LINE_BYTES} bytes, "
                                    f"or over {MAX_STREAM_BYTES} bytes in all: not read",
                                ),
                            )
                        )
                        return
                    data = reader.feed(line)
                    if data is None:
                        continue
                    if data.strip() == "[DONE]":
                        out.put(("done", None))
                        return
                    kind, value = _parse_event(data)
                    if kind == "error":
                        out.put((kind, ("stream", f"{self.host}: {value}")))
                        return
                    for item in value:
                        finished |= item[0] == "chunk" and item[1][2] is not None
                        out.put(item)
                # The stream ended without [DONE]: fine after a finish reason, else cut off.
                out.put(
                    ("done", None)
                    if finished
                    else ("error", ("stream", f"{self.host} closed the stream mid-completion"))
                )
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            out.put(("down", f"cannot reach {self.endpoint}: {type(e).__name__}"))
        except httpx.ReadTimeout:
            out.put(("error", ("stalled", f"{self.host} sent nothing for {s.stall_timeout_s:.0f} s")))
        except httpx.HTTPError as e:
            out.put(("error", ("stream", f"connection to {self.host} lost mid-completion ({type(e).__name__})")))

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        drafter: Drafter | None = None,  # unused: the server drafts (if it is set up to)
        drafter_kind: str = "ngram",
        policy: LookaheadPolicy | None = None,
        deadline: float | None = None,
        cancel: CancelToken | None = None,
        on_text: Callable[[str], None] | None = None,
        stop_text: Callable[[str], int | None] | None = None,
        step_budget_s: float | None = None,
        stop: Sequence[str] = (),
    ) -> GenerationResult:
        t0 = time.monotonic()
        if t0 < self._down_until:
            raise BackendError(f"{self.problem}; next try in {self._down_until - t0:.1f} s", self._problem_kind)
        stats = GenerationStats(
            prompt_tokens=len(prompt_ids),
            model=self.name,
            device=self.host,
            backend=self.backend,
            endpoint=self.host,
            lookahead="server",
        )
        body: dict[str, Any] = {
            "model": self.name,
            "prompt": list(prompt_ids),
            "max_tokens": max_new_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            # vLLM's extensions (other servers ignore them): stop on the family's end and FIM
            # tokens, keep a matched stop string (the show rules read it), return token ids.
            "stop_token_ids": self.stop_ids,
            "include_stop_str_in_output": True,
            "return_token_ids": True,
        }
        if stop:
            body["stop"] = list(stop)
        out: queue.Queue = queue.Queue()
        task = asyncio.run_coroutine_threadsafe(self._stream(body, out), self._loop)
        raw, text, usage, finish = "", "", None, ""
        ids: list[int] = []
        try:
            while not stats.stop_reason:
                if why := stop_requested(cancel, deadline):
                    stats.stop_reason = why
                    break
                try:
                    kind, value = out.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if kind == "up":
                    self._mark_up()
                elif kind == "down":
                    self._mark_down(value)
                    raise BackendError(value, "unreachable")
                elif kind == "error":
                    fault, message = value
                    raise BackendError(message, fault)
                elif kind == "busy":  # 429/503 with Retry-After: no request before then
                    message, wait = value
                    self._mark_down(message, wait, "busy")
                    raise BackendError(f"{message}; asked to wait {wait:.0f} s", "busy")
                elif kind == "usage":
                    usage = value
                elif kind == "done":
                    stats.stop_reason = finish or "eos"
                elif kind == "chunk":
                    piece, piece_ids, reason, stopped_by = value
                    ids.extend(piece_ids or ())
                    if piece:
                        if not raw:
                            stats.ttft_ms = (time.monotonic() - t0) * 1e3
                        raw += piece
                        shown, ended = untrusted_text(raw, self.markers)
                        if shown != text:
                            text = shown
                            if on_text is not None:
                                on_text(text)
                        if ended:
                            stats.stop_reason = "eos"  # the model wrote an end or FIM token
                        if stop_text is not None and (cut := stop_text(text)) is not None:
                            text, stats.stop_reason = text[:cut], "stop_text"
                    if reason is not None:  # the usage event and [DONE] follow
                        finish = {"length": "max_tokens"}.get(
                            reason, "stop_text" if isinstance(stopped_by, str) else "eos"
                        )
        finally:
            task.cancel()  # a no-op when the stream is over; else it closes the connection
        if stats.stop_reason != "stop_text" and stop_text is not None and (cut := stop_text(text)) is not None:
            text = text[:cut]
        stats.total_ms = (time.monotonic() - t0) * 1e3
        stats.prefill_ms = stats.ttft_ms
        stats.new_tokens = usage if usage is not None else (len(ids) if ids else len(self.encode(text)) if text else 0)
        decode_s = (stats.total_ms - stats.ttft_ms) / 1e3
        stats.tokens_per_s = (stats.new_tokens - 1) / decode_s if stats.new_tokens > 1 and decode_s > 0 else 0.0
        log.debug(
            "remote: %d prompt tokens -> %d tokens, first %.0f ms, total %.0f ms, %s",
            len(prompt_ids),
            stats.new_tokens,
            stats.ttft_ms,
            stats.total_ms,
            stats.stop_reason,
        )
        return GenerationResult(ids or self.encode(text), text, stats, [])


def _parse_event(data: str) -> tuple[str, Any]:
    """One event's JSON -> ("error", message) or ("items", [(kind, value), ...])."""
    try:
        event = json.loads(data)
    except ValueError:
        return "error", f"malformed event in the stream: {data[:80]!r}"
    if not isinstance(event, dict):
        return "error", f"malformed event in the stream: {data[:80]!r}"
    if "error" in event:  # vLLM reports a failure inside an open stream this way
        err = event["error"]
        return "error", str(err.get("message") if isinstance(err, dict) else err)[:300]
    items: list[tuple[str, Any]] = []
    choices = event.get("choices") or []
    if not isinstance(choices, list):
        return "error", "malformed event in the stream: choices is not a list"
    for choice in choices[:1]:
        piece = choice.get("text") if isinstance(choice, dict) else None
        if not isinstance(piece, str):
            return "error", "malformed event in the stream: a choice without text"
        token_ids = choice.get("token_ids")
        token_ids = token_ids if isinstance(token_ids, list) and all(isinstance(i, int) for i in token_ids) else None
        items.append(("chunk", (piece, token_ids, choice.get("finish_reason"), choice.get("stop_reason"))))
    usage = event.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        items.append(("usage", usage["completion_tokens"]))
    return "items", items

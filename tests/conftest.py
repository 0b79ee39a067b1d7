"""Shared fixtures: a tiny random model built once per test session (seconds, no download),
a tiny model trained to reproduce its corpus (trained once per cache, ~25 s), and
`start_server`, which runs the real language server as a subprocess over stdio and talks
to it with pytest-lsp's client, as a given editor would (recorded capabilities).

The helper modules the tests import by name (rawlsp, fakeopenai, ...) are in tests/support/,
put on `sys.path` here, before any test module is imported."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

SUPPORT = str(Path(__file__).resolve().parent / "support")
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)

DATA = Path(__file__).parent / "data"
CLIENTS = {"neovim": "neovim-0.12.json", "vscode": "vscode-1.100.json"}


def _isolate_cache() -> None:
    """Tests write calibrations and models of their own (tiny models in temporary
    directories): keep them out of the user's cache. The converted registry models are
    shared read-only through a link, so the default model is not fetched again."""
    import tempfile

    from speclsp.local import registry as models

    real = models.cache_dir() / "models"
    real.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="speclsp-test-cache-"))
    (tmp / "models").symlink_to(real, target_is_directory=True)
    os.environ["SPECLSP_CACHE"] = str(tmp)


_isolate_cache()  # before SERVER_ENV copies the environment for server subprocesses


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2 model + tokenizer on disk (loadable like any local model)."""
    from speclsp.local import tiny

    return tiny.build(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """The tiny model loaded in float32 on CPU (exact comparisons need fp32)."""
    from speclsp.local import model

    return model.load(str(tiny_model_dir), device="cpu", dtype="float32", warm_up=False)


@pytest.fixture(scope="session")
def trained_model_dir() -> Path:
    """A tiny Qwen2 trained until it reproduces `tiny_trained.CORPUS` (its suggestions can
    be asserted). Cached under the shared `models` folder: trained once per cache."""
    from speclsp.tools import tiny_trained

    return tiny_trained.trained()


@pytest.fixture(scope="session")
def trained_lm(trained_model_dir):
    """The trained tiny model loaded in float32 on CPU."""
    from speclsp.local import model

    return model.load(str(trained_model_dir), device="cpu", dtype="float32", warm_up=False)


def default_model_ready() -> bool:
    from speclsp.local import registry as models

    return models.is_ready(models.converted_dir(models.DEFAULT_MODEL))


@pytest.fixture(scope="session")
def default_lm():
    """The default model (qwen2.5-coder-0.5b), pulled and converted once into the cache."""
    from speclsp.local import model
    from speclsp.local import registry as models

    if not default_model_ready() and os.environ.get("SPECLSP_ALLOW_PULL") != "1":
        pytest.skip("default model not cached; run `speclsp models pull qwen2.5-coder-0.5b` (CI does)")
    return model.load(models.DEFAULT_MODEL, device="cpu")


# --- the language server as a subprocess ------------------------------------------------------


def client_params(client: str) -> dict[str, Any]:
    """Recorded `initialize` params of a real editor (tests/data/README.md)."""
    return json.loads((DATA / CLIENTS[client]).read_text())


def units(text: str, encoding: str) -> int:
    """Length of `text` in LSP position units (computed independently of speclsp.positions)."""
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    if encoding == "utf-16":
        return len(text.encode("utf-16-le")) // 2
    return len(text)


class Editor:
    """A test editor: a pytest-lsp client plus the documents it has open and what it received."""

    def __init__(self, client, result):
        from lsprotocol import types

        self.t = types
        self.client = client
        self.result = result
        self.encoding = "utf-16"  # until initialize says otherwise
        self.docs: dict[str, list] = {}  # uri -> [text, version]
        self.updates: list[dict] = []
        self.statuses: list[dict] = []
        self.changed = asyncio.Event()  # set on every custom notification

    # documents ---------------------------------------------------------------------------

    def open(self, uri: str, text: str, language: str = "python") -> None:
        self.docs[uri] = [text, 1]
        self.client.text_document_did_open(
            self.t.DidOpenTextDocumentParams(
                self.t.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)
            )
        )

    def position(self, uri: str, offset: int | None = None):
        text = self.docs[uri][0]
        offset = len(text) if offset is None else offset
        before = text[:offset]
        line = before.count("\n")
        return self.t.Position(line, units(before[before.rfind("\n") + 1 :], self.encoding))

    def insert(self, uri: str, new: str, offset: int | None = None) -> None:
        """One incremental didChange inserting `new` at `offset` (default: the end)."""
        offset = len(self.docs[uri][0]) if offset is None else offset
        self.replace(uri, offset, offset, new)

    def replace(self, uri: str, start: int, end: int, new: str) -> None:
        """One incremental didChange replacing the text from `start` to `end` with `new`."""
        text, version = self.docs[uri]
        rng = self.t.Range(self.position(uri, start), self.position(uri, end))
        self.docs[uri] = [text[:start] + new + text[end:], version + 1]
        self.client.text_document_did_change(
            self.t.DidChangeTextDocumentParams(
                text_document=self.t.VersionedTextDocumentIdentifier(uri=uri, version=version + 1),
                content_changes=[self.t.TextDocumentContentChangePartial(range=rng, text=new)],
            )
        )

    def close_all(self) -> None:
        for uri in list(self.docs):
            self.client.text_document_did_close(
                self.t.DidCloseTextDocumentParams(text_document=self.t.TextDocumentIdentifier(uri))
            )
            del self.docs[uri]

    # requests ----------------------------------------------------------------------------

    def inline_params(self, uri: str, invoked: bool = False, position=None):
        kind = self.t.InlineCompletionTriggerKind.Invoked if invoked else self.t.InlineCompletionTriggerKind.Automatic
        return self.t.InlineCompletionParams(
            context=self.t.InlineCompletionContext(trigger_kind=kind),
            text_document=self.t.TextDocumentIdentifier(uri),
            position=position or self.position(uri),
        )

    async def inline(self, uri: str, invoked: bool = False, position=None, timeout: float = 30):
        return await asyncio.wait_for(
            self.client.text_document_inline_completion_async(self.inline_params(uri, invoked, position)), timeout
        )

    async def completion(self, uri: str, position=None, timeout: float = 30):
        return await asyncio.wait_for(
            self.client.text_document_completion_async(
                self.t.CompletionParams(
                    text_document=self.t.TextDocumentIdentifier(uri),
                    position=position or self.position(uri),
                    context=self.t.CompletionContext(trigger_kind=self.t.CompletionTriggerKind.Invoked),
                )
            ),
            timeout,
        )

    async def stats(self) -> dict:
        return as_dict(await asyncio.wait_for(self.client.protocol.send_request_async("speclsp/stats", None), 10))

    def configure(self, options: dict) -> None:
        self.client.workspace_did_change_configuration(
            self.t.DidChangeConfigurationParams(settings={"speclsp": options})
        )

    async def wait_for(self, predicate, timeout: float = 30) -> None:
        async def poll():
            while not predicate():
                self.changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.05)

        await asyncio.wait_for(poll(), timeout)

    async def wait_ready(self, stall_s: float = 120) -> None:
        """Until the server says ready (or error), however long loading takes on this CPU,
        as long as it keeps reporting progress: it fails only when the server's log (where
        every progress report and status goes) has not grown for `stall_s` seconds."""
        await wait_progressing(
            lambda: any(s["state"] in ("ready", "error") for s in self.statuses), self.log, stall_s, self.changed
        )
        assert self.statuses[-1]["state"] == "ready", self.statuses


async def wait_progressing(predicate, log: Path | None, stall_s: float, changed: asyncio.Event | None = None) -> None:
    """Wait for `predicate()` while the server makes progress: the deadline moves on each
    time its log grows, so a slow CPU gets the time its own progress says it needs."""
    size, last = -1, asyncio.get_running_loop().time()
    while not predicate():
        now = asyncio.get_running_loop().time()
        grown = log.stat().st_size if log is not None and log.exists() else 0
        if grown != size:
            size, last = grown, now
        if now - last > stall_s:
            raise AssertionError(f"no progress from the server for {stall_s:.0f}s (log: {log})")
        if changed is not None:
            changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.1)
        else:
            await asyncio.sleep(0.1)


def as_dict(obj) -> Any:
    """pygls hands custom payloads over as namedtuple-like Objects: make them plain."""
    if hasattr(obj, "_asdict"):
        return {k: as_dict(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj


def server_command(model: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "speclsp", "--stdio", "--model", model, "--device", "cpu", *args]


SERVER_ENV = {**os.environ, "SPECLSP_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@contextlib.asynccontextmanager
async def running_server(
    model: str,
    workdir: Path,
    client: str = "vscode",
    options: dict | None = None,
    *,
    args: tuple[str, ...] = ("--dtype", "float32"),
    wait_ready: bool = True,
    folders: list[str] | None = None,
):
    """A real server over stdio, initialized as `client` would; shut down and exited on leaving.

    Leaving asserts that the server then exits with code 0. Its log is `editor.log`.
    """
    from lsprotocol import types
    from lsprotocol.converters import get_converter
    from pytest_lsp.client import make_test_lsp_client

    lsp = make_test_lsp_client()
    editor = Editor(lsp, None)

    def on(kind):
        def handler(params):
            getattr(editor, kind).append(as_dict(params))
            editor.changed.set()

        return handler

    lsp.feature("speclsp/inlineCompletionUpdate")(on("updates"))
    lsp.feature("speclsp/status")(on("statuses"))
    editor.log = workdir / f"server-{client}.log"
    await lsp.start_io(*server_command(model, *args, "--log-file", str(editor.log), "-v"), env=SERVER_ENV)
    params = get_converter().structure(client_params(client), types.InitializeParams)
    params.initialization_options = options or {}
    folders = folders if folders is not None else [workdir.as_uri()]
    params.workspace_folders = [types.WorkspaceFolder(uri=f, name=Path(f).name) for f in folders]
    try:
        editor.result = await asyncio.wait_for(lsp.initialize_session(params), 30)
        editor.encoding = str(editor.result.capabilities.position_encoding)
        if wait_ready:
            await editor.wait_ready()
        yield editor
        if lsp._server.returncode is None:
            await asyncio.wait_for(lsp.shutdown_session(), 30)
            assert lsp._server.returncode == 0
    finally:
        if lsp._server.returncode is None:
            lsp._server.kill()
        await lsp.stop()


@pytest.fixture
def start_server(tiny_model_dir, tmp_path):
    """`async with start_server("vscode", {options}) as editor:` a real server with the tiny
    model in float32 (deterministic), initialized; see `running_server`."""

    def start(client: str = "vscode", options: dict | None = None, *, model: str | None = None, **kw):
        return running_server(model or str(tiny_model_dir), tmp_path, client, options, **kw)

    return start

"""End-to-end tests of the language server with one running server per editor: the real
`python -m speclsp --stdio` subprocess, driven by pytest-lsp's client with the `initialize`
params recorded from Neovim 0.12 (UTF-8 positions, no streaming) and VS Code's language
client (UTF-16, streaming opt-in); see tests/data/README.md.

The two servers are shared by the tests of this module (each test uses its own document):
starting one costs seconds. The VS Code one runs with `lookahead: fixed:0` (one token per
forward: many streaming updates), the Neovim one with the workspace drafter and the auto
controller; both must produce exactly what the in-process pipeline produces for the same
document and cursor, since speculative decoding is lossless. The tiny random model's text
is nonsense but deterministic in float32.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from conftest import running_server, units
from inprocess import expected_completion
from lsprotocol import types

pytestmark = pytest.mark.asyncio(loop_scope="module")

VSCODE_OPTIONS = {"lookahead": "fixed:0", "maxTokens": 24}
NEOVIM_OPTIONS = {"maxTokens": 24}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vscode(tiny_model_dir, tmp_path_factory):
    async with running_server(str(tiny_model_dir), tmp_path_factory.mktemp("vscode"), "vscode", VSCODE_OPTIONS) as ed:
        yield ed


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def neovim(tiny_model_dir, tmp_path_factory):
    async with running_server(str(tiny_model_dir), tmp_path_factory.mktemp("neovim"), "neovim", NEOVIM_OPTIONS) as ed:
        yield ed


@pytest.fixture(params=["neovim", "vscode"])
def editor(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(autouse=True)
def close_documents(request):
    """Each test starts with no open documents: they would enter each other's prompts."""
    yield
    for name in ("vscode", "neovim"):
        if name in request.fixturenames:
            request.getfixturevalue(name).close_all()


def new_uri(editor, name: str) -> str:
    """A document in the editor's workspace folder."""
    return f"{editor.log.parent.as_uri()}/{name}"


# --- initialize -------------------------------------------------------------------------------


async def test_initialize_negotiates_encoding_and_loads_model_in_background(editor):
    caps = editor.result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.workspace.workspace_folders.supported and caps.workspace.workspace_folders.change_notifications
    assert caps.experimental["speclsp"]["inlineCompletionUpdate"] is True
    assert caps.experimental["speclsp"]["stats"] is True
    assert [s["state"] for s in editor.statuses] == ["loading", "ready"]
    # Both editors support window.workDoneProgress: loading shows as $/progress.
    (reports,) = editor.client.progress_reports.values()
    assert reports[0].kind == "begin" and reports[-1].kind == "end"
    assert "ready" in reports[-1].message


async def test_neovim_gets_utf8_positions_and_vscode_utf16(neovim, vscode):
    assert neovim.result.capabilities.position_encoding == "utf-8"
    assert vscode.result.capabilities.position_encoding == "utf-16"


# --- completions ------------------------------------------------------------------------------

# Astral (2 UTF-16 units, 4 UTF-8 bytes) and BMP non-ASCII characters left of the cursor.
UNICODE_DOC = 'class ValueStore:\n    """Stores a válue."""\n\ndef f(x="😀", y="é", '


async def test_inline_completion_after_typing_equals_the_pipeline_in_any_encoding(editor, tiny_lm):
    text = UNICODE_DOC
    want = expected_completion(tiny_lm, text)
    assert want.strip()
    uri = new_uri(editor, "unicode.py")
    before = await editor.stats()
    editor.open(uri, text[:-12])
    for ch in text[-12:]:  # the last characters arrive as keystrokes
        editor.insert(uri, ch)
    result = await editor.inline(uri, invoked=True)
    item = result.items[0]
    assert item.insert_text == want  # no word before the cursor
    cursor = editor.position(uri)
    assert item.range == types.Range(cursor, cursor)
    assert item.filter_text == item.insert_text
    after = await editor.stats()
    assert after["modelCalls"] - before["modelCalls"] == 1 and after["edits"] - before["edits"] == 12


async def test_completion_request_gives_one_item_with_the_whole_suggestion(neovim, tiny_lm):
    text = "def get_value(self, items):\n    for key in path:\n        key = key + "
    want = expected_completion(tiny_lm, text)
    uri = new_uri(neovim, "items.py")
    neovim.open(uri, text)
    result = await neovim.completion(uri)
    (item,) = result.items
    cursor = neovim.position(uri)
    assert item.text_edit == types.TextEdit(range=types.Range(cursor, cursor), new_text=want)
    assert item.label == next(s.strip() for s in want.split("\n") if s.strip())
    assert item.kind == types.CompletionItemKind.Text
    assert item.insert_text_format == types.InsertTextFormat.PlainText
    assert item.detail == "speclsp"
    assert result.is_incomplete  # ask again as the user types


async def test_streaming_updates_grow_to_the_final_suggestion(vscode):
    uri = new_uri(vscode, "stream.py")
    vscode.open(uri, "def f(")
    params = vscode.inline_params(uri, invoked=True)
    result = await vscode.client.protocol.send_request_async(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="stream-1"
    )
    final = result.items[0].insert_text
    await vscode.wait_for(lambda: any(u["requestId"] == "stream-1" and u["done"] for u in vscode.updates))
    ups = [u for u in vscode.updates if u["requestId"] == "stream-1"]
    assert len(ups) >= 3
    assert all(u["uri"] == uri and u["version"] == 1 and u["position"] == {"line": 0, "character": 6} for u in ups)
    texts = [u["text"] for u in ups]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # the whole text so far, growing
    assert texts[-1] == final and [u["done"] for u in ups].count(True) == 1


async def test_neovim_gets_no_streaming_updates(neovim):
    uri = new_uri(neovim, "quiet.py")
    neovim.open(uri, "def f(")
    assert (await neovim.inline(uri, invoked=True)).items
    assert neovim.updates == []  # it did not opt in


async def test_typing_into_suggestion_is_served_from_cache(editor):
    uri = new_uri(editor, "typed.py")
    editor.open(uri, "def f(")
    first = (await editor.inline(uri, invoked=True)).items[0].insert_text
    assert len(first) > 8 and "\n" not in first
    before = await editor.stats()
    for k in range(1, 8):  # type the suggestion's first 7 characters, asking after each
        editor.insert(uri, first[k - 1])
        (item,) = (await editor.inline(uri)).items
        line = editor.docs[uri][0]
        word = line[len(line.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")) :]
        assert item.insert_text == word + first[k:]  # the range covers the word being typed
        assert item.range.start == types.Position(0, units(line[: len(line) - len(word)], editor.encoding))
        assert item.range.end == editor.position(uri)
    after = await editor.stats()
    assert after["modelCalls"] == before["modelCalls"] and after["cacheHits"] - before["cacheHits"] == 7


async def test_accepted_completion_joins_the_history(vscode):
    uri = new_uri(vscode, "accept.py")
    vscode.open(uri, "x = 1\n")
    vscode.client.protocol.notify("speclsp/didAccept", {"uri": uri, "text": "print(x)\n", "kind": "full"})
    assert (await vscode.stats())["state"] == "ready"  # processed in order after the notification
    assert "accepted full completion (9 chars)" in vscode.log.read_text()


async def test_workspace_folders_can_change(neovim):
    folder = neovim.log.parent / "other"
    neovim.client.workspace_did_change_workspace_folders(
        types.DidChangeWorkspaceFoldersParams(
            event=types.WorkspaceFoldersChangeEvent(added=[types.WorkspaceFolder(folder.as_uri(), "other")], removed=[])
        )
    )
    uri = f"{folder.as_uri()}/b.py"
    neovim.open(uri, "def f(")
    assert (await neovim.inline(uri, invoked=True)).items
    neovim.client.workspace_did_change_workspace_folders(
        types.DidChangeWorkspaceFoldersParams(
            event=types.WorkspaceFoldersChangeEvent(added=[], removed=[types.WorkspaceFolder(folder.as_uri(), "other")])
        )
    )
    neovim.insert(uri, "x")
    await asyncio.sleep(0)
    assert (await neovim.stats())["state"] == "ready"

"""Translation between the session's plain values and lsprotocol types (one home for it)."""

from __future__ import annotations

from lsprotocol import types
from pygls.uris import to_fs_path

from .session import Answer


def _first_line(text: str) -> str:
    return next((s.strip() for s in text.split("\n") if s.strip()), text.strip())


def inline_items(answer: Answer, invoked: bool) -> types.InlineCompletionList:
    """One item; an invoked multi-line suggestion also offers its first line alone."""
    if not answer.text:
        return types.InlineCompletionList(items=[])
    rng = types.Range(types.Position(answer.line, answer.word_start), types.Position(answer.line, answer.character))
    texts = [answer.text]
    if invoked and "\n" in answer.text.strip("\n") and answer.text.split("\n", 1)[0].strip():
        texts.append(answer.text.split("\n", 1)[0])
    items = [
        types.InlineCompletionItem(insert_text=answer.word + t, range=rng, filter_text=answer.word + t) for t in texts
    ]
    return types.InlineCompletionList(items=items)


def completion_items(answer: Answer) -> types.CompletionList:
    if not answer.text:
        return types.CompletionList(is_incomplete=True, items=[])
    cursor = types.Position(answer.line, answer.character)
    item = types.CompletionItem(
        label=_first_line(answer.text),
        kind=types.CompletionItemKind.Text,
        detail="speclsp",
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=types.Range(cursor, cursor), new_text=answer.text),
    )
    return types.CompletionList(is_incomplete=True, items=[item])


def streaming_capability(caps: types.ClientCapabilities) -> bool:
    exp = caps.experimental if isinstance(caps.experimental, dict) else {}
    ours = exp.get("speclsp")
    return isinstance(ours, dict) and ours.get("inlineCompletionUpdate") is True


def folders_of(params: types.InitializeParams) -> list[str]:
    if params.workspace_folders:
        return [f.uri for f in params.workspace_folders]
    if params.root_uri:
        return [params.root_uri]
    return []


def path_of(uri: str) -> str:
    try:
        return to_fs_path(uri) or uri
    except Exception:
        return uri

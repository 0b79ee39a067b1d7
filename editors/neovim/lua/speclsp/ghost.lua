--- speclsp.ghost: ghost text drawn with one extmark per buffer (Neovim 0.10/0.11, or any
--- version with ghost_text.backend = "extmark").
---
--- A suggestion is an anchor (row, byte col) and the whole text to insert there. What is
--- drawn is the part of that text the user has not typed yet: the buffer text between the
--- anchor and the cursor must be a prefix of the suggestion, otherwise it is dropped. That
--- one rule covers typing into a suggestion, partial accepts, and streaming updates that
--- arrive after the user typed on. The extmark is updated in place (same id), so the text
--- grows without flicker; it is cleared on a cursor move that is not an edit, on leaving
--- insert mode and on leaving the buffer.
local util = require("speclsp.util")
local config = require("speclsp.config")

local api = vim.api
local M = {}

M.ns = api.nvim_create_namespace("speclsp.ghost")

local AUTOMATIC, INVOKED = 2, 1

---@class speclsp.GhostState
---@field request_id? integer   latest textDocument/inlineCompletion sent for the buffer
---@field items? table[]        items of the last answer: { row, col, text }
---@field index integer         which item is shown
---@field row? integer          anchor of the shown suggestion (0-based)
---@field col? integer          byte column of the anchor
---@field text? string          whole suggestion from the anchor
---@field done boolean          the server said it is complete
---@field extmark? integer
---@field tick? integer         b:changedtick when last drawn
---@field timer? uv.uv_timer_t
---@field hint? string

---@type table<integer, speclsp.GhostState>
M.states = {}
M.enabled = true

local function state(bufnr)
  local st = M.states[bufnr]
  if not st then
    st = { index = 1, done = false }
    M.states[bufnr] = st
  end
  return st
end

local function expand_tabs(s)
  if not s:find("\t", 1, true) then
    return s
  end
  return (s:gsub("\t", string.rep(" ", vim.bo.tabstop > 0 and vim.bo.tabstop or 8)))
end

local function hide(bufnr)
  local st = M.states[bufnr]
  if st and st.extmark then
    pcall(api.nvim_buf_del_extmark, bufnr, M.ns, st.extmark)
    st.extmark = nil
  end
end

--- Forget the suggestion (the request in flight stays unless `cancel`). With `cancel`, the
--- request is forgotten too: a streaming update or an answer already on its way when the
--- user dismissed it must not draw the suggestion again.
function M.clear(bufnr, cancel)
  local st = M.states[bufnr]
  if not st then
    return
  end
  hide(bufnr)
  st.text, st.items, st.row, st.col, st.hint = nil, nil, nil, nil, nil
  if cancel then
    if st.pending_id then
      local client = util.client(bufnr)
      if client then
        util.cancel(client, st.pending_id)
      end
      st.pending_id = nil
    end
    st.request_id = nil
  end
end

--- What is left to insert at the cursor, or nil if the suggestion no longer applies.
function M.remaining(bufnr)
  local st = M.states[bufnr]
  if not st or not st.text or api.nvim_get_current_buf() ~= bufnr then
    return nil
  end
  local crow, ccol = util.cursor()
  local typed = util.text_since(bufnr, st.row, st.col, crow, ccol)
  if not typed or st.text:sub(1, #typed) ~= typed then
    return nil
  end
  local rest = st.text:sub(#typed + 1)
  return rest ~= "" and rest or nil
end

--- Draw (or redraw in place) the suggestion at the cursor; drop it if it no longer applies.
function M.render(bufnr)
  local st = M.states[bufnr]
  if not st then
    return
  end
  local rest = util.in_insert_mode() and M.enabled and M.remaining(bufnr) or nil
  if not rest then
    if st.text and not M.remaining_or_exhausted(bufnr) then
      st.text, st.items = nil, nil -- the user typed something else
    end
    hide(bufnr)
    return
  end
  local hl = config.options.ghost_text.hl_group
  local lines = vim.split(rest, "\n", { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { expand_tabs(lines[i]), hl } }
  end
  local first = { { expand_tabs(lines[1]), hl } }
  if st.hint then
    local last = #virt_lines > 0 and virt_lines[#virt_lines] or first
    last[#last + 1] = { st.hint, "Comment" }
  end
  local crow, ccol = util.cursor()
  local opts = {
    id = st.extmark,
    virt_text = first,
    virt_text_pos = config.options.ghost_text.virt_text_pos,
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = "combine",
    priority = 65535,
  }
  local ok, id = pcall(api.nvim_buf_set_extmark, bufnr, M.ns, crow, ccol, opts)
  if ok then
    st.extmark = id
  end
  st.tick = api.nvim_buf_get_changedtick(bufnr)
  st.cursor = { crow, ccol }
  require("speclsp")._log_render(bufnr, rest)
end

--- True while the typed text still agrees with the suggestion (even if all of it was typed).
function M.remaining_or_exhausted(bufnr)
  local st = M.states[bufnr]
  if not st or not st.text then
    return false
  end
  local crow, ccol = util.cursor()
  local typed = util.text_since(bufnr, st.row, st.col, crow, ccol)
  return typed ~= nil and st.text:sub(1, #typed) == typed
end

function M.visible(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local st = M.states[bufnr]
  return st ~= nil and st.extmark ~= nil and M.remaining(bufnr) ~= nil
end

function M.remaining_text(bufnr)
  return M.visible(bufnr) and M.remaining(bufnr) or nil
end

local function set_item(bufnr, st, i)
  local item = st.items[i]
  st.index = i
  st.row, st.col, st.text = item.row, item.col, item.text
  st.hint = #st.items > 1 and (" (%d/%d)"):format(i, #st.items) or nil
end

local function convert_items(bufnr, client, result, crow, ccol)
  local items = {}
  for _, it in ipairs(result and (result.items or result) or {}) do
    local text = type(it.insertText) == "table" and it.insertText.value or it.insertText
    if type(text) == "string" and text ~= "" then
      local row, col = crow, ccol
      if it.range then
        row, col = util.from_lsp(bufnr, it.range.start, client.offset_encoding)
      end
      items[#items + 1] = { row = row, col = col, text = text }
    end
  end
  return items
end

--- Send textDocument/inlineCompletion for the cursor; the answer replaces the suggestion.
function M.request(bufnr, kind, on_done)
  local client = util.client(bufnr)
  if not client or not M.enabled or api.nvim_get_current_buf() ~= bufnr then
    return
  end
  local st = state(bufnr)
  if st.pending_id then
    util.cancel(client, st.pending_id)
    st.pending_id = nil
  end
  local crow, ccol = util.cursor()
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = util.to_lsp(bufnr, crow, ccol, client.offset_encoding),
    context = { triggerKind = kind or AUTOMATIC },
  }
  local ok, id
  ok, id = util.request(client, "textDocument/inlineCompletion", params, function(err, result)
    if st.pending_id == id then
      st.pending_id = nil
    end
    if st.request_id ~= id then
      return -- a newer request took over
    end
    if err then
      vim.lsp.log.warn("speclsp inlineCompletion", err)
      return
    end
    local items = convert_items(bufnr, client, result, crow, ccol)
    if #items == 0 then
      if on_done then
        on_done(false)
      end
      return
    end
    -- A streaming update may already have drawn more of the first item than the answer
    -- holds: keep the longer one.
    local streamed = st.text and st.index == 1 and st.row == items[1].row and st.col == items[1].col
      and st.text:sub(1, #items[1].text) == items[1].text and st.text
    st.items = items
    set_item(bufnr, st, 1)
    if streamed then
      st.text = streamed
      items[1].text = streamed
    end
    M.render(bufnr)
    if on_done then
      on_done(true)
    end
  end, bufnr)
  if ok then
    st.request_id, st.pending_id = id, id
    st.done = false
  end
end

--- Handler for speclsp/inlineCompletionUpdate: grow the shown suggestion in place.
function M.on_update(params, client)
  local bufnr = vim.uri_to_bufnr(params.uri)
  local st = M.states[bufnr]
  if not st or st.request_id ~= params.requestId or st.index ~= 1 then
    return
  end
  local row, col = util.from_lsp(bufnr, params.position, client.offset_encoding)
  st.row, st.col, st.text, st.done = row, col, params.text, params.done == true
  if st.items and st.items[1] then
    st.items[1].row, st.items[1].col, st.items[1].text = row, col, params.text
  else
    st.items = { { row = row, col = col, text = params.text } }
  end
  if api.nvim_get_current_buf() == bufnr then
    M.render(bufnr)
  end
end

function M.schedule_request(bufnr)
  local st = state(bufnr)
  if st.timer then
    st.timer:stop()
  else
    st.timer = vim.uv.new_timer()
  end
  st.timer:start(config.options.ghost_text.debounce_ms, 0, vim.schedule_wrap(function()
    if util.in_insert_mode() and api.nvim_get_current_buf() == bufnr then
      M.request(bufnr, AUTOMATIC)
    end
  end))
end

--- Insert what is left of the suggestion (all, one word or one line) at the cursor.
function M.accept(bufnr, kind)
  local rest = M.remaining(bufnr)
  if not rest then
    return false
  end
  local piece = util.take(rest, kind or "full")
  local crow, ccol = util.cursor()
  local lines = vim.split(piece, "\n", { plain = true })
  api.nvim_buf_set_text(bufnr, crow, ccol, crow, ccol, lines)
  local erow = crow + #lines - 1
  local ecol = (#lines == 1 and ccol or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { erow + 1, ecol })
  require("speclsp").did_accept(bufnr, piece, kind or "full")
  M.render(bufnr)
  return true
end

function M.cycle(bufnr, delta)
  local st = M.states[bufnr]
  local function step()
    if not st or not st.items or #st.items < 2 then
      return
    end
    set_item(bufnr, st, (st.index - 1 + delta) % #st.items + 1)
    M.render(bufnr)
  end
  if st and st.items and #st.items > 1 then
    step()
  else
    -- Alternatives come with an invoked request.
    M.request(bufnr, INVOKED, function(found)
      st = M.states[bufnr]
      if found and st.items and #st.items > 1 then
        set_item(bufnr, st, delta > 0 and 2 or #st.items)
        M.render(bufnr)
      end
    end)
  end
end

function M.dismiss(bufnr)
  if not M.visible(bufnr) then
    return false
  end
  M.clear(bufnr, true)
  return true
end

local function on_text_changed(bufnr)
  if not M.enabled then
    return
  end
  if M.remaining(bufnr) then
    M.render(bufnr) -- typed into the suggestion: no new request, the stream goes on
    return
  end
  -- Typed past its end, or away from it: ask again (the server answers a continuation of
  -- its own suggestion from its cache). Keep nothing stale on screen meanwhile.
  M.clear(bufnr, false)
  M.schedule_request(bufnr)
end

function M.attach(bufnr)
  local group = api.nvim_create_augroup("speclsp.ghost." .. bufnr, { clear = true })
  state(bufnr)
  api.nvim_create_autocmd({ "TextChangedI", "TextChangedP" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_text_changed(bufnr)
    end,
  })
  api.nvim_create_autocmd("InsertEnter", {
    group = group,
    buffer = bufnr,
    callback = function()
      M.schedule_request(bufnr)
    end,
  })
  api.nvim_create_autocmd("CursorMovedI", {
    group = group,
    buffer = bufnr,
    callback = function()
      local st = M.states[bufnr]
      if not (st and st.text) then
        return
      end
      local crow, ccol = util.cursor()
      local moved = not st.cursor or st.cursor[1] ~= crow or st.cursor[2] ~= ccol
      if moved and st.tick == api.nvim_buf_get_changedtick(bufnr) then
        M.clear(bufnr, true) -- the cursor moved without an edit
      else
        M.render(bufnr)
      end
    end,
  })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      local st = M.states[bufnr]
      if st and st.timer then
        st.timer:stop()
      end
      M.clear(bufnr, true)
    end,
  })
  api.nvim_create_autocmd({ "BufUnload" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.detach(bufnr)
    end,
  })
end

function M.detach(bufnr)
  local st = M.states[bufnr]
  if st and st.timer then
    st.timer:stop()
    st.timer:close()
  end
  M.clear(bufnr, true)
  M.states[bufnr] = nil
  pcall(api.nvim_del_augroup_by_name, "speclsp.ghost." .. bufnr)
end

function M.set_enabled(on)
  M.enabled = on
  if not on then
    for bufnr in pairs(M.states) do
      M.clear(bufnr, true)
    end
  end
end

return M

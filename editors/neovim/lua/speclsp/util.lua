--- speclsp.util: the speclsp client of a buffer, LSP positions <-> byte columns across
--- Neovim versions, and small compat shims (0.10 calls client methods with `.`).
local M = {}

M.name = "speclsp"
M.has_011 = vim.fn.has("nvim-0.11") == 1

function M.client(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  return vim.lsp.get_clients({ bufnr = bufnr, name = M.name })[1]
end

function M.clients()
  return vim.lsp.get_clients({ name = M.name })
end

--- client:request / client.request alike; returns ok, request_id.
function M.request(client, method, params, handler, bufnr)
  if M.has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

function M.request_sync(client, method, params, timeout_ms, bufnr)
  if M.has_011 then
    return client:request_sync(method, params, timeout_ms, bufnr)
  end
  return client.request_sync(method, params, timeout_ms, bufnr)
end

function M.notify(client, method, params)
  if M.has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

function M.cancel(client, id)
  if M.has_011 then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

local function line_text(bufnr, row)
  return vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
end

--- LSP position -> 0-based (row, byte col).
function M.from_lsp(bufnr, pos, encoding)
  local row, char = pos.line, pos.character
  if encoding == "utf-8" or char == 0 then
    return row, char
  end
  local line = line_text(bufnr, row)
  local ok, col
  if M.has_011 then
    ok, col = pcall(vim.str_byteindex, line, encoding, char, false)
  else
    ok, col = pcall(vim.str_byteindex, line, char, encoding == "utf-16")
  end
  return row, ok and col or #line
end

--- 0-based (row, byte col) -> LSP position.
function M.to_lsp(bufnr, row, col, encoding)
  if encoding == "utf-8" or col == 0 then
    return { line = row, character = col }
  end
  local line = line_text(bufnr, row)
  local ok, char
  if M.has_011 then
    ok, char = pcall(vim.str_utfindex, line, encoding, col, false)
  else
    local a, b = vim.str_utfindex(line, math.min(col, #line))
    ok, char = true, encoding == "utf-32" and a or b
  end
  return { line = row, character = ok and char or col }
end

--- Cursor as 0-based (row, byte col) in window 0.
function M.cursor()
  local c = vim.api.nvim_win_get_cursor(0)
  return c[1] - 1, c[2]
end

--- The text from (arow, acol) to the cursor, rows joined with "\n"; nil when the cursor is
--- before the anchor.
function M.text_since(bufnr, arow, acol, crow, ccol)
  if crow < arow or (crow == arow and ccol < acol) then
    return nil
  end
  local ok, parts = pcall(vim.api.nvim_buf_get_text, bufnr, arow, acol, crow, ccol, {})
  if not ok then
    return nil
  end
  return table.concat(parts, "\n")
end

function M.in_insert_mode()
  local m = vim.api.nvim_get_mode().mode
  return m:sub(1, 1) == "i" or m:sub(1, 1) == "R"
end

--- The part of `rest` a partial accept takes: "word" (leading blanks + one word or one run
--- of punctuation) or "line" (to the end of the line; a leading newline with the next line).
function M.take(rest, kind)
  if kind == "word" then
    local piece = rest:match("^%s*[%w_]+") or rest:match("^%s*[^%w_%s]+") or rest:match("^%s+")
    return piece or rest
  elseif kind == "line" then
    local nl = rest:find("\n", 1, true)
    if nl == 1 then
      local nl2 = rest:find("\n", 2, true)
      return nl2 and rest:sub(1, nl2 - 1) or rest
    end
    return nl and rest:sub(1, nl - 1) or rest
  end
  return rest
end

return M

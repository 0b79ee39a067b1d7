--- speclsp.cmp: an nvim-cmp source ("speclsp") that asks the speclsp server for
--- textDocument/completion. setup() registers it when nvim-cmp is installed; add
--- `{ name = "speclsp" }` to cmp's sources.
local util = require("speclsp.util")

local source = {}
source.__index = source

function source.new()
  return setmetatable({}, source)
end

function source:get_debug_name()
  return "speclsp"
end

function source:is_available()
  return require("speclsp").enabled and util.client(0) ~= nil
end

function source:get_position_encoding_kind()
  local client = util.client(0)
  return client and client.offset_encoding or "utf-16"
end

function source:complete(params, callback)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = util.client(bufnr)
  if not client then
    return callback()
  end
  local p = vim.lsp.util.make_position_params(0, client.offset_encoding)
  local reason = params and params.completion_context or { triggerKind = 1 }
  p.context = { triggerKind = reason.triggerKind or 1, triggerCharacter = reason.triggerCharacter }
  -- The word being typed: cmp matches it against the item, which continues it.
  local keyword = ""
  if params and params.context and params.offset then
    keyword = params.context.cursor_before_line:sub(params.offset)
  end
  util.request(client, "textDocument/completion", p, function(err, result)
    if err or not result then
      return callback({ items = {}, isIncomplete = true })
    end
    local items = result.items or result
    for _, item in ipairs(items) do
      item.filterText = keyword .. (item.filterText or item.label)
    end
    callback({ items = items, isIncomplete = true })
  end, bufnr)
end

local M = { source = source }

--- Register with nvim-cmp (no-op when it is not installed); safe to call more than once.
function M.register()
  local ok, cmp = pcall(require, "cmp")
  if not ok or M._registered then
    return false
  end
  M._registered = cmp.register_source("speclsp", source.new())
  return true
end

return M

--- speclsp.blink: a blink.cmp source provider. In blink's config:
---
---   sources = {
---     default = { "lsp", "path", "buffer", "speclsp" },
---     providers = { speclsp = { name = "speclsp", module = "speclsp.blink", async = true } },
---   }
local util = require("speclsp.util")

local source = {}
source.__index = source

function source.new(opts)
  return setmetatable({ opts = opts or {} }, source)
end

function source:enabled()
  return require("speclsp").enabled and util.client(0) ~= nil
end

function source:get_completions(ctx, callback)
  local bufnr = (ctx and ctx.bufnr) or vim.api.nvim_get_current_buf()
  local client = util.client(bufnr)
  if not client then
    callback({ items = {}, is_incomplete_forward = false, is_incomplete_backward = false })
    return function() end
  end
  local p = vim.lsp.util.make_position_params(0, client.offset_encoding)
  p.context = { triggerKind = 1 }
  local ok, id = util.request(client, "textDocument/completion", p, function(err, result)
    local items = (not err and result) and (result.items or result) or {}
    -- The item continues the word being typed; blink filters on that word, so it must be
    -- the start of what the item is matched against.
    local ok_kw, keyword = pcall(function()
      return ctx and ctx.get_keyword and ctx.get_keyword() or ""
    end)
    keyword = ok_kw and type(keyword) == "string" and keyword or ""
    for _, item in ipairs(items) do
      item.kind = item.kind or vim.lsp.protocol.CompletionItemKind.Text
      item.filterText = keyword .. (item.filterText or item.label)
    end
    -- The text depends on everything before the cursor: ask again as the user types.
    callback({ items = items, is_incomplete_forward = true, is_incomplete_backward = true })
  end, bufnr)
  return function()
    if ok and id then
      util.cancel(client, id)
    end
  end
end

return source

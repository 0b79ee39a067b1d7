--- speclsp.keymaps: buffer-local insert-mode keys for the ghost text.
---
--- Each key acts only while a suggestion is shown; otherwise it does what it did before:
--- the buffer-local mapping it shadowed, else the global mapping of the key (looked up at
--- the time of the key press, so a completion plugin that maps <Tab> later still gets it),
--- else the key itself.
local api = vim.api
local M = {}

local function termcodes(s)
  return api.nvim_replace_termcodes(s, true, true, true)
end

local function find_global(lhs)
  local want = termcodes(lhs)
  for _, m in ipairs(api.nvim_get_keymap("i")) do
    if termcodes(m.lhs) == want then
      return m
    end
  end
end

--- Keys (for an <expr> mapping) that do what `lhs` would have done without us.
local function fallback(lhs, shadowed)
  local m = shadowed or find_global(lhs)
  if not m or (m.rhs == nil and m.callback == nil) then
    return termcodes(lhs)
  end
  if m.callback then
    if m.expr == 1 then
      local keys = m.callback() or ""
      return m.replace_keycodes == 1 and termcodes(keys) or keys
    end
    vim.schedule(m.callback)
    return ""
  end
  if m.expr == 1 then
    local ok, keys = pcall(vim.api.nvim_eval, m.rhs)
    return ok and keys or ""
  end
  if m.noremap == 1 then
    return termcodes(m.rhs)
  end
  api.nvim_feedkeys(termcodes(m.rhs), "m", false)
  return ""
end

---@param bufnr integer
---@param keys table  config.keymaps
---@param actions table<string, fun(bufnr: integer): boolean>  true: handled
---@param visible fun(bufnr: integer): boolean
function M.attach(bufnr, keys, actions, visible)
  if vim.b[bufnr].speclsp_keymaps then
    return
  end
  vim.b[bufnr].speclsp_keymaps = true
  for name, lhs in pairs(keys) do
    local action = actions[name]
    if lhs and action then
      local shadowed = vim.fn.maparg(lhs, "i", false, true)
      if type(shadowed) ~= "table" or shadowed.buffer ~= 1 then
        shadowed = nil
      end
      -- trigger always acts; the others only while something is shown.
      local always = name == "trigger" or name == "next" or name == "prev"
      vim.keymap.set("i", lhs, function()
        if always or visible(bufnr) then
          -- Buffer edits are not allowed inside <expr>: run the action right after.
          vim.schedule(function()
            action(bufnr)
          end)
          return ""
        end
        return fallback(lhs, shadowed)
      end, {
        buffer = bufnr,
        expr = true,
        replace_keycodes = false,
        silent = true,
        desc = "speclsp: " .. name:gsub("_", " "),
      })
    end
  end
end

return M

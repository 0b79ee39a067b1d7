--- speclsp.config: the plugin's options, fully defaulted, and the merge with the user's.
---
--- `server` is handed to the server unchanged, as `initializationOptions` and as
--- `settings.speclsp` (keys as in docs/protocol.md: model, device, dtype, maxTokens, ...).
local M = {}

M.defaults = {
  -- Command that starts the server. nil: { "speclsp", "--stdio", "--log-file", <log_file> }.
  cmd = nil,
  -- Server options (docs/protocol.md, "Options"); nil values are left to the server.
  server = {},
  -- Filetypes to attach to; nil means every file buffer except `exclude_filetypes`.
  filetypes = nil,
  exclude_filetypes = {
    "help", "gitcommit", "gitrebase", "hgcommit", "svn", "TelescopePrompt", "NvimTree",
    "neo-tree", "oil", "lazy", "mason", "qf", "netrw",
  },
  -- Root detection: the nearest ancestor holding one of these. The one server process is
  -- shared by every root (the model is loaded once); other roots join as workspace folders.
  root_markers = { ".git", "pyproject.toml", "package.json", "Cargo.toml", "go.mod", ".hg" },
  -- Where the server logs (:SpeclspLog opens it). nil: stdpath("log")/speclsp.log.
  log_file = nil,
  -- Ask the server to stream the suggestion as it grows (speclsp/inlineCompletionUpdate).
  streaming = true,
  ghost_text = {
    enabled = true,
    -- "auto": vim.lsp.inline_completion where Neovim has it (0.12+), else "extmark".
    backend = "auto",
    -- ms of quiet typing before an automatic request (extmark backend; 0.12's own is 200).
    debounce_ms = 75,
    hl_group = "SpeclspGhostText", -- linked to Comment unless you define it
    -- extmark backend: where the first line goes: "inline" (pushes the rest of the line
    -- right) or "eol".
    virt_text_pos = "inline",
  },
  -- Insert-mode keys; false disables one. accept falls through to the key's usual meaning
  -- (or to your own mapping of it) when no suggestion is shown.
  keymaps = {
    accept = "<Tab>",
    accept_word = "<M-Right>",
    accept_line = "<M-C-Right>",
    dismiss = "<C-]>",
    next = "<M-]>",
    prev = "<M-[>",
    trigger = "<M-\\>",
  },
  completion = {
    -- vim.lsp.completion for the server's textDocument/completion (0.11+); with
    -- autotrigger = false it answers <C-x><C-o> and vim.lsp.completion.get().
    native = true,
    autotrigger = false,
  },
  -- Keep a small log of rendered ghost texts per buffer (tests and bug reports).
  debug = false,
}

M.options = vim.deepcopy(M.defaults)

local function check_types(opts)
  local ok, err = pcall(function()
    local specs = {
      { "cmd", opts.cmd, "table", true },
      { "server", opts.server, "table" },
      { "filetypes", opts.filetypes, "table", true },
      { "root_markers", opts.root_markers, "table" },
      { "ghost_text", opts.ghost_text, "table" },
      { "keymaps", opts.keymaps, "table" },
      { "completion", opts.completion, "table" },
    }
    for _, s in ipairs(specs) do
      if vim.fn.has("nvim-0.11") == 1 then
        vim.validate(s[1], s[2], s[3], s[4])
      else
        vim.validate({ [s[1]] = { s[2], s[3], s[4] } })
      end
    end
    local backend = opts.ghost_text.backend
    if backend ~= "auto" and backend ~= "native" and backend ~= "extmark" then
      error(("ghost_text.backend: %q is not auto, native or extmark"):format(tostring(backend)))
    end
  end)
  return ok, err
end

--- Merge user options over the defaults; a bad table falls back to the defaults with a warning.
function M.set(user)
  local merged = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), user or {})
  -- Lists replace, not merge.
  for _, key in ipairs({ "filetypes", "exclude_filetypes", "root_markers", "cmd" }) do
    if user and user[key] ~= nil then
      merged[key] = user[key] or nil
    end
  end
  local ok, err = check_types(merged)
  if not ok then
    vim.notify("speclsp: bad option (" .. tostring(err) .. "); using the defaults", vim.log.levels.WARN)
    merged = vim.deepcopy(M.defaults)
  end
  if merged.log_file == nil then
    merged.log_file = vim.fs.joinpath(vim.fn.stdpath("log"), "speclsp.log")
  end
  if merged.cmd == nil then
    merged.cmd = { "speclsp", "--stdio", "--log-file", merged.log_file }
  end
  M.options = merged
  return merged
end

--- The options the server gets (initializationOptions and settings.speclsp).
function M.server_options(enabled)
  local o = vim.deepcopy(M.options.server or {})
  if o.streaming == nil then
    o.streaming = M.options.streaming
  end
  -- Always explicit: the server keeps a key that a later change leaves out.
  o.enabled = enabled ~= false and o.enabled ~= false
  return o
end

return M

--- :checkhealth speclsp — Neovim features, the server command and version, running servers
--- and their model state, completion sources.
local M = {}

local function features()
  local h = vim.health
  h.start("speclsp: Neovim")
  local v = vim.version()
  local vs = ("%d.%d.%d%s"):format(v.major, v.minor, v.patch, v.prerelease and ("-" .. tostring(v.prerelease)) or "")
  if vim.fn.has("nvim-0.10") == 1 then
    h.ok("Neovim " .. vs)
  else
    h.error("Neovim " .. vs .. ": speclsp needs 0.10 or newer (inline virtual text)")
  end
  local speclsp = require("speclsp")
  if not speclsp._setup_done then
    h.warn('require("speclsp").setup() has not been called')
  end
  local backend = speclsp.backend() == require("speclsp.native") and "native" or "extmark"
  if vim.lsp.inline_completion then
    h.ok("vim.lsp.inline_completion: yes (ghost text backend: " .. backend .. ")")
  else
    h.ok("vim.lsp.inline_completion: no; ghost text drawn by speclsp with extmarks")
  end
  if vim.lsp.completion then
    h.ok("vim.lsp.completion: yes (native completion source)")
  else
    h.info("vim.lsp.completion: no (use nvim-cmp or blink.cmp for menu completions)")
  end
  if vim.lsp.config and vim.lsp.enable then
    h.ok("vim.lsp.config / vim.lsp.enable: yes")
  else
    h.info("vim.lsp.config: no; the server is started with vim.lsp.start")
  end
end

local function server_command()
  local h = vim.health
  local config = require("speclsp.config")
  h.start("speclsp: server")
  local cmd = config.options.cmd or { "speclsp" }
  local exe = vim.fn.exepath(cmd[1])
  if exe == "" then
    h.error(("server command not found: %s"):format(cmd[1]), {
      "pip install speclsp (in a venv), then put its bin/ on PATH",
      'or set cmd = { "/path/to/speclsp", "--stdio" } in setup()',
    })
    return
  end
  h.ok("server: " .. exe)
  local ok, res = pcall(function()
    return vim.system({ exe, "--version" }, { text = true }):wait(15000)
  end)
  if ok and res and res.code == 0 then
    h.ok("version: " .. vim.trim((res.stdout or "") .. (res.stderr or "")))
  else
    h.warn("`" .. exe .. " --version` failed: " .. vim.trim(tostring(ok and res and res.stderr or res)))
  end
  h.info("command: " .. table.concat(cmd, " "))
  h.info("log file: " .. tostring(config.options.log_file) .. " (:SpeclspLog)")
end

local function running()
  local h = vim.health
  local speclsp = require("speclsp")
  local util = require("speclsp.util")
  h.start("speclsp: running servers")
  if not speclsp.enabled then
    h.warn("turned off with :SpeclspToggle")
  end
  local clients = util.clients()
  if #clients == 0 then
    h.info("no speclsp server running (it starts when you open a file of a configured filetype)")
    return
  end
  for _, client in ipairs(clients) do
    local caps = client.server_capabilities or {}
    local ext = caps.experimental and caps.experimental.speclsp or {}
    local roots = {}
    for _, wf in ipairs(client.workspace_folders or {}) do
      roots[#roots + 1] = wf.name
    end
    h.info(("client %d: server %s, %d buffer(s), roots: %s"):format(client.id, tostring(ext.version or "?"),
      vim.tbl_count(client.attached_buffers or {}), #roots > 0 and table.concat(roots, ", ") or "none"))
    if caps.inlineCompletionProvider then
      h.ok("inline completion: yes" .. (ext.inlineCompletionUpdate and " (streaming)" or ""))
    else
      h.error("the server does not offer textDocument/inlineCompletion")
    end
    local status = speclsp.server_status[client.id]
    local stats = nil
    local buf = next(client.attached_buffers or {})
    if buf then
      stats = speclsp.stats(3000, buf)
    end
    local state = (stats and stats.state) or (status and status.state)
    local model = (stats and stats.model) or (status and status.model) or "?"
    local device = (stats and stats.device) or (status and status.device) or "?"
    local line = ("model %s on %s: %s"):format(model, device, tostring(state or "unknown"))
    if state == "ready" then
      h.ok(line)
    elseif state == "error" then
      h.error(line .. (status and status.message and (" — " .. status.message) or ""))
    else
      h.info(line .. (status and status.message and (" — " .. status.message) or ""))
    end
    if stats and type(stats.dtype) == "string" and stats.dtype ~= "" then
      local why = type(stats.dtypeReason) == "string" and stats.dtypeReason ~= "" and (" — " .. stats.dtypeReason) or ""
      h.info("weights: " .. stats.dtype .. why)
    end
  end
end

local function sources()
  local h = vim.health
  h.start("speclsp: completion sources")
  h.info(pcall(require, "cmp") and "nvim-cmp: installed (source 'speclsp')" or "nvim-cmp: not installed")
  h.info(pcall(require, "blink.cmp") and "blink.cmp: installed (provider module 'speclsp.blink')"
    or "blink.cmp: not installed")
end

function M.check()
  features()
  server_command()
  running()
  sources()
end

return M

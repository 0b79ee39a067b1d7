--- speclsp: Neovim client for the speclsp language server (inline completions from a local
--- model).
---
---   require("speclsp").setup({ server = { model = "qwen2.5-coder-0.5b" } })
---
--- setup() registers the server (vim.lsp.config + vim.lsp.enable on 0.11+, a FileType
--- autocmd with vim.lsp.start on 0.10), and on attach turns on ghost text (Neovim's
--- vim.lsp.inline_completion on 0.12+, else extmarks drawn by speclsp.ghost), the insert
--- keys, and native completion. One server process serves every buffer and root.
local config = require("speclsp.config")
local util = require("speclsp.util")

local api = vim.api
local M = {}

M.enabled = true
--- Last speclsp/status per client id: { state, message, model, device }.
M.server_status = {}
M._setup_done = false

--- The ghost text backend in use: speclsp.native or speclsp.ghost.
function M.backend()
  local want = config.options.ghost_text.backend
  local native = require("speclsp.native")
  if want == "native" or (want == "auto" and native.available()) then
    return native
  end
  return require("speclsp.ghost")
end

local function should_attach(bufnr)
  if not api.nvim_buf_is_valid(bufnr) or vim.bo[bufnr].buftype ~= "" then
    return false
  end
  if api.nvim_buf_get_name(bufnr) == "" then
    return false
  end
  local ft = vim.bo[bufnr].filetype
  local o = config.options
  if o.filetypes and not vim.tbl_contains(o.filetypes, ft) then
    return false
  end
  return not vim.tbl_contains(o.exclude_filetypes or {}, ft)
end

local function find_root(bufnr)
  return vim.fs.root(bufnr, config.options.root_markers)
end

local function ensure_workspace_folder(client, root)
  if not root then
    return
  end
  local uri = vim.uri_from_fname(root)
  for _, wf in ipairs(client.workspace_folders or {}) do
    if wf.uri == uri then
      return
    end
  end
  local folder = { uri = uri, name = root }
  client.workspace_folders = client.workspace_folders or {}
  table.insert(client.workspace_folders, folder)
  util.notify(client, "workspace/didChangeWorkspaceFolders", {
    event = { added = { folder }, removed = {} },
  })
end

local function on_status(_, params, ctx)
  if type(params) ~= "table" then
    return
  end
  M.server_status[ctx.client_id] = params
  -- An error is not announced here: the server sends it as window/showMessage too, which
  -- Neovim shows (one message per fault); the status keeps it for :checkhealth and statusline.
  if params.state == "ready" and M.enabled and util.in_insert_mode() then
    -- Typing started while the model loaded (those requests got nothing): ask now.
    local bufnr = api.nvim_get_current_buf()
    local client = util.client(bufnr)
    if client and client.id == ctx.client_id then
      M.trigger(bufnr)
    end
  end
  api.nvim_exec_autocmds("User", { pattern = "SpeclspStatus", data = params, modeline = false })
end

local function on_update(_, params, ctx)
  local client = vim.lsp.get_client_by_id(ctx.client_id)
  if config.options.debug and type(params) == "table" then
    M._updates = (M._updates or 0) + 1
    M._updates_done = params.done == true
  end
  if client and type(params) == "table" and M.enabled then
    M.backend().on_update(params, client)
  end
end

local function capabilities()
  local caps = vim.lsp.protocol.make_client_capabilities()
  caps.textDocument = caps.textDocument or {}
  caps.textDocument.inlineCompletion = caps.textDocument.inlineCompletion or { dynamicRegistration = false }
  caps.experimental = caps.experimental or {}
  caps.experimental.speclsp = { inlineCompletionUpdate = config.options.streaming ~= false }
  return caps
end

--- The client configuration handed to vim.lsp.
function M.lsp_config()
  local o = config.options
  return {
    name = util.name,
    cmd = o.cmd,
    filetypes = o.filetypes,
    init_options = config.server_options(M.enabled),
    settings = { speclsp = config.server_options(M.enabled) },
    capabilities = capabilities(),
    handlers = {
      ["speclsp/inlineCompletionUpdate"] = on_update,
      ["speclsp/status"] = on_status,
    },
    -- One process for all roots: the model is loaded once.
    reuse_client = function(client, cfg)
      return client.name == cfg.name
    end,
  }
end

local function attach(bufnr, client)
  ensure_workspace_folder(client, find_root(bufnr))
  local o = config.options
  local backend = M.backend()
  if o.ghost_text.enabled then
    backend.attach(bufnr, client)
    require("speclsp.keymaps").attach(bufnr, o.keymaps, {
      accept = function(b)
        return backend.accept(b, "full")
      end,
      accept_word = function(b)
        return backend.accept(b, "word")
      end,
      accept_line = function(b)
        return backend.accept(b, "line")
      end,
      dismiss = function(b)
        return backend.dismiss(b)
      end,
      next = function(b)
        return M.cycle(b, 1)
      end,
      prev = function(b)
        return M.cycle(b, -1)
      end,
      trigger = function(b)
        return M.trigger(b)
      end,
    }, function(b)
      return M.enabled and backend.visible(b)
    end)
  end
  if o.completion.native and vim.lsp.completion and vim.lsp.completion.enable then
    vim.lsp.completion.enable(true, client.id, bufnr, { autotrigger = o.completion.autotrigger })
    require("speclsp.menu").attach(bufnr, client.id) -- the whole item, not its first word
  end
end

--- Start (or reuse) the server for a buffer; what the 0.10 FileType autocmd calls.
function M.start(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if not should_attach(bufnr) then
    return nil
  end
  local cfg = M.lsp_config()
  cfg.root_dir = find_root(bufnr)
  return vim.lsp.start(cfg, { bufnr = bufnr, reuse_client = cfg.reuse_client })
end

function M.setup(opts)
  config.set(opts)
  M.enabled = config.options.server.enabled ~= false
  api.nvim_set_hl(0, "SpeclspGhostText", { link = "Comment", default = true })
  local group = api.nvim_create_augroup("speclsp", { clear = true })

  api.nvim_create_autocmd("LspAttach", {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == util.name then
        attach(args.buf, client)
      end
    end,
  })
  api.nvim_create_autocmd("LspDetach", {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == util.name then
        M.backend().detach(args.buf)
      end
    end,
  })
  if M.backend() == require("speclsp.native") then
    require("speclsp.native").setup_tracking()
  end

  if vim.lsp.config and vim.lsp.enable then
    local cfg = M.lsp_config()
    -- root_dir as a function decides per buffer, and attaches nowhere it should not.
    cfg.root_dir = function(bufnr, on_dir)
      if should_attach(bufnr) then
        on_dir(find_root(bufnr))
      end
    end
    vim.lsp.config(util.name, cfg)
    vim.lsp.enable(util.name)
  else
    api.nvim_create_autocmd("FileType", {
      group = group,
      callback = function(args)
        M.start(args.buf)
      end,
    })
    if vim.v.vim_did_enter == 1 then
      for _, b in ipairs(api.nvim_list_bufs()) do
        if api.nvim_buf_is_loaded(b) then
          M.start(b)
        end
      end
    end
  end

  pcall(function()
    require("speclsp.cmp").register()
  end)
  M._setup_done = true
end

--- debug: what each backend drew, per buffer, in order (tests read it).
M._renders = {}
function M._log_render(bufnr, text)
  if config.options.debug then
    local log = M._renders[bufnr] or {}
    M._renders[bufnr] = log
    if log[#log] ~= text then
      log[#log + 1] = text
    end
  end
end

--- Called by the backends after an accept: the text joins the server's drafting history.
function M.did_accept(bufnr, text, kind)
  local client = util.client(bufnr)
  if client and text ~= "" then
    util.notify(client, "speclsp/didAccept", { uri = vim.uri_from_bufnr(bufnr), text = text, kind = kind })
  end
end

function M.cycle(bufnr, delta)
  return M.backend().cycle(bufnr, delta)
end

function M.trigger(bufnr)
  local backend = M.backend()
  if backend.trigger then
    return backend.trigger(bufnr)
  end
  return backend.request(bufnr, 1)
end

--- Accept the shown suggestion: kind "full" (default), "word" or "line". Returns false
--- when nothing is shown.
function M.accept(kind, bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  if not M.backend().visible(bufnr) then
    return false
  end
  return M.backend().accept(bufnr, kind or "full")
end

function M.dismiss(bufnr)
  return M.backend().dismiss(bufnr or api.nvim_get_current_buf())
end

function M.is_visible(bufnr)
  return M.backend().visible(bufnr or api.nvim_get_current_buf())
end

--- The shown suggestion's text still to be inserted at the cursor ("" when none is shown),
--- for statuslines and tests.
function M.ghost_text(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  return M.backend().remaining_text(bufnr) or ""
end

--- Turn ghost text and completions on or off everywhere (also tells the server).
function M.toggle(on)
  if on == nil then
    on = not M.enabled
  end
  M.enabled = on
  config.options.server.enabled = nil -- the toggle decides from now on
  M.backend().set_enabled(on)
  for _, client in ipairs(util.clients()) do
    local settings = { speclsp = config.server_options(on) }
    client.settings = settings -- what Neovim answers workspace/configuration with
    util.notify(client, "workspace/didChangeConfiguration", { settings = settings })
  end
  vim.notify("speclsp: " .. (on and "on" or "off"), vim.log.levels.INFO)
  return on
end

--- speclsp/stats of the current buffer's server (synchronous, for the command and health).
function M.stats(timeout_ms, bufnr)
  local client = util.client(bufnr) or util.clients()[1]
  if not client then
    return nil, "no speclsp server is running"
  end
  local resp, err = util.request_sync(client, "speclsp/stats", vim.empty_dict(), timeout_ms or 2000, bufnr or 0)
  if not resp then
    return nil, tostring(err or "no answer")
  end
  if resp.err then
    return nil, resp.err.message or vim.inspect(resp.err)
  end
  return resp.result, nil, client
end

local function fmt(v, pattern)
  if type(v) ~= "number" then
    return "-"
  end
  return pattern:format(v)
end

--- The lines :SpeclspStats shows.
function M.stats_lines(s)
  local lat = type(s.latencyMs) == "table" and s.latencyMs or {}
  local lines = {
    ("speclsp: %s on %s (%s)"):format(tostring(s.model or "?"), tostring(s.device or "?"), tostring(s.state or "?")),
    ("  completions %s   cache hits %s   cancelled %s"):format(
      fmt(s.completions, "%d"), fmt(s.cacheHits, "%d"), fmt(s.cancelled, "%d")),
    ("  tokens/s %s   acceptance %s   latency p50 %s ms, p95 %s ms"):format(
      fmt(s.tokensPerSecond, "%.1f"), fmt(s.acceptance, "%.2f"), fmt(lat.p50, "%.0f"), fmt(lat.p95, "%.0f")),
  }
  if type(s.last) == "table" and next(s.last) then
    local parts = {}
    for k, v in vim.spairs(s.last) do
      parts[#parts + 1] = ("%s=%s"):format(k, type(v) == "number" and (("%.4g"):format(v)) or vim.inspect(v))
    end
    lines[#lines + 1] = "  last: " .. table.concat(parts, " ")
  end
  return lines
end

function M.show_stats()
  local s, err = M.stats(3000)
  if not s then
    vim.notify("speclsp: " .. err, vim.log.levels.WARN)
    return
  end
  local chunks = {}
  for i, l in ipairs(M.stats_lines(s)) do
    chunks[#chunks + 1] = { (i > 1 and "\n" or "") .. l }
  end
  api.nvim_echo(chunks, true, {})
end

function M.open_log()
  local path = config.options.log_file
  if not path or vim.fn.filereadable(path) == 0 then
    vim.notify("speclsp: no log yet at " .. tostring(path), vim.log.levels.WARN)
    return
  end
  vim.cmd("split " .. vim.fn.fnameescape(path))
  vim.bo.readonly = true
  vim.cmd("normal! G")
end

--- One word for a statusline: loading/ready/error/off.
function M.statusline()
  if not M.enabled then
    return "speclsp: off"
  end
  local client = util.client(0)
  local st = client and M.server_status[client.id]
  return client and ("speclsp: " .. ((st and st.state) or "started")) or ""
end

return M

-- Commands of the speclsp plugin; the plugin does nothing until require("speclsp").setup().
if vim.g.loaded_speclsp then
  return
end
vim.g.loaded_speclsp = true

vim.api.nvim_create_user_command("SpeclspStats", function()
  require("speclsp").show_stats()
end, { desc = "speclsp: completions, tokens/s, acceptance, latency" })

vim.api.nvim_create_user_command("SpeclspToggle", function(a)
  local arg = a.args
  require("speclsp").toggle(arg == "on" and true or arg == "off" and false or nil)
end, {
  nargs = "?",
  complete = function()
    return { "on", "off" }
  end,
  desc = "speclsp: turn ghost text and completions on or off",
})

vim.api.nvim_create_user_command("SpeclspLog", function()
  require("speclsp").open_log()
end, { desc = "speclsp: open the server log" })

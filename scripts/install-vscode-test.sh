#!/usr/bin/env bash
# Install everything the VS Code extension build and its end-to-end test need. Idempotent:
# a second run with nothing missing does no network work.
#
#   - Debian: chromium (driven headless by playwright-core), the headers code-server's native
#     modules build against (libkrb5, libxkbfile, libx11, libsecret), ripgrep.
#   - npm: the extension's build tools (editors/vscode/node_modules) and the e2e tools
#     (editors/vscode/e2e/node_modules: code-server 4.100.3, playwright-core). Both git-ignored.
#
# Needs Node.js 20 (code-server 4.100.x refuses other majors) and root for apt-get.
# Set SPECLSP_SKIP_APT=1 to skip the apt step (e.g. when the packages come from elsewhere).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXT="$ROOT/editors/vscode"
E2E="$EXT/e2e"
NICE=(nice -n 19)
export npm_config_yes=true npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

log() { printf 'install-vscode-test: %s\n' "$*" >&2; }

# --- Debian packages ------------------------------------------------------------------
APT_PKGS=(chromium libkrb5-dev libxkbfile-dev libx11-dev libsecret-1-dev ripgrep fonts-dejavu-core
          build-essential python3 pkg-config)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 && "${SPECLSP_SKIP_APT:-0}" != 1 ]]; then
  log "apt-get install ${missing[*]}"
  SUDO=(); [[ $(id -u) -ne 0 ]] && SUDO=(sudo)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get update -q >&2
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >&2
fi

# --- Node.js --------------------------------------------------------------------------
if ! command -v node >/dev/null; then
  log "node not found: install Node.js 20 (e.g. Debian's nodejs from NodeSource, or nvm) and rerun"
  exit 1
fi
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if [[ "$NODE_MAJOR" != 20 ]]; then
  log "Node.js $NODE_MAJOR found; code-server 4.100.x needs Node.js 20"
  exit 1
fi

# True when DIR/node_modules was installed from DIR's current lockfile (or package.json
# when there is none); edits to package.json that leave the lockfile alone need no install.
npm_fresh() {
  local dir="$1" stamp="$1/node_modules/.package-lock.json"
  [[ -f "$stamp" ]] || return 1
  if [[ -f "$dir/package-lock.json" ]]; then
    [[ ! "$dir/package-lock.json" -nt "$stamp" ]] || return 1
  else
    [[ ! "$dir/package.json" -nt "$stamp" ]] || return 1
  fi
}

npm_install() {
  local dir="$1"
  if [[ -f "$dir/package-lock.json" ]]; then
    (cd "$dir" && "${NICE[@]}" npm ci --no-audit --no-fund >&2)
  else
    (cd "$dir" && "${NICE[@]}" npm install --no-audit --no-fund >&2)
  fi
  touch "$dir/node_modules/.package-lock.json"
}

# --- extension build tools ------------------------------------------------------------
if npm_fresh "$EXT"; then
  log "editors/vscode/node_modules up to date"
else
  log "npm install in editors/vscode"
  npm_install "$EXT"
fi

# --- e2e tools: code-server + playwright-core -----------------------------------------
if npm_fresh "$E2E" && [[ -x "$E2E/node_modules/.bin/code-server" ]] \
   && [[ -d "$E2E/node_modules/code-server/lib/vscode/node_modules" ]]; then
  log "editors/vscode/e2e/node_modules up to date"
else
  log "npm install in editors/vscode/e2e (code-server builds native modules: several minutes)"
  # code-server's postinstall installs VS Code's own dependencies, among them @vscode/ripgrep
  # 1.15.x, whose postinstall downloads rg from GitHub (not reachable here). It first looks in
  # $TMPDIR/vscode-ripgrep-cache-<version>/: seed that cache with Debian's rg.
  RG_TMP="$(mktemp -d)"
  trap 'rm -rf "$RG_TMP"' EXIT
  RG="$(command -v rg)"
  for v in 1.15.9 1.15.10 1.15.11 1.15.13 1.15.14; do
    for tag in v13.0.0-10 v13.0.0-13 v13.0.0-4; do
      mkdir -p "$RG_TMP/vscode-ripgrep-cache-$v"
      tar -czf "$RG_TMP/vscode-ripgrep-cache-$v/ripgrep-$tag-x86_64-unknown-linux-musl.tar.gz" \
        -C "$(dirname "$RG")" "$(basename "$RG")"
    done
  done
  # npm >= 11.x skips dependencies' install scripts unless allowed, and code-server's
  # postinstall runs nested `npm install`s (VS Code's native modules) that no allowScripts
  # list in our package.json reaches: allow them through the environment, for this tree only.
  # Root installs also need unsafe-perm for code-server's postinstall.
  TMPDIR="$RG_TMP" npm_config_dangerously_allow_all_scripts=true npm_config_unsafe_perm=true \
    npm_install "$E2E"
fi

[[ -x /usr/bin/chromium ]] || { log "chromium missing at /usr/bin/chromium"; exit 1; }
log "ok: $(node --version), code-server $("$E2E/node_modules/.bin/code-server" --version 2>/dev/null | head -1), $(/usr/bin/chromium --version 2>/dev/null)"

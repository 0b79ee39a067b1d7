#!/usr/bin/env bash
# Build the extension and package it: editors/vscode/dist/speclsp-<version>.vsix, or the
# path given as $1. Needs editors/vscode/node_modules (scripts/install-vscode-test.sh, or
# `npm ci` here) and Node.js 20; vsce itself comes through npx.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export npm_config_yes=true npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
# Polite on a shared machine by default; the e2e test sets 0 (a niced build beside CPU-bound
# processes can take many minutes).
NICE=(nice -n "${SPECLSP_PACKAGE_NICE:-19}")
[[ -d node_modules ]] || "${NICE[@]}" npm ci --no-audit --no-fund
version="$(node -p 'require("./package.json").version')"
out="${1:-dist/speclsp-$version.vsix}"
mkdir -p "$(dirname "$out")"
"${NICE[@]}" npm run --silent lint
# vsce runs the `vscode:prepublish` script (the esbuild bundle) before packaging.
# --no-dependencies: the bundle already holds vscode-languageclient.
# --no-rewrite-relative-links: README images are relative to this folder, not a web host.
"${NICE[@]}" npx --yes @vscode/vsce@3 package --no-dependencies --no-rewrite-relative-links --allow-missing-repository --out "$out" >&2
echo "$out"

/**
 * Where the `speclsp` executable is: the configured command, else the active Python
 * environment, else a virtual environment in the workspace or the shell's environment,
 * else `PATH`. And what to tell the user when none of these has it.
 *
 * Pure apart from the `isFile` callback, so the search order is unit-tested.
 */

import * as path from "node:path";

export interface ServerSearch {
  /** `speclsp.server.command`; empty when unset. */
  configured: string;
  /** Interpreter of the Python extension's active environment, if that extension is there. */
  interpreter?: string;
  workspaceFolders: string[];
  env: Record<string, string | undefined>;
  platform: NodeJS.Platform;
  home?: string;
}

export interface Resolved {
  /** Absolute path (or the configured command as given); undefined when nothing was found. */
  command?: string;
  /** Every place looked at, in order, for the error message. */
  tried: string[];
}

function exeName(platform: NodeJS.Platform): string {
  return platform === "win32" ? "speclsp.exe" : "speclsp";
}

function binDir(platform: NodeJS.Platform): string {
  return platform === "win32" ? "Scripts" : "bin";
}

function pathApi(platform: NodeJS.Platform): path.PlatformPath {
  return platform === "win32" ? path.win32 : path.posix;
}

function expand(p: string, s: ServerSearch): string {
  let out = p;
  if (s.home && (out === "~" || out.startsWith("~/"))) out = s.home + out.slice(1);
  const folder = s.workspaceFolders[0];
  if (folder) out = out.replace(/\$\{workspaceFolder\}/g, folder);
  return out;
}

/** Candidate paths, best first (without the configured command and without PATH). */
export function environmentCandidates(s: ServerSearch): string[] {
  const p = pathApi(s.platform);
  const exe = exeName(s.platform);
  const bin = binDir(s.platform);
  const out: string[] = [];
  if (s.interpreter) out.push(p.join(p.dirname(s.interpreter), exe));
  for (const folder of s.workspaceFolders) {
    for (const venv of [".venv", "venv", "env"]) out.push(p.join(folder, venv, bin, exe));
  }
  for (const key of ["VIRTUAL_ENV", "CONDA_PREFIX"]) {
    const v = s.env[key];
    if (v) out.push(p.join(v, bin, exe));
  }
  return [...new Set(out)];
}

function onPath(name: string, s: ServerSearch, isFile: (p: string) => boolean, tried: string[]): string | undefined {
  const p = pathApi(s.platform);
  const sep = s.platform === "win32" ? ";" : ":";
  const dirs = (s.env.PATH ?? s.env.Path ?? "").split(sep).filter((d) => d !== "");
  const names = s.platform === "win32" && !name.toLowerCase().endsWith(".exe") ? [name + ".exe", name] : [name];
  for (const d of dirs) {
    for (const n of names) {
      const full = p.join(d, n);
      if (isFile(full)) return full;
    }
  }
  tried.push(`PATH (${name})`);
  return undefined;
}

/** Find the server executable. `isFile` says whether an executable file exists there. */
export function resolveServerCommand(s: ServerSearch, isFile: (p: string) => boolean): Resolved {
  const tried: string[] = [];
  const p = pathApi(s.platform);
  if (s.configured) {
    const c = expand(s.configured, s);
    if (c.includes("/") || c.includes("\\")) {
      const full = p.isAbsolute(c) ? c : p.resolve(s.workspaceFolders[0] ?? ".", c);
      if (isFile(full)) return { command: full, tried };
      tried.push(full);
      return { tried };
    }
    const found = onPath(c, s, isFile, tried);
    return found ? { command: found, tried } : { tried };
  }
  for (const c of environmentCandidates(s)) {
    if (isFile(c)) return { command: c, tried };
    tried.push(c);
  }
  const found = onPath(exeName(s.platform).replace(/\.exe$/, ""), s, isFile, tried);
  return found ? { command: found, tried } : { tried };
}

/** The message shown when the server cannot be found, with the fix. */
export function notFoundMessage(r: Resolved, configured: string): string {
  const where = r.tried.length ? ` Looked in: ${r.tried.join(", ")}.` : "";
  if (configured) {
    return `speclsp: the server command "${configured}" (setting speclsp.server.command) was not found.${where} ` +
      "Fix the setting, or clear it to search the active Python environment and PATH.";
  }
  return "speclsp: the speclsp language server was not found." + where +
    " Install it into your Python environment (pip install speclsp, or pip install -e . in a checkout), " +
    "select that environment with \"Python: Select Interpreter\", or set speclsp.server.command to its path.";
}

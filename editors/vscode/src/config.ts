/**
 * Settings → server options: which `speclsp.*` settings the server gets, in the shape of
 * docs/protocol.md ("Options"), and which stay on the client (how to launch the server).
 *
 * Pure (no `vscode` import) so it is unit-tested under node's test runner. Invalid values
 * are dropped with a problem message; the server then uses its own default for that key.
 */

/** Options sent as `initializationOptions` and `settings.speclsp` (docs/protocol.md). */
export interface ServerOptions {
  model?: string;
  backend?: string;
  endpoint?: string;
  remoteModel?: string;
  apiKeyEnv?: string;
  device: string;
  dtype: string;
  maxTokens: number;
  lookahead: string;
  streaming: boolean;
  contextBudget: number;
  languages: Record<string, boolean>;
  enabled: boolean;
}

/** Client-only settings: changing one of them restarts the server. */
export interface LaunchSettings {
  command: string;
  args: string[];
}

/** Reads one setting below `speclsp.` (e.g. `get("maxTokens")`); undefined when unset. */
export type SettingGetter = (key: string) => unknown;

export const DEFAULT_OPTIONS: Readonly<ServerOptions> = Object.freeze({
  device: "auto",
  dtype: "auto",
  maxTokens: 64,
  lookahead: "tree",
  streaming: true,
  contextBudget: 2048,
  languages: {},
  enabled: true,
});

const DEVICE = /^(auto|cpu|cuda(:\d+)?|mps)$/;
const DTYPES = new Set(["auto", "bfloat16", "float16", "float32", "int8"]);
const LOOKAHEAD = /^(tree|auto|heuristic|fixed:\d+)$/;

export interface MappedOptions {
  options: ServerOptions;
  /** One line per setting that was ignored, naming it and saying why. */
  problems: string[];
}

function positiveInt(get: SettingGetter, key: "maxTokens" | "contextBudget", problems: string[]): number {
  const v = get(key);
  if (v === undefined || v === null) return DEFAULT_OPTIONS[key];
  if (typeof v === "number" && Number.isInteger(v) && v >= 1) return v;
  problems.push(`speclsp.${key}: expected a positive integer, got ${JSON.stringify(v)}; using ${DEFAULT_OPTIONS[key]}`);
  return DEFAULT_OPTIONS[key];
}

function matching(get: SettingGetter, key: "device" | "dtype" | "lookahead", ok: (s: string) => boolean,
  expected: string, problems: string[]): string {
  const v = get(key);
  if (v === undefined || v === null || v === "") return DEFAULT_OPTIONS[key];
  if (typeof v === "string" && ok(v.trim())) return v.trim();
  problems.push(`speclsp.${key}: expected ${expected}, got ${JSON.stringify(v)}; using ${DEFAULT_OPTIONS[key]}`);
  return DEFAULT_OPTIONS[key];
}

function bool(get: SettingGetter, key: "streaming" | "enabled", problems: string[]): boolean {
  const v = get(key);
  if (v === undefined || v === null) return DEFAULT_OPTIONS[key];
  if (typeof v === "boolean") return v;
  problems.push(`speclsp.${key}: expected true or false, got ${JSON.stringify(v)}; using ${DEFAULT_OPTIONS[key]}`);
  return DEFAULT_OPTIONS[key];
}

function languages(get: SettingGetter, problems: string[]): Record<string, boolean> {
  const v = get("languages");
  if (v === undefined || v === null) return {};
  if (typeof v !== "object" || Array.isArray(v)) {
    problems.push(`speclsp.languages: expected an object such as {"markdown": false}, got ${JSON.stringify(v)}`);
    return {};
  }
  const out: Record<string, boolean> = {};
  for (const [lang, on] of Object.entries(v as Record<string, unknown>)) {
    if (typeof on === "boolean") out[lang] = on;
    else problems.push(`speclsp.languages.${lang}: expected true or false, got ${JSON.stringify(on)}; ignored`);
  }
  return out;
}

/**
 * Map the `speclsp.*` settings to the server's options. `~` in a model path is expanded
 * with `home` so the server (which gets no shell) can find it.
 */
export function toServerOptions(get: SettingGetter, home?: string): MappedOptions {
  const problems: string[] = [];
  const options: ServerOptions = {
    device: matching(get, "device", (s) => DEVICE.test(s), "auto, cpu, cuda, cuda:N or mps", problems),
    dtype: matching(get, "dtype", (s) => DTYPES.has(s), "auto, bfloat16, float16, float32 or int8", problems),
    maxTokens: positiveInt(get, "maxTokens", problems),
    lookahead: matching(get, "lookahead", (s) => LOOKAHEAD.test(s), "tree, auto, heuristic or fixed:K", problems),
    streaming: bool(get, "streaming", problems),
    contextBudget: positiveInt(get, "contextBudget", problems),
    languages: languages(get, problems),
    enabled: bool(get, "enabled", problems),
  };
  const model = get("model");
  if (typeof model === "string") {
    let m = model.trim();
    if (home && (m === "~" || m.startsWith("~/"))) m = home + m.slice(1);
    if (m !== "") options.model = m;
  } else if (model !== undefined && model !== null) {
    problems.push(`speclsp.model: expected a string, got ${JSON.stringify(model)}; using the server's default`);
  }
  remoteSettings(get, options, problems);
  return { options, problems };
}

const BACKENDS = new Set(["local", "openai"]);
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** backend, endpoint, remoteModel, apiKeyEnv (docs/deploy.md): set only when given. */
function remoteSettings(get: SettingGetter, options: ServerOptions, problems: string[]): void {
  const checks: Record<"backend" | "endpoint" | "remoteModel" | "apiKeyEnv", [(s: string) => boolean, string]> = {
    backend: [(s) => BACKENDS.has(s), "local or openai"],
    endpoint: [(s) => /^https?:\/\/./.test(s), "http(s)://HOST[:PORT]/v1"],
    remoteModel: [() => true, "a string"],
    apiKeyEnv: [(s) => ENV_NAME.test(s), "the name of an environment variable"],
  };
  for (const [key, [ok, expected]] of Object.entries(checks) as [keyof typeof checks, [(s: string) => boolean, string]][]) {
    const v = get(key);
    if (v === undefined || v === null || v === "") continue;
    if (typeof v === "string" && ok(v.trim())) {
      options[key] = v.trim();
    } else {
      // Never echo apiKeyEnv's value: it may be a key pasted by mistake.
      const shown = key === "apiKeyEnv" ? "a value that is not one" : JSON.stringify(v);
      problems.push(`speclsp.${key}: expected ${expected}, got ${shown}; using the server's default`);
    }
  }
}

/** Same rule as the server: an explicit entry wins, else `"*"`, else enabled. */
export function isLanguageEnabled(languages: Record<string, boolean>, languageId: string): boolean {
  if (languageId in languages) return languages[languageId];
  if ("*" in languages) return languages["*"];
  return true;
}

export function toLaunchSettings(get: (key: string) => unknown): LaunchSettings {
  const command = get("server.command");
  const args = get("server.args");
  return {
    command: typeof command === "string" ? command.trim() : "",
    args: Array.isArray(args) && args.every((a) => typeof a === "string") ? (args as string[]) : ["--stdio"],
  };
}

export function sameLaunch(a: LaunchSettings, b: LaunchSettings): boolean {
  return a.command === b.command && a.args.length === b.args.length && a.args.every((x, i) => x === b.args[i]);
}

/** Deep equality for options (plain JSON data), to skip no-op configuration pushes. */
export function sameOptions(a: ServerOptions, b: ServerOptions): boolean {
  return JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
}

function sortKeys(v: unknown): unknown {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
  return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([x], [y]) => (x < y ? -1 : 1))
    .map(([k, x]) => [k, sortKeys(x)]));
}

/**
 * What the status bar item and the statistics view say: model state from `speclsp/status`,
 * then speed and draft acceptance from `speclsp/stats` (docs/protocol.md).
 *
 * Pure (no `vscode` import). The server is another process, so every field is read
 * defensively: a missing or odd field shows as "–", never as an exception.
 */

/** `speclsp/status` params. */
export interface ServerStatus {
  state: "loading" | "ready" | "error" | string;
  message?: string;
  model?: string;
  device?: string;
}

/** `speclsp/stats` result; `last` holds the last completion's own stats (snake_case). */
export type ServerStats = Record<string, unknown> & { last?: Record<string, unknown> | null };

export type Phase = "starting" | "loading" | "ready" | "error" | "stopped" | "disabled";

export interface StatusView {
  phase: Phase;
  message?: string;
  model?: string;
  device?: string;
  /** Percent of the model load, when the server reports it through $/progress. */
  percentage?: number;
  stats?: ServerStats;
}

export interface StatusBarText {
  text: string;
  tooltip: string;
  /** "error" and "warning" map to the status bar's background colours. */
  severity?: "error" | "warning";
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** Tokens per second and acceptance (0..1) of the last completion, else the running totals. */
export function lastCompletion(stats: ServerStats | undefined): { tokensPerSecond?: number; acceptance?: number; drafted?: number } {
  if (!stats) return {};
  const last = stats.last && typeof stats.last === "object" ? stats.last : {};
  const drafted = num(last.drafted);
  // Before the first completion the totals are zeros, not measurements.
  const any = (num(stats.completions) ?? 1) > 0 && (num(stats.tokensPerSecond) ?? 0) > 0;
  return {
    tokensPerSecond: num(last.tokens_per_s) ?? num(last.tokensPerSecond) ?? (any ? num(stats.tokensPerSecond) : undefined),
    acceptance: drafted === 0 ? undefined : num(last.acceptance) ?? (any ? num(stats.acceptance) : undefined),
    drafted,
  };
}

export function formatRate(tps: number | undefined): string {
  if (tps === undefined) return "–";
  return tps >= 100 ? `${Math.round(tps)} tok/s` : `${tps.toFixed(1)} tok/s`;
}

export function formatPercent(fraction: number | undefined): string {
  if (fraction === undefined) return "–";
  const f = fraction > 1 ? fraction / 100 : fraction; // tolerate a server that sends percent
  return `${Math.round(f * 100)}%`;
}

function shortModel(model: string | undefined): string {
  if (!model) return "";
  const parts = model.split(/[\\/]/).filter((p) => p !== "");
  return parts.length ? parts[parts.length - 1] : model;
}

export function statusBarText(v: StatusView): StatusBarText {
  const model = shortModel(v.model ?? str(v.stats?.model));
  const device = v.device ?? str(v.stats?.device);
  const on = [model, device].filter(Boolean).join(" on ");
  switch (v.phase) {
    case "starting":
      return { text: "$(loading~spin) speclsp", tooltip: "speclsp: starting the server…" };
    case "loading": {
      const pct = v.percentage !== undefined ? ` ${Math.round(v.percentage)}%` : "";
      return {
        text: `$(loading~spin) speclsp: loading${pct}`,
        tooltip: `speclsp: loading ${on || "the model"}${v.message ? ` — ${v.message}` : ""}`,
      };
    }
    case "error":
      return {
        text: "$(error) speclsp",
        tooltip: `speclsp: ${v.message ?? "the server failed"} — click for options`,
        severity: "error",
      };
    case "stopped":
      return { text: "$(debug-stop) speclsp", tooltip: "speclsp: server stopped — click to restart", severity: "warning" };
    case "disabled":
      return { text: "$(circle-slash) speclsp", tooltip: "speclsp: completions disabled — click to enable" };
    case "ready": {
      const last = lastCompletion(v.stats);
      const tail = last.tokensPerSecond === undefined ? "" :
        ` ${formatRate(last.tokensPerSecond)} · ${formatPercent(last.acceptance)}`;
      return {
        text: `$(sparkle) speclsp${tail}`,
        tooltip: `speclsp: ${on || "ready"}` + precision(v.stats) +
          (tail ? `\nlast completion: ${formatRate(last.tokensPerSecond)}, draft acceptance ${formatPercent(last.acceptance)}` : "") +
          "\nclick for statistics and options",
      };
    }
  }
}

/** "\nweights: int8 (why)" from `speclsp/stats`, or "" (a remote backend, an older server). */
export function precision(stats: ServerStats | undefined): string {
  const dtype = str(stats?.dtype);
  if (!dtype) return "";
  const why = str(stats?.dtypeReason);
  return `\nweights: ${dtype}${why ? ` — ${why}` : ""}`;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] as string);
}

function cell(v: unknown): string {
  if (v === undefined || v === null) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(2);
  if (typeof v === "object") return escapeHtml(JSON.stringify(v));
  return escapeHtml(String(v));
}

const SUMMARY: Array<[string, string, (s: ServerStats) => unknown]> = [
  ["Model", "model", (s) => s.model],
  ["Device", "device", (s) => s.device],
  ["Precision", "dtype", (s) => (str(s.dtype) ? `${s.dtype}${str(s.dtypeReason) ? ` (${s.dtypeReason})` : ""}` : undefined)],
  ["State", "state", (s) => s.state],
  ["Completions", "completions", (s) => s.completions],
  ["Served from cache", "cacheHits", (s) => s.cacheHits],
  ["Cancelled", "cancelled", (s) => s.cancelled],
  ["Speed", "tokensPerSecond", (s) => formatRate(num(s.tokensPerSecond))],
  ["Draft acceptance", "acceptance", (s) => formatPercent(num(s.acceptance))],
  ["Latency p50", "latencyMs.p50", (s) => latency(s, "p50")],
  ["Latency p95", "latencyMs.p95", (s) => latency(s, "p95")],
];

function latency(s: ServerStats, key: "p50" | "p95"): string {
  const l = s.latencyMs as Record<string, unknown> | undefined;
  const v = l && typeof l === "object" ? num(l[key]) : undefined;
  return v === undefined ? "–" : `${Math.round(v)} ms`;
}

/** The statistics view: a self-contained page (no scripts) for a webview. */
export function renderStatsHtml(stats: ServerStats | undefined, opts: { enabled: boolean; error?: string; cspSource?: string }): string {
  const rows = stats ? SUMMARY.map(([label, key, get]) =>
    `<tr><th title="${escapeHtml(key)}">${escapeHtml(label)}</th><td>${cell(get(stats))}</td></tr>`).join("\n") : "";
  const last = stats?.last && typeof stats.last === "object" ? stats.last : undefined;
  const lastRows = last ? Object.entries(last).map(([k, v]) =>
    `<tr><th>${escapeHtml(k)}</th><td>${cell(v)}</td></tr>`).join("\n") : "";
  const source = opts.cspSource ? " " + opts.cspSource.replace(/[^\w:/.*\-; ]/g, "") : "";
  const csp = `default-src 'none'; style-src 'unsafe-inline'${source};`;
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<title>speclsp statistics</title>
<style>
body { font-family: var(--vscode-font-family); color: var(--vscode-foreground); padding: 0 1em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th { text-align: left; font-weight: normal; color: var(--vscode-descriptionForeground); padding: 2px 1.5em 2px 0; }
td { font-family: var(--vscode-editor-font-family); padding: 2px 0; }
.err { color: var(--vscode-errorForeground); }
</style></head><body>
<h2>speclsp</h2>
<p>Completions are <b>${opts.enabled ? "enabled" : "disabled"}</b>. Toggle with the command <i>speclsp: Enable/Disable Completions</i> or the status bar item.</p>
${opts.error ? `<p class="err">${escapeHtml(opts.error)}</p>` : ""}
${stats ? `<h3>Session</h3>\n<table>\n${rows}\n</table>` : "<p>No statistics yet.</p>"}
${last ? `<h3>Last completion</h3>\n<table>\n${lastRows}\n</table>` : ""}
</body></html>
`;
}

import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { escapeHtml, formatPercent, formatRate, lastCompletion, renderStatsHtml, statusBarText } from "../src/stats";

const STATS = {
  completions: 12, cacheHits: 3, cancelled: 2, tokensPerSecond: 41.24, acceptance: 0.6,
  latencyMs: { p50: 80.4, p95: 210 }, model: "/tmp/models/tiny", device: "cpu", state: "ready",
  last: { tokens_per_s: 123.4, acceptance: 0.75, drafted: 8, accepted: 6, stop_reason: "eos" },
};

describe("status bar text", () => {
  it("shows loading with the model, then speed and acceptance of the last completion", () => {
    const loading = statusBarText({ phase: "loading", model: "/tmp/models/tiny", device: "cpu", message: "reading weights" });
    assert.match(loading.text, /loading/);
    assert.match(loading.tooltip, /tiny on cpu — reading weights/);
    assert.match(statusBarText({ phase: "loading", percentage: 42.4 }).text, /loading 42%/);
    const ready = statusBarText({ phase: "ready", stats: STATS });
    assert.equal(ready.text, "$(sparkle) speclsp 123 tok/s · 75%");
    assert.match(ready.tooltip, /tiny on cpu/);
    assert.equal(statusBarText({ phase: "ready" }).text, "$(sparkle) speclsp");
  });

  it("marks errors and the disabled state", () => {
    assert.equal(statusBarText({ phase: "error", message: "no model" }).severity, "error");
    assert.match(statusBarText({ phase: "error", message: "no model" }).tooltip, /no model/);
    assert.match(statusBarText({ phase: "disabled" }).text, /circle-slash/);
  });

  it("shows – for acceptance when nothing was drafted, and falls back to totals", () => {
    assert.deepEqual(lastCompletion({ ...STATS, last: { tokens_per_s: 10, drafted: 0, acceptance: 0 } }),
      { tokensPerSecond: 10, acceptance: undefined, drafted: 0 });
    assert.deepEqual(lastCompletion({ tokensPerSecond: 5, acceptance: 0.5, last: null }),
      { tokensPerSecond: 5, acceptance: 0.5, drafted: undefined });
    assert.deepEqual(lastCompletion(undefined), {});
    assert.deepEqual(lastCompletion({ completions: 0, tokensPerSecond: 0.0, acceptance: 0.0, last: {} }),
      { tokensPerSecond: undefined, acceptance: undefined, drafted: undefined }, "nothing measured yet");
  });
});

describe("formatting", () => {
  it("formats rates and percentages", () => {
    assert.equal(formatRate(undefined), "–");
    assert.equal(formatRate(9.87), "9.9 tok/s");
    assert.equal(formatRate(250.2), "250 tok/s");
    assert.equal(formatPercent(0.123), "12%");
    assert.equal(formatPercent(87), "87%");
    assert.equal(formatPercent(undefined), "–");
  });
});

describe("statistics page", () => {
  it("lists the session totals and the last completion", () => {
    const html = renderStatsHtml(STATS, { enabled: true });
    for (const s of ["Completions", "<td>12</td>", "41.2 tok/s", "60%", "80 ms", "210 ms", "Last completion", "stop_reason", "eos"]) {
      assert.ok(html.includes(s), `missing ${s}`);
    }
    assert.match(html, /Completions are <b>enabled<\/b>/);
  });

  it("escapes what the server sent and runs no scripts", () => {
    const html = renderStatsHtml({ ...STATS, model: "<script>alert(1)</script>" }, { enabled: false, error: "a < b" });
    assert.ok(!html.includes("<script>"));
    assert.ok(html.includes("&lt;script&gt;"));
    assert.ok(html.includes("a &lt; b"));
    assert.match(html, /default-src 'none'/);
    assert.equal(escapeHtml(`"'&`), "&quot;&#39;&amp;");
  });

  it("says so when there are no statistics yet", () => {
    assert.match(renderStatsHtml(undefined, { enabled: true }), /No statistics yet/);
  });
});

describe("the precision the server chose", () => {
  it("is in the tooltip and the statistics view, with the reason", () => {
    const stats = { ...STATS, dtype: "int8", dtypeReason: "fastest measured here (AVX2, 2 threads)" };
    const bar = statusBarText({ phase: "ready", stats });
    assert.match(bar.tooltip, /weights: int8 — fastest measured here \(AVX2, 2 threads\)/);
    assert.match(renderStatsHtml(stats, { enabled: true }), /int8 \(fastest measured here \(AVX2, 2 threads\)\)/);
  });

  it("is left out where the server says nothing of it (a remote backend)", () => {
    assert.doesNotMatch(statusBarText({ phase: "ready", stats: { ...STATS, dtype: "" } }).tooltip, /weights/);
  });
});

import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import {
  DEFAULT_OPTIONS,
  isLanguageEnabled,
  sameLaunch,
  sameOptions,
  toLaunchSettings,
  toServerOptions,
} from "../src/config";

const getter = (settings: Record<string, unknown>) => (key: string) => settings[key];

describe("toServerOptions", () => {
  it("gives the protocol defaults and no model when nothing is set", () => {
    const { options, problems } = toServerOptions(getter({}));
    assert.deepEqual(options, { ...DEFAULT_OPTIONS });
    assert.equal("model" in options, false);
    assert.deepEqual(problems, []);
  });

  it("accepts every default VS Code itself reads from package.json, with no warning", () => {
    // VS Code hands the contributed defaults to `get` for unset keys (an empty getter does not).
    const pkg = JSON.parse(readFileSync(join(__dirname, "..", "..", "package.json"), "utf8"));
    const props = pkg.contributes.configuration.properties as Record<string, { default?: unknown }>;
    const defaults = Object.fromEntries(Object.entries(props).map(([k, v]) => [k.replace(/^speclsp\./, ""), v.default]));
    const { options, problems } = toServerOptions(getter(defaults));
    assert.deepEqual(problems, []);
    assert.equal(options.lookahead, "tree");
    assert.deepEqual(toServerOptions(getter({ dtype: "int8" })).problems, []);
  });

  it("maps every setting to the option of the same name", () => {
    const { options, problems } = toServerOptions(getter({
      model: " /models/tiny ", device: "cuda:1", dtype: "float32", maxTokens: 32, lookahead: "fixed:8",
      streaming: false, contextBudget: 512, languages: { markdown: false }, enabled: false,
    }));
    assert.deepEqual(problems, []);
    assert.deepEqual(options, {
      model: "/models/tiny", device: "cuda:1", dtype: "float32", maxTokens: 32, lookahead: "fixed:8",
      streaming: false, contextBudget: 512, languages: { markdown: false }, enabled: false,
    });
  });

  it("drops bad values with a message naming the setting", () => {
    const { options, problems } = toServerOptions(getter({
      device: "tpu", dtype: "int4", maxTokens: 0, lookahead: "fixed:", streaming: "yes", contextBudget: 1.5,
      languages: { python: true, markdown: "no" }, model: 42,
    }));
    assert.equal(options.device, "auto");
    assert.equal(options.dtype, "auto");
    assert.equal(options.maxTokens, 64);
    assert.equal(options.lookahead, "tree");
    assert.equal(options.streaming, true);
    assert.equal(options.contextBudget, 2048);
    assert.deepEqual(options.languages, { python: true });
    assert.equal(options.model, undefined);
    for (const key of ["device", "dtype", "maxTokens", "lookahead", "streaming", "contextBudget", "languages.markdown", "model"]) {
      assert.ok(problems.some((p) => p.startsWith(`speclsp.${key}:`)), `no problem reported for ${key}: ${problems.join(" | ")}`);
    }
  });

  it("passes the remote backend's settings, and never echoes a bad apiKeyEnv", () => {
    const { options, problems } = toServerOptions(getter({
      backend: "openai", endpoint: " http://gpu:8000/v1 ", remoteModel: "coder", apiKeyEnv: "TEAM_KEY",
    }));
    assert.equal(options.backend, "openai");
    assert.equal(options.endpoint, "http://gpu:8000/v1");
    assert.equal(options.remoteModel, "coder");
    assert.equal(options.apiKeyEnv, "TEAM_KEY");
    assert.deepEqual(problems, []);
    const bad = toServerOptions(getter({ backend: "gpu", endpoint: "gpu:8000", apiKeyEnv: "sk-secret-123" }));
    assert.equal(bad.options.backend, undefined);
    assert.equal(bad.options.apiKeyEnv, undefined);
    assert.equal(bad.problems.length, 3);
    assert.ok(!bad.problems.join(" ").includes("sk-secret-123"));
  });

  it("expands ~ in the model path", () => {
    assert.equal(toServerOptions(getter({ model: "~/m" }), "/home/u").options.model, "/home/u/m");
    assert.equal(toServerOptions(getter({ model: "qwen2.5-coder-0.5b" }), "/home/u").options.model, "qwen2.5-coder-0.5b");
  });

  it("treats an empty model as the server's default", () => {
    const { options, problems } = toServerOptions(getter({ model: "  " }));
    assert.equal(options.model, undefined);
    assert.deepEqual(problems, []);
  });
});

describe("isLanguageEnabled", () => {
  it("enables everything by default", () => assert.equal(isLanguageEnabled({}, "python"), true));
  it("honours an explicit entry", () => assert.equal(isLanguageEnabled({ markdown: false }, "markdown"), false));
  it("lets '*': false disable all but the languages set true", () => {
    const langs = { "*": false, python: true };
    assert.equal(isLanguageEnabled(langs, "python"), true);
    assert.equal(isLanguageEnabled(langs, "markdown"), false);
  });
});

describe("launch settings", () => {
  it("defaults to --stdio and compares by value", () => {
    const a = toLaunchSettings(getter({}));
    assert.deepEqual(a, { command: "", args: ["--stdio"] });
    assert.equal(sameLaunch(a, toLaunchSettings(getter({ "server.args": ["--stdio"] }))), true);
    assert.equal(sameLaunch(a, toLaunchSettings(getter({ "server.args": ["--stdio", "-v"] }))), false);
    assert.equal(sameLaunch(a, toLaunchSettings(getter({ "server.command": "/x/speclsp" }))), false);
  });
  it("ignores args that are not a list of strings", () => {
    assert.deepEqual(toLaunchSettings(getter({ "server.args": "--stdio -v" })).args, ["--stdio"]);
  });
});

describe("sameOptions", () => {
  it("ignores key order, sees value changes", () => {
    const a = toServerOptions(getter({ languages: { a: true, b: false } })).options;
    const b = { ...a, languages: { b: false, a: true } };
    assert.equal(sameOptions(a, b), true);
    assert.equal(sameOptions(a, { ...a, maxTokens: 10 }), false);
  });
});

import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { environmentCandidates, notFoundMessage, resolveServerCommand, type ServerSearch } from "../src/serverPath";

function search(over: Partial<ServerSearch> = {}): ServerSearch {
  return { configured: "", workspaceFolders: ["/ws"], env: { PATH: "/usr/local/bin:/usr/bin" }, platform: "linux", home: "/home/u", ...over };
}

const files = (...paths: string[]) => (p: string) => paths.includes(p);

describe("resolveServerCommand", () => {
  it("prefers the active Python environment's interpreter", () => {
    const r = resolveServerCommand(search({ interpreter: "/envs/a/bin/python" }),
      files("/envs/a/bin/speclsp", "/ws/.venv/bin/speclsp", "/usr/bin/speclsp"));
    assert.equal(r.command, "/envs/a/bin/speclsp");
  });

  it("then the workspace's .venv, then VIRTUAL_ENV, then PATH", () => {
    assert.equal(resolveServerCommand(search(), files("/ws/.venv/bin/speclsp", "/usr/bin/speclsp")).command, "/ws/.venv/bin/speclsp");
    assert.equal(resolveServerCommand(search({ env: { VIRTUAL_ENV: "/v", PATH: "/usr/bin" } }),
      files("/v/bin/speclsp", "/usr/bin/speclsp")).command, "/v/bin/speclsp");
    assert.equal(resolveServerCommand(search(), files("/usr/bin/speclsp")).command, "/usr/bin/speclsp");
  });

  it("uses a configured path as given, expanding ~ and ${workspaceFolder}", () => {
    assert.equal(resolveServerCommand(search({ configured: "~/bin/speclsp" }), files("/home/u/bin/speclsp")).command, "/home/u/bin/speclsp");
    assert.equal(resolveServerCommand(search({ configured: "${workspaceFolder}/tools/speclsp" }),
      files("/ws/tools/speclsp")).command, "/ws/tools/speclsp");
    assert.equal(resolveServerCommand(search({ configured: "tools/speclsp" }), files("/ws/tools/speclsp")).command, "/ws/tools/speclsp");
  });

  it("looks a configured bare name up on PATH and does not fall back to other places", () => {
    assert.equal(resolveServerCommand(search({ configured: "speclsp-dev" }), files("/usr/bin/speclsp-dev")).command, "/usr/bin/speclsp-dev");
    const r = resolveServerCommand(search({ configured: "/nope/speclsp" }), files("/usr/bin/speclsp"));
    assert.equal(r.command, undefined);
    assert.deepEqual(r.tried, ["/nope/speclsp"]);
  });

  it("uses Scripts\\speclsp.exe on Windows", () => {
    const s = search({ platform: "win32", workspaceFolders: ["C:\\ws"], env: { Path: "C:\\bin" } });
    assert.deepEqual(environmentCandidates(s).slice(0, 1), ["C:\\ws\\.venv\\Scripts\\speclsp.exe"]);
    assert.equal(resolveServerCommand(s, files("C:\\bin\\speclsp.exe")).command, "C:\\bin\\speclsp.exe");
  });

  it("lists every place it looked when nothing is found, and says how to fix it", () => {
    const r = resolveServerCommand(search({ interpreter: "/envs/a/bin/python" }), files());
    assert.equal(r.command, undefined);
    assert.ok(r.tried.includes("/envs/a/bin/speclsp"));
    assert.ok(r.tried.includes("/ws/.venv/bin/speclsp"));
    assert.ok(r.tried.includes("PATH (speclsp)"));
    const msg = notFoundMessage(r, "");
    assert.match(msg, /pip install/);
    assert.match(msg, /speclsp\.server\.command/);
    assert.match(notFoundMessage({ tried: ["/x"] }, "/x"), /"\/x" \(setting speclsp\.server\.command\) was not found/);
  });
});

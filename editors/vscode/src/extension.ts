/**
 * The speclsp VS Code extension: starts `speclsp --stdio` through vscode-languageclient and
 * shows its inline completions as ghost text that grows while the model writes it.
 *
 * This file is the VS Code glue; the decisions live in pure modules that are unit-tested
 * without VS Code: settings → server options (config.ts), finding the server
 * (serverPath.ts), streamed suggestions (suggestions.ts), status text and the statistics
 * page (stats.ts). The wire protocol is docs/protocol.md.
 */

import * as fs from "node:fs";
import * as os from "node:os";
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  InlineCompletionRequest,
  LanguageClient,
  State,
  type ClientCapabilities,
  type FeatureState,
  type InlineCompletionItem as LspInlineCompletionItem,
  type LanguageClientOptions,
  type ServerOptions as LcServerOptions,
  type StaticFeature,
} from "vscode-languageclient/node";

import {
  isLanguageEnabled,
  sameLaunch,
  sameOptions,
  toLaunchSettings,
  toServerOptions,
  type LaunchSettings,
  type ServerOptions,
} from "./config";
import { notFoundMessage, resolveServerCommand } from "./serverPath";
import { statusBarText, renderStatsHtml, type ServerStats, type StatusView } from "./stats";
import { isInlineUpdate, SuggestionStore, type EditorState, type Pos, type Shown } from "./suggestions";

const UPDATE = "speclsp/inlineCompletionUpdate";
const STATUS = "speclsp/status";
const STATS = "speclsp/stats";
const DID_ACCEPT = "speclsp/didAccept";

type AcceptKind = "full" | "word" | "line";

/**
 * Announces inline completion (the provider below is ours, not vscode-languageclient's, whose
 * inline completion feature is still "proposed" there) and opts in to streamed suggestions
 * (docs/protocol.md, "Extensions").
 */
class SpeclspCapabilities implements StaticFeature {
  fillClientCapabilities(capabilities: ClientCapabilities): void {
    const textDocument = (capabilities.textDocument ?? {}) as Record<string, unknown>;
    textDocument.inlineCompletion = { dynamicRegistration: false };
    capabilities.textDocument = textDocument;
    const experimental = (capabilities.experimental ?? {}) as Record<string, unknown>;
    experimental.speclsp = { inlineCompletionUpdate: true };
    capabilities.experimental = experimental;
  }
  initialize(): void {}
  getState(): FeatureState {
    return { kind: "static" };
  }
  clear(): void {}
}

function isExecutable(p: string): boolean {
  try {
    const st = fs.statSync(p);
    if (!st.isFile()) return false;
    if (process.platform !== "win32") fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function asPos(p: vscode.Position): Pos {
  return { line: p.line, character: p.character };
}

function toRange(r: { start: Pos; end: Pos }): vscode.Range {
  return new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);
}

class Speclsp implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private readonly output = vscode.window.createOutputChannel("speclsp", { log: true });
  private readonly serverOutput = vscode.window.createOutputChannel("speclsp server", { log: true });
  private readonly statusItem = vscode.window.createStatusBarItem("speclsp.status", vscode.StatusBarAlignment.Right, 100);
  private readonly store = new SuggestionStore();
  private readonly disposables: vscode.Disposable[] = [];
  /** The server request in flight per document (protocol uri): a new one cancels it. */
  private readonly inflight = new Map<string, vscode.CancellationTokenSource>();
  /** Providers waiting for the first streamed text of their request, per document. */
  private readonly waiters = new Map<string, Array<() => void>>();
  /** Text of the ghost text last handed to VS Code per document, to re-trigger only on growth. */
  private readonly lastShown = new Map<string, string>();
  /** Document version at which the user dismissed the suggestion (Esc): updates of the
   * generation still running for that version must not bring it back. */
  private readonly dismissedAt = new Map<string, number>();
  private readonly refreshTimers = new Map<string, NodeJS.Timeout>();
  /** Documents whose ghost text is being re-shown for a streamed update: what VS Code asks
   * for meanwhile is answered from the store only, never with a new request (after Esc or an
   * accept the store is empty, and a request would bring the suggestion back). */
  private readonly refreshing = new Set<string>();
  private statsTimer: NodeJS.Timeout | undefined;
  private statsPanel: vscode.WebviewPanel | undefined;
  private options: ServerOptions;
  private launch: LaunchSettings;
  private shownProblems = new Set<string>();
  private status: StatusView = { phase: "starting" };
  private stats: ServerStats | undefined;

  constructor() {
    this.options = this.readOptions();
    this.launch = toLaunchSettings(this.setting);
    this.statusItem.name = "speclsp";
    this.statusItem.command = "speclsp.showMenu";
    this.disposables.push(this.output, this.serverOutput, this.statusItem);
    this.renderStatus();
    this.statusItem.show();
  }

  private readonly setting = (key: string): unknown => vscode.workspace.getConfiguration("speclsp").get(key);

  private readOptions(): ServerOptions {
    const { options, problems } = toServerOptions(this.setting, os.homedir());
    for (const p of problems) {
      if (this.shownProblems.has(p)) continue;
      this.shownProblems.add(p);
      this.output.warn(p);
      void vscode.window.showWarningMessage(p);
    }
    return options;
  }

  // --- lifecycle ---------------------------------------------------------------------------

  registerCommands(): void {
    const reg = (id: string, fn: (...args: unknown[]) => unknown) =>
      this.disposables.push(vscode.commands.registerCommand(id, fn));
    reg("speclsp.showMenu", () => this.showMenu());
    reg("speclsp.showStats", () => this.showStats());
    reg("speclsp.toggle", () => this.toggle());
    reg("speclsp.restart", () => this.restart());
    reg("speclsp.showLog", () => this.serverOutput.show(true));
    reg("speclsp.acceptNextWord", () => this.acceptPartial("word"));
    reg("speclsp.acceptNextLine", () => this.acceptPartial("line"));
    reg("speclsp.dismiss", () => this.dismiss());
    reg("speclsp._accepted", (uri, text) => this.accepted(String(uri), String(text), "full"));
    this.disposables.push(vscode.workspace.onDidChangeConfiguration((e) => this.onConfigurationChanged(e)));
    this.disposables.push(vscode.languages.registerInlineCompletionItemProvider(
      [{ scheme: "file" }, { scheme: "untitled" }],
      { provideInlineCompletionItems: (document, position, ctx, token) => this.provide(document, position, ctx, token) },
    ));
    this.disposables.push(vscode.workspace.onDidCloseTextDocument((d) => this.forget(this.uriOf(d))));
  }

  async start(): Promise<void> {
    const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === "file").map((f) => f.uri.fsPath);
    const resolved = resolveServerCommand({
      configured: this.launch.command,
      interpreter: await this.pythonInterpreter(),
      workspaceFolders: folders,
      env: process.env,
      platform: process.platform,
      home: os.homedir(),
    }, isExecutable);
    if (!resolved.command) {
      const msg = notFoundMessage(resolved, this.launch.command);
      this.fail(msg);
      void this.offerFix(msg);
      return;
    }
    this.output.info(`starting ${resolved.command} ${this.launch.args.join(" ")}`);
    const serverOptions: LcServerOptions = {
      command: resolved.command,
      args: this.launch.args,
      options: { env: { ...process.env, PYTHONUNBUFFERED: "1" } },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
      initializationOptions: { ...this.options },
      outputChannel: this.serverOutput,
      traceOutputChannel: this.serverOutput,
      // Errors are reported through the status bar and one message; the log has the rest.
      revealOutputChannelOn: 4 /* RevealOutputChannelOn.Never */,
      middleware: {
        // The server pulls `speclsp` (docs/protocol.md options), not the raw settings.
        workspace: {
          configuration: async (params, token, next) => {
            const result = await next(params, token);
            if (!Array.isArray(result)) return result;
            return result.map((r, i) => (params.items[i]?.section === "speclsp" ? { ...this.options } : r));
          },
        },
      },
    };
    const client = new LanguageClient("speclsp", "speclsp", serverOptions, clientOptions);
    client.registerFeature(new SpeclspCapabilities());
    this.client = client;
    this.disposables.push(client.onDidChangeState((e) => {
      if (client !== this.client) return;
      if (e.newState === State.Starting) this.setPhase("starting");
      else if (e.newState === State.Stopped && this.status.phase !== "error") this.setPhase("stopped");
    }));
    client.onNotification(UPDATE, (params: unknown) => this.onUpdate(params));
    client.onNotification(STATUS, (params: unknown) => this.onStatus(params));
    this.setPhase("starting");
    try {
      await client.start();
    } catch (err) {
      if (client !== this.client) return;
      const msg = `speclsp: could not start the server (${resolved.command} ${this.launch.args.join(" ")}): ` +
        `${err instanceof Error ? err.message : String(err)}. Check that it runs in a terminal ` +
        "(speclsp --version), then see the \"speclsp server\" output for details, or set speclsp.server.command.";
      this.fail(msg);
      void this.offerFix(msg);
      return;
    }
    if (client !== this.client) return;
    const caps = client.initializeResult?.capabilities.experimental as Record<string, unknown> | undefined;
    this.output.info(`server started; experimental capabilities ${JSON.stringify(caps ?? {})}`);
    // Until the server says otherwise (speclsp/status), it is loading the model.
    if (this.status.phase === "starting") this.setPhase("loading");
    this.updateContext();
    this.refreshStatsSoon(0);
  }

  async restart(): Promise<void> {
    const old = this.client;
    this.client = undefined;
    this.resetSuggestions();
    if (old) {
      try {
        await old.stop(5000);
      } catch (err) {
        this.output.warn(`stopping the server: ${String(err)}`);
      }
    }
    this.status = { phase: "starting" };
    await this.start();
  }

  private fail(message: string): void {
    this.output.error(message);
    this.status = { phase: "error", message };
    this.renderStatus();
    this.updateContext();
  }

  private async offerFix(message: string): Promise<void> {
    const pick = await vscode.window.showErrorMessage(message, "Open Settings", "Show Log", "Retry");
    if (pick === "Open Settings") await vscode.commands.executeCommand("workbench.action.openSettings", "speclsp.server");
    else if (pick === "Show Log") this.serverOutput.show(true);
    else if (pick === "Retry") await this.restart();
  }

  private async pythonInterpreter(): Promise<string | undefined> {
    // The Python extension's API, if it is installed; no hard dependency on it.
    try {
      const ext = vscode.extensions.getExtension("ms-python.python");
      if (!ext) return undefined;
      const api = (ext.isActive ? ext.exports : await ext.activate()) as {
        environments?: { getActiveEnvironmentPath(resource?: vscode.Uri): { path: string } | undefined };
      } | undefined;
      const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
      const p = api?.environments?.getActiveEnvironmentPath(folder)?.path;
      // A path to a directory is a venv's prefix; a file is the interpreter.
      if (p && fs.existsSync(p) && fs.statSync(p).isDirectory()) {
        return process.platform === "win32" ? `${p}\\python.exe` : `${p}/bin/python`;
      }
      return p;
    } catch (err) {
      this.output.warn(`Python extension API: ${String(err)}`);
      return undefined;
    }
  }

  // --- configuration ----------------------------------------------------------------------

  private onConfigurationChanged(e: vscode.ConfigurationChangeEvent): void {
    if (!e.affectsConfiguration("speclsp")) return;
    const launch = toLaunchSettings(this.setting);
    const options = this.readOptions();
    if (!sameLaunch(launch, this.launch)) {
      this.launch = launch;
      this.options = options;
      this.output.info("server command changed: restarting");
      void this.restart();
      return;
    }
    const changed = !sameOptions(options, this.options);
    this.options = options;
    if (!options.enabled) this.resetSuggestions();
    this.renderStatus();
    this.updateContext();
    if (changed && this.client?.isRunning()) {
      this.output.info(`configuration: ${JSON.stringify(options)}`);
      void this.client.sendNotification(DidChangeConfigurationNotification.type, { settings: { speclsp: options } });
    }
    void this.renderStatsPanel();
  }

  private async toggle(): Promise<void> {
    const cfg = vscode.workspace.getConfiguration("speclsp");
    const inspect = cfg.inspect<boolean>("enabled");
    const target = inspect?.workspaceFolderValue !== undefined ? vscode.ConfigurationTarget.WorkspaceFolder
      : inspect?.workspaceValue !== undefined ? vscode.ConfigurationTarget.Workspace
        : vscode.ConfigurationTarget.Global;
    await cfg.update("enabled", !this.options.enabled, target);
  }

  private updateContext(): void {
    const active = this.options.enabled && !!this.client?.isRunning();
    void vscode.commands.executeCommand("setContext", "speclsp.active", active);
  }

  // --- inline completions -----------------------------------------------------------------

  private uriOf(document: vscode.TextDocument): string {
    return this.client ? this.client.code2ProtocolConverter.asUri(document.uri) : document.uri.toString();
  }

  private stateOf(document: vscode.TextDocument, position: vscode.Position): EditorState {
    return {
      uri: this.uriOf(document),
      version: document.version,
      cursor: asPos(position),
      lineText: document.lineAt(position.line).text,
    };
  }

  private streamingActive(): boolean {
    const caps = this.client?.initializeResult?.capabilities.experimental as
      { speclsp?: { inlineCompletionUpdate?: boolean } } | undefined;
    return this.options.streaming && caps?.speclsp?.inlineCompletionUpdate === true;
  }

  private async provide(document: vscode.TextDocument, position: vscode.Position,
    context: vscode.InlineCompletionContext, token: vscode.CancellationToken): Promise<vscode.InlineCompletionItem[] | undefined> {
    if (!this.options.enabled || !isLanguageEnabled(this.options.languages, document.languageId)) return undefined;
    const state = this.stateOf(document, position);
    // Dismissed (Esc) at this version: an automatic ask still pending from the last key (VS
    // Code's own, debounced) must not bring it back from the server's cache. A new key, or
    // Alt+\, asks again.
    if (this.dismissedAt.get(state.uri) === state.version &&
      context.triggerKind === vscode.InlineCompletionTriggerKind.Automatic) return undefined;
    // The stream (or an earlier answer) already has text that fits: show it at once.
    let shown = this.store.lookup(state);
    if (shown) {
      // Typed into a suggestion still being written: subscribe to the rest of it.
      if (this.store.needsSubscription(state)) void this.request(document, position, context, state);
    } else {
      if (this.refreshing.has(state.uri)) return undefined; // a refresh shows what the stream has
      const response = this.request(document, position, context, state);
      if (!response) return undefined;
      await this.firstText(state.uri, response, token);
      if (token.isCancellationRequested || document.version !== state.version) return undefined;
      shown = this.store.lookup(state);
    }
    if (!shown) return undefined;
    this.lastShown.set(state.uri, shown.insertText);
    return [this.toItem(state.uri, shown)];
  }

  private toItem(uri: string, shown: Shown): vscode.InlineCompletionItem {
    return new vscode.InlineCompletionItem(shown.insertText, toRange(shown.range), {
      title: "speclsp: accepted",
      command: "speclsp._accepted",
      arguments: [uri, shown.remaining],
    });
  }

  /**
   * Ask the server for a suggestion at `state`; the answer and the streamed updates go to the
   * store. Not tied to VS Code's cancellation token: a keystroke cancels VS Code's call, but
   * the generation must go on when the user types into the suggestion, and the server itself
   * supersedes older requests for a document. Explicit dismissal cancels it.
   */
  private request(document: vscode.TextDocument, position: vscode.Position,
    context: vscode.InlineCompletionContext, state: EditorState): Promise<void> | undefined {
    const client = this.client;
    if (!client?.isRunning()) return undefined;
    const uri = state.uri;
    const cts = new vscode.CancellationTokenSource();
    this.inflight.set(uri, cts);
    this.store.beginRequest(state);
    const params = client.code2ProtocolConverter.asInlineCompletionParams(document, position, context);
    const t0 = Date.now();
    return client.sendRequest(InlineCompletionRequest.type, params, cts.token).then((result) => {
      const items: LspInlineCompletionItem[] = Array.isArray(result) ? result : result?.items ?? [];
      const final = !this.streamingActive();
      this.output.trace(`inlineCompletion ${uri}@${state.version}: ${items.length} item(s) in ${Date.now() - t0} ms`);
      const first = items[0];
      if (first) {
        const text = typeof first.insertText === "string" ? first.insertText : first.insertText.value;
        const at = first.range ? first.range.start : state.cursor;
        if (this.store.applyResult(uri, state.version, at, text, final)) this.onSuggestionChanged(uri);
      }
      if (final) this.refreshStatsSoon();
    }, (err: unknown) => {
      if (!cts.token.isCancellationRequested) this.output.warn(`inlineCompletion failed: ${String(err)}`);
    }).finally(() => {
      if (this.inflight.get(uri) === cts) this.inflight.delete(uri);
      cts.dispose();
    });
  }

  /** Wait for the server's answer or the first streamed text for `uri`, or cancellation. */
  private async firstText(uri: string, response: Promise<void>, token: vscode.CancellationToken): Promise<void> {
    if (token.isCancellationRequested) return;
    await new Promise<void>((resolve) => {
      let settled = false;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        sub.dispose();
        const list = this.waiters.get(uri);
        const i = list ? list.indexOf(finish) : -1;
        if (list && i >= 0) list.splice(i, 1);
        if (list && list.length === 0) this.waiters.delete(uri);
        resolve();
      };
      const sub = token.onCancellationRequested(finish);
      this.waiters.set(uri, [...(this.waiters.get(uri) ?? []), finish]);
      void response.then(finish);
    });
  }

  private onUpdate(params: unknown): void {
    if (!isInlineUpdate(params)) {
      this.output.warn(`malformed ${UPDATE}: ${JSON.stringify(params)}`);
      return;
    }
    if (params.done) this.refreshStatsSoon();
    if (!this.options.enabled) return;
    if (this.dismissedAt.get(params.uri) === params.version) return;
    if (this.store.applyUpdate(params)) this.onSuggestionChanged(params.uri);
  }

  private onSuggestionChanged(uri: string): void {
    const waiting = this.waiters.get(uri);
    if (waiting && waiting.length) {
      this.waiters.delete(uri);
      for (const w of waiting) w();
      return;
    }
    this.scheduleRefresh(uri);
  }

  /** Re-trigger inline suggestions (at most every 40 ms) so VS Code asks for the grown text. */
  private scheduleRefresh(uri: string): void {
    if (this.refreshTimers.has(uri)) return;
    this.refreshTimers.set(uri, setTimeout(() => {
      this.refreshTimers.delete(uri);
      const editor = vscode.window.activeTextEditor;
      if (!editor || this.uriOf(editor.document) !== uri) return;
      const shown = this.store.lookup(this.stateOf(editor.document, editor.selection.active));
      if (!shown || shown.insertText === this.lastShown.get(uri)) return;
      // A trigger alone does not replace a suggestion VS Code already shows (it keeps the
      // shown item while it still fits: seen in code-server 4.100 / VS Code 1.100, the ghost
      // text stayed at the first streamed words): hide it, then ask again.
      this.refreshing.add(uri);
      void Promise.resolve(vscode.commands.executeCommand("editor.action.inlineSuggest.hide"))
        .then(() => vscode.commands.executeCommand("editor.action.inlineSuggest.trigger"))
        .finally(() => this.refreshing.delete(uri));
    }, 40));
  }

  private accepted(uri: string, text: string, kind: AcceptKind): void {
    if (kind === "full") this.forget(uri);
    if (text === "" || !this.client?.isRunning()) return;
    this.output.trace(`accepted (${kind}) ${JSON.stringify(text)}`);
    void this.client.sendNotification(DID_ACCEPT, { uri, text, kind });
  }

  /** Next word / next line through VS Code's own commands, reporting what they inserted. */
  private async acceptPartial(kind: "word" | "line"): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const command = kind === "word" ? "editor.action.inlineSuggest.acceptNextWord" : "editor.action.inlineSuggest.acceptNextLine";
    if (!editor) {
      await vscode.commands.executeCommand(command);
      return;
    }
    const doc = editor.document;
    const before = doc.getText();
    const inserted: string[] = [];
    const sub = vscode.workspace.onDidChangeTextDocument((e) => {
      if (e.document === doc) for (const c of e.contentChanges) inserted.push(c.text);
    });
    try {
      await vscode.commands.executeCommand(command);
      if (inserted.length === 0 && doc.getText() === before) await new Promise((r) => setTimeout(r, 50));
    } finally {
      sub.dispose();
    }
    this.accepted(this.uriOf(doc), inserted.join(""), kind);
  }

  private async dismiss(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (editor) {
      const uri = this.uriOf(editor.document);
      this.inflight.get(uri)?.cancel();
      this.forget(uri);
      this.dismissedAt.set(uri, editor.document.version);
    }
    await vscode.commands.executeCommand("editor.action.inlineSuggest.hide");
  }

  private forget(uri: string): void {
    this.store.clear(uri);
    this.lastShown.delete(uri);
  }

  private resetSuggestions(): void {
    for (const cts of this.inflight.values()) cts.cancel();
    this.inflight.clear();
    for (const t of this.refreshTimers.values()) clearTimeout(t);
    this.refreshTimers.clear();
    for (const list of this.waiters.values()) for (const w of list) w();
    this.waiters.clear();
    for (const uri of [...this.lastShown.keys()]) this.forget(uri);
  }

  // --- status and statistics --------------------------------------------------------------

  private onStatus(params: unknown): void {
    if (typeof params !== "object" || params === null) return;
    const p = params as Record<string, unknown>;
    const state = typeof p.state === "string" ? p.state : "";
    const message = typeof p.message === "string" ? p.message : undefined;
    this.status = {
      ...this.status,
      phase: state === "ready" ? "ready" : state === "error" ? "error" : "loading",
      message,
      model: typeof p.model === "string" ? p.model : this.status.model,
      device: typeof p.device === "string" ? p.device : this.status.device,
    };
    this.output.info(`status: ${state}${message ? ` — ${message}` : ""}`);
    // An error is shown by the server's own window/showMessage (one popup per fault); here
    // it turns the status bar red, and its click offers the log and the settings.
    if (state === "ready") this.refreshStatsSoon(0);
    this.renderStatus();
  }

  private setPhase(phase: StatusView["phase"]): void {
    this.status = { ...this.status, phase };
    this.renderStatus();
    this.updateContext();
  }

  private renderStatus(): void {
    const view: StatusView = this.options.enabled || this.status.phase === "error"
      ? { ...this.status, stats: this.stats } : { phase: "disabled" };
    const t = statusBarText(view);
    this.statusItem.text = t.text;
    this.statusItem.tooltip = t.tooltip;
    this.statusItem.backgroundColor = t.severity
      ? new vscode.ThemeColor(t.severity === "error" ? "statusBarItem.errorBackground" : "statusBarItem.warningBackground")
      : undefined;
  }

  private refreshStatsSoon(delayMs = 250): void {
    if (this.statsTimer) clearTimeout(this.statsTimer);
    this.statsTimer = setTimeout(() => {
      this.statsTimer = undefined;
      void this.fetchStats();
    }, delayMs);
  }

  private async fetchStats(): Promise<void> {
    const client = this.client;
    if (!client?.isRunning()) return;
    try {
      const stats = await client.sendRequest<ServerStats>(STATS, {});
      if (stats && typeof stats === "object") {
        this.stats = stats;
        if (stats.state === "ready" && this.status.phase !== "ready") this.status = { ...this.status, phase: "ready" };
        this.renderStatus();
        await this.renderStatsPanel();
      }
    } catch (err) {
      this.output.trace(`${STATS}: ${String(err)}`);
    }
  }

  private async showMenu(): Promise<void> {
    type Item = vscode.QuickPickItem & { run: () => unknown };
    const items: Item[] = [
      { label: "$(graph) Show statistics", run: () => this.showStats() },
      this.options.enabled
        ? { label: "$(circle-slash) Disable completions", run: () => this.toggle() }
        : { label: "$(check) Enable completions", run: () => this.toggle() },
      { label: "$(debug-restart) Restart server", run: () => this.restart() },
      { label: "$(output) Show server log", run: () => this.serverOutput.show(true) },
      { label: "$(gear) Open settings", run: () => vscode.commands.executeCommand("workbench.action.openSettings", "speclsp") },
    ];
    const pick = await vscode.window.showQuickPick(items, { title: "speclsp", placeHolder: statusBarText({ ...this.status, stats: this.stats }).tooltip.split("\n")[0] });
    await pick?.run();
  }

  private async showStats(): Promise<void> {
    if (this.statsPanel) {
      this.statsPanel.reveal();
    } else {
      this.statsPanel = vscode.window.createWebviewPanel("speclsp.stats", "speclsp statistics", vscode.ViewColumn.Beside,
        { enableScripts: false });
      this.statsPanel.onDidDispose(() => (this.statsPanel = undefined));
    }
    await this.renderStatsPanel();
    await this.fetchStats();
  }

  private async renderStatsPanel(): Promise<void> {
    if (!this.statsPanel) return;
    this.statsPanel.webview.html = renderStatsHtml(this.stats, {
      enabled: this.options.enabled,
      error: this.status.phase === "error" ? this.status.message : undefined,
      cspSource: this.statsPanel.webview.cspSource,
    });
  }

  async dispose(): Promise<void> {
    this.resetSuggestions();
    if (this.statsTimer) clearTimeout(this.statsTimer);
    this.statsPanel?.dispose();
    const client = this.client;
    this.client = undefined;
    for (const d of this.disposables) d.dispose();
    if (client) await client.stop(2000).catch(() => undefined);
  }
}

let instance: Speclsp | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  instance = new Speclsp();
  instance.registerCommands();
  context.subscriptions.push({ dispose: () => void instance?.dispose() });
  await instance.start();
}

export async function deactivate(): Promise<void> {
  const s = instance;
  instance = undefined;
  await s?.dispose();
}

/**
 * The suggestion being written for each document: what the last request asked for, the
 * text the server has streamed so far (`speclsp/inlineCompletionUpdate`, docs/protocol.md),
 * and whether it is finished. `lookup` answers "what ghost text fits the editor now?",
 * including after the user typed the first characters of the suggestion.
 *
 * Pure (no `vscode` import): positions are plain {line, character} in UTF-16 code units.
 */

export interface Pos {
  line: number;
  character: number;
}

/** `params` of `speclsp/inlineCompletionUpdate`. */
export interface InlineUpdate {
  uri: string;
  version: number;
  position: Pos;
  /** The whole suggestion so far, to insert at `position` (not a delta). */
  text: string;
  done: boolean;
  requestId?: number | string;
}

/** What the editor looks like now, for one document. */
export interface EditorState {
  uri: string;
  version: number;
  cursor: Pos;
  /** Full text of the cursor's line. */
  lineText: string;
}

/** Ghost text to show: replace `range` with `insertText`. */
export interface Shown {
  insertText: string;
  range: { start: Pos; end: Pos };
  /** The text the user has not typed yet (what Tab inserts). */
  remaining: string;
  done: boolean;
}

interface Request {
  version: number;
  cursor: Pos;
  lineText: string;
}

interface Suggestion {
  version: number;
  position: Pos;
  /** The line's text before `position` when the request was made. */
  linePrefix: string;
  text: string;
  done: boolean;
}

/** Type guard for the notification's params (the server is another process: check it). */
export function isInlineUpdate(v: unknown): v is InlineUpdate {
  if (typeof v !== "object" || v === null) return false;
  const u = v as Record<string, unknown>;
  const p = u.position as Record<string, unknown> | undefined;
  return typeof u.uri === "string" && typeof u.version === "number" && typeof u.text === "string" &&
    typeof u.done === "boolean" && typeof p === "object" && p !== null &&
    typeof p.line === "number" && typeof p.character === "number";
}

export class SuggestionStore {
  private readonly requests = new Map<string, Request>();
  private readonly suggestions = new Map<string, Suggestion>();

  /** A request is going to the server for `state`: later updates for it are accepted. */
  beginRequest(state: EditorState): void {
    this.requests.set(state.uri, { version: state.version, cursor: state.cursor, lineText: state.lineText });
    const s = this.suggestions.get(state.uri);
    if (s && !this.fits(s, state)) this.suggestions.delete(state.uri);
  }

  /**
   * Record a streamed update. Returns true when it changed the suggestion of the document's
   * latest request (so the ghost text should be refreshed); stale or malformed updates
   * (another version, another line than the request) are ignored.
   */
  applyUpdate(u: InlineUpdate): boolean {
    return this.record(u.uri, u.version, u.position, u.text, u.done, false);
  }

  /**
   * Record the response of `textDocument/inlineCompletion`. With streaming on, the response
   * may carry the text so far and updates may follow, so `final` says whether this is the
   * end; a response never shortens a longer streamed text it is a prefix of.
   */
  applyResult(uri: string, version: number, position: Pos, text: string, final: boolean): boolean {
    return this.record(uri, version, position, text, final, true);
  }

  private record(uri: string, version: number, position: Pos, text: string, done: boolean, isResult: boolean): boolean {
    const req = this.requests.get(uri);
    if (!req || req.version !== version || req.cursor.line !== position.line) return false;
    if (position.character > req.lineText.length) return false;
    const linePrefix = req.lineText.slice(0, position.character);
    // Updates insert at the cursor, a response's item replaces from the word start: compare
    // them as whole lines (text before the start + suggestion) when they are for one version.
    const old = this.suggestions.get(uri);
    const comparable = old !== undefined && old.version === version && old.position.line === position.line;
    const oldLine = comparable ? old.linePrefix + old.text : undefined;
    const line = linePrefix + text;
    const wasDone = comparable ? old.done : false;
    // A non-final response carries the text as far as it had got; the stream may be ahead.
    if (oldLine !== undefined && isResult && !done && oldLine.startsWith(line)) return false;
    if (oldLine === line && (wasDone || !done)) return false;
    this.suggestions.set(uri, { version, position, linePrefix, text, done: done || wasDone });
    return true;
  }

  /**
   * True when `state` shows a suggestion that is still being written, but not for the state
   * of the latest request: the server streams only to its latest request for the document's
   * current version, so after the user typed into the suggestion a new request must
   * subscribe to the rest (the server answers it from the same generation).
   */
  needsSubscription(state: EditorState): boolean {
    const s = this.suggestions.get(state.uri);
    const req = this.requests.get(state.uri);
    if (!s || s.done || !this.fits(s, state)) return false;
    return !req || req.version !== state.version || req.cursor.line !== state.cursor.line ||
      req.cursor.character !== state.cursor.character;
  }

  /** True when the latest request for `uri` has no finished suggestion yet. */
  isStreaming(uri: string): boolean {
    const s = this.suggestions.get(uri);
    return this.requests.has(uri) && (!s || !s.done);
  }

  /** The ghost text that fits `state`, or undefined. */
  lookup(state: EditorState): Shown | undefined {
    const s = this.suggestions.get(state.uri);
    if (!s || !this.fits(s, state)) return undefined;
    const typed = state.lineText.slice(s.position.character, state.cursor.character);
    const remaining = s.text.slice(typed.length);
    if (remaining === "") return undefined;
    return {
      insertText: s.text,
      range: { start: s.position, end: state.cursor },
      remaining,
      done: s.done,
    };
  }

  /** Forget the suggestion for `uri` (accepted, dismissed, closed). */
  clear(uri: string): void {
    this.suggestions.delete(uri);
    this.requests.delete(uri);
  }

  /**
   * The suggestion fits when the cursor is on its line, at or after its start, the line
   * before its start is unchanged, and what was typed since is the suggestion's beginning.
   */
  private fits(s: Suggestion, state: EditorState): boolean {
    if (state.cursor.line !== s.position.line || state.cursor.character < s.position.character) return false;
    if (state.lineText.slice(0, s.position.character) !== s.linePrefix) return false;
    const typed = state.lineText.slice(s.position.character, state.cursor.character);
    return s.text.startsWith(typed);
  }
}

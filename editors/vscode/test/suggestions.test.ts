import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { isInlineUpdate, SuggestionStore, type EditorState, type InlineUpdate } from "../src/suggestions";

const URI = "file:///ws/main.py";

/** Editor state with the cursor at the end of `line` (line 3). */
function at(line: string, version = 1, uri = URI): EditorState {
  return { uri, version, cursor: { line: 3, character: line.length }, lineText: line };
}

function update(text: string, over: Partial<InlineUpdate> = {}): InlineUpdate {
  return { uri: URI, version: 1, position: { line: 3, character: 10 }, text, done: false, requestId: 7, ...over };
}

describe("SuggestionStore", () => {
  it("shows each streamed update as the whole suggestion so far", () => {
    const s = new SuggestionStore();
    const state = at("def add(a,");
    s.beginRequest(state);
    assert.equal(s.lookup(state), undefined);
    assert.equal(s.applyUpdate(update(" b")), true);
    assert.deepEqual(s.lookup(state), {
      insertText: " b", remaining: " b", done: false,
      range: { start: { line: 3, character: 10 }, end: { line: 3, character: 10 } },
    });
    assert.equal(s.applyUpdate(update(" b):\n    return")), true);
    assert.equal(s.lookup(state)?.insertText, " b):\n    return");
    assert.equal(s.isStreaming(URI), true);
    assert.equal(s.applyUpdate(update(" b):\n    return a + b", { done: true })), true);
    assert.equal(s.lookup(state)?.done, true);
    assert.equal(s.isStreaming(URI), false);
  });

  it("reports no change for a repeated update", () => {
    const s = new SuggestionStore();
    s.beginRequest(at("def add(a,"));
    assert.equal(s.applyUpdate(update(" b")), true);
    assert.equal(s.applyUpdate(update(" b")), false);
    assert.equal(s.applyUpdate(update(" b", { done: true })), true);
    assert.equal(s.applyUpdate(update(" b", { done: true })), false);
  });

  it("ignores updates for another version, document or line than the latest request", () => {
    const s = new SuggestionStore();
    s.beginRequest(at("def add(a,", 2));
    assert.equal(s.applyUpdate(update(" b", { version: 1 })), false);
    assert.equal(s.applyUpdate(update(" b", { version: 2, uri: "file:///other.py" })), false);
    assert.equal(s.applyUpdate(update(" b", { version: 2, position: { line: 4, character: 0 } })), false);
    assert.equal(s.applyUpdate(update(" b", { version: 2, position: { line: 3, character: 99 } })), false);
    assert.equal(s.lookup(at("def add(a,", 2)), undefined);
  });

  it("keeps showing the rest while the user types the suggestion's first characters", () => {
    const s = new SuggestionStore();
    s.beginRequest(at("def add(a,"));
    s.applyUpdate(update(" b):"));
    const typed = at("def add(a, b", 3);
    assert.deepEqual(s.lookup(typed), {
      insertText: " b):", remaining: "):", done: false,
      range: { start: { line: 3, character: 10 }, end: { line: 3, character: 12 } },
    });
    // The stream goes on for the original request and still fits the typed state.
    s.applyUpdate(update(" b):\n    pass"));
    assert.equal(s.lookup(typed)?.remaining, "):\n    pass");
  });

  it("drops the suggestion when what was typed departs from it", () => {
    const s = new SuggestionStore();
    s.beginRequest(at("def add(a,"));
    s.applyUpdate(update(" b):"));
    assert.equal(s.lookup(at("def add(a, c", 3)), undefined);
    assert.equal(s.lookup(at("def add(x,", 3)), undefined, "text before the suggestion changed");
    assert.equal(s.lookup({ ...at("def add(a,"), cursor: { line: 4, character: 0 } }), undefined, "another line");
    assert.equal(s.lookup(at("def add(a, b):", 4)), undefined, "typed all of it");
  });

  it("a new request that does not fit replaces the old suggestion", () => {
    const s = new SuggestionStore();
    s.beginRequest(at("def add(a,"));
    s.applyUpdate(update(" b):"));
    s.beginRequest(at("def sub(", 5));
    assert.equal(s.lookup(at("def sub(", 5)), undefined);
    assert.equal(s.applyUpdate(update(" b):\n", { version: 1 })), false, "update of the old request");
  });

  it("a range from the word start, whose text includes the word, fits", () => {
    const s = new SuggestionStore();
    const state = at("    ret");
    s.beginRequest(state);
    assert.equal(s.applyResult(URI, 1, { line: 3, character: 4 }, "return a + b", true), true);
    const shown = s.lookup(state);
    assert.equal(shown?.remaining, "urn a + b");
    assert.deepEqual(shown?.range, { start: { line: 3, character: 4 }, end: { line: 3, character: 7 } });
  });

  it("a non-final response never shortens the streamed text; a final one is the answer", () => {
    const s = new SuggestionStore();
    const state = at("def add(a,");
    s.beginRequest(state);
    s.applyUpdate(update(" b):\n    return"));
    assert.equal(s.applyResult(URI, 1, { line: 3, character: 10 }, " b):", false), false);
    assert.equal(s.lookup(state)?.insertText, " b):\n    return");
    assert.equal(s.applyResult(URI, 1, { line: 3, character: 10 }, " b):", true), true);
    assert.equal(s.lookup(state)?.insertText, " b):");
    assert.equal(s.lookup(state)?.done, true);
  });

  it("after typing into a suggestion still being written, asks to subscribe to the rest", () => {
    const s = new SuggestionStore();
    const first = at("def add(a,");
    s.beginRequest(first);
    s.applyUpdate(update(" b):"));
    assert.equal(s.needsSubscription(first), false, "the latest request is this state");
    const typed = at("def add(a, b", 3);
    assert.equal(s.needsSubscription(typed), true);
    // The new request streams the rest from its own cursor (what the server does).
    s.beginRequest(typed);
    assert.equal(s.needsSubscription(typed), false);
    assert.equal(s.lookup(typed)?.remaining, "):", "the old text still shows until the stream speaks");
    assert.equal(s.applyUpdate(update("):\n    pass", { version: 3, position: { line: 3, character: 12 } })), true);
    assert.equal(s.lookup(typed)?.remaining, "):\n    pass");
    s.applyUpdate(update("):\n    pass", { version: 3, position: { line: 3, character: 12 }, done: true }));
    assert.equal(s.needsSubscription(at("def add(a, b)", 4)), false, "done: nothing to subscribe to");
  });

  it("a response from the word start equal to the streamed text is no change", () => {
    const s = new SuggestionStore();
    const state = at("    ret");
    s.beginRequest(state);
    assert.equal(s.applyUpdate(update("urn a", { position: { line: 3, character: 7 } })), true);
    assert.equal(s.applyResult(URI, 1, { line: 3, character: 4 }, "return a", false), false);
    assert.equal(s.applyResult(URI, 1, { line: 3, character: 4 }, "ret", false), false, "behind the stream");
    assert.equal(s.lookup(state)?.remaining, "urn a");
  });

  it("an empty suggestion shows nothing", () => {
    const s = new SuggestionStore();
    const state = at("x = ");
    s.beginRequest(state);
    s.applyResult(URI, 1, { line: 3, character: 4 }, "", true);
    assert.equal(s.lookup(state), undefined);
  });

  it("clear forgets the request and its suggestion", () => {
    const s = new SuggestionStore();
    s.beginRequest(at("def add(a,"));
    s.applyUpdate(update(" b"));
    s.clear(URI);
    assert.equal(s.lookup(at("def add(a,")), undefined);
    assert.equal(s.applyUpdate(update(" b):")), false);
  });
});

describe("isInlineUpdate", () => {
  it("accepts the protocol's shape and rejects others", () => {
    assert.equal(isInlineUpdate(update("x")), true);
    assert.equal(isInlineUpdate({ ...update("x"), requestId: undefined }), true);
    assert.equal(isInlineUpdate({ ...update("x"), position: { line: "3", character: 0 } }), false);
    assert.equal(isInlineUpdate({ ...update("x"), done: "no" }), false);
    assert.equal(isInlineUpdate(null), false);
    assert.equal(isInlineUpdate("x"), false);
  });
});

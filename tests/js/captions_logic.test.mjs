// node --test tests/js/ : the Timed Captions widget's pure logic (web/captions_logic.js), bars moved with
// web/timeline_logic.js as the timeline's are.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as K from "../../web/captions_logic.js";
import * as T from "../../web/timeline_logic.js";

const F = 17;
const FPS = 8; // 2.125 s, snap every 0.5 s

test("serialise and parse round trip, extra fields dropped, empty text kept while typing", () => {
  const caps = [{ text: "a ring rolls in", start: 0, end: 1, junk: 1 }, { text: "", start: 1, end: 2.125 }];
  const text = K.serializeCaptions(caps);
  assert.deepEqual(JSON.parse(text), {
    version: 1,
    captions: [{ text: "a ring rolls in", start: 0, end: 1 }, { text: "", start: 1, end: 2.125 }],
  });
  assert.deepEqual(K.parseCaptions(text), [{ text: "a ring rolls in", start: 0, end: 1 }, { text: "", start: 1, end: 2.125 }]);
  assert.deepEqual(K.parseCaptions('{"captions": []}'), []);
});

test("malformed and hostile values give a CaptionError, never another exception", () => {
  const bad = [
    "{oops",
    "[]",
    '[{"text": "a", "start": 0, "end": 1}]', // a bare array
    "null",
    '{"captions": 3}',
    '{"version": 2, "captions": []}',
    '{"captions": [{"text": "a", "start": 1, "end": 0.5}]}',
    '{"captions": [{"text": "a", "start": "0", "end": 1}]}',
    '{"captions": [{"text": 5, "start": 0, "end": 1}]}',
    '{"captions": [null]}',
    JSON.stringify({ captions: [{ text: "x".repeat(501), start: 0, end: 1 }] }),
    JSON.stringify({ captions: Array.from({ length: 33 }, () => ({ text: "a", start: 0, end: 1 })) }),
    " ".repeat(70 * 1024) + "{}",
  ];
  for (const text of bad) assert.throws(() => K.parseCaptions(text), K.CaptionError, text.slice(0, 40));
  assert.throws(() => K.parseCaptions(42), K.CaptionError);
  const r = K.readCaptions("{broken", F, FPS);
  assert.deepEqual(r.captions, []);
  assert.match(r.error, /not valid JSON/);
});

test("__proto__ keys do not pollute objects", () => {
  const caps = K.parseCaptions('{"captions": [{"text": "a", "start": 0, "end": 1, "__proto__": {"polluted": 1}}]}');
  assert.equal({}.polluted, undefined);
  assert.deepEqual(Object.keys(caps[0]), ["text", "start", "end"]);
});

test("reading clamps captions into the clip", () => {
  const r = K.readCaptions('{"captions": [{"text": "late", "start": 3, "end": 4.5}]}', F, FPS);
  assert.equal(r.error, null);
  assert.deepEqual(r.captions, [{ text: "late", start: 0.625, end: 2.125 }]);
});

test("adding places a two-latent-frame caption after the last one, or at the end when there is no room", () => {
  let caps = K.addCaption([], F, FPS);
  assert.deepEqual(caps, [{ text: "", start: 0, end: 1 }]);
  caps = K.addCaption(caps, F, FPS, "b");
  assert.deepEqual(caps[1], { text: "b", start: 1, end: 2 });
  caps = K.addCaption(caps, F, FPS, "c");
  assert.deepEqual(caps[2], { text: "c", start: 1.125, end: 2.125 });
  const full = Array.from({ length: K.MAX_CAPTIONS }, () => ({ text: "a", start: 0, end: 1 }));
  assert.equal(K.addCaption(full, F, FPS).length, K.MAX_CAPTIONS);
});

test("removing and retyping touch only their caption", () => {
  const caps = [{ text: "a", start: 0, end: 1 }, { text: "b", start: 1, end: 2 }];
  assert.deepEqual(K.removeCaption(caps, 0), [{ text: "b", start: 1, end: 2 }]);
  assert.deepEqual(K.setText(caps, 1, "the star spins"), [{ text: "a", start: 0, end: 1 }, { text: "the star spins", start: 1, end: 2 }]);
  assert.equal(K.setText(caps, 0, "x".repeat(600))[0].text.length, K.MAX_TEXT_CHARS);
  assert.deepEqual(caps[1].text, "b"); // not mutated
});

test("captions move and resize with the timeline's snapping, keeping their text", () => {
  const cap = { text: "a ring rolls in", start: 0, end: 1 };
  assert.deepEqual(T.moveBar(cap, 0.3, F, FPS), { text: "a ring rolls in", start: 0.5, end: 1.5 });
  assert.deepEqual(T.resizeBar(cap, "right", 2.1, F, FPS), { text: "a ring rolls in", start: 0, end: 2.125 });
  assert.deepEqual(T.resizeBar(cap, "left", 0.9, F, FPS), { text: "a ring rolls in", start: 0.5, end: 1 });
  const lay = T.layout(216, 2);
  const x = (t) => T.timeToX(t, F, FPS, lay);
  assert.deepEqual(T.hitTest([cap], x(0.5), T.rowTop(0, lay) + 5, F, FPS, lay), { index: 0, part: "body" });
});

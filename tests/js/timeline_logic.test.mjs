// node --test tests/js/ : the timeline widget's pure logic (web/timeline_logic.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as T from "../../web/timeline_logic.js";

const F = 17;
const FPS = 8; // 2.125 s, snap every 0.5 s

test("boundaries are latent frames plus the clip end", () => {
  assert.deepEqual(T.boundaries(F, FPS), [0, 0.5, 1, 1.5, 2, 2.125]);
  assert.deepEqual(T.boundaries(81, 16), [...Array(21).keys()].map((i) => i * 0.25).concat([5.063]));
});

test("snap goes to the nearest boundary", () => {
  assert.equal(T.snap(0.26, F, FPS), 0.5);
  assert.equal(T.snap(0.24, F, FPS), 0);
  assert.equal(T.snap(2.1, F, FPS), 2.125);
  assert.equal(T.snap(-3, F, FPS), 0);
  assert.equal(T.snap(99, F, FPS), 2.125);
});

test("serialise and parse round trip, extra fields dropped", () => {
  const bars = [{ tag: "red ring", start: 0, end: 1 }, { tag: "blue star", start: 1, end: 2.125, junk: 1 }];
  const text = T.serialize(bars);
  assert.deepEqual(JSON.parse(text), {
    version: 1,
    subjects: [{ tag: "red ring", start: 0, end: 1 }, { tag: "blue star", start: 1, end: 2.125 }],
  });
  assert.deepEqual(T.parseTimeline(text), [{ tag: "red ring", start: 0, end: 1 }, { tag: "blue star", start: 1, end: 2.125 }]);
});

test("malformed and hostile values give a TimelineError, never another exception", () => {
  const bad = [
    "{oops",
    "[]",
    "null",
    '{"subjects": 3}',
    '{"version": 2, "subjects": []}',
    '{"subjects": [{"tag": "a", "start": 1, "end": 0.5}]}',
    '{"subjects": [{"tag": "a", "start": "0", "end": 1}]}',
    '{"subjects": [{"tag": 5, "start": 0, "end": 1}]}',
    '{"subjects": [null]}',
    JSON.stringify({ subjects: [{ tag: "x".repeat(201), start: 0, end: 1 }] }),
    JSON.stringify({ subjects: Array.from({ length: 65 }, () => ({ tag: "a", start: 0, end: 1 })) }),
    " ".repeat(70 * 1024) + "{}",
    '{"subjects": [{"tag": "a", "start": NaN, "end": 1}]}',
  ];
  for (const text of bad) assert.throws(() => T.parseTimeline(text), T.TimelineError, text.slice(0, 40));
  assert.throws(() => T.parseTimeline(42), T.TimelineError);
});

test("__proto__ keys do not pollute objects", () => {
  const bars = T.parseTimeline('{"subjects": [{"tag": "a", "start": 0, "end": 1, "__proto__": {"polluted": 1}}], "__proto__": {"x": 1}}');
  assert.equal({}.polluted, undefined);
  assert.equal(Object.getPrototypeOf(bars[0]), Object.prototype);
  assert.deepEqual(Object.keys(bars[0]), ["tag", "start", "end"]);
});

test("readValue shows the default layout and the error for a broken value", () => {
  const r = T.readValue("{broken", ["a", "b"], F, FPS);
  assert.match(r.error, /not valid JSON/);
  assert.deepEqual(r.bars, [{ tag: "a", start: 0, end: 1.063 }, { tag: "b", start: 1.063, end: 2.125 }]);
  assert.equal(T.readValue(T.serialize(r.bars), ["a", "b"], F, FPS).error, null);
});

test("moving keeps the length, snaps and stays inside the clip", () => {
  const bar = { tag: "a", start: 0, end: 1 };
  assert.deepEqual(T.moveBar(bar, 0.3, F, FPS), { tag: "a", start: 0.5, end: 1.5 });
  assert.deepEqual(T.moveBar(bar, 5, F, FPS), { tag: "a", start: 1.125, end: 2.125 });
  assert.deepEqual(T.moveBar(bar, -5, F, FPS), { tag: "a", start: 0, end: 1 });
});

test("resizing snaps and enforces the minimum length of one latent frame", () => {
  const bar = { tag: "a", start: 0.5, end: 1.5 };
  assert.deepEqual(T.resizeBar(bar, "right", 2.1, F, FPS), { tag: "a", start: 0.5, end: 2.125 });
  assert.deepEqual(T.resizeBar(bar, "right", 2.05, F, FPS), { tag: "a", start: 0.5, end: 2 });
  assert.deepEqual(T.resizeBar(bar, "right", 0.1, F, FPS), { tag: "a", start: 0.5, end: 1 });
  assert.deepEqual(T.resizeBar(bar, "left", 1.4, F, FPS), { tag: "a", start: 1, end: 1.5 });
  assert.deepEqual(T.resizeBar(bar, "left", -1, F, FPS), { tag: "a", start: 0, end: 1.5 });
  assert.equal(T.minLength(F, FPS), 0.5);
  assert.equal(T.minLength(1, 8), 0.125); // a one-frame clip: the whole clip
});

test("clamping re-fits bars into a shorter clip", () => {
  assert.deepEqual(T.clampBar({ tag: "a", start: 3, end: 4.5 }, F, FPS), { tag: "a", start: 0.625, end: 2.125 });
  assert.deepEqual(T.clampBar({ tag: "a", start: 1, end: 1.1 }, F, FPS), { tag: "a", start: 1, end: 1.5 });
});

test("syncing with the wired subjects keeps bars by position, adds and drops", () => {
  const bars = [{ tag: "old", start: 0.5, end: 1 }];
  assert.deepEqual(T.syncBars(bars, ["red ring"], F, FPS), [{ tag: "red ring", start: 0.5, end: 1 }]);
  const two = T.syncBars(bars, ["red ring", "blue star"], F, FPS);
  assert.deepEqual(two[0], { tag: "red ring", start: 0.5, end: 1 });
  assert.deepEqual(two[1], { tag: "blue star", start: 1, end: 2 });
  assert.deepEqual(T.syncBars(two, ["only"], F, FPS), [{ tag: "only", start: 0.5, end: 1 }]);
  assert.deepEqual(T.syncBars([], ["a", "b"], F, FPS), T.defaultBars(["a", "b"], F, FPS));
  assert.deepEqual(T.syncBars(two, [], F, FPS), []);
});

test("hit-testing finds edges before bodies and misses empty space", () => {
  const lay = T.layout(216, 2); // 200 px of track for 2.125 s
  const bars = [{ tag: "a", start: 0.5, end: 1.5 }, { tag: "b", start: 0, end: 2.125 }];
  const y0 = T.rowTop(0, lay) + 5;
  const y1 = T.rowTop(1, lay) + 5;
  const x = (t) => T.timeToX(t, F, FPS, lay);
  assert.deepEqual(T.hitTest(bars, x(0.5) + 2, y0, F, FPS, lay), { index: 0, part: "left" });
  assert.deepEqual(T.hitTest(bars, x(1.5) - 3, y0, F, FPS, lay), { index: 0, part: "right" });
  assert.deepEqual(T.hitTest(bars, x(1.0), y0, F, FPS, lay), { index: 0, part: "body" });
  assert.equal(T.hitTest(bars, x(0.1), y0, F, FPS, lay), null);
  assert.deepEqual(T.hitTest(bars, x(1.0), y1, F, FPS, lay), { index: 1, part: "body" });
  assert.equal(T.hitTest(bars, x(1.0), 2, F, FPS, lay), null); // the ruler
  assert.ok(Math.abs(T.xToTime(x(1.3), F, FPS, lay) - 1.3) < 1e-9);
});

test("ruler ticks label whole seconds and mark every latent frame", () => {
  const lay = T.layout(216, 1);
  const ticks = T.rulerTicks(F, FPS, lay);
  assert.deepEqual(ticks.filter((t) => t.major).map((t) => t.label), ["0s", "1s", "2s"]);
  assert.equal(ticks.filter((t) => !t.major).length, 6);
});

test("clip settings must be 4k+1 frames and a positive fps", () => {
  assert.deepEqual(T.clipOf(17, 8), { frames: 17, fps: 8 });
  assert.equal(T.clipOf(16, 8), null);
  assert.equal(T.clipOf(17, 0), null);
  assert.equal(T.clipOf("x", 8), null);
});

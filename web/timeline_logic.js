// Pure logic of the Interval Timeline widget: the JSON value, snapping, dragging, hit-testing, layout.
// No DOM and no ComfyUI here, so `node --test tests/js/` checks all of it. Mirrors alchemint_core/sampling/timeline.py.

export const VERSION = 1;
export const MAX_JSON_BYTES = 64 * 1024;
export const MAX_SUBJECTS = 64;
export const MAX_TAG_CHARS = 200;
export const FRAMES_PER_LATENT = 4;

export class TimelineError extends Error {}

/** Clip length in seconds: N frames shown 1/fps each. */
export function duration(frames, fps) {
  return frames / fps;
}

/** Seconds between snap points: one latent frame (4 video frames). */
export function snapStep(fps) {
  return FRAMES_PER_LATENT / fps;
}

/** Snap points in seconds: every latent-frame boundary, plus the clip's end. */
export function boundaries(frames, fps) {
  const end = duration(frames, fps);
  const step = snapStep(fps);
  const out = [];
  for (let i = 0; i * step < end - 1e-9; i++) out.push(round3(i * step));
  out.push(round3(end));
  return out;
}

export function round3(x) {
  return Math.round(x * 1000) / 1000;
}

/** The nearest snap point to a time in seconds. */
export function snap(seconds, frames, fps) {
  let best = 0;
  let bestDist = Infinity;
  for (const b of boundaries(frames, fps)) {
    const d = Math.abs(b - seconds);
    if (d < bestDist) {
      best = b;
      bestDist = d;
    }
  }
  return best;
}

/** Minimum bar length: one latent frame, or the whole clip when it is shorter. */
export function minLength(frames, fps) {
  return Math.min(snapStep(fps), duration(frames, fps));
}

function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

/** Parse and check the widget's JSON value; throws TimelineError naming the subject and the fix. */
export function parseTimeline(text) {
  if (typeof text !== "string") throw new TimelineError("timeline value must be a JSON string");
  if (new TextEncoder().encode(text).length > MAX_JSON_BYTES) {
    throw new TimelineError(`timeline JSON is larger than ${MAX_JSON_BYTES / 1024} KB; reset the widget`);
  }
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new TimelineError(`timeline is not valid JSON (${err.message}); reset the widget`);
  }
  if (data === null || typeof data !== "object" || Array.isArray(data) || !Array.isArray(data.subjects)) {
    throw new TimelineError('timeline JSON must be an object {"version": 1, "subjects": [...]}');
  }
  if (Object.prototype.hasOwnProperty.call(data, "version") && data.version !== VERSION) {
    throw new TimelineError(`timeline version ${String(data.version)} is not supported (expected ${VERSION})`);
  }
  if (data.subjects.length > MAX_SUBJECTS) {
    throw new TimelineError(`timeline has ${data.subjects.length} subjects; at most ${MAX_SUBJECTS} are allowed`);
  }
  return data.subjects.map((s, i) => {
    const where = `timeline subject ${i + 1}`;
    if (s === null || typeof s !== "object" || Array.isArray(s)) throw new TimelineError(`${where} must be an object`);
    const tag = Object.prototype.hasOwnProperty.call(s, "tag") ? s.tag : "";
    if (typeof tag !== "string" || tag.length > MAX_TAG_CHARS) {
      throw new TimelineError(`${where}: tag must be a string of at most ${MAX_TAG_CHARS} characters`);
    }
    if (!isNum(s.start) || !isNum(s.end)) throw new TimelineError(`${where}: start and end must be finite seconds`);
    if (s.end <= s.start) throw new TimelineError(`${where}: end is not after start; drag the bar's ends apart`);
    return { tag, start: s.start, end: s.end };
  });
}

/** The JSON value of bars (only the three known fields, tags cut to the limit). */
export function serialize(bars) {
  return JSON.stringify({
    version: VERSION,
    subjects: bars.slice(0, MAX_SUBJECTS).map((b) => ({
      tag: String(b.tag).slice(0, MAX_TAG_CHARS),
      start: round3(b.start),
      end: round3(b.end),
    })),
  });
}

/** Bars spread one after another over the clip (as the server does for an empty timeline). */
export function defaultBars(tags, frames, fps) {
  const d = duration(frames, fps);
  const n = Math.max(tags.length, 1);
  return tags.map((tag, i) => ({ tag, start: round3((d * i) / n), end: round3((d * (i + 1)) / n) }));
}

/** A bar inside [0, D], at least the minimum length, keeping its length when it only needs moving. */
export function clampBar(bar, frames, fps) {
  const d = duration(frames, fps);
  const minLen = minLength(frames, fps);
  let len = Math.min(Math.max(bar.end - bar.start, minLen), d);
  let start = Math.min(Math.max(bar.start, 0), d - len);
  return { ...bar, start: round3(start), end: round3(start + len) };
}

/** Bars for a new list of tags: existing intervals kept by position, new subjects placed after the last bar
 * (or spread when there were none), extra bars dropped; all re-clamped into the clip. */
export function syncBars(bars, tags, frames, fps) {
  const d = duration(frames, fps);
  const step = snapStep(fps);
  if (!bars.length) return defaultBars(tags, frames, fps);
  return tags.map((tag, i) => {
    if (i < bars.length) return clampBar({ ...bars[i], tag }, frames, fps);
    const lastEnd = bars[bars.length - 1].end;
    const start = lastEnd + step <= d ? lastEnd : Math.max(0, d - 2 * step);
    return clampBar({ tag, start, end: Math.min(d, start + 2 * step) }, frames, fps);
  });
}

/** Move a bar by dt seconds (its length kept), snapping its start. */
export function moveBar(bar, dt, frames, fps) {
  const len = bar.end - bar.start;
  const d = duration(frames, fps);
  let start = snap(bar.start + dt, frames, fps);
  start = Math.min(Math.max(start, 0), Math.max(0, d - len));
  // the end snaps too when the length is not a whole number of steps (e.g. a bar ending at the clip's end)
  let end = start + len;
  if (end > d - 1e-9) {
    end = d;
    start = Math.max(0, d - len);
  }
  return { ...bar, start: round3(start), end: round3(end) };
}

/** Move one edge ('left' or 'right') to time t, snapped, keeping the minimum length. */
export function resizeBar(bar, edge, t, frames, fps) {
  const minLen = minLength(frames, fps);
  const d = duration(frames, fps);
  const s = snap(Math.min(Math.max(t, 0), d), frames, fps);
  if (edge === "left") {
    const start = Math.min(s, bar.end - minLen);
    return { ...bar, start: round3(Math.max(0, start)) };
  }
  const end = Math.max(s, bar.start + minLen);
  return { ...bar, end: round3(Math.min(d, end)) };
}

/** Geometry shared by drawing and hit-testing. width/height in CSS pixels. */
export function layout(width, nBars, { pad = 8, ruler = 22, row = 22, gap = 4 } = {}) {
  return { pad, ruler, row, gap, width, height: pad + ruler + Math.max(nBars, 1) * (row + gap) + pad };
}

export function timeToX(t, frames, fps, lay) {
  return lay.pad + (t / duration(frames, fps)) * (lay.width - 2 * lay.pad);
}

export function xToTime(x, frames, fps, lay) {
  return ((x - lay.pad) / Math.max(lay.width - 2 * lay.pad, 1)) * duration(frames, fps);
}

export function rowTop(i, lay) {
  return lay.pad + lay.ruler + i * (lay.row + lay.gap);
}

/** What is under (x, y): {index, part: 'left' | 'right' | 'body'} or null. Edges win within `grab` pixels. */
export function hitTest(bars, x, y, frames, fps, lay, grab = 6) {
  for (let i = 0; i < bars.length; i++) {
    const top = rowTop(i, lay);
    if (y < top || y > top + lay.row) continue;
    const x0 = timeToX(bars[i].start, frames, fps, lay);
    const x1 = timeToX(bars[i].end, frames, fps, lay);
    if (x < x0 - grab || x > x1 + grab) return null;
    const nearLeft = Math.abs(x - x0) <= grab;
    const nearRight = Math.abs(x - x1) <= grab;
    if (nearLeft && nearRight) return { index: i, part: x < (x0 + x1) / 2 ? "left" : "right" };
    if (nearLeft) return { index: i, part: "left" };
    if (nearRight) return { index: i, part: "right" };
    return { index: i, part: "body" };
  }
  return null;
}

/** Ruler ticks: {t, x, major, label}; a labelled tick every whole second, minor ticks at latent frames. */
export function rulerTicks(frames, fps, lay) {
  const ticks = boundaries(frames, fps).map((t) => ({ t, x: timeToX(t, frames, fps, lay), major: false, label: "" }));
  const d = duration(frames, fps);
  const every = d > 20 ? 5 : d > 8 ? 2 : 1;
  for (let s = 0; s <= d + 1e-9; s += every) {
    ticks.push({ t: s, x: timeToX(s, frames, fps, lay), major: true, label: `${s}s` });
  }
  return ticks;
}

/** Parse a stored value leniently for display: {bars, error}; a broken value gives the default layout and the
 * error message, never an exception. */
export function readValue(text, tags, frames, fps) {
  try {
    return { bars: syncBars(parseTimeline(text), tags, frames, fps), error: null };
  } catch (err) {
    return { bars: defaultBars(tags, frames, fps), error: err instanceof TimelineError ? err.message : String(err) };
  }
}

/** Valid clip settings (4k+1 frames, fps in (0, 1000]) or null. */
export function clipOf(frames, fps) {
  const f = Number(frames);
  const r = Number(fps);
  if (!Number.isInteger(f) || f < 1 || (f - 1) % FRAMES_PER_LATENT !== 0) return null;
  if (!Number.isFinite(r) || r <= 0 || r > 1000) return null;
  return { frames: f, fps: r };
}

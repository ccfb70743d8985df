// Pure logic of the Timed Captions widget: its JSON value and adding/removing/retyping captions. Bars move, resize
// and snap with timeline_logic.js (a caption is a bar with a text). Mirrors alchemint_core/sampling/timed_captions.py.
import * as T from "./timeline_logic.js";

export const VERSION = 1;
export const MAX_CAPTIONS = 32;
export const MAX_TEXT_CHARS = 500;

export class CaptionError extends Error {}

/** Parse the widget's JSON value: [{text, start, end}]; throws CaptionError naming the caption and the fix.
 * Empty text is kept (a caption being typed); the server asks for it before running. */
export function parseCaptions(text) {
  if (typeof text !== "string") throw new CaptionError("timed captions value must be a JSON string");
  if (new TextEncoder().encode(text).length > T.MAX_JSON_BYTES) {
    throw new CaptionError(`timed captions JSON is larger than ${T.MAX_JSON_BYTES / 1024} KB; remove captions`);
  }
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new CaptionError(`timed captions are not valid JSON (${err.message}); reset the widget`);
  }
  if (data === null || typeof data !== "object" || Array.isArray(data) || !Array.isArray(data.captions)) {
    throw new CaptionError('timed captions JSON must be an object {"version": 1, "captions": [...]}');
  }
  if (Object.prototype.hasOwnProperty.call(data, "version") && data.version !== VERSION) {
    throw new CaptionError(`timed captions version ${String(data.version)} is not supported (expected ${VERSION})`);
  }
  if (data.captions.length > MAX_CAPTIONS) {
    throw new CaptionError(`${data.captions.length} timed captions; at most ${MAX_CAPTIONS} are allowed`);
  }
  return data.captions.map((c, i) => {
    const where = `timed caption ${i + 1}`;
    if (c === null || typeof c !== "object" || Array.isArray(c)) throw new CaptionError(`${where} must be an object`);
    const text = Object.prototype.hasOwnProperty.call(c, "text") ? c.text : "";
    if (typeof text !== "string" || text.length > MAX_TEXT_CHARS) {
      throw new CaptionError(`${where}: text must be a string of at most ${MAX_TEXT_CHARS} characters`);
    }
    const ok = (v) => typeof v === "number" && Number.isFinite(v);
    if (!ok(c.start) || !ok(c.end)) throw new CaptionError(`${where}: start and end must be finite seconds`);
    if (c.end <= c.start) throw new CaptionError(`${where}: end is not after start; drag the bar's ends apart`);
    return { text, start: c.start, end: c.end };
  });
}

/** The JSON value of captions (only the three known fields, texts cut to the limit, times to the millisecond). */
export function serializeCaptions(captions) {
  return JSON.stringify({
    version: VERSION,
    captions: captions.slice(0, MAX_CAPTIONS).map((c) => ({
      text: String(c.text).slice(0, MAX_TEXT_CHARS),
      start: T.round3(c.start),
      end: T.round3(c.end),
    })),
  });
}

/** Parse leniently for display: {captions, error}, every caption clamped into the clip; a broken value shows no
 * captions and the error, never an exception. */
export function readCaptions(text, frames, fps) {
  try {
    return { captions: parseCaptions(text).map((c) => T.clampBar(c, frames, fps)), error: null };
  } catch (err) {
    return { captions: [], error: err instanceof CaptionError ? err.message : String(err) };
  }
}

/** A new caption after the last one (two latent frames long), or at the clip's end when there is no room. */
export function addCaption(captions, frames, fps, text = "") {
  if (captions.length >= MAX_CAPTIONS) return captions;
  const d = T.duration(frames, fps);
  const step = T.snapStep(fps);
  const lastEnd = captions.length ? Math.max(...captions.map((c) => c.end)) : 0;
  const start = lastEnd + step <= d + 1e-9 ? lastEnd : Math.max(0, d - 2 * step);
  return [...captions, T.clampBar({ text, start, end: Math.min(d, start + 2 * step) }, frames, fps)];
}

export function removeCaption(captions, index) {
  return captions.filter((_, i) => i !== index);
}

export function setText(captions, index, text) {
  return captions.map((c, i) => (i === index ? { ...c, text: String(text).slice(0, MAX_TEXT_CHARS) } : c));
}

// Drawing and mouse editing of bars on a time ruler, shared by the Interval Timeline (one bar per subject) and the
// Timed Captions (one bar per caption) widgets. Geometry and snapping are in timeline_logic.js (tested in Node).
import * as T from "./timeline_logic.js";

export const PALETTE = ["#e74c3c", "#3498db", "#2ecc71", "#f1c40f", "#9b59b6", "#e67e22", "#1abc9c", "#ec70a0"];

/** Layout of `nBars` rows at the canvas's current width (CSS pixels). */
export function layoutOf(canvas, nBars) {
  return T.layout(Math.max(canvas.clientWidth || canvas.parentElement?.clientWidth || 300, 60), nBars);
}

/** Draw the ruler and the bars; `label(bar, i)` is each bar's text, bar `active` is drawn opaque. */
export function paint(canvas, bars, clip, label, active = -1) {
  const L = layoutOf(canvas, bars.length);
  const ratio = window.devicePixelRatio || 1;
  canvas.style.height = `${L.height}px`;
  canvas.width = Math.round(L.width * ratio);
  canvas.height = Math.round(L.height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.fillStyle = "#1e1e1e";
  g.fillRect(0, 0, L.width, L.height);
  if (!clip) return;
  g.font = "10px sans-serif";
  g.textBaseline = "top";
  for (const tick of T.rulerTicks(clip.frames, clip.fps, L)) {
    g.strokeStyle = tick.major ? "#bbb" : "#555";
    g.beginPath();
    g.moveTo(tick.x + 0.5, L.pad + (tick.major ? 2 : 10));
    g.lineTo(tick.x + 0.5, L.pad + L.ruler - 4);
    g.stroke();
    if (tick.label) {
      g.fillStyle = "#ccc";
      g.fillText(tick.label, tick.x + 2, L.pad);
    }
  }
  bars.forEach((bar, i) => {
    const top = T.rowTop(i, L);
    const x0 = T.timeToX(bar.start, clip.frames, clip.fps, L);
    const x1 = T.timeToX(bar.end, clip.frames, clip.fps, L);
    g.fillStyle = "#2a2a2a";
    g.fillRect(L.pad, top, L.width - 2 * L.pad, L.row);
    g.fillStyle = PALETTE[i % PALETTE.length];
    g.globalAlpha = active === i ? 1 : 0.85;
    g.fillRect(x0, top, Math.max(x1 - x0, 2), L.row);
    g.globalAlpha = 1;
    g.fillStyle = "rgba(0,0,0,0.35)";
    g.fillRect(x0, top, 4, L.row);
    g.fillRect(x1 - 4, top, 4, L.row);
    g.save();
    g.beginPath();
    g.rect(x0 + 5, top, Math.max(x1 - x0 - 10, 0), L.row);
    g.clip();
    g.fillStyle = "#111";
    g.font = "12px sans-serif";
    g.textBaseline = "middle";
    g.fillText(`${label(bar, i)}  ${bar.start.toFixed(2)}–${bar.end.toFixed(2)} s`, x0 + 7, top + L.row / 2);
    g.restore();
  });
}

/** Mouse editing on `canvas`: drag a bar's body to move it, an edge to resize it, snapped to latent frames.
 * state.bars holds the bars and state.drag the gesture in progress; `clip()` gives {frames, fps} or null,
 * `draw()` repaints while dragging and `commit(bars)` is called once when the gesture ends. */
export function editBars(canvas, state, { clip, draw, commit }) {
  const lay = () => layoutOf(canvas, state.bars.length);
  function local(e) {
    const r = canvas.getBoundingClientRect();
    const L = lay();
    // the canvas may be drawn scaled (canvas zoom): map client pixels to layout pixels
    return { x: ((e.clientX - r.left) * L.width) / Math.max(r.width, 1), y: ((e.clientY - r.top) * L.height) / Math.max(r.height, 1) };
  }
  canvas.addEventListener("pointerdown", (e) => {
    const c = clip();
    if (!c || e.button !== 0) return;
    const p = local(e);
    const hit = T.hitTest(state.bars, p.x, p.y, c.frames, c.fps, lay());
    if (!hit) return;
    e.preventDefault();
    e.stopPropagation();
    canvas.setPointerCapture?.(e.pointerId);
    state.drag = { ...hit, t0: T.xToTime(p.x, c.frames, c.fps, lay()), bar: { ...state.bars[hit.index] } };
  });
  canvas.addEventListener("pointermove", (e) => {
    const c = clip();
    if (!c) return;
    const p = local(e);
    if (!state.drag) {
      const hit = T.hitTest(state.bars, p.x, p.y, c.frames, c.fps, lay());
      canvas.style.cursor = !hit ? "default" : hit.part === "body" ? "grab" : "ew-resize";
      return;
    }
    e.preventDefault();
    e.stopPropagation();
    const t = T.xToTime(p.x, c.frames, c.fps, lay());
    const d = state.drag;
    const next = d.part === "body" ? T.moveBar(d.bar, t - d.t0, c.frames, c.fps) : T.resizeBar(d.bar, d.part, t, c.frames, c.fps);
    state.bars = state.bars.map((b, i) => (i === d.index ? next : b));
    draw();
  });
  const end = (e) => {
    if (!state.drag) return;
    e.stopPropagation();
    state.drag = null;
    commit(state.bars);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
}

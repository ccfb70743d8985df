// The Interval Timeline widget of the AlcheMinT Interval Timeline node: one draggable bar per subject.
// Its value is the node's `timeline` STRING widget (JSON, saved in the workflow and sent in the prompt); this DOM
// widget only draws and edits it, so save/reload, copy/paste and the API prompt carry the plain string.
import { app } from "../../scripts/app.js";
import * as T from "./timeline_logic.js";
import * as C from "./timeline_canvas.js";

const NODE_TYPE = "AlcheMinTIntervalTimeline";
const LOADER_TYPE = "AlcheMinTReferenceLoader";
const POLL_MS = 250;

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function inputLink(graph, node, name) {
  const slot = node.inputs?.findIndex((i) => i.name === name) ?? -1;
  if (slot < 0) return null;
  if (typeof node.getInputLink === "function") return node.getInputLink(slot) ?? null;
  const id = node.inputs[slot].link; // older frontends
  return id == null ? null : graph.links?.get?.(id) ?? graph.links?.[id] ?? null;
}

/** Tags of the Reference Loader chain wired into `references`, the chain's first loader first; null when nothing
 * is wired in (a pasted or not yet connected node keeps its bars as they are). */
export function subjectTags(node) {
  const graph = node.graph ?? app.graph;
  const tags = [];
  const seen = new Set();
  let link = inputLink(graph, node, "references");
  if (!link) return null;
  while (link && tags.length <= T.MAX_SUBJECTS) {
    const src = graph.getNodeById(link.origin_id);
    if (!src || seen.has(src.id)) break;
    seen.add(src.id);
    if (src.type === LOADER_TYPE || src.comfyClass === LOADER_TYPE) {
      tags.push(String(widget(src, "tag")?.value ?? ""));
      link = inputLink(graph, src, "references");
    } else if (src.type === "Reroute" || src.inputs?.length === 1) {
      link = src.inputs?.length ? inputLink(graph, src, src.inputs[0].name) : null;
    } else break;
  }
  return tags.reverse();
}

function setupTimeline(node) {
  const valueWidget = widget(node, "timeline");
  if (!valueWidget || node.__alchemintTimeline) return;
  node.__alchemintTimeline = true;
  // The JSON stays in the STRING widget (serialised, sent in the prompt) but is edited through the bars.
  valueWidget.hidden = true;
  valueWidget.options = { ...(valueWidget.options ?? {}), hidden: true };
  valueWidget.computeSize = () => [0, -4];

  const root = document.createElement("div");
  root.className = "alchemint-timeline";
  root.style.cssText = "width:100%;box-sizing:border-box;position:relative;user-select:none;touch-action:none;";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "display:block;width:100%;cursor:default;border-radius:4px;";
  const message = document.createElement("div");
  message.style.cssText = "font:11px sans-serif;color:#ff8080;min-height:0;white-space:nowrap;overflow:hidden;";
  root.append(canvas, message);

  const state = { bars: [], drag: null, signature: "", error: null };

  const clip = () => T.clipOf(widget(node, "frames")?.value, widget(node, "fps")?.value);

  function commit(bars) {
    state.bars = bars;
    const text = T.serialize(bars);
    if (valueWidget.value !== text) {
      valueWidget.value = text;
      valueWidget.callback?.(text);
      node.graph?.setDirtyCanvas?.(true, true);
    }
    state.error = null;
  }

  function sync(force = false) {
    if (!node.graph) return; // not (or no longer) in a graph: e.g. the copy made while copying to the clipboard
    const c = clip();
    const tags = subjectTags(node);
    const signature = JSON.stringify([tags, c, valueWidget.value]);
    if (!force && signature === state.signature) return;
    state.signature = signature;
    if (!c) {
      state.error = "frames must be 4k+1 and fps positive";
      draw();
      return;
    }
    if (tags === null) {
      let bars = [];
      try {
        bars = T.parseTimeline(valueWidget.value);
        state.error = null;
      } catch (err) {
        state.error = err.message;
      }
      state.bars = bars.map((b) => T.clampBar(b, c.frames, c.fps));
      draw();
      return;
    }
    const read = T.readValue(valueWidget.value, tags, c.frames, c.fps);
    state.bars = read.bars;
    state.error = read.error;
    if (!read.error) {
      // rewrite only when the bars really changed (subjects wired in or out, clip shortened), not for formatting
      const stored = T.serialize(T.parseTimeline(valueWidget.value));
      if (T.serialize(read.bars) !== stored) commit(read.bars);
      state.signature = JSON.stringify([tags, c, valueWidget.value]);
    }
    draw();
  }

  function lay() {
    return C.layoutOf(canvas, state.bars.length);
  }

  function draw() {
    message.textContent = state.error ? `⚠ ${state.error}` : "";
    C.paint(canvas, state.bars, clip(), (bar, i) => bar.tag || `subject ${i + 1}`, state.drag?.index ?? -1);
  }

  C.editBars(canvas, state, {
    clip,
    draw,
    commit: (bars) => {
      commit(bars);
      state.signature = "";
      sync();
    },
  });

  const dom = node.addDOMWidget("timeline_editor", "alchemint_timeline", root, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => valueWidget.value,
    setValue: (v) => {
      valueWidget.value = v;
      sync(true);
    },
    getMinHeight: () => lay().height + 18,
    getHeight: () => lay().height + 18,
  });
  dom.serialize = false;

  const timer = setInterval(() => sync(), POLL_MS);
  new ResizeObserver(() => draw()).observe(root);
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    clearInterval(timer);
    return onRemoved?.apply(this, arguments);
  };
  node.alchemintTimeline = { state, sync, draw, canvas };
  requestAnimationFrame(() => sync(true));
}

app.registerExtension({
  name: "AlcheMinT.IntervalTimeline",
  nodeCreated(node) {
    if (node.comfyClass === NODE_TYPE || node.type === NODE_TYPE) setupTimeline(node);
  },
});

// The Timed Captions widget of the AlcheMinT Timed Captions node: one draggable bar per event caption on the same
// ruler as the Interval Timeline, with a text field per caption below it. Its value is the node's `captions` STRING
// widget (JSON, saved in the workflow and sent in the prompt); this DOM widget only draws and edits it.
import { app } from "../../scripts/app.js";
import * as C from "./timeline_canvas.js";
import * as K from "./captions_logic.js";
import * as T from "./timeline_logic.js";

const NODE_TYPE = "AlcheMinTTimedCaptions";
const POLL_MS = 250;
const ROW_PX = 26; // one text field row
const BUTTON_PX = 26;
const MESSAGE_PX = 18;
const BUTTON_CSS = "font:12px sans-serif;cursor:pointer;color:#ddd;background:#333;border:1px solid #555;" +
  "border-radius:3px;padding:1px 6px;";

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function element(tag, css, text) {
  const el = document.createElement(tag);
  el.style.cssText = css;
  if (text !== undefined) el.textContent = text;
  return el;
}

function setupCaptions(node) {
  const valueWidget = widget(node, "captions");
  if (!valueWidget || node.__alchemintCaptions) return;
  node.__alchemintCaptions = true;
  // The JSON stays in the STRING widget (serialised, sent in the prompt) but is edited through the bars and fields.
  valueWidget.hidden = true;
  valueWidget.options = { ...(valueWidget.options ?? {}), hidden: true };
  valueWidget.computeSize = () => [0, -4];

  const root = element("div", "width:100%;box-sizing:border-box;position:relative;user-select:none;");
  root.className = "alchemint-captions";
  const canvas = element("canvas", "display:block;width:100%;cursor:default;border-radius:4px;touch-action:none;");
  const list = element("div", "display:flex;flex-direction:column;gap:2px;margin-top:4px;");
  const add = element("button", `margin-top:4px;${BUTTON_CSS}`, "+ caption");
  add.className = "alchemint-add-caption";
  add.title = "Add a caption after the last one; type what happens in that span in its field";
  const message = element("div", "font:11px sans-serif;color:#ff8080;white-space:nowrap;overflow:hidden;");
  root.append(canvas, list, add, message);

  const state = { bars: [], drag: null, signature: "", error: null };
  const rows = []; // {row, swatch, input}: one per caption
  const clip = () => T.clipOf(widget(node, "frames")?.value, widget(node, "fps")?.value);

  function commit(bars) {
    state.bars = bars;
    const text = K.serializeCaptions(bars);
    if (valueWidget.value !== text) {
      valueWidget.value = text;
      valueWidget.callback?.(text);
      node.graph?.setDirtyCanvas?.(true, true);
    }
    state.error = null;
  }

  function height() {
    return C.layoutOf(canvas, state.bars.length).height + state.bars.length * ROW_PX + BUTTON_PX + MESSAGE_PX + 8;
  }

  function makeRow() {
    const row = element("div", "display:flex;align-items:center;gap:4px;");
    const swatch = element("span", "width:10px;height:18px;border-radius:2px;flex:none;");
    const input = element("input", "flex:1;min-width:0;font:12px sans-serif;background:#222;color:#ddd;" +
      "border:1px solid #444;border-radius:3px;padding:2px 4px;user-select:text;");
    input.type = "text";
    input.maxLength = K.MAX_TEXT_CHARS;
    input.placeholder = "what happens in this span";
    input.className = "alchemint-caption-text";
    const remove = element("button", `flex:none;${BUTTON_CSS}`, "✕");
    remove.title = "Remove this caption";
    const entry = { row, swatch, input };
    input.addEventListener("input", () => {
      commit(K.setText(state.bars, rows.indexOf(entry), input.value));
      draw();
    });
    remove.addEventListener("click", () => {
      commit(K.removeCaption(state.bars, rows.indexOf(entry)));
      sync(true);
    });
    row.append(swatch, input, remove);
    return entry;
  }

  /** One text field per caption, kept in place so typing keeps its focus; values follow the stored texts. */
  function renderRows() {
    const resized = rows.length !== state.bars.length;
    while (rows.length < state.bars.length) {
      const entry = makeRow();
      rows.push(entry);
      list.append(entry.row);
    }
    while (rows.length > state.bars.length) rows.pop().row.remove();
    state.bars.forEach((bar, i) => {
      rows[i].swatch.style.background = C.PALETTE[i % C.PALETTE.length];
      if (document.activeElement !== rows[i].input && rows[i].input.value !== bar.text) rows[i].input.value = bar.text;
    });
    add.disabled = state.bars.length >= K.MAX_CAPTIONS || !clip();
    if (resized && node.size && node.computeSize) {
      node.setSize?.([node.size[0], Math.max(node.size[1], node.computeSize()[1])]); // grow to show every row
      node.graph?.setDirtyCanvas?.(true, true);
    }
  }

  function sync(force = false) {
    if (!node.graph) return; // not (or no longer) in a graph: e.g. the copy made while copying to the clipboard
    const c = clip();
    const signature = JSON.stringify([c, valueWidget.value]);
    if (!force && signature === state.signature) return;
    state.signature = signature;
    if (!c) {
      state.error = "frames must be 4k+1 and fps positive";
    } else {
      const read = K.readCaptions(valueWidget.value, c.frames, c.fps);
      state.bars = read.captions;
      state.error = read.error;
      // rewrite only when clamping into a shorter clip really moved a caption, not for formatting
      if (!read.error && K.serializeCaptions(read.captions) !== K.serializeCaptions(K.parseCaptions(valueWidget.value))) {
        commit(read.captions);
        state.signature = JSON.stringify([c, valueWidget.value]);
      }
    }
    renderRows();
    draw();
  }

  function draw() {
    message.textContent = state.error ? `⚠ ${state.error}` : "";
    C.paint(canvas, state.bars, clip(), (bar, i) => bar.text || `caption ${i + 1}`, state.drag?.index ?? -1);
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
  add.addEventListener("click", () => {
    const c = clip();
    if (!c) return;
    commit(K.addCaption(state.bars, c.frames, c.fps));
    sync(true);
    rows[rows.length - 1]?.input.focus();
  });

  node.addDOMWidget("captions_editor", "alchemint_timed_captions", root, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => valueWidget.value,
    setValue: (v) => {
      valueWidget.value = v;
      sync(true);
    },
    getMinHeight: height,
    getHeight: height,
  }).serialize = false;

  const timer = setInterval(() => sync(), POLL_MS);
  new ResizeObserver(() => draw()).observe(root);
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    clearInterval(timer);
    return onRemoved?.apply(this, arguments);
  };
  node.alchemintCaptions = { state, sync, draw, canvas, rows };
  requestAnimationFrame(() => sync(true));
}

app.registerExtension({
  name: "AlcheMinT.TimedCaptions",
  nodeCreated(node) {
    if (node.comfyClass === NODE_TYPE || node.type === NODE_TYPE) setupCaptions(node);
  },
});

// The results grids: each item's .npy is parsed once, drawn with the current colour map and axis unit, and
// offered for download as the drawn PNG (with axes) or the original .npy (float32 dB, as the API sent it).

import { base64ToBuffer, parseNpy } from "./npy.js";
import { drawSpectrogram } from "./plot.js";

/** One panel per response item: {title, fileStem, npyBuffer, spec: {db, rows, cols}}. */
export function panelsFrom(items, describe) {
  return items.map((item, i) => {
    const buffer = base64ToBuffer(item.data);
    const { shape, data } = parseNpy(buffer);
    const [rows, cols] = shape.slice(-2);
    const db = data.length === rows * cols ? data : data.subarray(0, rows * cols); // channel 0 of (C, H, W)
    return { ...describe(item, i), npyBuffer: buffer, spec: { db, rows, cols } };
  });
}

function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function button(text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

/** Draw `panels` into `container` (replacing what was there); `opts` = {dynRange, axes, unit, cmap}. */
export function renderPanels(container, panels, opts, extraClass = "") {
  container.replaceChildren();
  for (const p of panels) {
    const fig = document.createElement("figure");
    fig.className = `spec ${extraClass}`.trim();
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `${p.title}: spectrogram, ${p.spec.rows} Doppler bins by ${p.spec.cols} frames`);
    drawSpectrogram(canvas, p.spec, { ...opts, axes: p.axes || opts.axes });
    const caption = document.createElement("figcaption");
    const text = document.createElement("span");
    text.textContent = p.title;
    caption.append(
      text,
      button("PNG", `Download ${p.title} as PNG`, () => canvas.toBlob((b) => download(b, `${p.fileStem}.png`), "image/png")),
      button(".npy", `Download ${p.title} as .npy`,
        () => download(new Blob([p.npyBuffer], { type: "application/x-npy" }), `${p.fileStem}.npy`)),
    );
    fig.append(canvas, caption);
    container.append(fig);
  }
}

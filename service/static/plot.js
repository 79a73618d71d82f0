// Draw a spectrogram (rows = Doppler bins, columns = time frames, values in dB re. peak) on a canvas, with real
// axes from GET /info: time in s, Doppler in Hz or radial velocity in m/s (v = f c / (2 f_carrier)).

import { lut } from "./colormaps.js";

const SPEED_OF_LIGHT = 299792458;
const MARGIN = { left: 52, right: 8, top: 8, bottom: 36 };

/** About `n` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart). */
export function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) || 10 * pow;
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return ticks;
}

function fmt(v, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step || 1) + 1e-9));
  return v.toFixed(Math.min(digits, 3));
}

/** The plotted ranges: x = [0, duration] in s (or frames), y = [top edge, bottom edge] in Hz, m/s (or bins). */
export function axisRanges(rows, cols, axes, unit) {
  const a = axes || {};
  const x = a.seconds_per_frame ? { lo: 0, hi: cols * a.seconds_per_frame, label: "time (s)" }
    : { lo: 0, hi: cols, label: "time frame" };
  if (a.doppler_hz_row0 == null || !a.doppler_hz_per_bin) {
    return { x, y: { top: 0, bottom: rows, label: "Doppler bin" } };
  }
  const sign = a.doppler_axis === "ascending" ? 1 : -1; // descending: row 0 = most positive Doppler
  const step = a.doppler_hz_per_bin;
  let top = a.doppler_hz_row0 - (sign * step) / 2;
  let bottom = a.doppler_hz_row0 + sign * step * (rows - 1) + (sign * step) / 2;
  let label = "Doppler (Hz)";
  if (unit === "mps" && a.carrier_hz) {
    const k = SPEED_OF_LIGHT / (2 * a.carrier_hz);
    [top, bottom, label] = [top * k, bottom * k, "velocity (m/s)"];
  }
  return { x, y: { top, bottom, label } };
}

/** Round ticks over [lo, hi]: `at(v)` is the pixel of value v, `geometry(pixel)` the mark and label positions
 * [x0, y0, x1, y1, labelX, labelY]. */
function ticks(ctx, lo, hi, n, at, geometry) {
  const values = niceTicks(lo, hi, n);
  const step = values.length > 1 ? values[1] - values[0] : 1;
  for (const v of values) {
    const [x0, y0, x1, y1, tx, ty] = geometry(at(v));
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
    ctx.stroke();
    ctx.fillText(fmt(v, step), tx, ty);
  }
}

/** Spectrogram pixels as an off-screen canvas, one pixel per bin (channel 0 of a (C, H, W) array). */
function imageOf(db, rows, cols, dynRange, cmap) {
  const table = lut(cmap);
  const off = document.createElement("canvas");
  off.width = cols;
  off.height = rows;
  const ctx = off.getContext("2d");
  const img = ctx.createImageData(cols, rows);
  for (let i = 0; i < rows * cols; i++) {
    const t = Math.min(Math.max((db[i] + dynRange) / dynRange, 0), 1);
    const k = Math.round(t * 255) * 3;
    img.data[i * 4] = table[k];
    img.data[i * 4 + 1] = table[k + 1];
    img.data[i * 4 + 2] = table[k + 2];
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return off;
}

function setUp(canvas, cssWidth, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssWidth * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  canvas.style.width = `${cssWidth}px`;
  canvas.style.height = `${cssHeight}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/** Draw one spectrogram with its axes. `spec` = {db, rows, cols}; `opts` = {dynRange, axes, unit, cmap}. */
export function drawSpectrogram(canvas, spec, opts, cssWidth = 232, cssHeight = 200) {
  const ctx = setUp(canvas, cssWidth, cssHeight);
  const { rows, cols } = spec;
  const w = cssWidth - MARGIN.left - MARGIN.right;
  const h = cssHeight - MARGIN.top - MARGIN.bottom;
  const ink = getComputedStyle(canvas).color || "#222";
  ctx.fillStyle = getComputedStyle(canvas).backgroundColor || "#fff";
  ctx.fillRect(0, 0, cssWidth, cssHeight);
  ctx.imageSmoothingEnabled = false; // one block per bin, as recorded
  ctx.drawImage(imageOf(spec.db, rows, cols, opts.dynRange, opts.cmap), MARGIN.left, MARGIN.top, w, h);

  const { x, y } = axisRanges(rows, cols, opts.axes, opts.unit);
  ctx.strokeStyle = ink;
  ctx.fillStyle = ink;
  ctx.lineWidth = 1;
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeRect(MARGIN.left - 0.5, MARGIN.top - 0.5, w + 1, h + 1);
  // x axis: time; y axis: Doppler (top edge of row 0 to bottom edge of the last row)
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  ticks(ctx, x.lo, x.hi, 5, (v) => MARGIN.left + ((v - x.lo) / (x.hi - x.lo)) * w,
    (p) => [p, MARGIN.top + h, p, MARGIN.top + h + 4, p, MARGIN.top + h + 6]);
  ctx.fillText(x.label, MARGIN.left + w / 2, MARGIN.top + h + 21);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ticks(ctx, Math.min(y.top, y.bottom), Math.max(y.top, y.bottom), 6,
    (v) => MARGIN.top + ((v - y.top) / (y.bottom - y.top)) * h,
    (p) => [MARGIN.left - 4, p, MARGIN.left, p, MARGIN.left - 6, p]);
  ctx.save();
  ctx.translate(11, MARGIN.top + h / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText(y.label, 0, 0);
  ctx.restore();
}

/** A horizontal colour bar from -dynRange dB to 0 dB. */
export function drawColorbar(canvas, cmap, dynRange, cssWidth = 220, cssHeight = 34) {
  const ctx = setUp(canvas, cssWidth, cssHeight);
  const ink = getComputedStyle(canvas).color || "#222";
  const table = lut(cmap);
  const barW = cssWidth - 20;
  ctx.clearRect(0, 0, cssWidth, cssHeight);
  for (let i = 0; i < barW; i++) {
    const k = Math.round((i / (barW - 1)) * 255) * 3;
    ctx.fillStyle = `rgb(${table[k]},${table[k + 1]},${table[k + 2]})`;
    ctx.fillRect(10 + i, 2, 1.5, 12);
  }
  ctx.fillStyle = ink;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  const ticks = niceTicks(-dynRange, 0, 4);
  for (const v of ticks) {
    const px = 10 + ((v + dynRange) / dynRange) * (barW - 1);
    ctx.textAlign = v === 0 ? "right" : v === -dynRange ? "left" : "center";
    ctx.fillText(`${v}`, Math.min(Math.max(px, 10), 10 + barW), 17);
  }
}

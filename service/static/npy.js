// Read a NumPy .npy file (format 1.0 - 3.0) into a typed array: what /generate and /users/{id}/examples send
// as base64 with format "npy". Only plain numeric little-endian arrays; object arrays (pickles) are refused.

const DTYPES = {
  "<f4": Float32Array, "<f8": Float64Array, "<i2": Int16Array, "<i4": Int32Array,
  "|u1": Uint8Array, "<u2": Uint16Array, "<u4": Uint32Array, "|i1": Int8Array,
};

/** base64 text -> ArrayBuffer. */
export function base64ToBuffer(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

/** .npy bytes -> {shape, data (C order), dtype}; throws Error with the reason on anything else. */
export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.slice(0, 6));
  if (magic !== "\x93NUMPY") throw new Error("not a .npy file");
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.slice(start, start + headerLen));
  // The header is a Python dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (1, 64, 64), }
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shape) throw new Error("unreadable .npy header");
  const Typed = DTYPES[descr[1]];
  if (!Typed) throw new Error(`unsupported .npy dtype ${descr[1]}`);
  if (fortran[1] === "True") throw new Error("Fortran-ordered .npy files are not supported");
  const dims = shape[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  const offset = start + headerLen;
  // Typed arrays need aligned offsets; the .npy header pads to 64 bytes, so slicing keeps it safe anyway.
  const data = new Typed(buffer.slice(offset, offset + count * Typed.BYTES_PER_ELEMENT));
  if (data.length !== count) throw new Error("truncated .npy file");
  return { shape: dims, data, dtype: descr[1] };
}

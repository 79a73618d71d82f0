"""Raw radar recordings from files: Ancortek/Glasgow `.dat` text, complex `.npy`, `.npz`, MATLAB `.mat` (v5
through scipy, v7.3 through h5py) and `.h5`; each becomes a RawRecording, or a DatasetError naming the file.

Array layout (docs/import.md): 1-D is slow time (one complex sample per pulse); 2-D is (bins, sweeps), the
longer axis taken as the sweeps (MATLAB's v7.3 files come transposed, so either orientation reads the same),
the other holding range bins ("range-time", the default) or FMCW fast-time samples ("fast-time"). A `.dat`
is always fast-time. Recognised scalar variables (or HDF5 attributes): carrier_hz, prf_hz, bandwidth_hz,
sweep_s. The samples are the file's one complex array (or the complex one named `data`).
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from models.raw.params import LAYOUTS, PARAM_VARIABLES, RadarParams, RawRecording
from models.safe_files import DatasetError, read_bytes

RAW_SUFFIXES = (".dat", ".mat", ".h5", ".hdf5", ".npz")  # and .npy holding a complex array
MAX_SAMPLES = 1 << 26  # complex samples in one recording (512 MiB as complex64): a bigger one is refused
_HEADER = re.compile(rb"\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")
# MATLAB writes 1+2i, numpy's parser reads 1+2j; one number per line whatever the file's whitespace
_TOKENS = bytes.maketrans(b"iI \t\r\v\f", b"jj\n\n\n\n\n")
_NPY_MAGIC = b"\x93NUMPY"


# ------------------------------------------------------------------------------------------------ .dat
def parse_dat(data: bytes, name: str) -> RawRecording:
    """Ancortek/Glasgow text: carrier (Hz), sweep time (ms), samples per sweep, bandwidth (Hz), then the
    complex beat samples (`a+bi`), sweep after sweep. One C-level parse (numpy.loadtxt), no loop per number;
    a trailing part sweep is dropped."""
    m = _HEADER.match(data[:4096])
    try:
        carrier, sweep_ms, n_fast, bandwidth = (float(v) for v in m.groups()) if m else (None,) * 4
    except (ValueError, TypeError):
        carrier = None
    if carrier is None or min(carrier, sweep_ms, n_fast, bandwidth) <= 0 or n_fast != int(n_fast) \
            or not np.isfinite([carrier, sweep_ms, bandwidth]).all():
        raise DatasetError(f"{name}: does not start with the Ancortek header (carrier Hz, sweep time ms, "
                           "samples per sweep, bandwidth Hz, each a positive number)")
    try:
        z = np.loadtxt(io.BytesIO(data[m.end():].translate(_TOKENS)), dtype=np.complex64, ndmin=1).ravel()
    except ValueError as e:
        raise DatasetError(f"{name}: the samples after the header are not complex numbers like 1.5-0.2i "
                           f"({e})") from None
    n_fast = int(n_fast)
    sweeps = z.size // n_fast
    if sweeps < 2:
        raise DatasetError(f"{name}: {z.size} samples after the header, fewer than two sweeps of {n_fast}")
    if z.size > MAX_SAMPLES:
        raise DatasetError(f"{name}: {z.size} samples, more than {MAX_SAMPLES} in one recording; cut it")
    if not np.isfinite(z).all():
        raise DatasetError(f"{name}: contains NaN or inf samples")
    samples = z[: sweeps * n_fast].reshape(sweeps, n_fast).T  # (fast time, sweeps)
    params = RadarParams(carrier_hz=carrier, sweep_s=sweep_ms / 1000.0, bandwidth_hz=bandwidth)
    return RawRecording(np.ascontiguousarray(samples), "fast-time", params, name)


def format_dat(samples: np.ndarray, carrier_hz: float, sweep_s: float, bandwidth_hz: float) -> bytes:
    """The `.dat` text of (fast-time samples, sweeps): header lines, then one `a+bi` per line."""
    z = np.asarray(samples, dtype=np.complex64).T.ravel()  # sweep after sweep
    pairs = np.column_stack([z.real, z.imag]).ravel().tolist()
    head = f"{carrier_hz:.10g}\n{sweep_s * 1000:.10g}\n{samples.shape[0]}\n{bandwidth_hz:.10g}\n"
    return (head + "%.6g%+.6gi\n" * z.size % tuple(pairs)).encode()  # one C-level format, no loop


# ----------------------------------------------------------------------------------------------- arrays
def _is_complex(dtype: np.dtype) -> bool:
    names = set(dtype.names or ())
    return dtype.kind == "c" or names in ({"real", "imag"}, {"r", "i"})


def _as_complex(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.names:
        re_, im = ("real", "imag") if "real" in arr.dtype.names else ("r", "i")
        return (arr[re_] + 1j * arr[im]).astype(np.complex64)
    return arr.astype(np.complex64)


def npy_is_complex(src: Path | bytes) -> bool:
    """Whether a .npy holds a complex array (a raw recording), from its header alone."""
    try:
        fh = io.BytesIO(src[:4096]) if isinstance(src, (bytes, bytearray)) else open(src, "rb")
        with fh:
            if fh.read(6) != _NPY_MAGIC:
                return False
            fh.seek(0)
            fmt = np.lib.format
            read = fmt.read_array_header_1_0 if fmt.read_magic(fh) == (1, 0) else fmt.read_array_header_2_0
            _, _, dtype = read(fh)
        return _is_complex(np.dtype(dtype))
    except (OSError, ValueError, SyntaxError):
        return False


def _scalar(value: Any) -> float | None:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" or arr.size != 1:
        return None
    return float(arr.ravel()[0])


def _pick(arrays: dict[str, Any], name: str) -> str:
    """The variable holding the samples: the one complex array (or the complex one named `data`)."""
    found = [k for k, v in arrays.items() if _is_complex(v.dtype) and k not in PARAM_VARIABLES]
    if "data" in found:
        return "data"
    if len(found) == 1:
        return found[0]
    listed = ", ".join(f"{k} ({v.dtype} {tuple(v.shape)})" for k, v in list(arrays.items())[:8]) or "nothing"
    if not found:
        raise DatasetError(f"{name}: no complex (I/Q) array in the file; it holds {listed}")
    raise DatasetError(f"{name}: several complex arrays ({', '.join(found)}); keep one per file or name the "
                       "recording 'data'")


def _params(values: dict[str, Any]) -> RadarParams:
    return RadarParams(**{k: _scalar(values[k]) for k in PARAM_VARIABLES if k in values})


def recording_from_array(arr: np.ndarray, params: RadarParams, name: str,
                         layout: str | None = None) -> RawRecording:
    """A complex array as a RawRecording: 1-D slow time, 2-D (bins, sweeps) with the longer axis as sweeps."""
    if arr.size > MAX_SAMPLES:
        raise DatasetError(f"{name}: {arr.size} samples, more than {MAX_SAMPLES} in one recording; cut it")
    if arr.size == 0 or 0 in arr.shape:
        raise DatasetError(f"{name}: the array is empty (shape {arr.shape})")
    arr = _as_complex(arr)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim == 1:
        if layout not in (None, "slow-time"):
            raise DatasetError(f"{name}: a 1-D array is slow time, not {layout}")
        layout = "slow-time"
    elif arr.ndim == 2:
        if arr.shape[0] > arr.shape[1]:
            arr = arr.T  # the longer axis is the sweeps
        layout = layout or "range-time"
        if layout not in LAYOUTS[1:]:
            raise DatasetError(f"{name}: a 2-D array is range-time or fast-time, not {layout}")
    else:
        raise DatasetError(f"{name}: expected a 1-D slow-time or 2-D (bins, sweeps) array, got shape "
                           f"{arr.shape} (several channels? save one per file)")
    if arr.shape[-1] < 2:
        raise DatasetError(f"{name}: fewer than two sweeps (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise DatasetError(f"{name}: contains NaN or inf samples")
    return RawRecording(np.ascontiguousarray(arr), layout, params, name)


def _read_mat_v5(data: bytes, name: str) -> tuple[np.ndarray, RadarParams]:
    import scipy.io

    try:
        values = scipy.io.loadmat(io.BytesIO(data))
    except NotImplementedError:  # v7.3: an HDF5 file
        return _read_hdf5(data, name)
    except Exception as e:  # noqa: BLE001 - scipy raises several types for a corrupt file
        raise DatasetError(f"{name}: cannot read as a MATLAB file ({type(e).__name__}: {e})") from None
    values = {k: v for k, v in values.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    return values[_pick(values, name)], _params(values)


def _read_hdf5(data: bytes, name: str) -> tuple[np.ndarray, RadarParams]:
    try:
        import h5py
    except ModuleNotFoundError:
        raise DatasetError(f"{name}: reading HDF5 / MATLAB v7.3 files needs h5py (pip install h5py); or "
                           "save the recording with scipy.io.savemat (v5)") from None
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            found: dict[str, Any] = {}

            def keep(key: str, item: Any) -> None:  # returning a value would stop visititems
                if isinstance(item, h5py.Dataset):
                    found[key.rsplit("/", 1)[-1] if key.rsplit("/", 1)[-1] in PARAM_VARIABLES else key] = item

            f.visititems(keep)
            key = _pick(found, name)
            if int(np.prod(found[key].shape)) > MAX_SAMPLES:
                raise DatasetError(f"{name}: {key} has shape {found[key].shape}, more than {MAX_SAMPLES} "
                                   "samples; cut it")
            small = {k: v[()] for k, v in found.items() if k in PARAM_VARIABLES and v.size == 1}
            attrs = {k: v for k, v in {**f.attrs, **found[key].attrs}.items() if k in PARAM_VARIABLES}
            return found[key][()], _params({**attrs, **small})
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py raises several types for a corrupt file
        raise DatasetError(f"{name}: cannot read as HDF5 ({type(e).__name__}: {e})") from None


def _read_npz(data: bytes, name: str) -> tuple[np.ndarray, RadarParams]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            values = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{name}: cannot read .npz ({e})") from None
    return values[_pick(values, name)], _params(values)


def read_raw(src: Path | bytes, name: str, params: RadarParams | None = None,
             layout: str | None = None) -> RawRecording:
    """A raw recording (by `name`'s suffix) as complex samples and the radar's parameters: `params` (the
    caller's flags) over the file's own. DatasetError naming the file for anything unusable."""
    suffix = Path(name).suffix.lower()
    data = read_bytes(src, name)
    flags = params or RadarParams()
    if suffix == ".dat":
        rec = parse_dat(data, name)
        return RawRecording(rec.samples, rec.layout, flags.over(rec.params), name)
    if suffix == ".npy":
        if not data.startswith(_NPY_MAGIC):
            raise DatasetError(f"{name}: not a .npy file (no NumPy header): save arrays with numpy.save")
        try:
            arr, own = np.load(io.BytesIO(data), allow_pickle=False), RadarParams()
        except ValueError as e:
            raise DatasetError(f"{name}: cannot read .npy ({e})") from None
        if not _is_complex(arr.dtype):
            raise DatasetError(f"{name}: a raw recording must hold complex (I/Q) samples, got {arr.dtype}")
    elif suffix == ".npz":
        arr, own = _read_npz(data, name)
    elif suffix == ".mat":
        arr, own = _read_mat_v5(data, name)
    elif suffix in (".h5", ".hdf5"):
        arr, own = _read_hdf5(data, name)
    else:
        raise DatasetError(f"{name}: unsupported raw recording (expected .dat, .npy, .npz, .mat, .h5)")
    return recording_from_array(np.asarray(arr), flags.over(own), name, layout)


def is_raw(path: Path) -> bool:
    """Whether a file is a raw recording (by suffix; a .npy when it holds complex samples)."""
    suffix = path.suffix.lower()
    return suffix in RAW_SUFFIXES or (suffix == ".npy" and npy_is_complex(path))

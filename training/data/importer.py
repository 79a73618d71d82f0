"""`dopplergen import`: published micro-Doppler images (colour-mapped, any size, windows of recording
sessions), or raw radar recordings (training/data/raw_import.py) -> a dataset folder: meta.json, manifest.csv
(path,user,split,group,source), <user>/<id>.npy in dB <= 0.

SRC is an ImageFolder (one folder per person of .png/.jpg/.npy, optionally a sub-folder per session) or a
folder with manifest.csv (path,user[,group][,condition columns]). Colours go back to dB through the named
colour map (models/colormap.py), images are resized with antialiasing (Lanczos, in dB), and whole
sessions go to one split (models/sessions.py). Everything is written into a temporary folder beside
DST and renamed into place at the end, so a failure leaves nothing in DST.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import colormap, sessions
from models.dataset_folder import manifest_path, read_manifest
from models.paths import UnsafePathError, check_component, inside
from models.raw import RAW_SUFFIXES, is_raw
from training.data import figure_axes, raw_import
from training.data.convert import crop_and_invert, explain, parse_crop, read_source, resize_db, values_to_db
from training.data.dataset import DatasetError, Record, write_dataset
from training.data.staging import check_free, staged_folder

SUFFIXES = (".png", ".jpg", ".jpeg", ".npy", *RAW_SUFFIXES)
AXIS_KEYS = ("doppler_hz_per_bin", "doppler_hz_row0", "seconds_per_frame")  # change with crop and size
NOT_CARRIED = ("format_version", "image_size", "channels", "source", "dyn_range_db", "users", "import")


@dataclass
class ImportConfig:
    """Options of one import; written into meta.json["import"]."""

    size: int = 64  # output images are size x size (doppler x time)
    colormap: str = "jet"  # matplotlib colour map the images were drawn with ("gray" for grey images)
    # regex whose first group names the session in a person's folder (None: default rule)
    group: str | None = None
    dyn_range_db: float = 60.0  # dB the colour map spans: its first colour is -dyn_range_db, its last 0 dB
    test_fraction: float = 0.15  # of each person's files, in whole sessions
    val_fraction: float = 0.15  # of each person's files, in whole sessions (0: no val split)
    seed: int = 0  # shuffles sessions before they are dealt to splits
    # "Y0:Y1,X0:X1" box kept of every image, or "auto" (each image's detected plot area)
    crop: str | None = None
    npy_unit: str = "db"  # .npy value arrays: db (re-referenced to their peak), power or amplitude
    user_pattern: str | None = None  # regex whose first group, in the path under SRC, names the person
    activity_pattern: str | None = None  # regex whose first group is the manifest column "activity"
    raw: dict[str, Any] = field(default_factory=dict)  # raw recordings: radar flags, chain settings
    skip_bad: bool = False  # import the files that can be, list the rest (else: all or nothing)
    # "LO:HI" Doppler at the bottom:top edges of the kept image (Hz, kHz or m/s), "T0:T1" seconds left:right
    doppler_range: str | None = None
    time_range: str | None = None
    carrier_hz: float | None = None  # the radar's carrier (Hz): meta.json, and m/s in --doppler-range

    def validate(self) -> None:
        if not 8 <= self.size <= 1024:
            raise ValueError("--size must be within 8..1024")
        if not 10.0 <= self.dyn_range_db <= 200.0:
            raise ValueError("--dyn-range-db must be within 10..200")
        if self.test_fraction < 0 or self.val_fraction < 0 or self.test_fraction + self.val_fraction >= 1:
            raise ValueError("--test-fraction and --val-fraction must be >= 0 and sum to less than 1")
        if self.npy_unit not in ("db", "power", "amplitude"):
            raise ValueError("--npy-unit must be db, power or amplitude")
        colormap.check_name(self.colormap)
        sessions.compile_group(self.group)
        parse_crop(self.crop)
        raw_import.validate(self)
        figure_axes.check(self.doppler_range, self.time_range, self.carrier_hz)


@dataclass(frozen=True)
class Source:
    """One published file: its person, its path under SRC, its session, and the manifest's other columns."""

    user: str
    rel: str
    session: str
    extra: dict[str, str]


def discover(src: Path, pattern, cfg: ImportConfig | None = None) -> list[Source]:
    """Every file of SRC with its person and session (manifest.csv if present, else the ImageFolder
    layout, or --user-pattern), and its activity from --activity-pattern."""
    cfg = cfg or ImportConfig()
    if not src.is_dir():
        raise DatasetError(f"{src}: not a directory")
    found = _discover(src, pattern, cfg)
    return [Source(s.user, s.rel, s.session, {**s.extra, **raw_import.activity(s.rel, cfg)}) for s in found]


def _discover(src: Path, pattern, cfg: ImportConfig) -> list[Source]:
    if manifest_path(src).is_file():
        rows = read_manifest(src, required=("path", "user"))
        out = []
        for line, r in enumerate(rows, start=2):  # line 1 is the header
            rel = r["path"]
            try:  # a listed path stays inside SRC: not absolute, no '..'
                inside(src, rel, f"{manifest_path(src)}: line {line}")
                check_component(r["user"], f"{manifest_path(src)}: line {line}")
            except UnsafePathError as e:
                raise DatasetError(str(e)) from None
            inner = rel.split("/", 1)[1] if rel.startswith(r["user"] + "/") else rel
            session = r.get("group") or raw_import.session_of(src / rel, inner, pattern)
            extra = {k: v for k, v in r.items()
                     if k not in ("path", "user", "split", "group", "source") and k}
            out.append(Source(r["user"], rel, session, extra))
        return out
    if cfg.user_pattern:
        return [Source(*s) for s in raw_import.discover_by_pattern(src, cfg, SUFFIXES, pattern)]
    people = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not people:
        raise DatasetError(f"{src}: no manifest.csv and no person folders (expected "
                           "SRC/<person>/*.png|jpg|npy|dat|..., or --user-pattern for a flat folder)")
    out = []
    for person in people:
        files = sorted(f for f in person.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES
                       and not any(part.startswith(".") for part in f.relative_to(person).parts))
        if not files:
            raise DatasetError(f"{person}: person folder has no {'/'.join(SUFFIXES)} files")
        for f in files:
            inner = f.relative_to(person).as_posix()
            session = raw_import.session_of(f, inner, pattern)
            out.append(Source(person.name, f"{person.name}/{inner}", session, {}))
    return out


def rec_id(user: str, rel: str, taken: set[str]) -> str:
    """File id under <user>/: the path inside the person's folder without its suffix, made unique."""
    inner = rel.split("/", 1)[1] if rel.startswith(user + "/") else rel
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(Path(inner).with_suffix("")))
    rid, k = stem.replace("/", "__"), 1
    while rid in taken:
        k += 1
        rid = f"{stem}_{k}"
    taken.add(rid)
    return rid


def plan_splits(sources: list[Source], cfg: ImportConfig) -> dict[tuple[str, str], str]:
    """(user, session) -> split; DatasetError for a person with too few sessions (naming what was found)."""
    out = {}
    for user in sorted({s.user for s in sources}):
        mine = [s for s in sources if s.user == user]
        sizes: dict[str, int] = {}
        for s in mine:
            sizes[s.session] = sizes.get(s.session, 0) + 1
        try:
            split = sessions.split_sessions(sizes, cfg.test_fraction, cfg.val_fraction,
                                            sessions.person_seed(user, cfg.seed))
        except ValueError as e:
            rule = f"--group {cfg.group!r}" if cfg.group else f"the default rule ({sessions.DEFAULT_RULE})"
            found = sessions.describe([s.session for s in mine], [s.rel for s in mine])
            raise DatasetError(f"{user}: too few recordings: {e}. Found {found} by {rule}. Add recordings of "
                               "this person, lower --val-fraction to 0, or, if each file is its own "
                               "recording, pass --group '(.*)'") from None
        out.update({(user, name): sp for name, sp in split.items()})
    return out


def _convert(src: Path, sources: list[Source], splits, cfg: ImportConfig, stats: dict[str, Any],
             progress: bool):
    """Yield a Record per readable, well-fitting file; collect the failures and inversion errors in
    `stats`."""
    from training.progress import progress as progress_bar

    taken: dict[str, set[str]] = {}
    for s in progress_bar(sources, desc="import", unit="file", disable=not progress):
        try:
            if is_raw(src / s.rel):  # a recording: its windows through the field's chain
                base = rec_id(s.user, s.rel, taken.setdefault(s.user, set()))
                yield from raw_import.records(src / s.rel, s.rel, s.user, base, splits[(s.user, s.session)],
                                              {"group": s.session, "source": s.rel, **s.extra}, cfg, stats)
                continue
            arr = read_source(src / s.rel, s.rel)
            if arr.ndim == 2:
                db, error = values_to_db(arr, cfg.npy_unit, cfg.dyn_range_db), 0.0
            else:
                box, inv, problem = crop_and_invert(arr, cfg.colormap, cfg.crop)
                if problem is not None:  # full advice (crop, candidate maps) for the first few only: it costs
                    advice = len(stats["failures"]) < 3
                    stats["failures"].append((s.rel, explain(s.rel, arr, problem, cfg.colormap, cfg.crop, box)
                                              if advice else f"{s.rel}: {problem.message}"))
                    continue
                db, error = ((inv.value - 1.0) * cfg.dyn_range_db).astype(np.float32), 255 * inv.mean_error
        except (DatasetError, ValueError) as e:
            stats["failures"].append((s.rel, str(e) if str(e).startswith(s.rel) else f"{s.rel}: {e}"))
            continue
        stats["errors"].append(error)
        stats["medians"].append(float(np.median(db)))
        rid = rec_id(s.user, s.rel, taken.setdefault(s.user, set()))
        stats["report"].append((f"{s.user}/{rid}.npy", s.rel, f"{error:.3f}"))
        yield Record(s.user, rid, resize_db(db, cfg.size, cfg.dyn_range_db), splits[(s.user, s.session)],
                     {"group": s.session, "source": s.rel, **s.extra})


def _meta(src: Path, cfg: ImportConfig) -> dict[str, Any]:
    """meta.json: what SRC/meta.json says about the radar (axes only without a crop), plus the import
    options."""
    meta: dict[str, Any] = {}
    if (src / "meta.json").is_file():
        try:
            meta = {k: v for k,
                    v in json.loads((src / "meta.json").read_text()).items() if k not in NOT_CARRIED}
        except json.JSONDecodeError as e:
            raise DatasetError(f"{src / 'meta.json'}: invalid JSON ({e})") from None
    if cfg.crop:
        # the crop changed them by an unknown amount
        meta = {k: v for k, v in meta.items() if k not in AXIS_KEYS}
    meta.update(figure_axes.axes_meta(cfg.doppler_range, cfg.time_range, cfg.carrier_hz, cfg.size))
    return {**meta, "source": "imported", "image_size": [cfg.size, cfg.size], "channels": 1,
            "dyn_range_db": cfg.dyn_range_db, "import": {**asdict(cfg), "src": str(src)}}


def import_dataset(
    src: str | Path, out: str | Path, cfg: ImportConfig, progress: bool = True
) -> dict[str, Any]:
    """Import SRC into the dataset folder `out` (all or nothing) and return the summary numbers."""
    cfg.validate()
    src, out = Path(src), Path(out)
    check_free(out)
    sources = discover(src, sessions.compile_group(cfg.group), cfg)
    raw = raw_import.check_kinds(src, [s.rel for s in sources])
    splits = plan_splits(sources, cfg)
    meta = _meta(src, cfg)
    if not raw and not cfg.skip_bad:  # fail fast on a systematic misfit (map, frame); --skip-bad: one file
        first = read_source(src / sources[0].rel, sources[0].rel)
        box, _, problem = crop_and_invert(first, cfg.colormap, cfg.crop) if first.ndim == 3 else (None,) * 3
        if problem is not None:
            raise DatasetError(f"{explain(sources[0].rel, first, problem, cfg.colormap, cfg.crop, box)} "
                               f"(nothing was written to {out})")
    stats: dict[str, Any] = {"failures": [], "errors": [], "report": [], "medians": []}
    with staged_folder(out) as tmp:
        write_dataset(tmp, _convert(src, sources, splits, cfg, stats, progress), meta)
        failed = dict(stats["failures"])
        if failed and (not cfg.skip_bad or len(failed) == len(sources)):
            n, shown = len(failed), "\n  ".join(list(failed.values())[:5])
            if n == 1:  # one bad file: one line, naming it and the rule
                raise DatasetError(f"{shown} (nothing was written to {out}; --skip-bad imports the rest)")
            raise DatasetError(f"{n} of {len(sources)} file(s) could not be imported (nothing was written to "
                               f"{out}; --skip-bad imports the rest):\n  {shown}"
                               + (f"\n  ... and {n - 5} more" if n > 5 else ""))
        errors = np.asarray(stats["errors"] or [0.0])
        varying = raw_import.finish_meta(meta, cfg, stats)
        meta["import"].update(mean_inversion_error_255=round(float(errors.mean()), 4),
                              max_inversion_error_255=round(float(errors.max()), 4),
                              skipped=[{"source": rel, "reason": msg.removeprefix(f"{rel}: ")}
                                       for rel, msg in failed.items()])
        (tmp / "meta.json").write_text(json.dumps({**json.loads((tmp / "meta.json").read_text()), **meta},
                                                  indent=2, sort_keys=True) + "\n")
        with open(tmp / "import_report.csv", "w", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows([("path", "source", "inversion_error_255"),
                                                           *stats["report"]])
    kept = [s for s in sources if s.rel not in failed]  # splits stay as planned; a skipped file drops out
    per_split = {sp: sum(1 for s in kept if splits[(s.user, s.session)] == sp)
                 for sp in ("train", "val", "test")}
    sessions_kept = {(s.user, s.session) for s in kept}
    sess = {sp: sum(1 for k in sessions_kept if splits[k] == sp) for sp in ("train", "val", "test")}
    return {"files": len(kept), "people": len({s.user for s in kept}), "sessions": len(sessions_kept),
            "per_split": per_split, "sessions_per_split": sess, "mean_error": float(errors.mean()),
            "max_error": float(errors.max()), "median_db": float(np.median(stats["medians"] or [-np.inf])),
            "raw": raw, "windows": len(stats.get("raw_axes", [])), "varying": varying,
            "skipped": list(failed.items())}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ImportConfig()
    p.add_argument("src", type=Path,
                   help="ImageFolder (SRC/<person>/*.png|jpg|npy) or a folder with manifest.csv")
    p.add_argument("--out", type=Path, required=True,
                   help="dataset folder to create (must not exist or be empty)")
    p.add_argument("--size", type=int, required=True,
                   help="output size N: images become N x N (doppler x time)")
    p.add_argument("--colormap", default=d.colormap,
                   help="matplotlib colour map of the images: jet (default), turbo, viridis, gray, ...; a "
                        "misfit names the best-fitting ones")
    p.add_argument("--group", default=None,
                   help="regex; its first group names the session in the path inside a person's folder "
                        f"(default: {sessions.DEFAULT_RULE})")
    p.add_argument("--dyn-range-db", type=float, default=d.dyn_range_db,
                   help="dB the colour map spans (default 60)")
    p.add_argument("--test-fraction", type=float, default=d.test_fraction,
                   help="per person, whole sessions (0.15)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="per person, whole sessions (0.15)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the session shuffle (default 0)")
    p.add_argument("--crop", default=None,
                   help="Y0:Y1,X0:X1 box kept of every image (rows, then columns), "
                        "or 'auto' to crop each image to its detected plot area")
    p.add_argument("--npy-unit", default=d.npy_unit, choices=("db", "power", "amplitude"),
                   help="what 2-D .npy arrays hold (default db)")
    p.add_argument("--skip-bad", action="store_true",
                   help="import the files that can be and list each skipped one and why (stderr, "
                        "meta.json import.skipped); default: one bad file stops the import")
    p.add_argument("--pipeline", default=None,
                   help="a pipeline folder: after importing, say how far the recordings are from its domain "
                        "(and when to run dopplergen adapt)")
    figure_axes.add_arguments(p)
    raw_import.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = ImportConfig(size=args.size, colormap=args.colormap, group=args.group,
                       dyn_range_db=args.dyn_range_db,
                       test_fraction=args.test_fraction, val_fraction=args.val_fraction, seed=args.seed,
                       crop=args.crop, npy_unit=args.npy_unit, user_pattern=args.user_pattern,
                       activity_pattern=args.activity_pattern, raw=raw_import.options(args),
                       skip_bad=args.skip_bad, doppler_range=args.doppler_range, time_range=args.time_range,
                       carrier_hz=args.carrier_hz)
    t0 = time.perf_counter()
    try:
        s = import_dataset(args.src, args.out, cfg)
    except (DatasetError, ValueError) as e:
        print(f"dopplergen import: error: {e}", file=sys.stderr)
        return 2
    for _, msg in s["skipped"]:
        print(f"import: skipped {msg}", file=sys.stderr)
    n, k = s["per_split"], s["sessions_per_split"]
    if args.pipeline:
        from training.adapt import domain_report

        domain_report(args.pipeline, args.out)
    if s["raw"]:
        return raw_import.report(s, args.out, cfg, time.perf_counter() - t0)
    skipped = f" ({len(s['skipped'])} skipped, listed above)" if s["skipped"] else ""
    print(f"import: {s['files']} files of {s['people']} people in {s['sessions']} sessions -> {args.out} "
          f"({cfg.size}x{cfg.size}, {cfg.colormap}, {cfg.dyn_range_db:g} dB); train/val/test "
          f"{n['train']}/{n['val']}/{n['test']} files ({k['train']}/{k['val']}/{k['test']} sessions); mean "
          f"inversion error {s['mean_error']:.2f}/255 (worst {s['max_error']:.2f}) in "
          f"{time.perf_counter() - t0:.1f} s{skipped}")
    # a map and its "_r" twin fit equally well; only the values tell
    if s["median_db"] > -cfg.dyn_range_db / 2:
        twin = cfg.colormap[:-2] if cfg.colormap.endswith("_r") else cfg.colormap + "_r"
        print(f"import: warning: the median pixel is {s['median_db']:.1f} dB, in the upper half of the map, "
              "where a spectrogram's noise floor rarely is; if the images use the reversed map, re-import "
              f"with --colormap {twin}", file=sys.stderr)
    return 0

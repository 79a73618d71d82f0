"""`dopplergen merge`: real and generated dataset folders -> one dataset folder for a classifier, provenance
per row.

`dopplergen generate` writes a dataset folder of synthetic spectrograms. Merged with real data, every row says
where it came from: `origin` (real | synthetic) and, for generated rows, the `pipeline_fingerprint` and `seed`
that reproduce it. Real rows keep their split; generated rows only ever go to train, so nothing generated is
validated or tested on. `merge_sets` does the same in memory for code that already holds SpectrogramSets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset_folder import manifest_path, read_manifest
from training.data.dataset import (
    FORMAT_VERSION,
    DatasetError,
    Record,
    SpectrogramSet,
    load_dataset,
    write_dataset,
)
from training.data.importer import rec_id
from training.data.staging import check_free, staged_folder

PROVENANCE = ("origin", "pipeline_fingerprint", "seed")  # columns every merged row carries


def _raw_rows(root: Path) -> dict[str, dict[str, str]]:
    """manifest.csv rows by path, as written (the reader parses numeric-looking columns; seeds must stay
    exact)."""
    if not manifest_path(root).is_file():
        return {}
    return {r["path"]: r for r in read_manifest(root)}


def pipeline_fingerprint_of(ds: SpectrogramSet, path: Path) -> str:
    """The generator behind a `dopplergen generate` folder (meta.json["generation"]), or a DatasetError saying
    so."""
    gen = ds.meta.get("generation")
    if not isinstance(gen, dict) or not gen.get("pipeline_fingerprint"):
        raise DatasetError(f"{path}: not a `dopplergen generate` folder (meta.json has no "
                           "generation.pipeline_fingerprint); pass real data first, then generated folders")
    return str(gen["pipeline_fingerprint"])


def merge_sets(real: SpectrogramSet, synthetic: SpectrogramSet,
               pipeline_fingerprint: str = "") -> SpectrogramSet:
    """Real rows (their splits) + generated rows (as train), labels in real's user order, with provenance
    columns."""
    unknown = sorted(set(synthetic.users) - set(real.users))
    if unknown:
        raise DatasetError(f"generated users {unknown} are not in the real data ({real.users})")
    if synthetic.x.shape[1:] != real.x.shape[1:]:
        raise DatasetError(f"generated images are {synthetic.x.shape[1:]}, real ones {real.x.shape[1:]}; "
                           "load both at one size")
    n_real, n_syn = len(real), len(synthetic)
    keys = sorted((set(real.extra) | set(synthetic.extra)) - set(PROVENANCE))

    def column(ds: SpectrogramSet, key: str, n: int) -> np.ndarray:
        return np.asarray(ds.extra[key]).astype(str) if key in ds.extra else np.full(n, "")

    extra = {k: np.concatenate([column(real, k, n_real), column(synthetic, k, n_syn)]) for k in keys}
    seeds = synthetic.extra.get("seed", np.full(n_syn, ""))
    extra["origin"] = np.array(["real"] * n_real + ["synthetic"] * n_syn)
    extra["pipeline_fingerprint"] = np.array([""] * n_real + [pipeline_fingerprint] * n_syn)
    extra["seed"] = np.concatenate([np.full(n_real, ""), [str(int(s)) if s != "" else "" for s in seeds]])
    labels = np.array([real.users.index(synthetic.users[i]) for i in synthetic.labels], dtype=np.int64)
    return replace(real, x=np.concatenate([real.x, np.clip(synthetic.x, -real.dyn_range_db, 0.0)]),
                   labels=np.concatenate([real.labels, labels]), paths=real.paths + synthetic.paths,
                   splits=np.concatenate([real.splits, np.full(n_syn, "train")]), extra=extra)


def _records(real_path: Path, synth_paths: list[Path], counts: dict[str, int], meta: dict[str, Any]):
    """Records of the merged folder: real rows as they were, then each generated folder's rows as train."""
    real = load_dataset(real_path)
    hw = tuple(real.x.shape[-2:])
    rows, taken = _raw_rows(real_path), {}
    meta.update({k: v for k, v in real.meta.items() if k != "format_version"}, source="merged",
                merge={"real": {"path": str(real_path), "fingerprint": real.fingerprint}, "synthetic": []})
    for x, label, path, split in zip(real.x, real.labels, real.paths, real.splits, strict=True):
        user = real.users[label]
        extra = {k: v for k, v in rows.get(path, {}).items()
                 if k not in ("path", "user", "split", *PROVENANCE)}
        split = "train" if split == "synthetic" else str(split)
        counts[f"real_{split}"] = counts.get(f"real_{split}", 0) + 1
        yield Record(user, rec_id(user, path, taken.setdefault(user, set())), x[0], split,
                     {**extra, "origin": "real", "pipeline_fingerprint": "", "seed": ""})
    for k, sp in enumerate(synth_paths):
        syn = load_dataset(sp, size=hw)
        fp = pipeline_fingerprint_of(syn, sp)
        unknown = sorted(set(syn.users) - set(real.users))
        if unknown:
            raise DatasetError(f"{sp}: generated users {unknown} are not in the real data {real_path} "
                               f"({real.users})")
        meta["merge"]["synthetic"].append({"path": str(sp), "fingerprint": syn.fingerprint,
                                           "pipeline_fingerprint": fp,
                                           "generation": syn.meta.get("generation")})
        rows = _raw_rows(sp)
        for x, label, path in zip(syn.x, syn.labels, syn.paths, strict=True):
            user = syn.users[label]
            raw = rows.get(path, {})
            extra = {c: raw[c] for c in ("steps", "guidance", "scheduler") if c in raw}
            counts["synthetic"] = counts.get("synthetic", 0) + 1
            name = rec_id(user, f"syn{k}-{Path(path).name}", taken.setdefault(user, set()))
            yield Record(user, name, np.clip(x[0], -real.dyn_range_db, 0.0), "train",
                         {**extra, "origin": "synthetic", "pipeline_fingerprint": fp,
                          "seed": raw.get("seed", "")})


def merge_folders(real: str | Path, synthetic: list[str | Path], out: str | Path) -> dict[str, int]:
    """Write the merged dataset folder `out` (all or nothing); returns row counts by origin and split."""
    counts: dict[str, int] = {}
    meta: dict[str, Any] = {}
    with staged_folder(out) as tmp:
        write_dataset(tmp, _records(Path(real), [Path(p) for p in synthetic], counts, meta), {})
        # meta is complete only once the records are: rewrite it with the provenance of every input folder
        (tmp / "meta.json").write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2,
                                                  sort_keys=True) + "\n")
    return counts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("real", type=Path, help="the real dataset folder (e.g. from `dopplergen import`)")
    p.add_argument("synthetic", type=Path, nargs="+", help="one or more `dopplergen generate` output folders")
    p.add_argument("--out", type=Path, required=True, help="merged dataset folder to create (must not exist)")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        check_free(args.out)
        c = merge_folders(args.real, args.synthetic, args.out)
    except (DatasetError, ValueError) as e:
        print(f"dopplergen merge: error: {e}", file=sys.stderr)
        return 2
    print(f"merge: {sum(v for k, v in c.items() if k.startswith('real'))} real rows (train/val/test "
          f"{c.get('real_train', 0)}/{c.get('real_val', 0)}/{c.get('real_test', 0)}) + "
          f"{c.get('synthetic', 0)} synthetic rows (train) from {len(args.synthetic)} folder(s) -> "
          f"{args.out} in {time.perf_counter() - t0:.1f} s")
    return 0

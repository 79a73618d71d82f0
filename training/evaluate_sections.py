"""The sections of `dopplergen evaluate`, one function each: context in, JSON-able dict out."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training import fidelity as fm
from training.generate import derive_seed


class Log:
    """Print a line (main process) and keep it in <out>/evaluate.log, with the elapsed time."""

    def __init__(self, path: Path):
        self.path, self.t0 = path, time.perf_counter()
        path.write_text("")

    def __call__(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f} s] {msg}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


@dataclass
class Data:
    """Real train and test splits restricted to the pipeline's users; labels index `users`."""

    train_x: np.ndarray  # (N, C, H, W) dB
    train_y: np.ndarray
    train_paths: list[str]
    test_x: np.ndarray
    test_y: np.ndarray
    test_paths: list[str]
    users: list[str]
    meta: dict[str, Any]
    fingerprint: str

    @property
    def dyn_range_db(self) -> float:
        return float(self.meta.get("dyn_range_db", 60.0))


def load_data(path: str, pipe: Any, log: Log) -> Data:
    from training.dataset import load_dataset
    from training.protocol import check_disjoint

    h, w = pipe.image_size
    ds = load_dataset(path, channels=pipe.channels)
    if tuple(ds.x.shape[-2:]) != (h, w):
        log(f"resizing {path} from {ds.x.shape[-2:]} to the pipeline's {h}x{w}")
        ds = load_dataset(path, channels=pipe.channels, size=(h, w))
    users = [u for u in ds.users if u in pipe.users]
    if not users:
        raise SystemExit(f"no user of {path} ({ds.users[:5]}...) is known to the pipeline ({pipe.users[:5]}...)")
    if len(users) < len(ds.users):
        log(f"warning: evaluating {len(users)} of {len(ds.users)} users (the others are unknown to the pipeline)")
    remap = np.array([users.index(u) if u in users else -1 for u in ds.users])
    tr, te = ds.filter("train", users=users), ds.filter("test", users=users)
    check_disjoint(tr.paths, te.paths)  # the protocol's first rule: no test recording is a train recording
    return Data(tr.x, remap[tr.labels], tr.paths, te.x, remap[te.labels], te.paths, users, ds.meta, ds.fingerprint)


@dataclass
class Pool:
    x: np.ndarray  # (N, C, H, W) dB
    y: np.ndarray  # labels into Data.users
    seeds: list[int]
    seconds: float = 0.0


@dataclass
class Context:
    pipe: Any
    data: Data
    st: Any  # EvalSettings
    steps: int
    guidance: float
    scheduler: str
    seed: int
    device: str
    out: Path
    log: Log
    threads: int | None = None  # CPU threads for the classifiers (None: training.classifier's choice)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def gen_per_user(self) -> int:
        return self.st.gen_per_user or int(np.median(np.bincount(self.data.train_y)))

    def sample(self, pipe: Any, y: np.ndarray, seeds: list[int], *, steps: int | None = None,
               guidance: float | None = None, scheduler: str | None = None, desc: str = "sample",
               batch_size: int | None = None) -> Pool:
        """Batched, batch-invariant sampling (pad_to) for dataset labels y with explicit seeds."""
        from tqdm import tqdm

        from models.sampling import sample

        idx = [pipe.user_encoder.index_of(self.data.users[int(c)]) for c in y]
        b = batch_size or self.st.batch_size
        outs, t0 = [], time.perf_counter()
        for i in tqdm(range(0, len(idx), b), desc=desc, unit="batch", leave=False):
            outs.append(sample(pipe, idx[i:i + b], seeds[i:i + b], num_inference_steps=steps or self.steps,
                               guidance_scale=self.guidance if guidance is None else guidance,
                               scheduler=scheduler or self.scheduler, pad_to=b).numpy())
        return Pool(np.concatenate(outs).astype(np.float32), np.asarray(y, np.int64), list(seeds),
                    time.perf_counter() - t0)

    def plan(self, per_user: int, stream: int = 0) -> tuple[np.ndarray, list[int]]:
        """Labels and seeds of per_user samples per user (user-major); stream 0 = the main generated pool."""
        y = np.repeat(np.arange(len(self.data.users)), per_user)
        base = self.seed if stream == 0 else self.seed * 1_000_003 + stream
        return y, [derive_seed(base, self.data.users[c], i % per_user) for i, c in enumerate(y)]

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int, num_classes: int | None = None, epochs: int | None = None):
        from training.classifier import train_classifier

        kw: dict[str, Any] = {"epochs": epochs or self.st.classifier_epochs} if (epochs or self.st.classifier_epochs) else {}
        if self.st.classifier_min_steps:
            kw["min_steps"] = self.st.classifier_min_steps
        return train_classifier(x, y, num_classes or len(self.data.users), dyn_range_db=self.data.dyn_range_db,
                                seed=seed, threads=self.threads, **kw)


# ---- sections -------------------------------------------------------------------------------------------------
def reconstruction(ctx: Context) -> dict[str, Any]:
    import torch

    x_model = ctx.pipe.normalization.to_model(torch.as_tensor(ctx.data.test_x))
    rec = fm.reconstruct(ctx.pipe.vae, x_model)
    out = fm.reconstruction_metrics(x_model, rec, ctx.data.dyn_range_db)
    out["space"] = ("PSNR and SSIM are computed in the normalised model space [-1, 1] (data_range = 2; torchmetrics), "
                    f"which for this linear map equals PSNR in dB with data range {ctx.data.dyn_range_db:g} dB.")
    ctx.log(f"reconstruction: PSNR {out['psnr_db']:.2f} dB, SSIM {out['ssim']:.4f} on {out['n']} test recordings")
    from models import autoencoder as ae

    if ae.is_vq(ctx.pipe.vae):  # codebook collapse is the classic VQ failure: report the usage on unseen data
        codes = torch.cat([ae.encode_codes(ctx.pipe.vae, x_model[i:i + 64]).cpu() for i in range(0, len(x_model), 64)])
        out["codebook"] = ae.codebook_usage(codes, int(ctx.pipe.vae.config.num_vq_embeddings))
        ctx.log(f"codebook: perplexity {out['codebook']['perplexity']:.1f} of {out['codebook']['num_codes']}, "
                f"{100 * out['codebook']['dead_fraction']:.1f}% unused on the test split")
    return out


@dataclass
class Reference:
    clf: Any
    trtr: float
    description: str


def reference_classifier(ctx: Context) -> Reference:
    from training.classifier import accuracy

    d = ctx.data
    clf = ctx.fit(d.train_x, d.train_y, seed=ctx.seed)
    trtr = accuracy(clf, d.test_x, d.test_y)
    desc = (f"training.classifier UserCNN, trained on the {len(d.train_y)} real train recordings "
            f"(seed {ctx.seed}); real test accuracy (TRTR) {100 * trtr:.1f}% on {len(d.test_y)} recordings.")
    ctx.log(f"reference classifier: TRTR {trtr:.3f}")
    return Reference(clf, trtr, desc)


def generated_pool(ctx: Context) -> Pool:
    y, seeds = ctx.plan(ctx.gen_per_user)
    pool = ctx.sample(ctx.pipe, y, seeds, desc="generate pool")
    ctx.log(f"generated {len(y)} samples ({ctx.gen_per_user} per user, {ctx.scheduler} {ctx.steps} steps, "
            f"guidance {ctx.guidance}) in {pool.seconds:.0f} s")
    return pool


def gan_metrics(ctx: Context, ref: Reference, pool: Pool) -> dict[str, Any]:
    from training.classifier import accuracy

    affinity = accuracy(ref.clf, pool.x, pool.y)
    tstr_clf = ctx.fit(pool.x, pool.y, seed=ctx.seed)
    tstr = accuracy(tstr_clf, ctx.data.test_x, ctx.data.test_y)
    per_user = {u: float((ref.clf.predict(pool.x[pool.y == i]) == i).mean()) for i, u in enumerate(ctx.data.users)}
    ctx.log(f"affinity {affinity:.3f} (x{affinity / ref.trtr:.2f} of TRTR) | TSTR {tstr:.3f} (x{tstr / ref.trtr:.2f})")
    return dict(classifier=ref.description, trtr=ref.trtr, affinity=affinity, affinity_ratio=affinity / ref.trtr,
                tstr=tstr, tstr_ratio=tstr / ref.trtr, affinity_per_user=per_user, n_generated=int(len(pool.y)))


def _features(ctx: Context, ref: Reference, x: np.ndarray) -> np.ndarray:
    return ref.clf.features(x).astype(np.float64)


def fidelity(ctx: Context, ref: Reference, pool: Pool) -> dict[str, Any]:
    d = ctx.data
    rng = np.random.default_rng(ctx.seed)
    n = min(len(d.test_y), len(pool.y), len(d.train_y))
    f_test = _features(ctx, ref, d.test_x[rng.permutation(len(d.test_y))[:n]])
    f_gen = _features(ctx, ref, pool.x[rng.permutation(len(pool.y))[:n]])
    f_train = _features(ctx, ref, d.train_x[rng.permutation(len(d.train_y))[:n]])
    ctx.cache["f_test_all"] = _features(ctx, ref, d.test_x)
    fd_gen, fd_scale = fm.frechet_distance(f_gen, f_test), fm.frechet_distance(f_train, f_test)

    def fit_cnn(x, y, seed):
        return ctx.fit(x, y, seed=seed, num_classes=2).predict

    c2st = fm.two_sample_test(d.train_x, pool.x, fit_cnn, seed=ctx.seed)
    c2st["classifier"] = "fresh UserCNN, real train vs generated, trained on one half and scored on the other"
    # The same test on the VAE's reconstructions of real recordings: the floor any generator on this VAE can reach.
    import torch

    norm = ctx.pipe.normalization
    recon = norm.to_db(fm.reconstruct(ctx.pipe.vae, norm.to_model(torch.as_tensor(d.train_x)))).numpy()
    c2st_vae = fm.two_sample_test(d.train_x, recon, fit_cnn, seed=ctx.seed)
    ctx.log(f"Fréchet distance gen-test {fd_gen:.2f} vs train-test {fd_scale:.2f} | C2ST accuracy {c2st['accuracy']:.3f} "
            f"(real vs VAE reconstruction: {c2st_vae['accuracy']:.3f})")
    return dict(fd_generated_test=fd_gen, fd_train_test=fd_scale, fd_ratio=fd_gen / max(fd_scale, 1e-12), n=int(n),
                feature_dim=int(f_test.shape[1]), c2st=c2st, c2st_vae=c2st_vae)


def kinematic_readouts(x: np.ndarray, y: np.ndarray, users: list[str], meta: dict[str, Any]
                       ) -> dict[str, dict[str, list[float]]]:
    """Per user: torso speed (m/s), upper-envelope speed (m/s) and cadence (steps/min) of each (N, C, H, W) dB image,
    with the radar axes of the dataset's meta.json (training.physics estimators). Raises KeyError without axes."""
    from training.physics import SPEED_OF_LIGHT, axes_from_meta, kinematics

    doppler, _ = axes_from_meta(meta, x.shape[-2:])
    wavelength = float(meta.get("wavelength_m") or SPEED_OF_LIGHT / float(meta["carrier_hz"]))
    spf = float(meta["seconds_per_frame"])
    out: dict[str, dict[str, list[float]]] = {u: {"torso_mps": [], "envelope_mps": [], "cadence_spm": []}
                                              for u in users}
    for img, c in zip(x, y, strict=True):
        k = kinematics(img[0], doppler, spf, wavelength)
        r = out[users[int(c)]]
        r["torso_mps"].append(k["torso_mps"])
        r["envelope_mps"].append(k["envelope_mps"])
        r["cadence_spm"].append(60.0 / k["step_s"] if k["step_s"] and math.isfinite(k["step_s"]) else math.nan)
    return out


def physics(ctx: Context, pool: Pool) -> dict[str, Any]:
    d = ctx.data
    try:
        real = kinematic_readouts(d.test_x, d.test_y, d.users, d.meta)
    except (KeyError, TypeError, ValueError) as e:
        ctx.log(f"physics: skipped (dataset meta.json has no radar axes: {e})")
        return dict(skipped=f"meta.json lacks the radar/STFT axes ({e})", per_user={}, mean_rel_error={},
                    max_rel_error={}, method="skipped")
    res = fm.physics_consistency(real, kinematic_readouts(pool.x, pool.y, d.users, d.meta))
    res["method"] = ("training.physics estimators on every real test and generated spectrogram: mean torso-line "
                     "speed, 95th-percentile upper envelope at -40 dB (m/s) and cadence (steps/min, from the "
                     "envelope's autocorrelation). Relative error = |median(generated) - median(real)| / "
                     "median(real) per user; a user with no valid generated read-out counts as 100%. The target "
                     "applies to the mean over users; the worst user is shown too.")
    ctx.log("physics: mean relative errors " + ", ".join(f"{q} {v:.3f}" for q, v in res["mean_rel_error"].items()))
    return res


def sweep(ctx: Context, ref: Reference, pool: Pool) -> dict[str, Any]:
    """Affinity and FD vs sampler/steps and vs guidance; every setting samples the pool's seeds (or a prefix)."""
    st = ctx.st
    f_test = ctx.cache.get("f_test_all")
    n_users = len(ctx.data.users)
    rows = []
    settings = [("sampler", s, n, ctx.guidance) for s, n in sweep_samplers(ctx)]
    settings += [("guidance", ctx.scheduler, ctx.steps, g) for g in st.sweep_guidance]
    done: dict[tuple, dict[str, Any]] = {}
    for kind, sched, steps, g in settings:
        key = (sched, steps, g)
        if key in done:
            rows.append({**done[key], "kind": kind})
            continue
        per_user = min(st.ddpm_per_user if sched == "ddpm" else st.sweep_per_user, ctx.gen_per_user)
        if key == (ctx.scheduler, ctx.steps, ctx.guidance):  # the pool already holds these seeds at these settings
            keep = np.concatenate([np.flatnonzero(pool.y == c)[:per_user] for c in range(n_users)])
            p = Pool(pool.x[keep], pool.y[keep], [pool.seeds[i] for i in keep], pool.seconds * len(keep) / len(pool.y))
        else:
            y, seeds = ctx.plan(per_user)
            # DDPM-1000 runs as one batch: padding it to the batch size would waste most of its 1000 UNet calls.
            p = ctx.sample(ctx.pipe, y, seeds, steps=steps, guidance=g, scheduler=sched, desc=f"sweep {sched} {steps} g{g}",
                           batch_size=len(y) if sched == "ddpm" else None)
        first = np.concatenate([np.flatnonzero(p.y == c)[:st.ddpm_per_user] for c in range(n_users)])
        f_gen = _features(ctx, ref, p.x)
        row = dict(kind=kind, scheduler=sched, steps=steps, guidance=g, n=int(len(p.y)), n_small=int(len(first)),
                   affinity=float((ref.clf.predict(p.x) == p.y).mean()),
                   fd=fm.frechet_distance(f_gen, f_test) if len(p.y) > 2 else math.nan,
                   fd_small=fm.frechet_distance(f_gen[first], f_test) if len(first) > 2 else math.nan,
                   seconds_per_sample=p.seconds / len(p.y))
        done[key] = row
        rows.append(row)
        ctx.log(f"sweep {sched:11s} {steps:4d} steps, guidance {g}: affinity {row['affinity']:.3f}, "
                f"FD(N={row['n']}) {row['fd']:.2f}, FD(N={row['n_small']}) {row['fd_small']:.2f}, "
                f"{row['seconds_per_sample']:.3f} s/sample")
    ddpm_steps = max((n for s, n in sweep_samplers(ctx) if s == "ddpm"), default=0)
    note = "" if not ddpm_steps else (f"Every setting samples the same seeds (those of the generated pool). DDPM-{ddpm_steps} costs ~"
            f"{ddpm_steps // max(1, ctx.steps)}x the UNet calls of {ctx.scheduler} {ctx.steps}, so it gets "
            f"{st.ddpm_per_user} per user (one batch); the others {st.sweep_per_user} per user. 'FD (N small)' uses "
            f"the first {st.ddpm_per_user} per user of every setting, so all rows, DDPM included, compare at equal N; "
            "'FD' uses all samples of the row (not available for DDPM at its N). Small N inflates FD: compare rows "
            "with each other, not with the fidelity section. Affinity uses all samples of the row; s / sample is wall "
            "time on the evaluating machine (noisy when it is shared).")
    return dict(note=note, rows=rows, conclusion=_sweep_conclusion(rows, ctx))


def sweep_samplers(ctx: Context) -> list[tuple[str, int]]:
    """The continuous schedulers for kl / vq-latent; respaced VQ-Diffusion step counts for vq-diffusion."""
    if ctx.pipe.route != "vq-diffusion":
        return list(ctx.st.sweep_samplers)
    total = int(ctx.pipe.scheduler_config["num_train_timesteps"])
    return [("vq-diffusion", n) for n in sorted({min(n, total) for n in ctx.st.sweep_vq_steps}, reverse=True)]


def _sweep_conclusion(rows: list[dict[str, Any]], ctx: Context) -> str:
    name = "vq-diffusion" if ctx.pipe.route == "vq-diffusion" else "dpmsolver++"
    dpm = sorted((r for r in rows if r["kind"] == "sampler" and r["scheduler"] == name), key=lambda r: r["steps"])
    ref_steps = ctx.steps if name == "vq-diffusion" else 20
    ref = next((r for r in dpm if r["steps"] == ref_steps), dpm[-1] if dpm else None)
    if ref is None:
        return ""
    ok = [r for r in dpm if r["affinity"] >= ref["affinity"] - 0.02 and r["fd"] <= 1.15 * ref["fd"]]
    fewest = ok[0]["steps"] if ok else ref["steps"]
    guid = [r for r in rows if r["kind"] == "guidance"]
    best_aff = max(guid, key=lambda r: r["affinity"]) if guid else None
    best_fd = min(guid, key=lambda r: r["fd"]) if guid else None
    label = "VQ-Diffusion (respaced)" if name == "vq-diffusion" else "DPM-Solver++"
    s = (f"{label} keeps affinity within 2 points and FD within 15% of its {ref['steps']}-step result down to "
         f"{fewest} steps (of {[r['steps'] for r in dpm]}).")
    if best_aff and best_fd:
        s += (f" Over guidance {[r['guidance'] for r in guid]}, affinity peaks at {best_aff['guidance']} "
              f"({100 * best_aff['affinity']:.1f}%) and FD is lowest at {best_fd['guidance']} "
              f"({best_fd['fd']:.2f}); the pipeline default is {ctx.guidance}.")
    return s


# ---- targets, files ---------------------------------------------------------------------------------------------
def targets(res: dict[str, Any], tg: dict[str, float]) -> list[dict[str, Any]]:
    """Headline metrics against their fixed targets; pass None when a metric was not measured."""
    out = []

    def add(name, value, target, op, pct=False, points=False):
        ok = None if value is None or not math.isfinite(value) else (value >= target if op == ">=" else value <= target)
        fmt = (lambda v: f"{100 * v:+.1f} points") if points else ((lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.3f}"))
        margin = "" if ok is None else (f"{100 * (value - target):+.1f} points" if (points or pct)
                                        else f"{value - target:+.3f}")
        out.append(dict(name=name, value=value, target=target, op=op, pass_=ok, display="n/a" if ok is None else fmt(value),
                        target_display=fmt(target), margin=margin))
        out[-1]["pass"] = out[-1].pop("pass_")

    g, f = res["gan"], res["fidelity"]
    add("affinity / real-test accuracy", g["affinity_ratio"], tg["affinity_ratio"], ">=")
    add("TSTR / TRTR", g["tstr_ratio"], tg["tstr_ratio"], ">=")
    k5 = res["augmentation"]["summary"].get("5", {}).get("gain", {}).get("mean")
    add("augmentation gain at k=5", k5, tg["gain_k5"], ">=", points=True)
    add("two-sample test accuracy", f["c2st"]["accuracy"], tg["c2st"], "<=")
    for q, v in res["physics"].get("mean_rel_error", {}).items():
        add(f"physics rel. error: {q} (mean over users)", v, tg["physics"], "<=", pct=True)
    return out


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_report(out: Path, res: dict[str, Any], md_path: Path | None = None) -> Path:
    """report.json in `out`; report.md in `out` or at md_path, with figure links relative to it."""
    import os

    from training.report import markdown

    res["figures"] = {p.name: True for p in (out / "figures").glob("*.png")}
    (out / "report.json").write_text(json.dumps(_jsonable(res), indent=2) + "\n")
    md_path = md_path or out / "report.md"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(res, figures=Path(os.path.relpath(out / "figures", md_path.parent)).as_posix()))
    return md_path


def rerender(out: Path, md_path: Path | None = None, targets_: dict[str, float] | None = None) -> Path:
    """Re-write report.md (and the metrics figure) from report.json, e.g. after a formatting fix; no re-measuring."""
    from training import report
    from training.evaluate import TARGETS

    res = json.loads((out / "report.json").read_text())
    res["targets"] = targets(res, targets_ or TARGETS)
    report.metrics_figure(res["targets"], out / "figures" / "metrics.png")
    return write_report(out, res, md_path)


def write_summary(pipeline: Path, out: Path, res: dict[str, Any]) -> None:
    """Headline numbers into dopplergen.json's "evaluation" field (only with --write-summary)."""
    meta_file = pipeline / "dopplergen.json"
    meta = json.loads(meta_file.read_text())
    meta["evaluation"] = _jsonable(dict(
        created=res["created"], report=str(out), data_fingerprint=res["data"]["fingerprint"],
        quick=res["settings"]["quick"], runtime_s=round(res["runtime_s"], 1),
        metrics={t["name"]: t["value"] for t in res["targets"]},
        targets_met={t["name"]: t["pass"] for t in res["targets"]},
        trtr=res["gan"]["trtr"], affinity=res["gan"]["affinity"], tstr=res["gan"]["tstr"],
        fd_generated_test=res["fidelity"]["fd_generated_test"], fd_train_test=res["fidelity"]["fd_train_test"],
        psnr_db=res["reconstruction"]["psnr_db"], ssim=res["reconstruction"]["ssim"]))
    meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def figures(ctx: Context, pool: Pool, res: dict[str, Any]) -> None:
    from training import report

    d, k = ctx.data, ctx.st.figure_per_user
    rows = [(u, [x[0] for x in d.test_x[d.test_y == i][:k]], [x[0] for x in pool.x[pool.y == i][:k]])
            for i, u in enumerate(d.users)]
    fig_dir = ctx.out / "figures"
    report.real_vs_generated_figure(rows, d.meta, fig_dir / "real_vs_generated.png",
                                    f"real test (top) vs generated (bottom) per user; {ctx.scheduler} {ctx.steps} steps, "
                                    f"guidance {ctx.guidance}")
    if res["sweep"]["rows"]:
        report.sweep_figure(res["sweep"]["rows"], fig_dir / "sampler_sweep.png")
    if res["augmentation"]["summary"]:
        report.augmentation_figure(res["augmentation"]["summary"], fig_dir / "augmentation.png")
    report.metrics_figure(res["targets"], fig_dir / "metrics.png")

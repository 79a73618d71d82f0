"""The augmentation-gain protocol: k-per-user selections, few-shot generators, real vs real+synthetic runs.

Rule: no real recording of a target user beyond the classifier's own k ever reaches the generator.
- k = all: the generator is the pipeline under evaluation, trained on the full train split (which is
  exactly the classifier's real data), never on the test split.
- small k: a generator pretrained on a *disjoint* simulated population is adapted to each target user
  from exactly the classifier's k recordings, by learning only new user-encoder rows with the diffusion
  loss while the UNet and VAE stay frozen (textual inversion; Gal et al., ICLR 2023).
Each trial records what its generator saw, so the report (and the tests) can check the rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler

K_VALUES: tuple[int | None, ...] = (5, 10, 20, None)  # None = all real train recordings of each user


def k_label(k: int | None) -> str:
    return "all" if k is None else str(k)


def select_k_per_user(labels: np.ndarray, k: int | None, seed: int) -> np.ndarray:
    """Sorted indices of k recordings per user (all when k is None), drawn without replacement by `seed`."""
    labels = np.asarray(labels)
    if k is None:
        return np.arange(len(labels))
    if k < 1:
        raise ValueError("k must be >= 1")
    rng = np.random.default_rng([seed, k])
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise ValueError(f"user index {c} has only {len(idx)} train recordings, fewer than k={k}")
        picks.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(picks))


def check_disjoint(train_paths: Sequence[str], test_paths: Sequence[str]) -> None:
    """Raise when a recording (by path) is in both the train and the test split."""
    both = set(map(str, train_paths)) & set(map(str, test_paths))
    if both:
        raise ValueError(f"{len(both)} recordings are in both train and test, e.g. {sorted(both)[:3]}")


# ---- few-shot adaptation: new user-encoder rows, everything else frozen ------------------------------------------
def _latent_loss(pipe: Any, x_db: torch.Tensor, cfg: Any) -> Callable:
    """The stage-2 diffusion loss of the UNet routes (kl, vq-latent) on the k recordings' cached latents."""
    mean, std = encode_latents(pipe, x_db, cfg.time_shifts)
    sched = DDPMScheduler.from_config(pipe.scheduler_config)
    pred_type, device = sched.config.prediction_type, pipe.device

    def loss(idx: torch.Tensor, context: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)).to(device)
        noise = torch.randn(z0.shape, generator=g).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g).to(device)
        noisy = sched.add_noise(z0, noise, t)
        target = noise if pred_type == "epsilon" else sched.get_velocity(z0, noise, t)
        pred = pipe.denoiser(noisy, t, encoder_hidden_states=context).sample
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    return loss


def _code_loss(pipe: Any, x_db: torch.Tensor, cfg: Any) -> Callable:
    """The VQ-Diffusion x_0 cross-entropy (route vq-diffusion) on the k recordings' cached code grids."""
    from diffusers import VQDiffusionScheduler

    from training.train_transformer import cache_codes, corrupt

    x = pipe.normalization.to_model(x_db)
    w = x.shape[-1]
    codes = cache_codes(pipe.vae, x, [int(round(s * w / cfg.time_shifts)) for s in range(cfg.time_shifts)])
    codes = codes.reshape(-1, codes.shape[-1])  # (shifts * N, L), shift-major like the labels' np.tile
    sched = VQDiffusionScheduler.from_config(pipe.scheduler_config)

    def loss(idx: torch.Tensor, context: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        t = int(torch.randint(0, sched.config.num_train_timesteps, (1,), generator=g))  # AdaLayerNorm: one t per call
        x0 = codes[idx]
        x_t = corrupt(sched, x0, t, g).to(pipe.device)
        log_p = pipe.denoiser(x_t, encoder_hidden_states=context, timestep=torch.tensor(t, device=pipe.device)).sample
        return torch.nn.functional.nll_loss(log_p.float(), x0.to(pipe.device))

    return loss


@dataclass
class FewShotConfig:
    steps: int = 300  # optimiser steps on the new rows (all target users at once; rows do not interact)
    batch_size: int = 16  # latents per step
    lr: float = 5e-3  # Adam on the embedding rows; LayerNorm after them makes the scale forgiving
    time_shifts: int = 8  # circularly time-shifted copies of each recording (gait is periodic), as in training
    seed: int = 0


@torch.no_grad()
def encode_latents(pipe: Any, x_db: torch.Tensor, time_shifts: int, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of the scaled latents of each recording at `time_shifts` circular time shifts."""
    x = pipe.normalization.to_model(x_db.float())  # (N, C, H, W)
    w = x.shape[-1]
    rolled = torch.cat([torch.roll(x, shifts=int(round(s * w / time_shifts)), dims=-1) for s in range(time_shifts)])
    from models import autoencoder as ae

    vae, sf = pipe.vae, float(pipe.vae.config.scaling_factor)
    means, stds = [], []
    for i in range(0, len(rolled), batch):
        mean, std = ae.posterior(vae, rolled[i:i + batch])
        means.append(ae.scale(vae, mean).float().cpu())
        stds.append((std * sf).float().cpu())
    return torch.cat(means), torch.cat(stds)  # (N * time_shifts, 4, h, w) each


def adapt_new_users(pop_pipe: Any, x_db: np.ndarray, labels: np.ndarray, users: list[str],
                    cfg: FewShotConfig | None = None) -> tuple[Any, dict[str, Any]]:
    """A pipeline for `users` from a population pipeline: frozen VAE + UNet, new user rows learnt from x_db only.

    New rows start at the mean of the population's user rows; the null row (classifier-free guidance)
    and the token positions are copied and stay fixed. Returns the pipeline and a training log.
    """
    from models.pipeline import DopplerPipeline
    from models.user_encoder import UserEncoder

    cfg = cfg or FewShotConfig()
    labels = np.asarray(labels, np.int64)
    if len(labels) != len(x_db) or labels.min() < 0 or labels.max() >= len(users):
        raise ValueError("labels must index `users` and match x_db")
    old = pop_pipe.user_encoder
    enc = UserEncoder(users=list(users), cross_attention_dim=old.config.cross_attention_dim,
                      num_tokens=old.config.num_tokens)
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        pop_rows = old.embedding.weight[: old.null_index].float().cpu()
        start = pop_rows.mean(0, keepdim=True) + 0.1 * pop_rows.std(0, keepdim=True) * torch.randn(
            len(users), pop_rows.shape[1], generator=g)
        enc.embedding.weight.copy_(torch.cat([start, old.embedding.weight[old.null_index:].float().cpu()]))
        enc.position.copy_(old.position.float().cpu())
        enc.norm.load_state_dict({k: v.float().cpu() for k, v in old.norm.state_dict().items()})
    pipe = DopplerPipeline(vae=pop_pipe.vae, denoiser=pop_pipe.denoiser, user_encoder=enc,
                           scheduler_config=dict(pop_pipe.scheduler_config), meta=dict(pop_pipe.meta))
    device = pop_pipe.device
    pipe.to(device, torch.float32)
    enc.requires_grad_(False)
    enc.embedding.weight.requires_grad_(True)
    row_mask = torch.ones(enc.embedding.weight.shape[0], 1, device=device)
    row_mask[enc.null_index] = 0.0  # the null user stays the population's

    x_db = torch.as_tensor(np.asarray(x_db, np.float32))
    lat_labels = torch.as_tensor(np.tile(labels, cfg.time_shifts))
    loss_fn = (_code_loss if pipe.route == "vq-diffusion" else _latent_loss)(pipe, x_db, cfg)
    opt = torch.optim.Adam([enc.embedding.weight], lr=cfg.lr)
    losses = []
    enc.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(lat_labels), (cfg.batch_size,), generator=g)
        loss = loss_fn(idx, enc(lat_labels[idx].to(device)), g)  # context: (B, T, D)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        enc.embedding.weight.grad.mul_(row_mask)
        opt.step()
        losses.append(loss.item())
    pipe.to(device, torch.float32)  # back to eval mode, no grads
    pipe.meta = {**pipe.meta, "fewshot": dict(asdict(cfg), users=list(users), n_recordings=int(len(x_db)))}
    tail = losses[-max(1, len(losses) // 10):]
    return pipe, dict(loss_first=losses[0] if losses else math.nan, loss_last=float(np.mean(tail)) if tail else math.nan)


# ---- the augmentation-gain experiment ---------------------------------------------------------------------------
@dataclass
class Trial:
    k: str
    seed: int
    n_real: int  # real train recordings the classifier saw (all users)
    n_synthetic: int  # synthetic recordings added (all users)
    acc_real: float  # test accuracy, real only
    acc_augmented: float  # test accuracy, real + synthetic
    generator: str  # which generator made the synthetic data
    generator_saw: list[str] = field(default_factory=list)  # train paths of target users the generator saw

    @property
    def gain(self) -> float:
        return self.acc_augmented - self.acc_real


MIXES = ("balanced", "concat")  # how run_augmentation combines the k real with the synthetic recordings
# make_generator(k, seed, x_db_k, labels_k) -> (handle, description); only the classifier's k reach it.
MakeGenerator = Callable[[int | None, int, np.ndarray, np.ndarray], tuple[Any, str]]
# synthesize(handle, m_per_user, seed) -> (x_db (N,C,H,W), labels (N,)) in the dataset's user index order.
Synthesize = Callable[[Any, int, int], tuple[np.ndarray, np.ndarray]]
# fit_score(x_db, labels, seed, budget) -> test accuracy of a classifier trained on `budget` sample presentations
# (epochs = budget / len(x)), so runs on different amounts of data get the same optimisation budget.
FitScore = Callable[[np.ndarray, np.ndarray, int, int], float]


def run_augmentation(train_x: np.ndarray, train_labels: np.ndarray, train_paths: Sequence[str], *,
                     k_values: Sequence[int | None], seeds: Sequence[int], m_per_user: int,
                     make_generator: MakeGenerator, synthesize: Synthesize, fit_score: FitScore,
                     budget_for: Callable[[int], int], progress: Callable[[str], None] = lambda s: None,
                     mix: str = "balanced") -> list[Trial]:
    """For each (k, seed): real-only vs real + m synthetic per user, at the same classifier optimiser budget.

    The budget (optimiser steps) is `budget_for(n_real + n_synthetic)` for both runs, so a gain cannot
    come from the augmented run simply taking more optimiser steps. `mix` says how the augmented set is made:
    "concat" = the k real and the synthetic as they are; "balanced" = the k real repeated (round(m / k) times,
    at least once) so that real and synthetic recordings are about equally frequent in the classifier's
    batches. The repeats are not new data: the classifier's random time shifts and flips vary them.
    """
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    trials = []
    for k in k_values:
        for seed in seeds:
            idx = select_k_per_user(train_labels, k, seed)
            x_k, y_k = train_x[idx], np.asarray(train_labels)[idx]
            handle, desc = make_generator(k, seed, x_k, y_k)  # the generator sees x_k and nothing else
            x_syn, y_syn = synthesize(handle, m_per_user, seed)
            budget = budget_for(len(idx) + len(y_syn))
            acc_real = fit_score(x_k, y_k, seed, budget)
            reps = max(1, round(len(y_syn) / len(idx))) if mix == "balanced" else 1
            acc_aug = fit_score(np.concatenate([x_k] * reps + [x_syn]), np.concatenate([y_k] * reps + [y_syn]), seed,
                                budget)
            t = Trial(k=k_label(k), seed=seed, n_real=len(idx), n_synthetic=len(y_syn), acc_real=acc_real,
                      acc_augmented=acc_aug, generator=desc, generator_saw=[str(train_paths[i]) for i in idx])
            progress(f"k={t.k} seed={seed}: real {acc_real:.3f} -> augmented {acc_aug:.3f} ({t.gain:+.3f})")
            trials.append(t)
    return trials


def summarize_trials(trials: Sequence[Trial]) -> dict[str, dict[str, Any]]:
    """Mean ± std over seeds of real-only accuracy, augmented accuracy and gain, per k."""
    from training.fidelity import mean_std

    out: dict[str, dict[str, Any]] = {}
    for k in dict.fromkeys(t.k for t in trials):
        ts = [t for t in trials if t.k == k]
        out[k] = dict(acc_real=mean_std([t.acc_real for t in ts]), acc_augmented=mean_std([t.acc_augmented for t in ts]),
                      gain=mean_std([t.gain for t in ts]), n_real=ts[0].n_real, n_synthetic=ts[0].n_synthetic,
                      generator=ts[0].generator)
    return out


# ---- the evaluator's section: population generator, trials, protocol statement ------------------------------------
# Stage-2 steps of the population generator that --fewshot trains, per preset, where it differs from the preset's
# training registry. demo: 3000 instead of 1000. Measured at k = 5 on data/sim10 (balanced mix, guidance 2, 3 seeds):
# the 20-user population at 1000 steps gave +0.3 ± 2.2 points and at 3000 steps +4.0 ± 1.4 (docs/evaluation.md).
POPULATION_STAGE2_STEPS = {"demo": 3000}


def population_stage2_steps(preset: str, override: int = 0) -> int:
    """Stage-2 steps for the population generator: `override` if set, else the table above (0 = the registry's)."""
    return int(override or POPULATION_STAGE2_STEPS.get(preset, 0))


def population_pipeline(ctx: Any, path: str | None, population_seed: int) -> tuple[Any, dict[str, Any]]:
    """Load --population-pipeline, or simulate a disjoint population and train one with the project's own CLI.

    Disjointness is checked on the simulated user profiles (their seeds), not on the user names, which repeat.
    """
    import os
    import subprocess
    import sys

    from models.pipeline import DopplerPipeline

    out = ctx.out / "population"
    if path is None:
        sim = (ctx.data.meta.get("simulate") or {})
        if sim.get("seed") == population_seed:
            raise SystemExit(f"--population-seed {population_seed} is the evaluated dataset's own seed; pick another")
        preset = ctx.pipe.meta.get("preset", {}).get("name", "demo")
        size = ctx.pipe.image_size[0]
        carrier = float(ctx.data.meta.get("carrier_hz", 24e9)) / 1e9
        quick = ["--max-steps", "20", "--batch-size", "8"] if ctx.st.quick else []
        steps = population_stage2_steps(preset, ctx.st.population_steps)
        stage2_steps = ["--max-steps", str(steps)] if steps and not ctx.st.quick else []
        users, per_user = (4, 8) if ctx.st.quick else (20, 100)
        route = ctx.pipe.route  # the population generator is of the evaluated pipeline's route
        stage2 = "train-transformer" if route == "vq-diffusion" else "train-unet"
        cmds = [
            ["simulate", "--users", str(users), "--per-user", str(per_user), "--size", str(size), "--carrier-ghz",
             f"{carrier:g}", "--seed", str(population_seed), "--preview-per-user", "0", "--out", str(out / "data"),
             "--workers", str(max(1, min(8, (os.cpu_count() or 1) - 1)))],
            ["train-vae", "--preset", preset, "--autoencoder", "kl" if route == "kl" else "vq", "--data",
             str(out / "data"), "--out", str(out / "vae_run"), *quick],
            [stage2, "--preset", preset, "--data", str(out / "data"), "--vae", str(out / "vae_run" / "vae"),
             "--out", str(out / "pipeline"), *stage2_steps, *quick],
        ]
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(ctx.threads)} if getattr(ctx, "threads", None) else {}))
        for cmd in cmds:
            ctx.log("population: dopplergen " + " ".join(cmd))
            subprocess.run([sys.executable, "-m", "training", *cmd], check=True, env=env)
        path = str(out / "pipeline")
    pop = DopplerPipeline.load(path, device=ctx.device)
    if pop.route != ctx.pipe.route:
        raise SystemExit(f"population pipeline {path} is a {pop.route} pipeline but the evaluated one is "
                         f"{ctx.pipe.route}: few-shot generators must be of the evaluated route")
    pop_seeds = {p["seed"] for p in ((pop.meta.get("dataset") or {}).get("simulate") or {}).get("profiles", [])}
    tgt_seeds = {p["seed"] for p in (ctx.data.meta.get("simulate") or {}).get("profiles", [])}
    info = dict(path=str(path), users=len(pop.users), population_user_seeds=sorted(pop_seeds),
                shared_profiles=sorted(pop_seeds & tgt_seeds),
                dataset_fingerprint=(pop.meta.get("dataset") or {}).get("fingerprint"))
    if info["shared_profiles"]:
        raise SystemExit(f"population pipeline {path} was trained on target users (profile seeds "
                         f"{info['shared_profiles']}): the few-shot protocol needs a disjoint population")
    if info["dataset_fingerprint"] == ctx.data.fingerprint:
        raise SystemExit(f"population pipeline {path} was trained on the evaluated dataset itself")
    if not pop_seeds:
        ctx.log("warning: cannot verify the population's users are disjoint (no simulate profiles in its provenance)")
    return pop, info


def augmentation_section(ctx: Any, pool: Any, *, fewshot: bool, population: str | None,
                         population_seed: int) -> dict[str, Any]:
    """Real-only vs real + synthetic test accuracy per k, under the protocol in this module's docstring."""
    from training.classifier import accuracy

    st, d = ctx.st, ctx.data
    k_values = [k for k in st.k_values if k is None or fewshot]
    not_measured = [k_label(k) for k in st.k_values if k is not None and not fewshot]
    pop, pop_info = (None, None)
    if any(k is not None for k in k_values):
        pop, pop_info = population_pipeline(ctx, population, population_seed)
    import inspect

    from training.classifier import train_classifier

    defaults = inspect.signature(train_classifier).parameters
    epochs = st.classifier_epochs or int(defaults["epochs"].default)
    floor = st.classifier_min_steps or int(defaults["min_steps"].default)
    batch = int(defaults["batch_size"].default)
    logs: list[dict[str, Any]] = []

    def make_generator(k, seed, x_k, y_k):
        if k is None:
            return ("pool", None), "evaluated pipeline (full train split)"
        pipe_k, log = adapt_new_users(pop, x_k, y_k, d.users, FewShotConfig(steps=st.fewshot_steps, seed=seed))
        logs.append(dict(k=k, seed=seed, n_seen=int(len(y_k)), **log))
        return ("pipe", pipe_k), f"population + {k}-shot user rows"

    def synthesize(handle, m, seed):
        kind, pipe_k = handle
        if kind == "pool":  # the k=all generator is the evaluated pipeline: draw from its pool
            rng = np.random.default_rng([seed, 0xA9])
            idx = np.concatenate([rng.choice(np.flatnonzero(pool.y == c), size=min(m, int((pool.y == c).sum())),
                                             replace=False) for c in range(len(d.users))])
            return pool.x[idx], pool.y[idx]
        y, seeds = ctx.plan(m, stream=100 + seed)
        p = ctx.sample(pipe_k, y, seeds, desc=f"few-shot synth seed {seed}")
        return p.x, p.y

    def budget_for(n_total):  # optimiser steps of the augmented run, never below the CNN's own minimum
        return max(floor, epochs * -(-n_total // batch))

    def fit_score(x, y, seed, steps):
        clf = ctx.fit(x, y, seed=seed, epochs=max(1, -(-steps // -(-len(x) // batch))))
        return accuracy(clf, d.test_x, d.test_y)

    trials = run_augmentation(d.train_x, d.train_y, d.train_paths, k_values=k_values, seeds=st.seeds,
                              m_per_user=st.synth_per_user, make_generator=make_generator, synthesize=synthesize,
                              fit_score=fit_score, budget_for=budget_for, progress=ctx.log, mix=st.augment_mix)
    test_set = set(d.test_paths)
    leaks = [t for t in trials if test_set & set(t.generator_saw)]
    if leaks:
        raise RuntimeError("protocol violation: a generator saw test recordings")  # cannot happen; guarded anyway
    protocol = (
        f"Classifier = training.classifier UserCNN, scored on the real test split ({len(d.test_y)} recordings). For each "
        f"k and seed {list(st.seeds)}: k real train recordings per user are drawn with the seed; the classifier is "
        f"trained on them alone, then on them plus m = {st.synth_per_user} synthetic recordings per user, with the same "
        "optimiser budget (steps) for both runs"
        + (" (mix `balanced`: the k real are repeated round(m / k) times, at least once, so real and synthetic are "
           "about equally frequent in the batches; the CNN's random time shifts and flips vary the repeats)"
           if st.augment_mix == "balanced" else " (mix `concat`: the k real and the synthetic as they are)")
        + ". k = all: the synthetic data comes from the evaluated pipeline, which "
        "was trained on the full train split = the classifier's own real data. Small k "
        + (f"(`--fewshot`): a population pipeline trained on a disjoint simulated population ({pop_info['users']} "
           f"users, profile seeds {pop_info['population_user_seeds'][:3]}..., none shared with the targets) is adapted "
           f"to the targets from exactly the classifier's k recordings per user by learning only new user-encoder rows "
           f"({st.fewshot_steps} Adam steps on the diffusion loss; UNet and VAE frozen). No other recording of a target "
           "user reaches the generator; each trial records the recordings its generator saw."
           if pop_info else "is not measured without `--fewshot`: the evaluated pipeline saw every train recording, "
           "so using it at small k would leak data the classifier is not allowed.")
    )
    return dict(protocol=protocol, trials=[dict(asdict(t), gain=t.gain) for t in trials],
                summary=summarize_trials(trials), not_measured=not_measured, population=pop_info, fewshot_logs=logs)

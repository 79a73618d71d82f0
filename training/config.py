"""Typed training configs: dataclass defaults < per-preset registry < --config file < command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from models.presets import PRESETS
from models.sampling import DEFAULT_GUIDANCE, DEFAULT_STEPS


class ConfigError(ValueError):
    """An unknown option, a bad value or a missing required option."""


@dataclass
class TrainConfig:
    """Options shared by both stages."""

    preset: str = "demo"  # architecture preset from models/presets.py; also picks the training defaults below
    data: str = ""  # dataset folder (meta.json + manifest.csv), read with training.data.dataset.load_dataset
    out: str = ""  # where the stage writes its result (VAE run folder / pipeline folder)
    channels: int = 1  # 1 = dB magnitude, 3 = colour-mapped RGB datasets
    seed: int = 0  # every random draw of step s on rank r comes from (seed, s, r): resume is exact
    max_steps: int = 1000  # optimiser steps in total (a resumed run continues up to this)
    batch_size: int = 32  # per process; the global batch is batch_size x num_processes
    lr: float = 2e-4  # AdamW peak learning rate
    lr_schedule: str = "cosine"  # "constant" or "cosine" (decays to 0 at max_steps), after a linear warm-up
    lr_warmup_steps: int = 100  # linear warm-up from 0: avoids early Adam blow-ups on tiny batches
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    max_grad_norm: float = 1.0  # gradient clipping; 0 disables
    # EMA of the weights (diffusers EMAModel, warm-up (1+s)/(10+s)); the export uses it
    ema_decay: float = 0.999
    mixed_precision: str = "no"  # accelerate: "no", "fp16" (CUDA) or "bf16"
    # random circular time shift: gait is periodic, so a rolled spectrogram is a valid one
    time_shift: bool = True
    # save resume state to <run>/checkpoints/checkpoint-{step} every this many steps
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 2  # keep only the newest this many resume checkpoints
    resume: str = ""  # "" = fresh start, "latest" = newest checkpoint in the run folder, or a checkpoint path
    log_every: int = 25  # JSONL / progress-bar interval in steps
    image_every: int = 500  # figure interval in steps (reconstruction or preview grid); 0 = only at the end
    users_in_grid: int = 10  # rows of the figure grids (one per user)


@dataclass
class VAEConfig(TrainConfig):
    """Stage 1: AutoencoderKL + KL loss (Kingma & Welling 2014; Rombach et al. 2022), or VQModel + codebook
    loss."""

    # "kl" = AutoencoderKL (main line); "vq" = VQModel (the experimental comparison route)
    autoencoder: str = "kl"
    l1_weight: float = 1.0  # L1 reconstruction in model space: sharper limb traces than L2 alone
    l2_weight: float = 0.0  # L2 reconstruction
    # small, as in Stable Diffusion: a near-deterministic latent that still has a scale
    kl_weight: float = 1e-6
    eval_batch_size: int = 64  # batch for scaling-factor measurement and test PSNR (no gradients)
    # VQ only: weight of the codebook + 0.25 x commitment loss (van den Oord 2017)
    codebook_weight: float = 1.0
    dead_code_every: int = 100  # VQ only: re-seed unused codes from encoder outputs this often (0 = never)
    # VQ only: train images encoded to find the unused codes (stateless: exact resume)
    dead_code_probe: int = 256
    # a saved autoencoder folder (e.g. checkpoints/demo/vae) whose weights start this run (fine-tuning)
    init_from: str = ""


@dataclass
class Stage2Config(TrainConfig):
    """What both stage-2 trainers share: the frozen autoencoder, user dropout, augmentation and export."""

    vae: str = ""  # trained autoencoder folder (train-vae writes <run>/vae); frozen here
    run_dir: str = ""  # resume state, JSONL and figures; "" = <out>-run next to the pipeline folder
    # drop the user to the null token this often: trains the CFG unconditional branch
    null_user_prob: float = 0.1
    # cached latents per image at evenly spaced circular time shifts (the augmentation)
    latent_shifts: int = 8
    # default stored in dopplergen.json and used for the preview grids
    guidance_scale: float = DEFAULT_GUIDANCE
    # default sampling steps stored in dopplergen.json and used for previews
    num_inference_steps: int = DEFAULT_STEPS
    preview_per_user: int = 4  # generated (and real) spectrograms per user in the preview grid
    # "fp32" or "fp16" weights in the exported network / user encoder (halves the size)
    export_dtype: str = "fp32"
    # train recordings per person whose residuals go into the exported pipeline's texture bank
    # (models/texture.py; the demo's two-sample accuracy 1.000 -> 0.891); 0 = no bank
    texture_per_user: int = 20
    name: str = ""  # model name in dopplergen.json; "" = dopplergen-<preset>

    # class attribute, not an option: names the run's log, plots and dopplergen.json entry
    stage_name = "stage2"


@dataclass
class UNetConfig(Stage2Config):
    """Stage 2: user-conditioned latent diffusion (DDPM, Ho et al. 2020) with classifier-free guidance."""

    prediction_type: str = ""  # "" = the preset's (v_prediction); or "epsilon" / "v_prediction"
    snr_gamma: float = 5.0  # Min-SNR-gamma loss weighting (Hang et al. 2023); 0 disables
    # manifest columns to condition on ("speed_mps,aspect_deg"); "auto": the known ones; "none": identity
    conditions: str = "auto"
    # "tokens": cross-attention only; "tokens+added": also pooled into the added (timestep) embedding
    condition_route: str = "tokens+added"
    # with conditions: stored in dopplergen.json as the default for requests that name a condition, which are
    # sampled with compositional guidance (models.sampling): this weighs the conditions...
    condition_guidance_scale: float = 1.0
    # ... and this the person. On the demo, identity at each person's own 10th / 90th percentile speed: 0.90 /
    # 0.91 at 3 / 1, against 0.55 / 0.68 with plain guidance 2 (docs/conditions.md)
    identity_guidance_scale: float = 3.0
    # each condition is left out (its learned absent value) this often: guidance and optional fields
    condition_drop_prob: float = 0.1
    # a pipeline folder whose UNet and user encoder (same users) start this run (e.g. to add conditions to it)
    init_from: str = ""

    stage_name = "unet"


@dataclass
class VQDConfig(Stage2Config):
    """Stage 2 of the discrete route: VQ-Diffusion (Gu et al. 2022) over the codes of a frozen VQModel."""

    t_groups: int = 4  # timesteps per batch: diffusers' AdaLayerNorm takes one timestep per forward call

    stage_name = "transformer"


# Per-preset training defaults: what works for each size; flags and --config files override them.
TRAINING_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "vae": {
        "tiny": dict(max_steps=50, batch_size=8, lr_warmup_steps=5, checkpointing_steps=25, log_every=5,
                     image_every=0),
        # ~10 min on 2 idle CPU cores (about 45 images/s): about 25 epochs of the ~980 train images of sim10.
        "demo": dict(max_steps=1600, batch_size=16, lr=5e-4, lr_warmup_steps=50, checkpointing_steps=400,
                     log_every=10, image_every=400),
        "base": dict(max_steps=30000, batch_size=16, lr=1e-4, lr_warmup_steps=500, checkpointing_steps=2000,
                     image_every=2000),
    },
    "unet": {
        "tiny": dict(max_steps=50, batch_size=8, lr_warmup_steps=5, checkpointing_steps=25, log_every=5,
                     image_every=0, preview_per_user=2, num_inference_steps=5, latent_shifts=2),
        # 1000 steps x 64 latents: ~10 min on 2 idle CPU cores (about 110 latents/s). On sim10 this already
        # gives samples that a real-data classifier assigns to the right user ~98% of the time (guidance 2-3).
        # The shipped demo checkpoint continues this run to 3000 steps (scripts/make_demo_checkpoint.sh): on
        # sim10, TSTR 0.85x instead of 0.77x TRTR at guidance 2. Guidance 2 rather than 3: at 3, TSTR drops to
        # 0.78x with the same affinity (evaluator pool seeds, 2 classifier seeds; docs/evaluation.md).
        "demo": dict(max_steps=1000, batch_size=64, lr=4e-4, lr_warmup_steps=100, checkpointing_steps=250,
                     log_every=10, image_every=500, ema_decay=0.999, guidance_scale=2.0, export_dtype="fp16"),
        "base": dict(max_steps=100000, batch_size=32, lr=1e-4, lr_warmup_steps=1000, checkpointing_steps=5000,
                     image_every=5000, ema_decay=0.9999, latent_shifts=4),
    },
    # num_inference_steps here counts VQ-Diffusion steps (the preset's vq_diffusion_timesteps, or fewer,
    # respaced).
    "transformer": {
        "tiny": dict(max_steps=50, batch_size=8, lr_warmup_steps=5, checkpointing_steps=25, log_every=5,
                     image_every=0, preview_per_user=2, num_inference_steps=5, latent_shifts=2, t_groups=2),
        # the same budget as the demo UNet (1000 steps x 64), so `dopplergen compare` compares like with like
        "demo": dict(max_steps=1000, batch_size=64, lr=4e-4, lr_warmup_steps=100, checkpointing_steps=250,
                     log_every=10, image_every=500, ema_decay=0.999, guidance_scale=3.0,
                     num_inference_steps=50,
                     export_dtype="fp16"),
        "base": dict(max_steps=100000, batch_size=32, lr=1e-4, lr_warmup_steps=1000, checkpointing_steps=5000,
                     image_every=5000, ema_decay=0.9999, latent_shifts=4, num_inference_steps=100),
    },
}

STAGES: dict[str, type[TrainConfig]] = {"vae": VAEConfig, "unet": UNetConfig, "transformer": VQDConfig}
CHOICES: dict[str, tuple[str, ...]] = {
    "preset": tuple(PRESETS),
    "lr_schedule": ("constant", "cosine"),
    "mixed_precision": ("no", "fp16", "bf16"),
    "prediction_type": ("", "epsilon", "v_prediction"),
    "export_dtype": ("fp32", "fp16"),
    "autoencoder": ("kl", "vq"),
    "condition_route": ("tokens", "tokens+added"),
}
POSITIVE = {"max_steps", "batch_size", "checkpointing_steps", "checkpoints_total_limit", "log_every",
            "eval_batch_size", "latent_shifts", "num_inference_steps", "preview_per_user", "users_in_grid",
            "t_groups"}
NON_NEGATIVE = {"lr_warmup_steps", "weight_decay", "max_grad_norm", "l1_weight", "l2_weight", "kl_weight",
                "snr_gamma", "image_every", "guidance_scale", "condition_guidance_scale",
                "identity_guidance_scale",
                "codebook_weight", "dead_code_every", "dead_code_probe"}
NOT_OPTIONS = {"config", "dry_run", "command", "threads"}  # argparse names that are not config fields


def _types(cls: type) -> dict[str, type]:
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in {f.name for f in fields(cls)}}


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[TrainConfig]) -> None:
    """One --flag per config field (default None, so we can tell given flags apart), plus
    --config/--dry-run."""
    parser.add_argument("--config", default=None, help="JSON or YAML file of options (flags override it)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved options and exit")
    comments = _field_comments(cls)
    for name, typ in _types(cls).items():
        flag = "--" + name.replace("_", "-")
        help_text = comments.get(name, "")
        if typ is bool:
            parser.add_argument(flag, dest=name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, type=typ,
                                choices=CHOICES.get(name), help=help_text)


def _field_comments(cls: type) -> dict[str, str]:
    """The `# ...` comment after each field in the source: the one place a default is explained."""
    import inspect

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        for line in inspect.getsource(klass).splitlines():
            head, sep, comment = line.partition("  # ")
            name = head.strip().split(":")[0]
            if sep and ":" in head and name.isidentifier():
                out[name] = comment.strip().replace("%", "%%")
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML options file into a flat dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option -> value, got {type(data).__name__}")
    return data


def _check_known(cls: type, options: dict[str, Any], source: str) -> None:
    valid = [f.name for f in fields(cls)]
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid options: {', '.join(valid)}"
            raise ConfigError(f"unknown option {key!r} in {source}{hint}")


def _coerce(cls: type, options: dict[str, Any], source: str) -> dict[str, Any]:
    """Type-check file/registry values (a YAML 1e-4 is a str, an int where a float goes is fine)."""
    types, out = _types(cls), {}
    for key, value in options.items():
        typ = types[key]
        if typ is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"option {key!r} in {source}: expected a number, got {value!r}") from None
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ConfigError(f"option {key!r} in {source}: expected {typ.__name__}, got {value!r}")
        out[key] = value
    return out


def resolve(stage: str, args: argparse.Namespace | None = None, **overrides: Any) -> TrainConfig:
    """Build the config of a stage: defaults < TRAINING_DEFAULTS[preset] < --config file < flags <
    overrides."""
    cls = STAGES[stage]
    given = {k: v for k,
             v in vars(args or argparse.Namespace()).items() if v is not None and k not in NOT_OPTIONS}
    file_opts: dict[str, Any] = {}
    if args is not None and getattr(args, "config", None):
        file_opts = load_config_file(args.config)
        _check_known(cls, file_opts, args.config)
        file_opts = _coerce(cls, file_opts, args.config)
    _check_known(cls, overrides, "overrides")
    preset = overrides.get("preset", given.get("preset", file_opts.get("preset", cls.preset)))
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    registry = _coerce(cls, TRAINING_DEFAULTS[stage].get(preset, {}), f"TRAINING_DEFAULTS[{stage}][{preset}]")
    _check_known(cls, given, "command-line flags")
    cfg = cls(**{**registry, **file_opts, **given, **overrides})
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Range and choice checks, with the option name in every message."""
    for name, value in dataclasses.asdict(cfg).items():
        if name in CHOICES and value not in CHOICES[name]:
            raise ConfigError(f"{name}={value!r} is not one of {list(CHOICES[name])}")
        if name in POSITIVE and value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
        if name in NON_NEGATIVE and value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")
    if not 0.0 < cfg.lr < 1.0:
        raise ConfigError(f"lr must be in (0, 1), got {cfg.lr}")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    if cfg.channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {cfg.channels}")
    if isinstance(cfg, VAEConfig) and cfg.l1_weight + cfg.l2_weight <= 0:
        raise ConfigError("at least one of l1_weight and l2_weight must be > 0")
    if isinstance(cfg, Stage2Config) and not 0.0 <= cfg.null_user_prob < 1.0:
        raise ConfigError(f"null_user_prob must be in [0, 1), got {cfg.null_user_prob}")
    if isinstance(cfg, UNetConfig) and not 0.0 <= cfg.condition_drop_prob < 1.0:
        raise ConfigError(f"condition_drop_prob must be in [0, 1), got {cfg.condition_drop_prob}")


def require(cfg: TrainConfig, *names: str) -> None:
    """Options a real run needs but --dry-run does not (paths)."""
    missing = [n for n in names if not getattr(cfg, n)]
    if missing:
        raise ConfigError("missing required option(s): "
                          + ", ".join("--" + n.replace("_", "-") for n in missing))


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def write_options(cfg: TrainConfig, run_dir: str | Path) -> Path:
    """The resolved options, as EDM's training_options.json: what this run actually used."""
    path = Path(run_dir) / "training_options.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    return path


def run_stage(stage: str, args: argparse.Namespace, main: typing.Callable[[TrainConfig], Any],
              *required: str) -> int:
    """The `run(args)` of a training subcommand: resolve, check --data's size against the preset (--dry-run
    too), then --dry-run or train. Errors reach the CLI's error boundary: one line, exit 2."""
    from training.data.sizes import check_preset_size

    cfg = resolve(stage, args)
    if not args.dry_run:
        require(cfg, *required)
    if cfg.data:
        check_preset_size(cfg.data, cfg.preset)
    if args.dry_run:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    main(cfg)
    return 0

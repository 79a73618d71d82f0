"""The one training loop of every stage, on a toy model: update() outside steps(), hooks, log terms,
resume."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from training.config import VAEConfig
from training.stages import logs
from training.stages.loop import TrainLoop, start_run


def _loop(tmp_path, max_steps: int = 3, **over) -> TrainLoop:
    opts = dict(preset="tiny", max_steps=max_steps, batch_size=2, log_every=1, checkpointing_steps=2,
                checkpoints_total_limit=1, image_every=1, lr_warmup_steps=0)
    cfg = VAEConfig(**{**opts, **over})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    return TrainLoop(cfg, start_run(cfg, tmp_path), model, tmp_path, SimpleNamespace(fingerprint="f" * 16),
                     ema_of="0", desc="toy", postfix=("extra",))


def _loss(loop: TrainLoop, step: int) -> torch.Tensor:
    gen, idx = loop.draw(step, 5)
    x = torch.randn(len(idx), 3, generator=gen)
    return loop.model(x).pow(2).mean()


def test_update_works_outside_steps_and_runs_the_hooks(tmp_path):
    loop = _loop(tmp_path)
    calls, figures = [], []
    loop.after_optimizer_step = calls.append
    loop.figure = figures.append
    loop.set_lr(0)
    loss = _loss(loop, 0)
    loop.update(loss, 0, 2, terms={"half": loss / 2}, stats=lambda: {"extra": 1.5})  # no steps() around it
    assert calls == [0] and figures == [1]
    row = logs.read_jsonl(tmp_path / "log.jsonl")[-1]
    assert row["step"] == 1 and row["half"] == row["loss"] / 2 and row["extra"] == 1.5
    assert loop.bar.n == 1
    last = loop.finish()
    assert last["step"] == 1
    for got, want in zip(loop.shadow.parameters(), loop.ema.shadow_params, strict=True):
        assert torch.equal(got, want)  # finish() puts the EMA weights into the shadow
    loop.close()


def test_resumed_loop_equals_uninterrupted(tmp_path):
    def train(run, steps, resume=""):  # constant learning rate: the 2-step run's schedule is the 4-step one's
        loop = _loop(run, steps, resume=resume, lr_schedule="constant", image_every=0)
        for step in loop.steps():
            loop.set_lr(step)
            loop.update(_loss(loop, step), step, 2)
        loop.finish()
        loop.close()
        return loop

    whole = train(tmp_path / "a", 4)
    train(tmp_path / "b", 2)
    resumed = train(tmp_path / "b", 4, resume="latest")
    assert resumed.start == 2
    for a, b in zip(whole.shadow.parameters(), resumed.shadow.parameters(), strict=True):
        assert torch.equal(a, b)

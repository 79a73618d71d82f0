"""Enrolment on the service: POST /users becomes a job on the step worker; enrolled users live in a users
folder.

- **The job.** models.enrolment learns the person's user row (UNet and VAE frozen), one Adam step per worker
  chunk, so generation keeps running between the steps. The last chunk saves the row, then appends it to the
  served user encoder; every other row stays bit for bit, so nobody else's samples change.
- **The users folder** (DOPPLERGEN_USERS_DIR): `<user>.safetensors` (the row, and on a pipeline with a texture
  bank the person's reconstructions and residuals, which join the bank: models/texture.py) and `<user>.json`
  (provenance), the JSON written last by rename, so a crash leaves no half-enrolled user; a restart appends
  them again in enrolment order. Without a folder, enrolled users last until the server stops.
- **Deleting** runs on the device thread between steps, with the event loop holding still: rows that already
  started keep their own conditioning; queued rows of later users get their new index; queued rows of the
  deleted user fail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from models.enrolment import EnrolConfig, Enrolment
from models.texture import TextureBank, reconstructions
from service.engine import Engine
from service.rows import UserGone
from service.worker import StepWorker

log = logging.getLogger("dopplergen.enrolment")


class UsersFolder:
    """Enrolled users on disk: `<user>.safetensors` holds "rows" (1, T*D) [and "texture_means",
    "texture_residuals" (k, C, H, W) fp16]; `<user>.json` (written last) commits it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)

    def load(self) -> list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]]:
        """Every complete entry (its tensors by name), oldest enrolment first (the order their rows are
        appended in)."""
        if self.path is None:
            return []
        out = []
        for meta_file in self.path.glob("*.json"):
            user = meta_file.stem
            try:
                info = json.loads(meta_file.read_text())
                tensors = load_file(str(self.path / f"{user}.safetensors"))
                tensors["rows"]  # noqa: B018 (a KeyError names a file without its row)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("skipping enrolled user %s in %s: %s", user, self.path, exc)
                continue
            out.append((user, tensors, info))
        return sorted(out, key=lambda e: (e[2].get("enrolled_at_ns", 0), e[0]))

    def save(self, user: str, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        if self.path is None:
            return
        flat = {k: v.contiguous() for k, v in tensors.items()}
        for name, write in ((f"{user}.safetensors", lambda p: save_file(flat, str(p))),
                            (f"{user}.json", lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))):
            tmp = self.path / f".{name}.tmp-{os.getpid()}"
            write(tmp)
            tmp.replace(self.path / name)

    def delete(self, user: str) -> None:
        if self.path is None:
            return
        (self.path / f"{user}.json").unlink(missing_ok=True)  # uncommitted first
        (self.path / f"{user}.safetensors").unlink(missing_ok=True)


@dataclass
class Entry:
    status: str  # enrolling | ready | failed
    progress: float = 0.0
    error: str | None = None
    future: asyncio.Future | None = None
    served: bool = False  # its row is in the served encoder (and the users folder)
    cancelled: bool = False  # DELETE came first: the job must not serve it


class Enroller:
    """The service's enrolled users: their state, their jobs on the step worker and the users folder."""

    def __init__(self, engine: Engine, worker: StepWorker, users_dir: Path | None,
                 steps: int | None = None) -> None:
        self.engine, self.worker, self.folder = engine, worker, UsersFolder(users_dir)
        self.cfg = EnrolConfig(**({"steps": steps} if steps else {}))
        self.entries: dict[str, Entry] = {}
        self._lock = threading.Lock()  # a job's last chunk (save + serve) against DELETE's cancellation

    # ---- the device thread ---------------------------------------------------------------------------------
    def restore(self) -> None:
        """At start-up, after loading: append the users folder's people to the served encoder."""
        pipe = self.engine.pipe
        for user, tensors, _ in self.folder.load():
            if user in pipe.users:
                log.warning("enrolled user %s is also in the pipeline; the pipeline's is served", user)
                continue
            pipe.user_encoder = pipe.user_encoder.with_users([user], tensors["rows"])
            self._add_texture(user, tensors)
            self.entries[user] = Entry("ready", 1.0, served=True)
        if self.entries:
            log.info("restored %d enrolled users from %s", len(self.entries), self.folder.path)

    def _enrol_steps(self, user: str, x_db: np.ndarray, files: list[dict]) -> Iterator[None]:
        t0, pipe, entry = time.perf_counter(), self.engine.pipe, self.entries[user]
        # enrolled people (here or on disk) never seed the prior; the set-up runs in pieces of one stage-1
        # encode or one candidate row each, so that denoising steps run between them
        job = Enrolment(pipe, x_db, [0] * len(x_db), 1, self.cfg, exclude=set(self.entries) - {user},
                        lazy=True)
        yield
        for _ in job.preparation():
            yield
        while not job.done:
            job.step()
            entry.progress = len(job.losses) / max(1, self.cfg.steps)
            yield
        rows = job.result()
        tensors = {"rows": rows}
        if pipe.texture is not None:  # the person's own texture (models/texture.py), kept beside the row
            means, res = reconstructions(pipe.vae, pipe.normalization, x_db)
            tensors.update(texture_means=means.half(), texture_residuals=res.half())
        yield
        info = dict(user_id=user, files=files, k=len(files), steps=self.cfg.steps, lr=self.cfg.lr,
                    batch_size=self.cfg.batch_size, seed=self.cfg.seed, final_loss=job.final_loss(),
                    seconds=round(time.perf_counter() - t0, 2), enrolled_at_ns=time.time_ns())
        with self._lock:
            if entry.cancelled:
                return None
            # persisted before it is served: a served user survives a restart
            self.folder.save(user, tensors, info)
            # appending moves no existing index
            pipe.user_encoder = pipe.user_encoder.with_users([user], rows)
            self._add_texture(user, tensors)
            entry.served = True
        return info

    def _add_texture(self, user: str, tensors: dict[str, torch.Tensor]) -> None:
        """On the device thread: the person's reconstructions and residuals join the served pipeline's
        bank."""
        pipe = self.engine.pipe
        if pipe.texture is None or "texture_residuals" not in tensors:
            return
        mine = TextureBank.from_pairs(tensors["texture_means"].float(), tensors["texture_residuals"].float(),
                                      [user] * len(tensors["texture_residuals"]),
                                      pipe.texture.config.dyn_range_db,
                                      per_user=len(tensors["texture_residuals"]))
        if mine.residuals.shape[1:] == pipe.texture.residuals.shape[1:]:
            pipe.texture = pipe.texture.merged(mine)

    def _delete_steps(self, user: str, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        yield  # the work is the second chunk: after every chunk of the jobs queued before this one
        pipe = self.engine.pipe
        if user in pipe.users:  # (a cancelled enrolment may have got as far as serving its user)
            gone = pipe.user_encoder.index_of(user)
            smaller = pipe.user_encoder.without_users([user])

            def swap() -> None:  # on the event loop: no route is between reading an index and submitting it
                pipe.user_encoder = smaller
                if pipe.texture is not None:
                    pipe.texture = pipe.texture.without([user])
                self.worker.remap_users(lambda i: None if i == gone else (i - 1 if i > gone else i),
                                        UserGone(f"user {user!r} was deleted while the request was queued"))

            asyncio.run_coroutine_threadsafe(_call(swap), loop).result(timeout=60)
        self.folder.delete(user)

    # ---- the event loop ------------------------------------------------------------------------------------
    def status(self, user: str) -> dict[str, Any] | None:
        entry = self.entries.get(user)
        if entry is not None:
            return dict(status=entry.status, progress=round(entry.progress, 4), error=entry.error,
                        enrolled=True)
        if self.engine.pipe is not None and user in self.engine.pipe.users:
            return dict(status="ready", progress=1.0, error=None, enrolled=False)
        return None

    def serves(self, user: str) -> bool:
        """True for a person enrolled through POST /users and now served (models.sampling.resolve samples them
        at ENROLLED_GUIDANCE unless a request names its guidance)."""
        return user in self.entries and self.entries[user].served

    def enrolled(self) -> list[str]:
        return [u for u, e in self.entries.items() if e.status == "ready"]

    def submit(self, user: str, x_db: np.ndarray, files: list[dict]) -> None:
        """Queue an enrolment (QueueFull when the worker's job queue is full)."""
        entry = Entry("enrolling")
        self.entries[user] = entry
        try:
            entry.future = self.worker.submit_job(lambda: self._enrol_steps(user, x_db, files))
        except Exception:
            del self.entries[user]
            raise

        def done(fut: asyncio.Future) -> None:
            if fut.cancelled():
                return
            if fut.exception() is not None:
                log.error("enrolment of %s failed: %s", user, fut.exception())
                entry.status, entry.error = ("failed",
                                             f"{type(fut.exception()).__name__}: {fut.exception()}"[:300])
            else:
                entry.status, entry.progress = "ready", 1.0

        entry.future.add_done_callback(done)

    async def delete(self, user: str) -> None:
        """Cancel (enrolling) or remove (ready) an enrolled user; a failed one is only forgotten."""
        entry = self.entries.pop(user)
        with self._lock:
            entry.cancelled = True
            served = entry.served
        if entry.future is not None and not entry.future.done():
            entry.future.cancel()  # the worker closes the job before its next chunk
        if not served:
            return
        loop = asyncio.get_running_loop()
        try:
            await self.worker.submit_job(lambda: self._delete_steps(user, loop))
        except Exception:
            self.entries.setdefault(user, entry)
            raise


async def _call(fn) -> None:
    fn()

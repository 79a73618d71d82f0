"""Enrolment on the service: POST /users becomes a job on the step worker; enrolled users live in a users
folder.

- **One enrolment per user_id.** POST /users reserves the name on the event loop before it reads the upload
  (`reserve`), so a second POST for it gets 409 until the first is released (a bad upload, a full queue), the
  person is deleted, or the enrolment fails and is deleted.
- **The job.** models.enrolment learns the person's user row (UNet and VAE frozen), one Adam step per worker
  chunk, so generation keeps running between the steps. The last chunk saves the entry uncommitted, then on
  the event loop, unless a DELETE came first, commits it (one rename), appends the row to the served user
  encoder and turns the status ready, all at once; every other row stays bit for bit, so nobody else's
  samples change. A cancelled or failed job removes what it saved: nothing is served or on disk.
- **The users folder** (DOPPLERGEN_USERS_DIR, service/users_folder.py): `<user>.safetensors` (the row, and on
  a pipeline with a texture bank the person's reconstructions and residuals, which join the bank:
  models/texture.py) and `<user>.json` (provenance, the commit); a restart appends them again in enrolment
  order and skips a damaged entry (`skipped`, listed by GET /readyz). Without a folder, enrolled users last
  until the server stops.
- **Deleting** a served person runs on the device thread between steps (the files first), then on the event
  loop the row leaves the encoder and the entry leaves `entries` together: rows that already started keep
  their own conditioning; queued rows of later users get their new index; queued rows of the deleted user
  fail. The user stays ready (and its name taken) until then; a second DELETE waits for the same deletion.
  Deleting a person still enrolling cancels the job at once.
- **Replicas sharing the folder** (service/users_sync.py): the name is claimed with a status file, a person
  unknown here is looked up in the folder, and a periodic scan adopts and drops people.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import domain
from models.enrolment import EnrolConfig, Enrolment
from models.texture import TextureBank, reconstructions
from models.user_encoder import UserEncoder
from service.engine import Engine
from service.rows import UserGone
from service.users_folder import Skipped, UsersFolder
from service.users_sync import THROTTLE_S, Entry, Sync, new_token, on_loop
from service.worker import StepWorker

log = logging.getLogger("dopplergen.enrolment")


class Enroller:
    """The service's enrolled users: their state, their jobs on the step worker and the users folder.

    `entries` changes only on the event loop, together with the served encoder, so GET /users, GET
    /users/{id}, the served pipeline and the users folder agree at every await."""

    def __init__(self, engine: Engine, worker: StepWorker, users_dir: Path | None,
                 steps: int | None = None, scan_s: float = 0.0) -> None:
        self.engine, self.worker, self.folder = engine, worker, UsersFolder(users_dir)
        self.cfg = EnrolConfig(**({"steps": steps} if steps else {}))
        self.entries: dict[str, Entry] = {}
        self.skipped: list[Skipped] = []  # damaged users-folder entries left out at start-up
        self.sync = Sync(self, scan_s)  # the folder shared with other replicas

    # ---- the device thread ---------------------------------------------------------------------------------
    def restore(self) -> None:
        """At start-up, after loading: append the users folder's people to the served encoder, skipping a
        damaged entry."""
        pipe = self.engine.pipe
        entries, self.skipped = self.folder.load(row_width=pipe.user_encoder.embedding.weight.shape[1])
        for user, tensors, _ in entries:
            if user in pipe.users:
                self.skipped.append(Skipped(user, f"{user}.json", "a trained user of the pipeline has this "
                                                                  "name; the pipeline's is served"))
                continue
            try:
                encoder = pipe.user_encoder.with_users([user], tensors["rows"])
                pipe.texture = self._with_texture(pipe.texture, user, tensors)
            except Exception as exc:  # e.g. texture tensors that do not fit the bank
                self.skipped.append(Skipped(user, f"{user}.safetensors",
                                            f"does not fit the pipeline ({type(exc).__name__})"))
                continue
            pipe.user_encoder = encoder
            self.entries[user] = Entry("ready", 1.0, served=True)
        for s in self.skipped:
            log.warning("skipping enrolled user %s: %s in %s: %s", s.user_id, s.file, self.folder.path,
                        s.reason)
        if self.entries:
            log.info("restored %d enrolled users from %s", len(self.entries), self.folder.path)

    def _enrol_steps(self, user: str, entry: Entry, x_db: np.ndarray, files: list[dict],
                     loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        t0, pipe = time.perf_counter(), self.engine.pipe
        # enrolled people (here or on disk) never seed the prior; the set-up runs in pieces of one stage-1
        # encode or one candidate row each, so that denoising steps run between them
        job = Enrolment(pipe, x_db, [0] * len(x_db), 1, self.cfg, exclude=set(self.entries) - {user},
                        lazy=True)
        yield
        if not self._still_ours(user, entry, loop):  # deleted through another replica while queued
            return None
        for _ in job.preparation():
            yield
        check = domain.check(pipe, x_db)
        entry.domain = {**check.to_dict(), "message": check.line()}
        yield
        while not job.done:
            job.step()
            entry.progress = len(job.losses) / max(1, self.cfg.steps)
            if time.monotonic() - entry.written >= THROTTLE_S and not self._still_ours(user, entry, loop):
                return None
            yield
        rows = job.result()
        tensors = {"rows": rows}
        if pipe.texture is not None:  # the person's own texture (models/texture.py), kept beside the row
            means, res = reconstructions(pipe.vae, pipe.normalization, x_db)
            tensors.update(texture_means=means.half(), texture_residuals=res.half())
        yield
        info = dict(user_id=user, files=files, k=len(files), steps=self.cfg.steps, lr=self.cfg.lr,
                    batch_size=self.cfg.batch_size, seed=self.cfg.seed, final_loss=job.final_loss(),
                    seconds=round(time.perf_counter() - t0, 2), enrolled_at_ns=time.time_ns(),
                    domain=entry.domain)
        # appending moves no existing index; only jobs change the encoder and they run one at a time here
        encoder = pipe.user_encoder.with_users([user], rows)
        texture = self._with_texture(pipe.texture, user, tensors)
        served = False
        self.skipped = [s for s in self.skipped if s.user_id != user]  # a damaged entry of that name goes
        if not self._still_ours(user, entry, loop):
            return None
        try:
            self.folder.save(user, tensors, info)  # persisted before it is served: it survives a restart
            served = on_loop(loop, partial(self._serve, user, entry, encoder, texture))
        finally:
            if not served:  # cancelled, or failed: nothing stays on disk
                self.folder.discard(user)
        return info if served else None

    def _tidy(self, user: str, entry: Entry, steps: Iterator[None]) -> Iterator[None]:
        """`steps`, then, if cancelled, its status file removed (a progress write may have raced the DELETE
        that removed it)."""
        try:
            return (yield from steps)
        finally:
            if entry.cancelled:
                self.sync.files.remove(user, entry.token)

    def _still_ours(self, user: str, entry: Entry, loop: asyncio.AbstractEventLoop) -> bool:
        """Write the progress to the status file; False (and the entry dropped) when a DELETE through another
        replica cancelled the enrolment."""
        entry.written = time.monotonic()
        if self.sync.files.write(user, entry.token, "enrolling", entry.progress):
            return True
        on_loop(loop, partial(self._drop, user, entry))
        return False

    def _drop(self, user: str, entry: Entry) -> None:
        """On the event loop: forget an enrolment cancelled through another replica."""
        entry.cancelled = True
        if self.entries.get(user) is entry:
            del self.entries[user]
        self.sync.files.remove(user, entry.token)

    def _with_texture(self, bank: TextureBank | None, user: str,
                      tensors: dict[str, torch.Tensor]) -> TextureBank | None:
        """`bank` with the person's reconstructions and residuals joined (`bank` itself when there are none
        or they do not fit)."""
        if bank is None or "texture_residuals" not in tensors:
            return bank
        mine = TextureBank.from_pairs(tensors["texture_means"].float(), tensors["texture_residuals"].float(),
                                      [user] * len(tensors["texture_residuals"]), bank.config.dyn_range_db,
                                      per_user=len(tensors["texture_residuals"]))
        return bank.merged(mine) if mine.residuals.shape[1:] == bank.residuals.shape[1:] else bank

    def _delete_steps(self, user: str, entry: Entry, loop: asyncio.AbstractEventLoop,
                      files: bool = True) -> Iterator[None]:
        yield  # the work is the second chunk: after every chunk of the jobs queued before this one
        pipe = self.engine.pipe
        if files:  # not when another replica deleted them (the scan)
            self.folder.delete(user)  # first: from here a restart no longer serves them
        gone = pipe.user_encoder.index_of(user)
        smaller = pipe.user_encoder.without_users([user])
        texture = pipe.texture.without([user]) if pipe.texture is not None else None

        def swap() -> None:  # on the event loop: no route is between reading an index and submitting it
            pipe.user_encoder, pipe.texture = smaller, texture
            if self.entries.get(user) is entry:
                del self.entries[user]
            self.worker.remap_users(lambda i: None if i == gone else (i - 1 if i > gone else i),
                                    UserGone(f"user {user!r} was deleted while the request was queued"))

        on_loop(loop, swap)

    # ---- the event loop ------------------------------------------------------------------------------------
    def _serve(self, user: str, entry: Entry, encoder: UserEncoder, texture: TextureBank | None) -> bool:
        """The job's end, unless a DELETE came first: commit the entry, serve the row, turn ready."""
        if entry.cancelled or self.entries.get(user) is not entry:
            return False
        if not self.sync.files.ours(user, entry.token):  # deleted through another replica
            self._drop(user, entry)
            return False
        self.folder.commit(user)
        self.sync.files.remove(user, entry.token)
        pipe = self.engine.pipe
        pipe.user_encoder, pipe.texture = encoder, texture
        entry.status, entry.progress, entry.served = "ready", 1.0, True
        return True

    def status(self, user: str) -> dict[str, Any] | None:
        entry = self.entries.get(user)
        if entry is not None:
            return dict(status=entry.status, progress=round(entry.progress, 4), error=entry.error,
                        enrolled=True, domain=entry.domain)
        if self.engine.pipe is not None and user in self.engine.pipe.users:
            return dict(status="ready", progress=1.0, error=None, enrolled=False)
        state = self.sync.files.read(user)  # enrolling or failed on another replica
        if state is not None:
            return dict(status=state["status"], progress=state["progress"], error=state["error"],
                        enrolled=True)
        return None

    async def lookup(self, user: str) -> dict[str, Any] | None:
        """`status`, after adopting a committed entry of the users folder not served here yet."""
        if user not in self.entries:
            await self.sync.adopt(user)
        return self.status(user)

    def serves(self, user: str) -> bool:
        """True for a person enrolled through POST /users and now served (models.sampling.resolve samples them
        at ENROLLED_GUIDANCE unless a request names its guidance)."""
        return user in self.entries and self.entries[user].served

    def enrolled(self) -> list[str]:
        return [u for u, e in self.entries.items() if e.served]

    def reserve(self, user: str) -> Entry | None:
        """Claim `user` for one enrolment, before the upload is read; None when the name is taken (trained,
        enrolled, enrolling, failed, or being deleted)."""
        if user in self.entries or user in self.engine.pipe.users:
            return None
        token = new_token()
        damaged = any(s.user_id == user for s in self.skipped) or user in self.sync._bad
        if not self.sync.files.claim(user, token, damaged):  # enrolling, failed or committed elsewhere
            return None
        entry = self.entries[user] = Entry("enrolling", token=token, written=time.monotonic())
        return entry

    def release(self, user: str, entry: Entry) -> None:
        """Give back a reservation that never became a job (a bad upload, a full queue); else nothing."""
        if entry.future is None and self.entries.get(user) is entry:
            del self.entries[user]
            self.sync.files.remove(user, entry.token)

    def submit(self, user: str, entry: Entry, x_db: np.ndarray, files: list[dict]) -> bool:
        """Queue the reserved enrolment (QueueFull when the worker's job queue is full); False when a DELETE
        cancelled it while the upload was read."""
        if entry.cancelled:
            return False
        loop = asyncio.get_running_loop()
        entry.future = self.worker.submit_job(
            lambda: self._tidy(user, entry, self._enrol_steps(user, entry, x_db, files, loop)))

        def done(fut: asyncio.Future) -> None:
            if fut.cancelled() or entry.cancelled:
                return
            if fut.exception() is not None:
                log.error("enrolment of %s failed: %s", user, fut.exception())
                entry.status, entry.error = ("failed",
                                             f"{type(fut.exception()).__name__}: {fut.exception()}"[:300])
                if not self.sync.files.write(user, entry.token, "failed", entry.progress, entry.error):
                    self._drop(user, entry)  # deleted through another replica meanwhile

        entry.future.add_done_callback(done)
        return True

    async def delete(self, user: str, files: bool = True) -> None:
        """Cancel (enrolling), forget (failed) or remove (ready: waits for the deletion job) an enrolled
        user; one enrolling or failed on another replica is cancelled through its status file. `files` False:
        its files are already gone (deleted through another replica)."""
        entry = self.entries.get(user)
        if entry is None:
            self.sync.files.cancel(user)
            return
        if entry.deleting is None and not entry.served:
            del self.entries[user]
            entry.cancelled = True
            self.sync.files.remove(user, entry.token)
            if entry.future is not None and not entry.future.done():
                entry.future.cancel()  # the worker closes the job before its next chunk
            return
        if entry.deleting is None:
            loop = asyncio.get_running_loop()
            entry.deleting = self.worker.submit_job(lambda: self._delete_steps(user, entry, loop, files))
        deleting = entry.deleting
        try:  # shielded: a DELETE whose client leaves still deletes
            await asyncio.shield(deleting)
        except Exception:
            if entry.deleting is deleting:
                entry.deleting = None  # the user is still served: a later DELETE tries again
            raise

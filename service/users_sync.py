"""One set of people across replicas that share a users folder (docs/deployment.md, "Scale out").

- **Status files.** An enrolment in progress is `<user>.status` in the folder: JSON {"status": "enrolling"
  | "failed", "progress", "error", "updated_ns", "token"}, the token naming the enrolment. POST /users
  claims the name by creating it with O_CREAT | O_EXCL, so two replicas cannot both enrol one name (the
  loser gets 409); a committed `<user>.json` also takes the name. Later writes go to a temporary name unique
  to the process and call (uuid4) and are renamed into place. The file goes when the entry is committed,
  cancelled or deleted. An "enrolling" file not updated for STALE_S counts as abandoned (its replica died)
  and may be taken over. (Not `<user>.status.json`: "x.status" is a valid user ID, whose entry is
  `x.status.json`.)
- **Cancelling from another replica.** DELETE of a person enrolling elsewhere writes `<user>.cancel` (the
  enrolment's token) and removes the status file; the enrolling replica checks both at every progress write
  and before it commits, and then leaves nothing behind.
- **Adopting.** A replica asked about a person it does not serve looks in the folder: a committed entry is
  loaded and its row appended on the device thread (a worker job, like a restore); a status file answers
  enrolling or failed. A periodic scan (DOPPLERGEN_USERS_SCAN_S) adopts committed entries and drops people
  whose committed JSON is gone (deleted through another replica). A scan, not a file watcher: inotify does
  not see other hosts' writes on NFS or ReadWriteMany volumes, a listing does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.paths import is_new_user_id
from service.users_folder import Damaged, Skipped

log = logging.getLogger("dopplergen.enrolment")
STALE_S = 600.0  # an "enrolling" status file not updated for this long was left by a replica that died
THROTTLE_S = 0.5  # progress is written at most this often
HEARTBEAT_S = 30.0  # an enrolment waiting in the queue rewrites its status file this often (by the scan)


def _replace(target: Path, text: str) -> None:
    """Write `text` under a name unique to this process and call, then rename it over `target`: a reader on
    any replica sees the old file or the new one, never half of one."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, target)


class StatusFiles:
    """`<user>.status` and `<user>.cancel` in the users folder (see the module docstring); `path` None: no-ops
    (a single replica without a folder)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _file(self, user: str, ext: str = ".status") -> Path:
        return self.path / f"{user}{ext}"

    def claim(self, user: str, token: str, damaged: bool = False) -> bool:
        """Take `user` for one enrolment here; False when another replica enrols it, failed it, or committed
        it (`damaged`: its committed entry is damaged, and the enrolment replaces it)."""
        if self.path is None:
            return True
        for _ in range(2):
            if not damaged and self._file(user, ".json").exists():
                return False
            try:
                fd = os.open(self._file(user), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over_stale(user):
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(_body("enrolling", 0.0, None, token)))
            self._file(user, ".cancel").unlink(missing_ok=True)  # a marker for an earlier enrolment
            if not damaged and self._file(user, ".json").exists():  # committed between check and claim
                self._file(user).unlink(missing_ok=True)
                return False
            return True
        return False

    def _take_over_stale(self, user: str) -> bool:
        state = self.read(user)
        if state is None:
            return True  # gone meanwhile: try again
        if state["status"] != "enrolling" or time.time_ns() - state["updated_ns"] < STALE_S * 1e9:
            return False
        aside = self.path / f".{user}.status.stale-{uuid.uuid4().hex}"
        try:  # one rename wins; a second replica taking over at once finds the file gone (or fresh)
            self._file(user).rename(aside)
        except FileNotFoundError:
            return True
        log.warning("taking over %s's enrolment status, abandoned since %.0f s", user,
                    (time.time_ns() - state["updated_ns"]) / 1e9)
        aside.unlink(missing_ok=True)
        return True

    def read(self, user: str) -> dict[str, Any] | None:
        """The status file's content (a file caught while written reads as enrolling), None when there is
        none."""
        if self.path is None or not is_new_user_id(user):
            return None
        try:
            raw = self._file(user).read_text()
            mtime = self._file(user).stat().st_mtime_ns
        except (FileNotFoundError, OSError, UnicodeDecodeError):
            return None
        try:
            body = json.loads(raw)
            assert isinstance(body, dict) and body.get("status") in ("enrolling", "failed")
        except (ValueError, AssertionError):
            body = {}
        out = _body("enrolling", 0.0, None, None, mtime)
        out.update({k: body[k] for k in out if k in body})
        return out

    def write(self, user: str, token: str, status: str, progress: float, error: str | None = None) -> bool:
        """Rewrite our status file; False (and nothing written) when it is no longer ours: cancelled from
        another replica, or taken over."""
        if self.path is None:
            return True
        if not self.ours(user, token):
            return False
        _replace(self._file(user), json.dumps(_body(status, progress, error, token)))
        return True

    def ours(self, user: str, token: str) -> bool:
        """True while the status file is this enrolment's and nobody cancelled it."""
        if self.path is None:
            return True
        state = self.read(user)
        if state is None or state["token"] != token:
            return False
        try:
            return self._file(user, ".cancel").read_text().strip() != token
        except OSError:
            return True

    def remove(self, user: str, token: str | None = None) -> None:
        """Remove the status file (only when it is `token`'s, if given) and any cancel marker of `token`."""
        if self.path is None:
            return
        state = self.read(user)
        if state is not None and (token is None or state["token"] == token):
            self._file(user).unlink(missing_ok=True)
        if token is not None:
            try:
                if self._file(user, ".cancel").read_text().strip() == token:
                    self._file(user, ".cancel").unlink(missing_ok=True)
            except OSError:
                pass

    def cancel(self, user: str) -> None:
        """DELETE of a person enrolling (or failed) on another replica: mark the enrolment cancelled, then
        remove its status file."""
        if self.path is None or not is_new_user_id(user):
            return
        state = self.read(user)
        if (state is not None and state["token"] and state["status"] == "enrolling"
                and time.time_ns() - state["updated_ns"] < STALE_S * 1e9):  # a live enrolment: tell it
            _replace(self._file(user, ".cancel"), state["token"])
        self._file(user).unlink(missing_ok=True)

    def committed(self) -> set[str]:
        """The names with a committed JSON (sound or not)."""
        if self.path is None:
            return set()
        return {p.stem for p in self.path.glob("*.json") if not p.name.startswith(".")}


def _body(status: str, progress: float, error: str | None, token: str | None,
          updated_ns: int | None = None) -> dict[str, Any]:
    return dict(status=status, progress=round(float(progress), 4), error=error,
                updated_ns=updated_ns if updated_ns is not None else time.time_ns(), token=token)


@dataclass(eq=False)
class Entry:
    status: str  # enrolling | ready | failed
    progress: float = 0.0
    error: str | None = None
    future: asyncio.Future | None = None  # the enrolment job, once queued
    served: bool = False  # its row is in the served encoder and its entry committed in the users folder
    cancelled: bool = False  # DELETE came first: the job must not serve it
    deleting: asyncio.Future | None = None  # the deletion job of a served entry
    token: str | None = None  # the enrolment's, in its status file (service/users_sync.py)
    written: float = 0.0  # time.monotonic() of its last status-file write
    domain: dict[str, Any] | None = None  # the recordings' domain check (models/domain.py), once measured


def new_token() -> str:
    return uuid.uuid4().hex


class Sync:
    """The enroller's side of sharing a users folder: adopting committed entries, dropping deleted ones, the
    scan."""

    def __init__(self, enroller: Any, scan_s: float) -> None:  # service.enrolment.Enroller
        self.enroller, self.scan_s = enroller, scan_s
        self.files = StatusFiles(enroller.folder.path)
        self._adopting: dict[str, asyncio.Future] = {}
        self._bad: dict[str, int] = {}  # damaged: name -> JSON mtime, not retried until changed
        self._task: asyncio.Task | None = None

    # ---- adopting ------------------------------------------------------------------------------------------
    async def adopt(self, user: str) -> bool:
        """Serve a committed entry of the folder not served here yet (a worker job); False when there is
        none, or it is damaged."""
        enr = self.enroller
        if not is_new_user_id(user) or self._known_bad(user):
            return False
        if (enr.folder.path is None or user in enr.entries or enr.engine.pipe is None
                or user in enr.engine.pipe.users):
            return user in enr.entries and enr.entries[user].served
        if not (enr.folder.path / f"{user}.json").exists():
            return False
        fut = self._adopting.get(user)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._adopting[user] = enr.worker.submit_job(lambda: self._adopt_steps(user, loop))
            fut.add_done_callback(lambda _f: self._adopting.pop(user, None))
        try:
            await asyncio.shield(fut)
        except Exception as exc:
            log.warning("could not adopt %s from %s: %s", user, enr.folder.path, exc)
            return False
        return user in enr.entries and enr.entries[user].served

    def _known_bad(self, user: str) -> bool:
        """A damaged entry whose JSON has not changed since it was found damaged."""
        if user not in self._bad:
            return False
        try:
            return (self.enroller.folder.path / f"{user}.json").stat().st_mtime_ns == self._bad[user]
        except OSError:
            return True

    def _adopt_steps(self, user: str, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        yield
        enr, pipe = self.enroller, self.enroller.engine.pipe
        meta = enr.folder.path / f"{user}.json"
        try:
            mtime = meta.stat().st_mtime_ns
            enr.folder._info(meta)
            tensors = enr.folder._tensors(user, pipe.user_encoder.embedding.weight.shape[1])
        except FileNotFoundError:
            return
        except Damaged as exc:
            if not meta.exists():
                return  # deleted meanwhile, not damaged
            self._bad[user] = mtime
            if not any(s.user_id == user for s in enr.skipped):
                enr.skipped.append(Skipped(user, exc.file, exc.reason))
            log.warning("skipping enrolled user %s: %s in %s: %s", user, exc.file, enr.folder.path,
                        exc.reason)
            return
        encoder = pipe.user_encoder.with_users([user], tensors["rows"])
        texture = enr._with_texture(pipe.texture, user, tensors)

        def swap() -> None:
            if user in enr.entries or user in pipe.users or not meta.exists():
                return  # enrolled here meanwhile, or deleted
            pipe.user_encoder, pipe.texture = encoder, texture
            enr.entries[user] = Entry("ready", 1.0, served=True)
            log.info("adopted enrolled user %s from %s", user, enr.folder.path)

        on_loop(loop, swap)

    # ---- the scan ------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.scan_s > 0 and self.enroller.folder.path is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._scan_loop(),
                                                                name="dopplergen-users-scan")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scan_s)
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a full queue, a shutdown, an unreadable folder: next time
                log.warning("users-folder scan failed: %s: %s", type(exc).__name__, exc)

    async def scan(self) -> None:
        """Adopt committed entries not served here; drop people served here whose committed JSON is gone;
        keep this replica's queued enrolments' status files fresh."""
        enr, loop = self.enroller, asyncio.get_running_loop()
        folder = enr.folder.path
        on_disk = await loop.run_in_executor(None, self.files.committed)
        now = time.monotonic()
        for user, entry in list(enr.entries.items()):
            if entry.status == "enrolling" and entry.token and now - entry.written > HEARTBEAT_S:
                entry.written = now  # on the event loop, so never between a commit and its status removal
                if not self.files.write(user, entry.token, "enrolling", entry.progress):  # cancelled
                    enr._drop(user, entry)
                    if entry.future is not None and not entry.future.done():
                        entry.future.cancel()
            elif entry.status == "failed" and entry.token and not self.files.ours(user, entry.token):
                enr._drop(user, entry)  # deleted through another replica
        for user in sorted(on_disk - set(enr.entries)):
            await self.adopt(user)
        for user, entry in list(enr.entries.items()):
            if entry.served and entry.deleting is None and user not in on_disk \
                    and not (folder / f"{user}.json").exists():  # checked again: it may be committed just now
                log.info("enrolled user %s was deleted from %s by another replica", user, folder)
                await enr.delete(user, files=False)


def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> Any:
    """From the device thread: run `fn` on the event loop, between two of its callbacks, and return its
    result."""

    async def call() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=60)

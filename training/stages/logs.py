"""Run logs on the main process: an append-only JSONL of metrics (trimmed on resume), throughput, peak
memory."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any


class JsonlLogger:
    """Append-only metrics log on the main process; on resume, lines past the resumed step are dropped."""

    def __init__(self, path: str | Path, enabled: bool, resume_step: int = 0):
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step > 0 and self.path.is_file():
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln and json.loads(ln).get("step", 0) <= resume_step]
        self.path.write_text("".join(ln + "\n" for ln in kept))

    def log(self, **row: Any) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln] if path.is_file() else []


class Throughput:
    """Samples per second since the last reading (all processes together)."""

    def __init__(self) -> None:
        self.t, self.n = time.perf_counter(), 0

    def add(self, n: int) -> None:
        self.n += n

    def read(self) -> float:
        now = time.perf_counter()
        rate = self.n / max(now - self.t, 1e-9)
        self.t, self.n = now, 0
        return rate


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux ru_maxrss is in KiB)."""

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

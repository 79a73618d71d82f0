"""Shared end-to-end fixtures: a tiny random pipeline and a live `dopplergen serve` subprocess."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import TINY_USERS

REPO = Path(__file__).resolve().parents[2]
USERS = list(TINY_USERS)  # the users of the tiny pipeline
READY_TIMEOUT_S = 240.0  # model load + warm-up of the tiny preset on 2 shared CPU cores, with margin
# A request the tiny pipeline answers in well under a second on the CPU.
GENERATE_BODY = {
    "user_id": USERS[0],
    "num_samples": 2,
    "num_inference_steps": 2,
    "guidance_scale": 2.0,
    "seed": 0,
    "format": "npy",
}


# --- parsing the deployment files (shared by test_deploy_static and test_prometheus) -------------


@dataclass(frozen=True)
class ComposeTag:
    """A Compose merge tag (`!reset` / `!override`) and the value it carries."""

    tag: str
    value: object


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that keeps Compose's `!reset`/`!override` tags instead of rejecting them."""


def _compose_tag(loader: yaml.SafeLoader, node: yaml.Node) -> ComposeTag:
    if isinstance(node, yaml.MappingNode):
        value: object = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return ComposeTag(node.tag, value)


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, _compose_tag)


def load_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.load(f, Loader=_ComposeLoader)  # noqa: S506 - SafeLoader subclass


def documented_metric_series() -> set[str]:
    """Every series name the metric table in docs/internals.md allows, as exposed on /metrics."""
    text = (REPO / "docs" / "internals.md").read_text()
    section = text.split("### Metric names", 1)[1]
    series: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `dopplergen_"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`(dopplergen_\w+)`", cells[0])
        kind = cells[1]
        for name in names:
            if kind == "histogram":  # a histogram is exposed only as its three series
                series.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
            elif kind == "info":  # prometheus_client's Info("x") is exposed as x_info
                series.update({name} if name.endswith("_info") else set())
            else:
                series.add(name)
    assert series, "no metric names found in docs/internals.md"
    return series


def dashboard_expressions(dashboard: dict) -> list[str]:
    """Every PromQL expression in a Grafana dashboard: panel targets and query variables."""
    exprs: list[str] = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))  # collapsed rows nest their panels

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and query:
            exprs.append(query)
    return exprs


_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                    "and", "or", "unless", "offset", "inf", "nan", "atan2"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (or Grafana `label_values(metric, label)`) selects."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, $vars)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range / subquery durations, incl. $__rate_interval
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,[^)]*\)", r"\1", e)
    e = re.sub(r"\$\w+", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", e):
        if m.group(2) is None and m.group(1).lower() not in _PROMQL_KEYWORDS:
            names.add(m.group(1))
    return names


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    interval_s: float = 0.25,
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll `predicate` until it is true; fail the test with `what` (and `detail()`) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}" + (f"\n{detail()}" if detail else ""))


def http_ready(proc: subprocess.Popen, url: str, log_path: Path, name: str) -> Callable[[], bool]:
    """A `wait_for` predicate: `url` answers 200; fails at once, with the log, if `proc` exited first."""

    def ready() -> bool:
        assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{log_tail(log_path)}"
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False  # not listening yet

    return ready


def log_tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


def stop_process(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM (lets the service drain), then SIGKILL after `grace_s`. Only ever this one process."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class LiveServer:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def client(self, timeout_s: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)

    def log_tail(self) -> str:
        return log_tail(self.log_path)


def service_env(pipeline: Path, port: int, **overrides: str) -> dict[str, str]:
    """The process env for `dopplergen serve`: this env minus any outside DOPPLERGEN_*, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOPPLERGEN_")}
    env.update(
        DOPPLERGEN_PIPELINE=str(pipeline),
        DOPPLERGEN_DEVICE="cpu",
        DOPPLERGEN_DTYPE="fp32",
        DOPPLERGEN_HOST="127.0.0.1",
        DOPPLERGEN_PORT=str(port),
        DOPPLERGEN_MAX_WAIT_MS="5",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@contextmanager
def run_server(pipeline: Path, log_dir: Path, **env_overrides: str) -> Iterator[LiveServer]:
    """Start `dopplergen serve` (as `python -m training serve`) and yield once /readyz answers 200."""
    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "training", "serve"],
            cwd=REPO,
            env=service_env(pipeline, port, **env_overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = LiveServer(url=f"http://127.0.0.1:{port}", port=port, process=proc, log_path=log_path)
    try:
        wait_for(http_ready(proc, f"{server.url}/readyz", log_path, "dopplergen serve"), READY_TIMEOUT_S,
                 "/readyz to answer 200", detail=server.log_tail)
        yield server
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_pipeline_dir: str) -> Path:
    """The session's random-weight `tiny` pipeline folder (built once in tests/conftest.py with
    models.pipeline.build_untrained_pipeline), for the live service."""
    return Path(tiny_pipeline_dir)


@pytest.fixture(scope="session")
def live_server(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real `dopplergen serve` on a free loopback port, shared by the e2e tests of a session."""
    with run_server(tiny_pipeline, tmp_path_factory.mktemp("e2e-serve-logs")) as server:
        yield server


@pytest.fixture(scope="session")
def live_metrics_text(live_server: LiveServer) -> str:
    """/metrics after one good /generate and one 404 (unknown user), so histograms and the
    rejection counter have series."""
    with live_server.client() as client:
        ok = client.post("/generate", json=GENERATE_BODY)
        assert ok.status_code == 200, f"{ok.status_code} {ok.text[:500]}\n{live_server.log_tail()}"
        unknown = client.post("/generate", json={**GENERATE_BODY, "user_id": "no-such-user"})
        assert unknown.status_code == 404, f"{unknown.status_code} {unknown.text[:500]}"
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        return metrics.text

"""A real Prometheus scrapes a live `dopplergen serve` using the repo's scrape job (adapted to a static
loopback target); assertions go through Prometheus's HTTP query API."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import (
    GENERATE_BODY,
    REPO,
    LiveServer,
    dashboard_expressions,
    free_port,
    http_ready,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.slow

INSTALL_SCRIPT = REPO / "scripts" / "install_prometheus.sh"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "dopplergen.json"
SCRAPE_WAIT_S = 60.0


def find_or_install_prometheus() -> str:
    """The prometheus binary; installs it via scripts/install_prometheus.sh if missing. Skips when it
    cannot be had, except on CI (CI=true), where .ci/run installs it and a skip would hide a break."""
    exe = shutil.which("prometheus")
    detail = ""
    if exe is None:
        try:
            out = subprocess.run(["sh", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900,
                                 stdin=subprocess.DEVNULL)
            detail = (out.stdout + out.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            detail = "install script timed out"
        exe = shutil.which("prometheus")
    if exe is None:
        reason = f"prometheus not installed and scripts/install_prometheus.sh could not install it:\n{detail}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return exe


def scrape_config(target: str) -> dict:
    """deploy/prometheus.yml's api job, with its DNS discovery swapped for a static target."""
    repo_config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    (job,) = [j for j in repo_config["scrape_configs"] if j.get("dns_sd_configs")]
    job = {k: v for k, v in job.items() if k not in ("dns_sd_configs", "relabel_configs")}
    job.update(static_configs=[{"targets": [target]}], scrape_interval="1s", scrape_timeout="1s")
    return {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": [job]}


class Prometheus:
    def __init__(self, url: str, job: str) -> None:
        self.url, self.job = url, job

    def query(self, promql: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{promql}: {body}"
        return body["data"]["result"]

    def scalar(self, promql: str) -> float:
        """The single value of an instant query; 0 for an empty result (no series yet)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture(scope="module")
def prometheus(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    exe = find_or_install_prometheus()
    work: Path = tmp_path_factory.mktemp("prometheus")
    config = scrape_config(f"127.0.0.1:{live_server.port}")
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = work / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [exe, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", config["scrape_configs"][0]["job_name"])
    try:
        wait_for(http_ready(proc, f"{prom.url}/-/ready", log_path, "prometheus"), SCRAPE_WAIT_S,
                 "prometheus /-/ready")
        yield prom
    finally:
        stop_process(proc, grace_s=10)


def test_prometheus_scrapes_the_service_and_sees_generate(
    prometheus: Prometheus, live_server: LiveServer
) -> None:
    job = prometheus.job
    wait_for(lambda: prometheus.scalar(f'up{{job="{job}"}}') == 1.0, SCRAPE_WAIT_S, "a successful scrape")
    names = {r["metric"]["__name__"] for r in prometheus.query(f'{{job="{job}", __name__=~"dopplergen_.+"}}')}
    assert {"dopplergen_model_loaded", "dopplergen_queue_depth"} <= names, sorted(names)
    assert prometheus.scalar(f'dopplergen_model_loaded{{job="{job}"}}') == 1.0

    total = 'sum(dopplergen_requests_total{route="/generate"})'
    before = prometheus.scalar(total)
    with live_server.client() as client:
        r = client.post("/generate", json=GENERATE_BODY)
    assert r.status_code == 200, r.text[:500]
    wait_for(lambda: prometheus.scalar(total) > before, 30, f"{total} to rise above {before}",
             detail=lambda: f"prometheus has {prometheus.query('dopplergen_requests_total')}")

    samples = f'sum(dopplergen_samples_generated_total{{job="{job}"}})'
    wait_for(lambda: prometheus.scalar(samples) >= GENERATE_BODY["num_samples"], 30, samples)


def test_dashboard_queries_run_on_prometheus(prometheus: Prometheus, live_server: LiveServer) -> None:
    """Every dashboard query is valid PromQL, and the latency quantile has data after traffic."""
    with live_server.client() as client:
        assert client.post("/generate", json=GENERATE_BODY).status_code == 200
    dashboard = json.loads(DASHBOARD.read_text())
    for expr in dashboard_expressions(dashboard):
        if expr.startswith("label_values("):  # a Grafana function, not PromQL
            expr = expr[len("label_values("):].split(",")[0]
        promql = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        prometheus.query(promql)  # asserts status == success (a parse error is a 400)

    p99 = ('histogram_quantile(0.99, sum by (le) '
           '(rate(dopplergen_request_latency_seconds_bucket{route="/generate"}[1m])))')

    def p99_is_a_number() -> bool:
        value = prometheus.scalar(p99)
        return value > 0 and not math.isnan(value)

    wait_for(p99_is_a_number, 30, "a /generate p99 latency")

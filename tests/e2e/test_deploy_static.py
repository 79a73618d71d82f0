"""Static checks of the deployment files (no Docker engine needed), plus one live check that every
metric the Grafana dashboard plots is really exported by the running service."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import PurePosixPath

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import (
    REPO,
    ComposeTag,
    dashboard_expressions,
    documented_metric_series,
    load_yaml,
    promql_metric_names,
)

COMPOSE = REPO / "docker-compose.yml"
COMPOSE_CPU = REPO / "docker-compose.cpu.yml"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS = REPO / "deploy" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "dopplergen.json"
DATASOURCES = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = REPO / "deploy" / "grafana" / "provisioning" / "dashboards" / "dopplergen.yml"
NGINX = REPO / "deploy" / "nginx.conf"
TRAIN_SH = REPO / "deploy" / "train.sh"
API_PORT = 8000
@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def default_of(value: str) -> str:
    """`${VAR:-default}` -> default; anything else unchanged (what compose uses when VAR is unset)."""
    m = re.fullmatch(r"\$\{\w+:?-([^}]*)\}", str(value))
    return m.group(1) if m else str(value)


class MissingVariable(ValueError):
    """A `${VAR:?message}` whose variable is unset: compose refuses the file with the message."""


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation (`${VAR}`, `:-`/`-` defaults, `:?`/`?` required) against `env`."""

    def one(m: re.Match) -> str:
        name, colon, op, arg = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        unset = name not in env or (colon == ":" and env[name] == "")
        if op == "-":
            return arg if unset else env[name]
        if op == "?":
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        return env.get(name, "")

    return re.sub(r"\$\{(\w+)(?:(:?)([-?])([^}]*))?\}", one, str(value))


def published(spec: str | dict, env: dict[str, str]) -> tuple[str, str, int]:
    """(host address, host port, container port) of a `ports:` entry; no host address = every interface."""
    if isinstance(spec, dict):
        return (interpolate(spec.get("host_ip", "0.0.0.0"), env), interpolate(spec.get("published", ""), env),
                int(spec["target"]))
    parts = interpolate(spec, env).split(":")
    host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
    return host_ip, parts[-2] if len(parts) >= 2 else "", int(parts[-1].split("/")[0])


def seconds(duration: str) -> float:
    """Compose duration ('1m30s', '180s') in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def gpu_devices(service: dict) -> list:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def container_port(spec: str | dict) -> int:
    return int(spec["target"]) if isinstance(spec, dict) else int(str(spec).rsplit(":", 1)[-1])


def volume_targets(service: dict) -> dict[str, str]:
    """container path -> source (named volume or host path) of a service's mounts."""
    out = {}
    for v in service.get("volumes", []):
        source, target = (v["source"], v["target"]) if isinstance(v, dict) else str(v).split(":")[:2]
        out[target] = source
    return out


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_defines_the_stack(services: dict) -> None:
    assert {"api", "prometheus", "grafana", "train", "lb"} <= set(services)
    assert services["train"]["profiles"] == ["train"], "train must not start with a plain `up`"
    assert "lb" in services["lb"]["profiles"]
    for name in ("api", "prometheus", "grafana"):
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"


def test_api_reserves_an_nvidia_gpu(services: dict) -> None:
    devices = gpu_devices(services["api"])
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert gpu_devices(services["train"]) == devices, "the train job needs the same GPU reservation"


def test_api_serves_on_8000_with_known_settings(services: dict) -> None:
    from service.settings import Settings

    known = {"DOPPLERGEN_" + name.upper() for name in Settings.model_fields}
    api = services["api"]
    env = api["environment"]
    assert set(env) <= known, f"settings the service does not read: {set(env) - known}"
    assert str(env["DOPPLERGEN_PORT"]) == str(API_PORT)
    assert env["DOPPLERGEN_HOST"] == "0.0.0.0", "must listen beyond the container's loopback"
    assert [container_port(p) for p in api["ports"]] == [API_PORT]
    assert env["DOPPLERGEN_API_KEY"] is None, "API key passes through from the host, never a literal"


def test_every_published_port_binds_to_loopback_unless_the_operator_says_otherwise(services: dict) -> None:
    ports = [(name, spec) for name, svc in services.items() for spec in svc.get("ports", [])]
    assert {name for name, _ in ports} >= {"api", "prometheus", "grafana", "lb"}
    for name, spec in ports:
        assert published(spec, {})[0] == "127.0.0.1", f"{name} publishes {spec!r} beyond loopback by default"
        assert published(spec, {"DOPPLERGEN_BIND": "10.1.2.3"})[0] == "10.1.2.3", \
            f"{name}: DOPPLERGEN_BIND ignored"
    assert not any(svc.get("network_mode") == "host" for svc in services.values()), \
        "host networking skips the bind"


def test_no_default_passwords_and_grafana_requires_one(services: dict) -> None:
    grafana = services["grafana"]["environment"]
    with pytest.raises(MissingVariable, match="GRAFANA_ADMIN_PASSWORD"):
        interpolate(grafana["GF_SECURITY_ADMIN_PASSWORD"], {})
    with pytest.raises(MissingVariable):
        interpolate(grafana["GF_SECURITY_ADMIN_PASSWORD"], {"GRAFANA_ADMIN_PASSWORD": ""})
    assert interpolate(grafana["GF_SECURITY_ADMIN_PASSWORD"], {"GRAFANA_ADMIN_PASSWORD": "p4ss"}) == "p4ss"
    assert str(grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"
    for name, svc in services.items():  # no secret-looking setting may fall back to a literal
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|API_KEY|TOKEN", key) and value is not None:
                assert re.fullmatch(r"\$\{\w+:?\?[^}]*\}", str(value)), (
                    f"{name}.{key} has a default: {value!r}"
                )


def test_stop_grace_period_covers_request_timeout_and_drain(services: dict) -> None:
    """SIGTERM -> SIGKILL must outlast `dopplergen serve`'s shutdown: in-flight requests get up to
    request_timeout_s + 5 s (uvicorn's timeout_graceful_shutdown), then the batcher drains for up to
    request_timeout_s more."""
    api = services["api"]
    timeout_s = float(interpolate(api["environment"]["DOPPLERGEN_REQUEST_TIMEOUT_S"], {}))
    assert seconds(api["stop_grace_period"]) >= 2 * timeout_s + 5 + 10, api["stop_grace_period"]


def test_api_pipeline_lives_in_the_checkpoint_volume(services: dict, compose: dict) -> None:
    """The default pipeline path is inside a named volume the train job writes to as well."""
    pipeline = PurePosixPath(default_of(services["api"]["environment"]["DOPPLERGEN_PIPELINE"]))
    api_mounts = volume_targets(services["api"])
    mount = next(t for t in api_mounts if PurePosixPath(t) in pipeline.parents)
    assert api_mounts[mount] in compose["volumes"], "checkpoints must be a named volume"
    train_mounts = volume_targets(services["train"])
    assert train_mounts.get(mount) == api_mounts[mount], "train must write to the api's volume"
    train_out = PurePosixPath(default_of(services["train"]["environment"]["DOPPLERGEN_TRAIN_OUT"]))
    assert PurePosixPath(mount) in train_out.parents


def test_api_keeps_enrolled_users_in_a_named_volume(services: dict, compose: dict) -> None:
    """People enrolled through POST /users outlive the container: DOPPLERGEN_USERS_DIR is a named volume
    (one for every replica that `--profile lb --scale api=N` starts), and the image makes that folder for
    its user, so Docker seeds the empty volume writable for it."""
    api = services["api"]
    users_dir = PurePosixPath(default_of(api["environment"]["DOPPLERGEN_USERS_DIR"]))
    assert interpolate(api["environment"]["DOPPLERGEN_USERS_DIR"], {"DOPPLERGEN_USERS_DIR": "none"}) == "none"
    mounts = volume_targets(api)
    assert str(users_dir) in mounts, f"no volume at {users_dir}: {mounts}"
    assert mounts[str(users_dir)] in compose["volumes"], "the users folder must be a named volume"
    assert mounts[str(users_dir)] != mounts.get("/checkpoints"), "people and pipelines in separate volumes"
    ins = dockerfile_instructions()
    env = " ".join(a for i, a in ins if i == "ENV")
    assert re.search(r"DOPPLERGEN_USERS_DIR=(\S+)", env).group(1) == str(users_dir)
    run = " ".join(a for i, a in ins if i == "RUN")
    for step in ("mkdir -p", "chown app:app"):
        assert re.search(rf"{step} [^&]*{users_dir}\b", run), f"the image does not {step} {users_dir}"
    override = load_yaml(COMPOSE_CPU)["services"]["api"]  # the CPU override keeps the mount and the setting
    assert "volumes" not in override and "DOPPLERGEN_USERS_DIR" not in override.get("environment", {})


def test_long_running_services_have_healthchecks(services: dict) -> None:
    for name in ("api", "prometheus", "grafana", "lb"):
        hc = services[name].get("healthcheck")
        assert hc and hc["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert seconds(hc["interval"]) <= 30 and int(hc["retries"]) >= 1


def test_api_healthcheck_probes_readyz_after_warmup(services: dict) -> None:
    hc = services["api"]["healthcheck"]
    probe = " ".join(hc["test"][1:])
    assert f"127.0.0.1:{API_PORT}/readyz" in probe
    assert "curl" not in probe, "the image has no curl"
    assert seconds(hc["start_period"]) >= 60, "start_period must cover model load + warm-up"


def test_train_job_runs_the_pipeline_script(services: dict) -> None:
    train, api = services["train"], services["api"]
    # one Dockerfile, two dependency sets: the serving image carries no training packages
    assert api["build"]["args"]["DEPS"] == "serve" and train["build"]["args"]["DEPS"] == "train"
    assert train["build"]["context"] == api["build"]["context"] and train["image"] != api["image"]
    assert "/app/deploy/train.sh" in " ".join(train["command"])
    assert train.get("restart") in ("no", None)


FAKE_DOPPLERGEN = """#!{python}
import json, os, sys
with open(os.environ["FAKE_DOPPLERGEN_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if "--out" in sys.argv:  # stand in for the stage's output so the script's final move works
    os.makedirs(sys.argv[sys.argv.index("--out") + 1], exist_ok=True)
"""


def test_train_script_calls_the_real_cli_in_order(tmp_path) -> None:
    """Run deploy/train.sh against a recording fake `dopplergen`, then parse every call it made with the
    real CLI's parser: a renamed or removed flag fails here, not in a container hours later."""
    import sys

    from training.cli import build_parser

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dopplergen"
    fake.write_text(FAKE_DOPPLERGEN.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_DOPPLERGEN_LOG": str(log),
        "DOPPLERGEN_TRAIN_DATA": str(tmp_path / "data"),
        "DOPPLERGEN_TRAIN_RUNS": str(tmp_path / "runs"),
        "DOPPLERGEN_TRAIN_OUT": str(tmp_path / "checkpoints" / "trained"),
    }
    out = subprocess.run(["sh", str(TRAIN_SH)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == ["simulate", "train-vae", "train-unet", "evaluate"]
    for argv in calls:
        try:
            build_parser(argv).parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"`dopplergen {' '.join(argv)}` is rejected by the CLI (exit {e.code})")
    assert (tmp_path / "checkpoints" / "trained").is_dir(), "the pipeline was not moved into place"
    assert not (tmp_path / "checkpoints" / "trained.partial").exists()


def test_compose_file_validates_with_docker_compose() -> None:
    """`docker compose config` (v2 plugin) or `docker-compose config` (v1), when either is installed."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0:
            break
    else:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    refused = subprocess.run(
        [*cmd, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert refused.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in refused.stderr
    out = subprocess.run(
        [*cmd, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=REPO,
        env={**env, "GRAFANA_ADMIN_PASSWORD": "test-only"},
    )
    assert out.returncode == 0, out.stderr


def test_cpu_override_drops_gpu_and_pins_cpu() -> None:
    override = load_yaml(COMPOSE_CPU)["services"]
    for name in ("api", "train"):
        devices = override[name]["deploy"]["resources"]["reservations"]["devices"]
        # A plain list would be appended to the base file's devices; only !reset removes them.
        assert isinstance(devices, ComposeTag) and devices.tag == "!reset", name
    assert override["api"]["environment"]["DOPPLERGEN_DEVICE"] == "cpu"
    for name in ("api", "train"):  # requirements/*-cpu.txt: torch's CPU-only build
        assert override[name]["build"]["args"]["TORCH"] == "cpu", name


def test_cpu_override_merges_with_docker_compose_v2() -> None:
    if not shutil.which("docker") or subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode:
        pytest.skip("`docker compose` v2 is not installed (docker-compose v1 cannot read !reset)")
    out = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "-f", str(COMPOSE_CPU), "--profile", "train", "config",
         "--format", "json"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "GRAFANA_ADMIN_PASSWORD": "test-only"},
    )
    assert out.returncode == 0, out.stderr
    merged = json.loads(out.stdout)["services"]
    assert not gpu_devices(merged["api"]) and not gpu_devices(merged["train"])
    assert merged["api"]["environment"]["DOPPLERGEN_DEVICE"] == "cpu"
    users = [v for v in merged["api"]["volumes"] if v["target"] == "/users"]
    assert users and users[0]["type"] == "volume" and users[0]["source"] == "users", merged["api"]["volumes"]
    assert merged["api"]["environment"]["DOPPLERGEN_USERS_DIR"] == "/users"


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    logical, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not buf):
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        logical.append(buf.strip())
        buf = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in logical]


def test_dockerfile_runtime_contract() -> None:
    ins = dockerfile_instructions()
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "must run as a non-root user"
    assert any(i == "EXPOSE" and str(API_PORT) in a.split() for i, a in ins)
    health = [a for i, a in ins if i == "HEALTHCHECK"]
    assert len(health) == 1 and "/readyz" in health[0] and "curl" not in health[0]
    start = re.search(r"--start-period=(\w+)", health[0])
    assert start and seconds(start.group(1)) >= 60
    cmd = [a for i, a in ins if i == "CMD"][-1]
    assert json.loads(cmd) == ["dopplergen", "serve"]


def test_dockerfile_caches_dependencies_before_code() -> None:
    ins = dockerfile_instructions()
    copies = [(n, a) for n, (i, a) in enumerate(ins) if i == "COPY"]
    code_copy = min(n for n, a in copies if re.search(r"\b(models|service|training)\b", a))
    dep_install = min(n for n, (i, a) in enumerate(ins) if i == "RUN" and "pip install" in a)
    assert dep_install < code_copy, "dependencies must be installed before the code is copied"
    before = [a for n, a in copies if n < dep_install]
    assert before == ["requirements/ ./requirements/"], \
        f"only the lock files may precede the dependency layer: {before}"


def test_dockerfile_has_one_copy_of_cuda() -> None:
    ins = dockerfile_instructions()
    stages = {a.split()[-1] for i, a in ins if i == "FROM" and " AS " in a.upper()}
    external = [a.split()[0] for i, a in ins if i == "FROM" and a.split()[0] not in stages]
    assert len(external) == 1, f"one external base image: {external}"
    installs_torch = any(i == "RUN" and "pip install" in a for i, a in ins)  # torch comes with the lock
    if re.match(r"(pytorch/pytorch|nvidia/cuda)", external[0]):
        assert not installs_torch, "a CUDA/PyTorch base must not get a second torch+CUDA from pip"
    else:
        assert "cuda" not in external[0].lower()


def test_dockerfile_ships_demo_pipeline_where_the_volume_goes(services: dict) -> None:
    ins = dockerfile_instructions()
    env = " ".join(a for i, a in ins if i == "ENV")
    pipeline = PurePosixPath(re.search(r"DOPPLERGEN_PIPELINE=(\S+)", env).group(1))
    assert any(i == "COPY" and a.split()[-1] == str(pipeline) and "checkpoints/demo" in a for i, a in ins)
    assert default_of(services["api"]["environment"]["DOPPLERGEN_PIPELINE"]) == str(pipeline)
    mounts = [t for t in volume_targets(services["api"]) if PurePosixPath(t) in pipeline.parents]
    assert mounts, "a volume over the demo's parent folder lets the train job's output replace it"


def test_dockerignore_keeps_context_small_but_complete() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    assert {".git", ".venv"} <= set(lines)
    assert "!/checkpoints/demo" in lines and "!/deploy/train.sh" in lines
    for needed in ("models", "service", "training", "pyproject.toml", "requirements"):
        assert not any(ln.lstrip("/") == needed for ln in lines), f"{needed} must be in the context"


# --- Prometheus, Grafana, nginx --------------------------------------------------------------


def test_prometheus_discovers_every_api_replica(services: dict) -> None:
    config = load_yaml(PROMETHEUS)
    jobs = [j for j in config["scrape_configs"] if j.get("dns_sd_configs")]
    assert len(jobs) == 1
    job = jobs[0]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["api"] and sd["type"] == "A" and sd["port"] == API_PORT
    assert "api" in services
    assert (volume_targets(services["prometheus"]).get("/etc/prometheus/prometheus.yml")
            == "./deploy/prometheus.yml")


def test_promtool_accepts_prometheus_config() -> None:
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed (scripts/install_prometheus.sh installs it)")
    out = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_provisioning_matches_compose(services: dict, dashboard: dict) -> None:
    (ds,) = load_yaml(DATASOURCES)["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    mounts = volume_targets(services["grafana"])
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {ds["uid"]}, "every query must use the provisioned datasource"


def test_dashboard_covers_the_service_signals(dashboard: dict) -> None:
    exprs = dashboard_expressions(dashboard)
    joined = "\n".join(exprs)
    assert all(p.get("targets") for p in dashboard["panels"]), "a panel without a query"
    for needle in (
        "rate(dopplergen_requests_total",
        "histogram_quantile(0.5, sum by (le) (rate(dopplergen_request_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(dopplergen_request_latency_seconds_bucket",
        "dopplergen_batch_size_bucket",
        "dopplergen_queue_depth",
        "sum by (reason) (rate(dopplergen_rejections_total",
        "dopplergen_device_memory_bytes",
        "rate(dopplergen_samples_generated_total",
    ):
        assert needle in joined, f"dashboard lacks {needle}"


def test_dashboard_uses_only_documented_metrics(dashboard: dict) -> None:
    allowed = documented_metric_series()
    for expr in dashboard_expressions(dashboard):
        names = promql_metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= allowed, f"{sorted(names - allowed)} not in docs/internals.md: {expr}"


def test_nginx_balances_over_api_replicas() -> None:
    conf = NGINX.read_text()
    assert re.search(r"resolver\s+127\.0\.0\.11", conf), "must re-resolve api through Docker's DNS"
    assert f"http://api:{API_PORT}" in conf
    assert re.search(r"proxy_read_timeout\s+(\d+)s", conf)
    # enrolment through the lb: the proxy must take an upload as large as the service does
    from service.settings import Settings

    limit = re.search(r"client_max_body_size\s+(\d+)m;", conf)
    assert limit and int(limit.group(1)) * 1024**2 >= Settings.model_fields["max_upload_bytes"].default
    if not shutil.which("nginx"):
        return
    out = subprocess.run(["nginx", "-t", "-c", str(NGINX), "-p", "/tmp"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_docs_show_the_documented_commands() -> None:
    docs = (REPO / "docs" / "deployment.md").read_text()
    for cmd in (
        "docker compose up",
        "docker compose -f docker-compose.yml -f docker-compose.cpu.yml up",
        "--profile train",
        "--scale api=3",
        "accelerate launch --num_processes",
    ):
        assert cmd in docs, f"docs/deployment.md does not show `{cmd}`"


def test_docs_say_what_listens_where_and_what_protects_it(services: dict) -> None:
    docs = (REPO / "docs" / "deployment.md").read_text()
    assert "## Exposure" in docs
    section = docs.split("## Exposure", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "DOPPLERGEN_BIND", "127.0.0.1", "GRAFANA_ADMIN_PASSWORD", "DOPPLERGEN_API_KEY", "/metrics"
    ):
        assert needle in section, f"the exposure section does not mention {needle}"
    for name, svc in services.items():
        for spec in svc.get("ports", []):
            host_port = published(spec, {})[1]
            assert host_port.split("-")[0] in section, \
                f"the exposure section does not list {name}'s port {host_port}"


# --- live: the dashboard's metrics exist on a real /metrics -------------------------------------


def test_dashboard_metrics_exist_on_live_service(dashboard: dict, live_metrics_text: str) -> None:
    exported = {s.name for fam in text_string_to_metric_families(live_metrics_text) for s in fam.samples}
    wanted = set().union(*(promql_metric_names(e) for e in dashboard_expressions(dashboard)))
    missing = sorted(wanted - exported)
    assert not missing, f"dashboard metrics absent from a live /metrics: {missing}"
    undocumented = sorted(n for n in exported if n.startswith("dopplergen_") and not n.endswith("_created")
                          and n not in documented_metric_series())
    assert not undocumented, f"service exports metrics missing from docs/internals.md: {undocumented}"

"""`dopplergen serve`: run the HTTP service under uvicorn; flags override DOPPLERGEN_* environment
variables."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

# flag dest -> Settings field (same name); every flag defaults to None = "keep the env/default value".
_FLAGS: list[tuple[str, dict]] = [
    ("--pipeline", dict(
        type=Path, help="pipeline folder (default: DOPPLERGEN_PIPELINE or <repo>/checkpoints/demo)"
    )),
    ("--data", dict(
        type=Path, help="dataset folder whose real recordings the web page shows (DOPPLERGEN_DATA)"
    )),
    ("--users-dir", dict(
        type=Path,
        help=(
            "folder that keeps enrolled users (POST /users) across restarts (default: DOPPLERGEN_USERS_DIR, "
            "else <data>/dopplergen/users/<pipeline>-<hash>, <data> = $XDG_DATA_HOME or ~/.local/share)"
        ),
    )),
    ("--host", dict(help="bind address (default 127.0.0.1; 0.0.0.0 in the container)")),
    ("--port", dict(type=int, help="TCP port (default 8000)")),
    ("--device", dict(help="auto | cpu | cuda | cuda:N (auto picks CUDA when present)")),
    ("--dtype", dict(choices=["auto", "fp32", "fp16", "bf16"], help="auto: fp16 on CUDA, fp32 on the CPU")),
    ("--max-batch-size", dict(type=int, help="slots: rows (samples) per denoising step (default 16)")),
    ("--max-wait-ms", dict(
        type=float, help="from idle, wait this long for more rows before the first step (default 0)"
    )),
    ("--max-queue", dict(type=int, help="queued samples before 429 (default 256)")),
    ("--request-timeout-s", dict(type=float, help="per-request budget before 504 (default 60)")),
    ("--max-samples-per-request", dict(type=int, help="default 16")),
    ("--max-steps", dict(type=int, help="largest num_inference_steps accepted (default 1000)")),
    ("--batch-padding", dict(
        choices=["auto", "fixed", "buckets", "none"],
        help="fixed = bitwise batch invariance; buckets (auto) = powers of two, within 0.05 dB",
    )),
    ("--compile", dict(
        choices=["auto", "on", "off"], help="torch.compile reduce-overhead (auto: on with CUDA)"
    )),
    ("--log-level", dict(choices=["critical", "error", "warning", "info", "debug"])),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, kw in _FLAGS:
        parser.add_argument(flag, default=None, **kw)
    parser.add_argument("--no-warmup", dest="warmup", action="store_const", const=False, default=None,
                        help="skip the warm-up (readiness flips right after loading; admission lets "
                             "everything in until steps were measured)")
    parser.add_argument("--no-users-dir", dest="users_dir", action="store_const", const="none",
                        help="keep enrolled users in memory only: they last until the server stops "
                             "(DOPPLERGEN_USERS_DIR=none)")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false", default=True,
                        help="do not log one line per HTTP request")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's, one per core; on a machine other jobs "
                             "share, 1 is several times faster: benchmarks/RESULTS.md 'Threads')")
    parser.epilog = "The API key is read from DOPPLERGEN_API_KEY only (a flag would show in `ps`)."


def settings_from_args(args: argparse.Namespace):
    from service.settings import Settings

    names = [flag[2:].replace("-", "_") for flag, _ in _FLAGS] + ["warmup"]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return Settings(**overrides)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        settings = settings_from_args(args)
        device = settings.resolved_device()
        settings.resolved_dtype(device)
        settings.resolved_users_dir()
    except ValidationError as exc:  # one line: "max_batch_size: Input should be greater than 0; ..."
        return refuse("invalid settings: " + "; ".join(
            ("".join(f"{x}: " for x in e["loc"][:1]) + e["msg"].removeprefix("Value error, "))
            for e in exc.errors()))
    except ValueError as exc:
        return refuse(f"invalid settings: {exc}")
    if args.threads is not None:
        if args.threads < 1:
            return refuse(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if not (settings.pipeline / "dopplergen.json").is_file():
        return refuse(f"no pipeline folder at {settings.pipeline} (missing dopplergen.json): train one "
                      "(dopplergen train-unet ...) or point --pipeline / DOPPLERGEN_PIPELINE at an exported "
                      "pipeline")
    from models.pipeline_meta import MetaError, check_folder, read_meta

    try:  # metadata and layout now: a fault ends `serve` at once, naming the field, instead of a failed start
        check_folder(settings.pipeline, read_meta(settings.pipeline)[1].route)
    except MetaError as exc:
        return refuse(f"{settings.pipeline} cannot be served: {exc}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr
    )
    from service.app import create_app

    try:
        app = create_app(settings)
    except (ValueError, OSError) as exc:
        # e.g. --data has neither manifest.csv nor user folders; the users folder cannot be created
        return refuse(str(exc))
    return serve(app, access_log=getattr(args, "access_log", True))


def refuse(message: str) -> int:
    """One line on stderr, as the rest of the command line (training/cli.py's boundary), and exit 2."""
    print("dopplergen serve: error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def serve(app, access_log: bool = True) -> int:
    """Run `app` under uvicorn until SIGINT/SIGTERM; 0 after a clean drain, 1 if the model failed to load."""
    import uvicorn

    service = app.state.service
    settings = service.settings

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            # Stop intake first (new requests get 503, /readyz 503), then let uvicorn stop accepting
            # connections, wait for the in-flight requests, and run the lifespan shutdown (drain).
            service.begin_shutdown()
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in getattr(self, "_captured_signals", []):
                # uvicorn re-raises captured signals after shutting down; a drained SIGTERM exits 0.
                self._captured_signals.remove(sig)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=access_log,
        lifespan="on",
        # In-flight requests finish within request_timeout_s; this only bounds a stuck shutdown.
        timeout_graceful_shutdown=settings.request_timeout_s + 5,
    )
    server = Server(config)

    def stop_on_fatal(reason: str) -> None:
        server.should_exit = True

    service.on_fatal = stop_on_fatal
    server.run()
    return 1 if service.failure else 0

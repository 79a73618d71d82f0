"""The `dopplergen` console script: one entry point, one module per subcommand, imported lazily."""

from __future__ import annotations

import argparse
import importlib
import sys

from training import cli_errors as errors

# name -> (module, one-line help). Each module defines add_arguments(parser) and run(args) -> int.
# A command's module is named by the command, '-' read as '_' (`train-vae` -> training/stages/train_vae.py,
# `enroll` -> training/enroll.py); `import`, a Python keyword, is the one exception
# (training/data/importer.py).
# Modules are imported only when their subcommand runs, so `serve` never pulls in training code
# and `simulate` never pays for importing diffusers.
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("training.data.simulate", "write a simulated micro-Doppler dataset folder"),
    "train-vae": ("training.stages.train_vae",
                  "stage 1: train the AutoencoderKL (or, --autoencoder vq, a VQModel)"),
    "train-unet": ("training.stages.train_unet",
                   "stage 2: train the user-conditioned UNet and export the pipeline"),
    "train-transformer": ("training.stages.train_transformer",
                          "stage 2 of the VQ route: VQ-Diffusion Transformer over code indices; "
                          "exports the pipeline"),
    "evaluate": ("training.eval.evaluate", "write a JSON + Markdown + PNG quality report for a pipeline"),
    "generate": ("training.generate", "bulk-export generated spectrograms to a dataset folder"),
    "texture": ("training.texture",
                "stage 1's texture bank: residuals of real recordings added to decoded samples "
                "(two-sample realism)"),
    "enroll": ("training.enroll",
               "add a new person from a few recordings to a pipeline (only their user row is learnt)"),
    "adapt": ("training.adapt",
              "adapt a trained pipeline to your radar's data (autoencoder fine-tune, UNet LoRA, new rows)"),
    "import": ("training.data.importer",
               "published images (colour-mapped, any size, windows of sessions) or raw radar recordings "
               "(.dat, complex .npy/.mat/.h5) -> a dataset folder, split by session"),
    "merge": ("training.data.merge",
              "real + generated dataset folders -> one folder with provenance per row"),
    "compare": ("training.compare", "train/evaluate the kl, vq-latent and vq-diffusion routes side by side"),
    # The one place the command line reaches the service: a lazy dispatch by name (never imported by training
    # code otherwise), so the dependency direction service -> models <- training holds. tests/test_layout.py
    # allows it.
    "serve": ("service.cli", "start the HTTP generation service"),
}


# What `pip install 'dopplergen[train]'` adds; the serving image (requirements/serve.txt) has none of them.
TRAIN_ONLY = ("accelerate", "torchmetrics", "tqdm", "yaml", "peft")


def _load(name: str):
    """The subcommand's module; a clear message when it needs the `train` extra and that is not installed."""
    try:
        return importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_ONLY:
            raise
        raise SystemExit(f"dopplergen {name}: needs the training packages ({exc.name} is not installed); "
                         "install them with: pip install 'dopplergen[train]'") from None


DESCRIPTION = ("Synthetic radar micro-Doppler spectrograms of named people: simulate or import data, train, "
               "evaluate, add a person from a few recordings, generate in bulk, serve over HTTP.")


def version() -> str:
    """The package version and the pipeline-folder format it reads and writes."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    from models.pipeline_meta import FORMAT_VERSION

    try:
        pkg = package_version("dopplergen")
    except PackageNotFoundError:  # run from a source tree that was never installed
        pkg = "unknown (not installed)"
    return f"dopplergen {pkg} (pipeline format {FORMAT_VERSION})"


class _Version(argparse.Action):
    """--version, worked out only when asked (the imports stay off every command's path)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version())
        parser.exit()


class Parser(argparse.ArgumentParser):
    """argparse's usage errors on one line, as every other error of the command line (exit 2)."""

    command: str | None = None  # the subcommand named, for options the top parser reports as unknown

    def error(self, message: str):
        prog = f"dopplergen {self.command}" if self.prog == "dopplergen" and self.command else self.prog
        self.exit(2, f"{prog}: error: {message} (see {prog} --help)\n")


def command_of(argv: list[str]) -> str | None:
    """The subcommand named in `argv`: its first word that is not a top-level flag."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = Parser(prog="dopplergen", description=DESCRIPTION)
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the package version and the pipeline format, and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the full Python traceback of an error instead of its one-line message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    named = parser.command = command_of(argv) if command_of(argv) in COMMANDS else None
    for name, (_module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the requested subcommand's module is imported to register its options.
        if named == name:
            _load(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    debug = vars(args).pop("debug", False)  # not an option of any subcommand (training configs read args)
    try:
        return int(_load(args.command).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (SystemExit, Exception) as exc:
        code = errors.exit_code(exc)
        if code is None or debug:  # a bug (or --debug): the traceback; argparse's own exits pass through
            raise
        print(errors.one_line(args.command, exc), file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())

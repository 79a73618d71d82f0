"""The `dopplergen` error boundary: which exceptions are the user's (one line, exit 2), which are the
machine's (one line, exit 1) and which are bugs (the traceback).

Classes are told by name along the exception's MRO, so this module imports nothing heavy: the command line
stays fast to start, and an ImportError cannot hide behind its own handler.
"""

from __future__ import annotations

# A wrong path, value, size, user or pipeline: what the user typed or pointed at. ValueError covers the
# project's DatasetError, ConfigError, MetaError, ConditionError, UnsafePathError and RecordingError, and the
# ValueErrors the models raise on a request (a sampler that does not apply, steps out of range).
USER_ERRORS = {"ValueError", "PipelineError", "FileNotFoundError", "NotADirectoryError", "IsADirectoryError",
               "FileExistsError", "PermissionError", "ArgumentTypeError"}
# The machine, not the input: a full disk, memory, a device that went away.
RUNTIME_ERRORS = {"OSError", "MemoryError", "OutOfMemoryError"}


def exit_code(exc: BaseException) -> int | None:
    """2 for a user error, 1 for a runtime failure, None for a bug (or an exit that already has its code)."""
    if isinstance(exc, SystemExit):  # `raise SystemExit("message")`: the commands' own user errors
        return 2 if isinstance(exc.code, str) else None
    names = {c.__name__ for c in type(exc).__mro__}
    if names & USER_ERRORS:
        return 2
    if names & RUNTIME_ERRORS:
        return 1
    return None


def message(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return str(exc.code)
    if isinstance(exc, OSError) and exc.strerror:  # "[Errno 2] No such file ...: 'x'" -> "x: No such file"
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def one_line(command: str, exc: BaseException) -> str:
    """`dopplergen <command>: error: <what and what to do>`, on one line whatever the message's shape."""
    text = message(exc).strip()
    for prefix in (f"dopplergen {command}: error:", f"dopplergen {command}:", "error:"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    out = ""
    for line in (ln.strip() for ln in text.splitlines()):
        if line:
            out += line if not out else (" " if out.endswith((":", ",")) else "; ") + line
    if exit_code(exc) == 1:
        out += " (rerun with dopplergen --debug for the traceback)"
    return f"dopplergen {command}: error: {out}"

"""Names that come from data and become file paths: a user ID (or a recording ID) is one plain path component,
and a path listed in a manifest stays inside its folder. A crafted manifest or pipeline must not make a reader
read, or a writer write, outside the folder it was given."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath

# A new person's ID (dopplergen enroll, POST /users): also the file name in a users folder, so a full match
# (re.fullmatch: `$` would let a trailing newline through).
USER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
USER_ID_RULE = "use 1-64 letters, digits, '.', '_' or '-' (not first)"


class UnsafePathError(ValueError):
    """A user ID or listed path would leave its folder; the message says where it came from."""


def check_component(name: object, where: str, what: str = "user ID") -> str:
    """`name` if it is one file-name component: not empty, not . or .., no / or \\, no control characters."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{where}: {what} must be a non-empty string, got {name!r}")
    if name in (".", "..") or "/" in name or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UnsafePathError(f"{where}: {what} {name!r} is not a plain name (no path separators, '.', '..' "
                              "or control characters): it would place files outside the folder")
    return name


def is_new_user_id(name: object) -> bool:
    """True when `name` may name a new person (USER_ID_RULE), matched in full."""
    return isinstance(name, str) and USER_ID_RE.fullmatch(name) is not None


def check_user_ids(users: list[str], where: str) -> list[str]:
    for user in users:
        check_component(user, where)
    return users


def inside(root: str | Path, relative: str, where: str) -> Path:
    """root / relative, refused when `relative` is absolute or climbs out with `..` (POSIX or Windows
    spelling)."""
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if (not relative or posix.is_absolute() or windows.is_absolute() or windows.drive
            or ".." in posix.parts or ".." in windows.parts or "\x00" in relative):
        raise UnsafePathError(f"{where}: path {relative!r} leaves the folder {root} (absolute, or with '..')")
    return Path(root) / relative

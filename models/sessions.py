"""Recording sessions and the split by session: windows cut from one recording never span two splits.

Public micro-Doppler sets cut several windows from each recording. Splitting per file puts neighbouring
windows of one walk in train and test and inflates every score; here whole sessions go to one split,
stratified per person (each person's sessions are dealt to test, val and train by size), deterministically.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np

# "<session><sep><optional window word><number>": walk_s03_w12 -> walk_s03, rec7-003 -> rec7, bob_win2 -> bob.
# A bare number ("0001") or digits without a separator ("rec12") stay whole: each such file is its own
# session.
_WINDOW_WORD = r"(?:w|win|window|seg|segment|part|clip|chunk|frame|slice)[\s._-]*"
_TRAILING_WINDOW = re.compile(rf"^(.+?)(?:[\s._-]+(?:{_WINDOW_WORD})?|{_WINDOW_WORD})\d+$", re.IGNORECASE)
DEFAULT_RULE = "a sub-folder per session, else the file stem without a trailing window number"


def default_session(rel: str) -> str:
    """Session of a file from its path inside the person's folder: its sub-folder, else its stem minus a
    window number."""
    p = PurePosixPath(rel)
    if str(p.parent) != ".":
        return str(p.parent)
    m = _TRAILING_WINDOW.match(p.stem)
    return m.group(1) if m else p.stem


def session_of(rel: str, pattern: re.Pattern[str] | None) -> str:
    """`pattern`'s first group searched in the path inside the person's folder; the default rule without
    one."""
    if pattern is None:
        return default_session(rel)
    m = pattern.search(rel)
    if m is None or not m.group(1):
        raise ValueError(f"--group {pattern.pattern!r} does not match {rel!r} (or its first group is empty); "
                         "it is searched in the path inside the person's folder, e.g. 'session3/win07.png'")
    return m.group(1)


def compile_capturing(regex: str | None, flag: str, hint: str) -> re.Pattern[str] | None:
    """A user's regex (`flag` names it in errors), checked to compile and to have a capturing group; `hint`
    ends the message of one without."""
    if not regex:
        return None
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise ValueError(f"{flag} {regex!r} is not a valid regular expression ({e})") from None
    if pattern.groups < 1:
        raise ValueError(f"{flag} {regex!r} needs a capturing group{hint}")
    return pattern


def compile_group(regex: str | None) -> re.Pattern[str] | None:
    """The --group regex, checked to have a capturing group."""
    return compile_capturing(regex, "--group", " naming the session, e.g. '^(.*)_w\\d+'")


def needed_sessions(test_fraction: float, val_fraction: float) -> int:
    """Sessions a person needs so that train and every non-empty held-out split get at least one."""
    return 1 + (test_fraction > 0) + (val_fraction > 0)


def split_sessions(sizes: dict[str, int], test_fraction: float, val_fraction: float,
                   seed: int) -> dict[str, str]:
    """Deal one person's sessions ({session: files}) to test, val, then train, by file count; deterministic.

    Sessions are shuffled with `seed` (sorted first, so file order does not matter); test takes sessions until
    it holds about `test_fraction` of the files (at least one session), val likewise, train the rest
    (at least one). Raises ValueError when there are too few sessions for that.
    """
    names = sorted(sizes)
    need = needed_sessions(test_fraction, val_fraction)
    if len(names) < need:
        splits = "train" + (", val" if val_fraction > 0 else "") + (" and test" if test_fraction > 0 else "")
        raise ValueError(
            f"{len(names)} session(s), need at least {need} so that {splits} each get whole sessions"
        )
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    total = sum(sizes.values())
    out: dict[str, str] = {}
    left = list(order)
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if fraction <= 0:
            continue
        target, taken = fraction * total, 0
        while left and (taken == 0 or taken + sizes[left[0]] / 2 <= target):
            if len(left) <= 1 + (split == "test" and val_fraction > 0):
                break  # keep a session for val and train
            name = left.pop(0)
            out[name] = split
            taken += sizes[name]
    out.update({name: "train" for name in left})
    return out


def person_seed(user: str, seed: int) -> int:
    """A person's split depends only on their name, their sessions and the run seed, not on the other
    people."""
    return zlib.crc32(user.encode()) ^ int(seed)


def describe(sessions: Sequence[str], files: Sequence[str], limit: int = 3) -> str:
    """'3 sessions: walk_s01 (4 files, e.g. walk_s01_w01.png), ...' for error messages."""
    counts: dict[str, list[str]] = {}
    for s, f in zip(sessions, files, strict=True):
        counts.setdefault(s, []).append(f)
    parts = [f"{s!r} ({len(fs)} file(s), e.g. {fs[0]})" for s, fs in sorted(counts.items())[:limit]]
    more = f", ... {len(counts) - limit} more" if len(counts) > limit else ""
    return f"{len(counts)} session(s): " + ", ".join(parts) + more

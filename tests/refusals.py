"""A `dopplergen` call that is refused, as the command line's error boundary reports it: exit code 2 and one
line on stderr matching a pattern (training/cli_errors.py)."""

import re


def refused(capsys, pattern: str, code: int) -> str:
    """Assert `code` (what training.cli.main returned) is 2 and stderr's last line matches `pattern`."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and lines and re.search(pattern, lines[-1]), err
    return lines[-1]

"""`dopplergen import` opens every file through the shared checks (models/safe_files.py, issue 31): each bad
upload is one clean error line naming the file and the rule, and manifest paths stay inside SRC."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from models.dataset_folder import manifest_path
from tests.uploads import bad_uploads, coloured_png, true_db
from training.cli import main

ARGS = ["--size", "32", "--val-fraction", "0", "--group", "(.*)"]  # each file its own session


def source(root: Path, rows: list[tuple[str, str]]) -> Path:
    """SRC with a manifest listing `rows` (path, user) and three good jet PNGs of person p."""
    (root / "p").mkdir(parents=True)
    for i in range(3):
        (root / "p" / f"{i}.png").write_bytes(coloured_png(true_db(i, (64, 64))))
    lines = ["path,user", *(f"{path},{user}" for path, user in rows),
             *(f"p/{i}.png,p" for i in range(3))]
    manifest_path(root).write_text("\n".join(lines) + "\n")
    return root


def run_import(src: Path, out: Path, capsys) -> str:
    assert main(["import", str(src), "--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not out.exists(), err
    return err


@pytest.mark.parametrize("name", sorted(bad_uploads()))
def test_each_bad_upload_is_one_clean_line_naming_it(tmp_path, capsys, name):
    data, rule = bad_uploads()[name]
    src = source(tmp_path / "src", [(f"p/{name}", "p")])
    (src / "p" / name).write_bytes(data)
    err = run_import(src, tmp_path / "out", capsys)
    assert err.count("\n") == 1, err
    assert re.match(rf"dopplergen import: error: p/{re.escape(name)}: .*{rule}", err), err


@pytest.mark.parametrize("path", ["/etc/passwd.png", "../outside.png", "p/../../outside.png"])
def test_manifest_paths_that_leave_src_are_refused(tmp_path, capsys, path):
    (tmp_path / "outside.png").write_bytes(coloured_png(true_db(9, (64, 64))))
    src = source(tmp_path / "src", [(path, "p")])
    err = run_import(src, tmp_path / "out", capsys)
    assert err.count("\n") == 1, err
    assert re.match(rf"dopplergen import: error: .*manifest\.csv: line 2: path '{re.escape(path)}' "
                    "leaves the folder", err), err


def test_a_bad_file_after_the_first_is_named_with_its_rule(tmp_path, capsys):
    """A later bad file is named with its rule in one line too (nothing is written)."""
    src = source(tmp_path / "src", [])
    (src / "p" / "3.png").write_bytes(bad_uploads()["bomb.png"][0])
    with open(manifest_path(src), "a") as fh:
        fh.write("p/3.png,p\n")
    err = run_import(src, tmp_path / "out", capsys)
    line = err[err.index("dopplergen import: error:"):]  # after the progress bar
    assert line.count("\n") == 1, line
    assert re.match(r"dopplergen import: error: p/3\.png: 20000x20000 pixels is over the limit.*nothing was "
                    r"written", line), line

"""Progress in a log file: one plain line every few percent, no carriage returns (training/progress.py)."""

import io

from training.progress import LogLines, progress


def test_a_log_gets_a_line_per_five_percent_and_the_last():
    log = io.StringIO()
    with progress(total=100, desc="train-vae", unit="step", file=log) as bar:
        assert isinstance(bar, LogLines)  # a StringIO is not a terminal
        for i in range(100):
            bar.set_postfix(loss=f"{1 / (i + 1):.4f}", refresh=False)
            bar.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 20
    assert lines[0].startswith("train-vae:   5% 5/100 step [")
    assert lines[-1].startswith("train-vae: 100% 100/100")
    assert "loss=0.0100" in lines[-1]


def test_iteration_resumed_totals_and_transient_bars():
    log = io.StringIO()
    assert list(progress(range(7), desc="import", file=log)) == list(range(7))
    assert log.getvalue().splitlines()[-1].startswith("import: 100% 7/7 it")
    log = io.StringIO()
    bar = progress(total=1000, initial=900, desc="resume", file=log)
    bar.update(10)  # 91%: the first line comes after 5 more points of progress, not at once
    assert log.getvalue() == ""
    bar.update(40)
    bar.close()
    assert len(log.getvalue().splitlines()) == 1
    log = io.StringIO()
    for _ in progress(range(50), leave=False, file=log):  # tqdm clears these: a log gets nothing
        pass
    assert log.getvalue() == ""

"""Shared fixtures: offline hub, fixed threads, and a tiny random pipeline folder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

TINY_USERS = ["alice", "bob", "carol"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread per test: the tiny models gain nothing from two, and on a shared 2-core box
    (or with a live server subprocess beside the test) spinning OpenMP threads run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _data_home_in_tmp(tmp_path_factory):
    """The service keeps enrolled users under $XDG_DATA_HOME by default: point it at a tmp folder for the
    whole session (session fixtures and server subprocesses included), never the real home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
        yield


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> str:
    """A random-weight `tiny` pipeline folder saved the way training exports it."""
    from models.pipeline import build_untrained_pipeline

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pipelines") / "tiny"
    build_untrained_pipeline("tiny", TINY_USERS, dyn_range_db=60.0, version="test").save(path)
    return str(path)

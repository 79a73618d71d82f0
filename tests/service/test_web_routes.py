"""The web page's server side: GET / and /static, the axes in /info, and GET /users/{id}/examples."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from service.axes import spectrogram_axes
from service.examples import DatasetFolderError, ExampleStore
from service.routes.web import STATIC
from service.settings import Settings
from tests.service.conftest import serve

pytestmark = pytest.mark.anyio

DEMO_META = {"carrier_hz": 24e9, "doppler_hz_row0": 1268.0, "doppler_hz_per_bin": 25.0,
             "doppler_axis": "descending",
             "seconds_per_frame": 0.05, "image_size": [32, 32], "dyn_range_db": 60.0}


def write_dataset(root: Path, users: dict[str, int], shape=(32, 32),
                  extra_rows: list[dict] | None = None) -> Path:
    """A dataset folder by the contract (meta.json, manifest.csv, <user>/<id>.npy); value of file i is -i
    dB."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps(DEMO_META))
    rows = []
    for user, n in users.items():
        (root / user).mkdir(exist_ok=True)
        for i in range(n):
            np.save(root / user / f"{i:04d}.npy", np.full(shape, -float(i), dtype=np.float32))
            rows.append({"path": f"{user}/{i:04d}.npy", "user": user, "split": "test" if i % 2 else "train",
                         "speed_mps": f"{1.0 + i / 10:g}", "activity": "walk"})
    rows += extra_rows or []
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "user", "split", "speed_mps", "activity"])
        w.writeheader()
        w.writerows(rows)
    return root


def npy_of(item: dict) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(item["data"])), allow_pickle=False)


# --- the page -----------------------------------------------------------------------------------------------


async def test_index_and_every_static_file_it_names_are_served_without_an_api_key(make_app, fake):
    async with serve(make_app(fake, api_key="s3cret")) as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
        for js in (STATIC).glob("*.js"):  # ES modules import each other by relative path
            assets += [f"/static/{m}" for m in re.findall(r'from "\./([\w.-]+\.js)"', js.read_text())]
        for asset in sorted(set(assets)):
            r = await client.get(asset)
            assert r.status_code == 200, asset
            if asset.endswith(".js"):
                assert "javascript" in r.headers["content-type"], asset  # or browsers refuse the module
            # revalidated after upgrades
            assert r.headers["cache-control"] == "no-cache" and r.headers["etag"], asset
            again = await client.get(asset, headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304, asset
        # not normalised away
        for escape in ("/static/%2e%2e/settings.py", "/static/%2e%2e/%2e%2e/pyproject.toml"):
            r = await client.get(escape)
            assert r.status_code == 404 and "pydantic" not in r.text and "[project]" not in r.text, escape
        assert (await client.get("/info")).status_code == 401  # the API behind the page still needs the key


# --- axes in /info ------------------------------------------------------------------------------------------


async def test_info_lists_the_axes_of_the_training_data(make_app, fake, tiny_pipe):
    with_meta = replace(tiny_pipe, meta={**tiny_pipe.meta, "dataset": {"meta": DEMO_META}})
    async with serve(make_app(fake, pipeline=with_meta)) as client:
        info = (await client.get("/info")).json()
    assert info["doppler_hz_row0"] == 1268.0 and info["doppler_hz_per_bin"] == 25.0
    assert (info["seconds_per_frame"] == 0.05 and info["carrier_hz"] == 24e9
            and info["doppler_axis"] == "descending")


async def test_info_axes_are_null_when_the_pipeline_does_not_record_them(make_app, fake):
    async with serve(make_app(fake)) as client:  # the tiny pipeline has no dataset meta
        info = (await client.get("/info")).json()
    for key in ("doppler_hz_row0", "doppler_hz_per_bin", "seconds_per_frame", "carrier_hz"):
        assert key in info and info[key] is None


def test_axes_follow_a_resize_and_an_explicit_axis():
    # stored at 64 rows, served at 32: bins twice as wide, the top edge (row0 + step/2) stays put
    half = spectrogram_axes({**DEMO_META, "image_size": [64, 64]}, (32, 32))
    assert half["doppler_hz_per_bin"] == 50.0 and half["doppler_hz_row0"] + 25.0 == 1268.0 + 12.5
    assert half["seconds_per_frame"] == 0.1
    ascending = spectrogram_axes({"doppler_hz": [-100.0, -50.0, 0.0, 50.0]}, (4, 4))
    assert ascending["doppler_axis"] == "ascending" and ascending["doppler_hz_row0"] == -100.0
    assert ascending["doppler_hz_per_bin"] == 50.0 and ascending["seconds_per_frame"] is None


# --- real recordings ----------------------------------------------------------------------------------------


async def test_examples_serve_the_users_recordings_in_manifest_order(make_app, fake, tmp_path):
    data = write_dataset(tmp_path / "data", {"alice": 5, "dave": 3})
    async with serve(make_app(fake, data=data)) as client:
        r = await client.get("/users/alice/examples", params={"n": 3})
        test_only = (await client.get("/users/alice/examples", params={"split": "test"})).json()
        dave = (await client.get("/users/dave/examples")).json()  # in the dataset, not in the model: fine
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["user_id"] == "alice" and out["total"] == 5 and len(out["items"]) == 3
    assert [it["path"] for it in out["items"]] == ["alice/0000.npy", "alice/0001.npy", "alice/0002.npy"]
    item = out["items"][2]
    assert item["shape"] == [1, 32, 32] and item["dtype"] == "float32" and item["split"] == "train"
    assert item["conditions"] == {"speed_mps": 1.2, "activity": "walk"}
    arr = npy_of(item)
    assert arr.shape == (1, 32, 32) and arr.dtype == np.float32 and np.all(arr == -2.0)
    assert out["axes"]["doppler_hz_row0"] == 1268.0 and out["axes"]["seconds_per_frame"] == 0.05
    assert test_only["total"] == 2 and [it["split"] for it in test_only["items"]] == ["test", "test"]
    assert dave["total"] == 3 and len(dave["items"]) == 3


async def test_examples_errors_are_worded_for_the_page(make_app, fake, tmp_path):
    data = write_dataset(tmp_path / "data", {"alice": 2})
    async with serve(make_app(fake)) as client:
        none = await client.get("/users/alice/examples")
    assert none.status_code == 404 and none.json()["error"] == "no_dataset"
    assert "--data" in none.json()["message"]
    async with serve(make_app(fake, data=data, api_key="k")) as client:
        assert (await client.get("/users/alice/examples")).status_code == 401
        key = {"X-API-Key": "k"}
        unknown = await client.get("/users/zed/examples", headers=key)
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_user"
        too_many = await client.get("/users/alice/examples", params={"n": 17}, headers=key)
        assert too_many.status_code == 422 and too_many.json()["details"][0]["field"] == "query.n"


def test_nothing_outside_the_folder_and_no_pickle_is_ever_served(tmp_path):
    secret = tmp_path / "secret.npy"
    np.save(secret, np.zeros((4, 4), np.float32))
    escape = [{"path": p, "user": "alice", "split": "train", "speed_mps": "", "activity": ""}
              for p in ("../secret.npy", str(secret), "alice/../../secret.npy", "alice/notes.txt")]
    data = write_dataset(tmp_path / "data", {"alice": 1}, extra_rows=escape)
    (data / "alice" / "notes.txt").write_text("not a spectrogram")
    (data / "alice" / "link.npy").symlink_to(secret)
    np.save(data / "alice" / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with open(data / "manifest.csv", "a") as fh:
        fh.write("alice/link.npy,alice,train,,\nalice/pickled.npy,alice,train,,\n")
    store = ExampleStore(data)
    assert store.skipped == 5  # ../, absolute, alice/../../, .txt and the symlink out
    recs = store.recordings("alice")
    assert [r.path for r in recs] == ["alice/0000.npy", "alice/pickled.npy"]
    assert store.load(recs[0]).shape == (1, 32, 32)
    with pytest.raises(ValueError, match="pickled.npy"):
        store.load(recs[1])


def test_image_folder_layout_and_bad_folders(tmp_path):
    for user in ("bob", "carol"):
        (tmp_path / "imgs" / user).mkdir(parents=True)
        np.save(tmp_path / "imgs" / user / "a.npy", np.zeros((8, 6), np.float32))
    store = ExampleStore(tmp_path / "imgs")
    assert store.users == ["bob", "carol"] and store.recordings("bob")[0].split is None
    assert store.axes()["doppler_hz_row0"] is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFolderError, match="no manifest.csv and no user folders"):
        ExampleStore(tmp_path / "empty")


def test_data_setting_must_name_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DOPPLERGEN_DATA", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="is not a folder"):
        Settings()
    monkeypatch.setenv("DOPPLERGEN_DATA", "")
    assert Settings().data is None
    monkeypatch.setenv("DOPPLERGEN_DATA", str(tmp_path))
    assert Settings().data == tmp_path

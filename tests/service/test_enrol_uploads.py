"""POST /users reads uploads through the one reader (models/recording.py, issue 31): a jet PNG is inverted
within 1 dB (detected, or named by the `colormap` field), a colour image no map fits is refused, and each bad
upload answers 422 naming the file and the rule, never a 500."""

import asyncio
import re

import numpy as np
import pytest

import service.routes.users as users_route
from tests.service.conftest import serve
from tests.uploads import bad_uploads, coloured_png, npy_of, true_db

pytestmark = pytest.mark.anyio


def _good(n: int = 3) -> list:
    rng = np.random.default_rng(0)
    return [("files", (f"rec{i}.npy", npy_of(rng.uniform(-60, 0, (32, 32)).astype(np.float32)),
                       "application/octet-stream")) for i in range(n)]


@pytest.fixture
def readings(monkeypatch) -> list:
    """Every Reading the route got from the reader, in upload order."""
    seen = []

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    real = users_route.read_file
    monkeypatch.setattr(users_route, "read_file", spy)
    return seen


@pytest.mark.parametrize("field", [None, "auto", "jet"])
async def test_jet_pngs_are_inverted_within_1_db(app_for, readings, field):
    truth = [true_db(i) for i in range(3)]
    files = [("files", (f"walk{i}.png", coloured_png(db, "jet"), "image/png")) for i, db in enumerate(truth)]
    data = {"user_id": "jet", **({"colormap": field} if field else {})}
    async with serve(app_for(enrol_steps=2)) as client:
        r = await client.post("/users", data=data, files=files)
        assert r.status_code == 202, r.text
        for _ in range(600):
            if (await client.get("/users/jet")).json()["status"] != "enrolling":
                break
            await asyncio.sleep(0.05)
        assert (await client.get("/users/jet")).json()["status"] == "ready"
    assert [x.colormap for x in readings] == ["jet"] * 3
    assert all(x.detected == (field != "jet") for x in readings)
    assert max(np.abs(x.db[0] - db).mean() for x, db in zip(readings, truth, strict=True)) < 1.0


async def test_a_colour_image_no_map_fits_and_an_unknown_map_get_422(app_for):
    files = [*_good(), ("files", ("fig.png", coloured_png(true_db(1), "viridis"), "image/png"))]
    async with serve(app_for()) as client:
        r = await client.post("/users", data={"user_id": "erin", "colormap": "jet"}, files=files)
        assert r.status_code == 422 and r.json()["error"] == "invalid"
        assert re.match(r"files: fig\.png: does not fit the jet colour map.*viridis", r.json()["message"])
        r = await client.post("/users", data={"user_id": "erin", "colormap": "parula"}, files=_good())
        assert r.status_code == 422
        assert r.json()["message"].startswith("colormap: unknown colour map 'parula'")
        assert (await client.get("/users/erin")).status_code == 404


async def test_each_bad_upload_answers_422_naming_the_file_and_the_rule(app_for, folder):
    async with serve(app_for()) as client:
        for name, (data, rule) in sorted(bad_uploads().items()):
            files = [*_good(), ("files", (name, data, "application/octet-stream"))]
            r = await client.post("/users", data={"user_id": "erin"}, files=files)
            assert r.status_code == 422, (name, r.text)
            assert re.match(rf"files: {re.escape(name)}: .*{rule}", r.json()["message"]), r.json()
        assert "erin" not in (await client.get("/users")).json()["users"]
    assert not folder.exists() or not list(folder.iterdir())


def test_the_web_pages_enrol_form_offers_maps_the_server_accepts():
    """The page's select sends `colormap` (left out for "detect"); every option is a map POST /users knows."""
    from html.parser import HTMLParser

    from models.colormap import check_name
    from service.routes.web import STATIC

    class Options(HTMLParser):
        def __init__(self):
            super().__init__()
            self.values, self.inside = [], False

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "select":
                self.inside = attrs.get("id") == "enrol-colormap" and attrs.get("name") == "colormap"
            elif tag == "option" and self.inside:
                self.values.append(attrs["value"])

    parser = Options()
    parser.feed((STATIC / "index.html").read_text())
    assert parser.values[0] == "auto" and "jet" in parser.values
    for name in parser.values[1:]:
        check_name(name)
    assert 'body.append("colormap", colormap.value)' in (STATIC / "enrol.js").read_text()

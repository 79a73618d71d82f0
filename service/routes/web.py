"""The web page: GET / (index.html) and the static files under /static; plain HTML/CSS/JS over the public
API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"

# No API key here: the page must load to ask for one. Browsers revalidate (ETag) so an upgrade shows at once.
router = APIRouter(tags=["web"])
_NO_CACHE = {"Cache-Control": "no-cache"}


@router.get("/", response_class=FileResponse, summary="The web page: pick a person, generate, compare, enrol")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=_NO_CACHE)


class RevalidatedStaticFiles(StaticFiles):
    """StaticFiles whose answers browsers revalidate (ETag) before reuse: an upgraded page never mixes
    modules."""

    async def get_response(self, path: str, scope):
        response = await super().get_response(path, scope)
        response.headers.update(_NO_CACHE)
        return response


def install(app: FastAPI) -> None:
    """Serve the page's static files (a Mount lives on the app: APIRouter.include_router drops mounts)."""
    app.mount("/static", RevalidatedStaticFiles(directory=STATIC), name="static")

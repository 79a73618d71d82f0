"""Safe defaults of the HTTP layer: the API key is checked before the body is read, a 500 carries no
exception text, and metadata cannot break response headers."""

from __future__ import annotations

import dataclasses
import logging

import httpx
import pytest
from fastapi.routing import APIRoute

from service.routes.deps import needs_api_key
from tests.service.conftest import FakeStepper, serve

pytestmark = pytest.mark.anyio

KEY = {"X-API-Key": "s3cret"}
JSON = {"content-type": "application/json"}


async def test_malformed_json_without_the_key_is_401_not_422(make_app, fake):
    async with serve(make_app(fake, api_key="s3cret")) as client:
        broken = await client.post("/generate", content=b'{"user_id": "alice", ', headers=JSON)
        assert broken.status_code == 401, broken.text
        assert broken.json()["error"] == "unauthorized" and broken.headers["www-authenticate"] == "Bearer"
        # nothing about the schema or parser
        assert "user_id" not in broken.text and "JSON" not in broken.text
        # with the key, the same body reaches validation
        keyed = await client.post("/generate", content=b'{"user_id": "alice", ', headers={**JSON, **KEY})
        assert keyed.status_code == 422 and keyed.json()["details"][0]["field"] == "body"
    assert fake.calls == []


async def test_the_key_is_checked_before_the_body_is_read(make_app, fake):
    """An unauthenticated client cannot make the server buffer a body: 401 arrives, the body is never
    pulled."""
    app = make_app(fake, api_key="s3cret", max_body_bytes=1024)
    pulled = []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 4096, "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    async with serve(app):
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/generate", "raw_path": b"/generate", "query_string": b"",
            "root_path": "", "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")],
            "client": ("127.0.0.1", 1), "server": ("testserver", 80),
        }
        await app(scope, receive, send)
    assert sent[0]["status"] == 401 and pulled == []
    rejected = app.state.service.metrics.rejections.labels(reason="unauthorized")._value.get()
    assert rejected == 1


def declared_routes() -> list[APIRoute]:
    """Every APIRoute of the service's routers, read from the routers themselves (not the app's routing)."""
    from service import routes

    routers = [
        getattr(routes, name).router for name in dir(routes) if hasattr(getattr(routes, name), "router")
    ]
    return [r for router in routers for r in router.routes if isinstance(r, APIRoute)]


async def test_every_route_that_declares_the_key_refuses_without_it(make_app, fake):
    app = make_app(fake, api_key="s3cret")
    protected = [r for r in declared_routes() if needs_api_key(r)]
    assert {"/generate", "/users", "/info"} <= {r.path for r in protected}
    async with serve(app) as client:
        for route in protected:
            path = route.path.replace("{user_id}", "alice")
            for method in route.methods:
                r = await client.request(method, path, content=b"{", headers=JSON)
                assert r.status_code == 401, (method, path, r.status_code)
        for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert (await client.get(open_path)).status_code == 200, open_path


async def test_a_failed_batch_answers_500_without_exception_text(make_app, caplog):
    fake = FakeStepper(fail=lambda seeds: (RuntimeError("CUDA error at /opt/secret/kernel.cu:42")
                                           if 1 in seeds else None))
    async with serve(make_app(fake)) as client:
        with caplog.at_level(logging.ERROR, logger="dopplergen"):
            r = await client.post("/generate", json={"user_id": "alice", "seed": 1})
    assert r.status_code == 500
    assert set(r.json()) == {"error", "message"} and "secret" not in r.text and "RuntimeError" not in r.text
    assert "/opt/secret/kernel.cu" in caplog.text, "the cause must still reach the server log"


async def test_an_unhandled_error_answers_the_generic_500(make_app, fake, caplog):
    app = make_app(fake)

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("token=abc123 leaked")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            with caplog.at_level(logging.ERROR, logger="dopplergen"):
                r = await client.get("/boom")
    assert r.status_code == 500 and r.json()["error"] == "internal"
    assert "abc123" not in r.text and "abc123" in caplog.text


async def test_metadata_with_newlines_cannot_break_response_headers(make_app, fake, tiny_pipe):
    evil = dataclasses.replace(
        tiny_pipe, meta={**tiny_pipe.meta, "name": "evil\r\nX-Injected: 1", "version": "1\n2"}
    )
    async with serve(make_app(fake, pipeline=evil)) as client:
        r = await client.post("/generate", json={"user_id": "alice", "seed": 1},
                              headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert "x-injected" not in r.headers
    for name, value in r.headers.items():
        assert "\n" not in value and "\r" not in value, (name, value)
    assert r.headers["x-dopplergen-model"].startswith("evil  X-Injected: 1 1 2")

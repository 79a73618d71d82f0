"""HTTP routes, one module per resource: generate (POST /generate), catalog (/users, /info), users
(enrolment), examples, ops (health, metrics), web (the page)."""

from fastapi import APIRouter

from service.routes import catalog, examples, generate, ops, users, web
from service.routes.deps import needs_api_key

ROUTERS = (generate.router, catalog.router, users.router, ops.router, examples.router, web.router)
router = APIRouter()
for _sub in ROUTERS:
    router.include_router(_sub)

# The route templates, for bounded metric labels (a request to any other path is counted as "other").
PATHS = tuple(route.path for sub in ROUTERS for route in sub.routes)
# The templates of the routes that declare the API key (on the route or its router): ApiKeyMiddleware checks
# the key on these paths before the body is read.
PROTECTED_PATHS = tuple(dict.fromkeys(
    route.path for sub in ROUTERS for route in sub.routes if needs_api_key(route)))

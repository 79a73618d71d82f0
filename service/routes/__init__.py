"""HTTP routes, one module per resource: generate (POST /generate), catalog (/users, /info), users (enrolment),
ops (health, metrics)."""

from fastapi import APIRouter

from service.routes import catalog, examples, generate, ops, users, web

router = APIRouter()
router.include_router(generate.router)
router.include_router(catalog.router)
router.include_router(users.router)
router.include_router(ops.router)
router.include_router(examples.router)
router.include_router(web.router)

# The route templates, for bounded metric labels (a request to any other path is counted as "other").
PATHS = tuple(route.path for sub in (generate.router, catalog.router, users.router, ops.router, examples.router, web.router)
              for route in sub.routes)

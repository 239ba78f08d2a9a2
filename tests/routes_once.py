"""Each of Rapport's routes is prepared for serving once a test process, not once an app.

FastAPI prepares an included route (its dependencies analysed, a validation model built for
each parameter and for the answer) lazily, the first time a request passes it in an app;
for the API's first request that is ~90 routes, 100-200 ms. Production makes one app a
process, and pays it once; the suite makes an app (sometimes two) for every test, and paid
it thousands of times: about a tenth of the suite's time.

What FastAPI prepares is a function of the route and of how its router was included
(prefix, tags, dependencies, ...): equal for every app that ``create_app`` makes, but for
the app itself, which it keeps only to look up ``app.dependency_overrides`` (Rapport sets
none). So each route is prepared once, with no app, and the same preparation serves every
app. Only Rapport's own routes, from its routers made once at import: a test's own route
is prepared as FastAPI always does it.

If FastAPI's internals change shape, ``install`` leaves FastAPI as it is (slower, same
answers).
"""

import dataclasses
from typing import Any

from fastapi import routing

_prepared: dict[int, list[tuple[Any, Any, Any]]] = {}


def install() -> bool:
    included = getattr(routing, "_IncludedRouter", None)
    prepare = getattr(included, "_build_effective_context", None)
    context_type = getattr(routing, "_RouterIncludeContext", None)
    if (
        included is None
        or prepare is None
        or context_type is None
        or not dataclasses.is_dataclass(context_type)
        or "dependency_overrides_provider" not in {f.name for f in dataclasses.fields(context_type)}
    ):
        return False

    def once(self: Any, route: Any) -> Any:
        if not getattr(getattr(route, "endpoint", None), "__module__", "").startswith("rapport."):
            return prepare(self, route)
        context = dataclasses.replace(self.include_context, dependency_overrides_provider=None)
        known = _prepared.setdefault(id(route), [])
        for seen_route, seen_context, prepared in known:
            if seen_route is route and seen_context == context:
                return prepared
        prepared = prepare(
            included(original_router=self.original_router, include_context=context), route
        )
        known.append((route, context, prepared))
        return prepared

    included._build_effective_context = once
    return True

"""Request checks that hold for every entry point before any view runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from inspect import iscoroutinefunction
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse, QueryDict
from django.template.loader import render_to_string
from django.utils.decorators import sync_and_async_middleware
from django.utils.deprecation import MiddlewareMixin

from hub import outages

RETRY_AFTER_S = 5
# Paths whose view bounds the upload it reads (apps add theirs in ready()): not parsed here.
BOUNDED_UPLOAD_PATHS: set[str] = set()


def nul_refusal(request: HttpRequest) -> HttpResponse | None:
    """A 400 naming where a NUL character is, or None.

    PostgreSQL's text and jsonb cannot hold NUL, so one in a page's search box, a revocation
    reason or a URL segment reached the database as a 500 there (and passed on SQLite).
    The path and the query string are checked for every request; form bodies for all but
    the API, which takes JSON only (415 otherwise) and validates it field by field, and
    whose body DRF must still be able to read, and the bounded uploads."""
    api = request.path.startswith("/api/")
    where = field = ""
    if "\x00" in request.path_info:
        where, field = "the URL path", "path"
    else:
        # A bounded upload (a firmware image) is left to its view: parsing it here would read
        # the body before the view could bound it (ota/uploads.py); its fields are files.
        form = not api and request.path_info not in BOUNDED_UPLOAD_PATHS
        sources = [("query", request.GET), ("form", request.POST)] if form else [("query", request.GET)]
        for source, params in sources:
            key = _key_holding_nul(params)
            if key is not None:
                field = key.replace("\x00", "?")
                where = f"{source} parameter {field!r}"
                break
    if not where:
        return None
    reason = f"{where} contains a NUL character"
    if api:
        return JsonResponse({"field": field, "reason": reason}, status=400)
    return HttpResponseBadRequest(reason, content_type="text/plain; charset=utf-8")


def _key_holding_nul(params: QueryDict) -> str | None:
    for key, values in params.lists():
        if "\x00" in key or any("\x00" in value for value in values if isinstance(value, str)):
            return key
    return None


@sync_and_async_middleware
def refuse_nul_characters(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """Both flavours, so the ASGI stack stays async (a sync-only middleware puts every
    request, static files included, through a thread hand-off)."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            refusal = nul_refusal(request)
            if refusal is not None:
                return refusal
            response: Awaitable[HttpResponse] = get_response(request)
            return await response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        return nul_refusal(request) or get_response(request)

    return middleware


def unavailable_response(request: HttpRequest, exc: BaseException) -> HttpResponse | None:
    """A 503 naming the dependency that is away, for an error that says one is (else None):
    JSON in the API's `{field, reason}` shape, a plain page elsewhere. The error itself goes
    to the log (once per outage, hub.outages) and /healthz, not to the client."""
    name = outages.unavailable(exc)
    if name is None:  # not an outage (a bug, bad input): the caller's usual handling, untouched
        return None
    dependency = outages.DEPENDENCIES[name]
    dependency.failed(exc, f"{request.method} {request.path}")
    since = f" since {dependency.down_since:%Y-%m-%d %H:%M:%S} UTC" if dependency.down_since else ""
    reason = f"the {name.replace('_', ' ')} is unavailable{since}; nothing was changed, retry later"
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    response: HttpResponse
    if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
        response = JsonResponse({"field": None, "reason": reason, "unavailable": name}, status=503, headers=headers)
    else:
        # No request context: the context processors would ask the database again.
        down = [{"name": d.name, **d.as_dict()} for d in outages.DEPENDENCIES.values() if d.down]
        body = render_to_string("503.html", {"reason": reason, "down": down, "backlogs": outages.audit_backlogs()})
        response = HttpResponse(body, status=503, headers=headers)
    response._has_been_logged = True  # type: ignore[attr-defined]  # hub.outages logged the outage once; not a line per request
    return response


class DependencyOutage(MiddlewareMixin):
    """A view that needs the database (or Redis) while it is away answers 503, not a 500
    with a traceback in the log for every request."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return unavailable_response(request, exception)

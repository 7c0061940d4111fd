"""Request checks that hold for every entry point before any view runs."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse


class RefuseNulCharacters:
    """A 400 naming the parameter for a NUL character in the query string or a form body.

    PostgreSQL's text and jsonb cannot hold NUL, so one typed into a page's search box or a
    revocation reason reached the database as a 500 there (and passed on SQLite). The API
    validates its JSON bodies field by field; query strings and forms are checked here
    once, for the pages, the admin and the API alike."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for source, params in (("query", request.GET), ("form", request.POST)):
            for key, values in params.lists():
                if "\x00" in key or any("\x00" in value for value in values if isinstance(value, str)):
                    reason = f"{source} parameter {key.replace(chr(0), '?')!r} contains a NUL character"
                    if request.path.startswith("/api/"):
                        return JsonResponse({"field": key.replace("\x00", "?"), "reason": reason}, status=400)
                    return HttpResponseBadRequest(reason, content_type="text/plain; charset=utf-8")
        return self.get_response(request)

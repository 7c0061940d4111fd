"""Public PKI files: the CA certificates and the current CRL, for anyone to verify against."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from devices import identity


@require_GET
def ca_pem(request: HttpRequest) -> HttpResponse:
    identity.active_ca()
    body = "".join(ca.cert_pem for ca in identity.trusted_cas())
    return HttpResponse(body, content_type="application/x-pem-file")


@require_GET
def crl_pem(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(identity.current_crl_pem(), content_type="application/x-pem-file")
    response["Cache-Control"] = "no-cache"
    return response

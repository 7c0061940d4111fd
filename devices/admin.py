from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from audit.services import Actor, ScopeDenied
from devices import events, identity
from devices.models import (
    Capability,
    Certificate,
    CertificateAuthority,
    CertificateStatus,
    Command,
    Device,
    Enrollment,
    EnrollmentStatus,
    Group,
    HubKey,
    TelemetrySample,
)
from hub.actors import actor_for_user


def admin_actor(request: HttpRequest) -> Actor:
    """The signed-in user with their roles' scopes: the services decide, as for the API and
    the pages (Django's model permissions only decide what the admin shows)."""
    return actor_for_user(request.user)


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=200, help_text="Kept in the certificate and the audit log.")


def confirm_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    title: str,
    explanation: str,
    button: str,
    form: forms.Form | None = None,
    hidden: dict[str, str] | None = None,
) -> TemplateResponse:
    """The intermediate page every dangerous admin action goes through."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "title": title,
        "explanation": explanation,
        "objects": list(queryset),
        "action": request.POST.get("action", ""),
        "button": button,
        "form": form,
        "hidden": hidden or {},
    }
    return TemplateResponse(request, "admin/meshhub/confirm_action.html", context)


def run_each(request: HttpRequest, items: QuerySet[Any], operation: Callable[[Any], object], done: str) -> None:
    """Apply `operation` to each item; one refusal does not stop the others."""
    ok = 0
    for item in items:
        try:
            operation(item)
            ok += 1
        except (identity.IdentityError, ScopeDenied) as exc:  # a ScopeDenied is already audited by the service
            messages.error(request, f"{item}: {exc.reason}")
    if ok:
        messages.success(request, f"{done}: {ok}")


class CapabilityInline(admin.TabularInline):
    model = Capability
    extra = 0
    fields = ("name", "kind", "value_type", "unit", "min_value", "max_value", "enum_values", "writable")


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("node_id", "name", "device_type", "status", "online", "last_seen", "firmware_version")
    list_filter = ("status", "online", "device_type", "groups")
    search_fields = ("node_id", "name", "firmware_version")
    inlines = [CapabilityInline]
    # Status, presence and reported state belong to enrollment, revocation and the gateway.
    readonly_fields = ("status", "online", "last_seen", "reported", "firmware_version", "named_at", "created_at", "updated_at")
    actions = ["revoke_devices", "provision_reset", "factory_reset"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(self.readonly_fields)
        return ("node_id", *fields) if obj is not None else fields

    def save_model(self, request: HttpRequest, obj: Device, form: Any, change: bool) -> None:
        if {"name", "aliases"} & set(form.changed_data):
            obj.named_at = timezone.now()  # the assistant's name index reloads on it
            transaction.on_commit(lambda: events.device_renamed(obj.node_id))
        super().save_model(request, obj, form, change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)
        if formset.has_changed():  # capability aliases are words the assistant matches
            Device.objects.filter(pk=form.instance.pk).update(named_at=timezone.now())  # other processes see it too
            transaction.on_commit(lambda: events.device_renamed(form.instance.node_id))

    @admin.action(description="Revoke certificates (throw the device out)", permissions=["view"])
    def revoke_devices(self, request: HttpRequest, queryset: QuerySet[Device]) -> HttpResponse | None:
        form = ReasonForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]
            run_each(request, queryset, lambda d: identity.revoke_device(admin_actor(request), d.node_id, reason), "Revoked")
            return None
        return confirm_page(
            self, request, queryset, title="Revoke devices", button="Revoke",
            explanation="Every active certificate of these devices is revoked and listed in the CRL; live sessions close within a second.",
            form=form if form.is_bound else ReasonForm(),
        )  # fmt: skip

    @admin.action(description="Provisioning reset", permissions=["view"])
    def provision_reset(self, request: HttpRequest, queryset: QuerySet[Device]) -> HttpResponse | None:
        if "apply" in request.POST:
            run_each(request, queryset, lambda d: identity.provision_reset(admin_actor(request), d.node_id), "Reset")
            return None
        return confirm_page(
            self, request, queryset, title="Provisioning reset", button="Reset",
            explanation="Certificates are revoked, pending commands cancelled and desired state cleared; "
            "the devices keep their history and may enroll again with a new code.",
        )  # fmt: skip

    @admin.action(description="Factory reset (two steps)", permissions=["view"])
    def factory_reset(self, request: HttpRequest, queryset: QuerySet[Device]) -> HttpResponse | None:
        if "apply" in request.POST:
            tokens = {key.removeprefix("token_"): value for key, value in request.POST.items() if key.startswith("token_")}
            run_each(request, queryset, lambda d: identity.confirm_factory_reset(admin_actor(request), d.node_id, tokens.get(str(d.pk), "")), "Factory reset")
            return None
        hidden = {}
        for device in queryset:
            try:
                _, token = identity.request_factory_reset(admin_actor(request), device.node_id)
            except (identity.IdentityError, ScopeDenied) as exc:
                messages.error(request, f"{device}: {exc.reason}")
                return None
            hidden[f"token_{device.pk}"] = token
        return confirm_page(
            self, request, queryset, title="Factory reset", button="Confirm factory reset", hidden=hidden,
            explanation="Confirm within 60 seconds: the devices are reset as by a provisioning reset and told to wipe themselves.",
        )  # fmt: skip


@admin.register(Capability)
class CapabilityAdmin(admin.ModelAdmin):
    list_display = ("device", "name", "kind", "value_type", "unit", "min_value", "max_value", "writable")
    list_filter = ("kind", "value_type", "writable")
    search_fields = ("device__node_id", "name")
    list_select_related = ("device",)
    autocomplete_fields = ("device",)


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ("name", "description", "member_count")
    search_fields = ("name",)
    filter_horizontal = ("members",)

    @admin.display(description="members")
    def member_count(self, obj: Group) -> int:
        return obj.members.count()


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services: viewing yes, hand-editing no."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Command)
class CommandAdmin(ReadOnlyAdmin):
    list_display = ("id", "device", "action", "capability", "value", "status", "requested_by", "created_at", "expires_at")
    list_filter = ("status", "action", "scope", "created_at")
    search_fields = ("id", "device__node_id", "capability", "requested_by")
    list_select_related = ("device",)
    date_hierarchy = "created_at"


@admin.register(TelemetrySample)
class TelemetrySampleAdmin(ReadOnlyAdmin):
    list_display = ("device", "capability", "ts", "value", "text")
    list_filter = ("capability",)
    search_fields = ("device__node_id", "capability")
    list_select_related = ("device",)
    date_hierarchy = "ts"
    show_full_result_count = False


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyAdmin):
    list_display = ("serial", "device", "status", "not_after", "issued_at", "first_used_at", "revoked_at", "revocation_kind", "revocation_reason")
    list_filter = ("status", "revocation_kind", "ca", "issued_at")
    search_fields = ("serial", "fingerprint", "device__node_id")
    list_select_related = ("device",)
    actions = ["revoke_certificates"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the CRL is built from these rows

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("devices.view_certificate")  # shown; the service decides by scope

    @admin.action(description="Revoke selected certificates", permissions=["revoke"])
    def revoke_certificates(self, request: HttpRequest, queryset: QuerySet[Certificate]) -> HttpResponse | None:
        form = ReasonForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]
            run_each(request, queryset, lambda c: identity.revoke_certificate(admin_actor(request), c, reason), "Revoked")
            return None
        return confirm_page(
            self, request, queryset.exclude(status=CertificateStatus.REVOKED), title="Revoke certificates", button="Revoke",
            explanation="The certificates are listed in the CRL at once; devices using them lose their session.",
            form=form if form.is_bound else ReasonForm(),
        )  # fmt: skip


class EnrollmentForm(forms.ModelForm):
    with_pin = forms.BooleanField(required=False, help_text="Also require a 6-digit PIN.")
    ttl_s = forms.IntegerField(min_value=60, max_value=7 * 24 * 3600, initial=900, help_text="Seconds until the code expires.")

    class Meta:
        model = Enrollment
        fields = ("node_id", "device_type")

    def __init__(self, *args: Any, actor: Actor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor
        self.ticket: identity.EnrollmentTicket | None = None

    def clean(self) -> dict[str, Any]:
        """The service decides (and audits) here, so a refusal shows on the form."""
        super().clean()
        data = self.cleaned_data
        if not self.errors and self.actor is not None:
            try:
                self.ticket = identity.create_enrollment(
                    self.actor, data["node_id"], device_type=data["device_type"], with_pin=data.get("with_pin", False), ttl_s=data["ttl_s"]
                )
            except (identity.IdentityError, ScopeDenied) as exc:  # both audited by the service
                raise forms.ValidationError(exc.reason) from None
        return data


@admin.register(Enrollment)
class EnrollmentAdmin(admin.ModelAdmin):
    """Create codes here (shown once, with their QR code) or with `manage.py createenrollment`."""

    form = EnrollmentForm
    list_display = ("node_id", "device_type", "status", "failed_attempts", "expires_at", "created_by", "used_at")
    list_filter = ("status", "device_type", "created_at")
    search_fields = ("node_id", "created_by")
    actions = ["cancel"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change, **kwargs)
        actor = admin_actor(request)

        class BoundEnrollmentForm(form_class):  # type: ignore[valid-type, misc]
            def __init__(self, *args: Any, **inner: Any) -> None:
                super().__init__(*args, actor=actor, **inner)

        return BoundEnrollmentForm

    def save_model(self, request: HttpRequest, obj: Enrollment, form: Any, change: bool) -> None:
        ticket = form.ticket
        assert ticket is not None, "clean() created the enrollment"
        obj.pk = ticket.enrollment.pk
        info = ticket.as_dict()
        messages.warning(
            request,
            format_html(
                "Enrollment for <b>{}</b>: code <code>{}</code>{} · CA {} · enroll at {}:{} · expires {} — shown once.<br>{}",
                info["node_id"], info["code"], f", PIN {info['pin']}" if info["pin"] else "", info["ca_fingerprint"],
                info["enroll_host"], info["enroll_port"], info["expires_at"], mark_safe(ticket.qr_svg()),  # noqa: S308  # SVG segno drew from our own URI
            ),
        )  # fmt: skip

    @admin.action(description="Cancel selected open enrollments")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Enrollment]) -> None:
        run_each(request, queryset.filter(status=EnrollmentStatus.OPEN), lambda e: identity.cancel_enrollment(admin_actor(request), e), "Cancelled")


@admin.register(CertificateAuthority)
class CertificateAuthorityAdmin(ReadOnlyAdmin):
    """Rotate with `manage.py pki rotate-ca`; retire an old, non-active CA here."""

    list_display = ("name", "fingerprint", "active", "trusted", "not_after", "crl_number", "crl_next_update", "created_at")
    exclude = ("key_pem",)
    actions = ["retire"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retire_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    @admin.action(description="Retire (stop trusting) selected CAs", permissions=["retire"])
    def retire(self, request: HttpRequest, queryset: QuerySet[CertificateAuthority]) -> HttpResponse | None:
        if "apply" in request.POST:
            run_each(request, queryset, lambda ca: identity.retire_ca(admin_actor(request), ca), "Retired")
            return None
        return confirm_page(
            self, request, queryset, title="Retire CAs", button="Retire",
            explanation="Devices whose certificates these CAs signed can no longer connect.",
        )  # fmt: skip


@admin.register(HubKey)
class HubKeyAdmin(ReadOnlyAdmin):
    list_display = ("kind", "active", "ca", "created_at")
    exclude = ("key_pem",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

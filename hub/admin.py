from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.models import ActorType, Decision
from audit.services import Actor, record
from hub.models import ApiToken, Heartbeat, SigningKey
from hub.scopes import Scope


class ApiTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiToken
        fields = ("user", "name", "scopes", "expires_at")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created here or with `manage.py createapitoken`; the secret shows once."""

    form = ApiTokenForm
    list_display = ("key", "user", "name", "scopes", "created_at", "expires_at", "last_used_at", "revoked")
    list_filter = ("revoked", "created_at")
    search_fields = ("key", "name", "user__username")
    readonly_fields = ("key", "created_at", "last_used_at", "revoked")
    actions = ["revoke_tokens"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # Scopes and owner of an existing token are fixed: issue a new token instead.
        if obj is not None:
            return (*self.readonly_fields, "user", "scopes")
        return tuple(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, plaintext = ApiToken.issue(obj.user, sorted(form.cleaned_data["scopes"]), name=obj.name, expires_at=obj.expires_at)
        obj.pk = token.pk
        obj.key = token.key
        record(
            Actor(ActorType.USER, request.user.get_username()),
            "apitoken.create",
            Decision.ALLOW,
            scope="admin",
            target_type="apitoken",
            target_id=token.key,
            details={"scopes": token.scopes, "owner": token.user.get_username()},
        )
        messages.warning(request, f"Token for {token.user}: {plaintext} — copy it now, it is not shown again.")

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset.filter(revoked=False):
            ApiToken.objects.filter(pk=token.pk).update(revoked=True)
            record(
                Actor(ActorType.USER, request.user.get_username()),
                "apitoken.revoke",
                Decision.ALLOW,
                scope="admin",
                target_type="apitoken",
                target_id=token.key,
            )
        messages.success(request, "Tokens revoked.")


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ("name", "at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin):
    """Written only by `hub.signing`: viewing yes, never the private half."""

    list_display = ("kind", "active", "created_at")
    exclude = ("key_pem",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

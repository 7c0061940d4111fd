from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.admin import AppendOnlyAdmin
from audit.models import Decision
from audit.services import ScopeDenied, authorize, record
from hub.actors import actor_for_user
from hub.models import ApiToken, Heartbeat, SigningKey
from hub.scopes import Scope


class ApiTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiToken
        fields = ("user", "name", "scopes", "expires_at")


class ScopedChangesAdmin(admin.ModelAdmin):
    """Saving a row in this admin needs `change_scope` from the user's roles, not just
    Django's add/change permission. Checked before the admin's transaction opens, so the
    deny (and the 403 it becomes) is recorded even though nothing else is."""

    change_scope: str = Scope.ADMIN
    audit_name: str = ""  # the audit action's prefix; the model's name by default

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None) -> Any:
        if request.method == "POST":
            name = self.audit_name or self.model._meta.model_name or "row"
            action = f"{name}.create" if object_id is None else f"{name}.change"
            authorize(actor_for_user(request.user), self.change_scope, action, target_type=name, target_id=object_id or "new")
        return super().changeform_view(request, object_id, form_url, extra_context)


@admin.register(ApiToken)
class ApiTokenAdmin(ScopedChangesAdmin):
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
            actor_for_user(request.user),
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
        actor = actor_for_user(request.user)
        try:
            authorize(actor, Scope.ADMIN, "apitoken.revoke", target_type="apitoken", target_id=",".join(t.key for t in queryset)[:150])
        except ScopeDenied as refused:
            messages.error(request, refused.reason)
            return
        for token in queryset.filter(revoked=False):
            ApiToken.objects.filter(pk=token.pk).update(revoked=True)
            record(
                actor,
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
class SigningKeyAdmin(AppendOnlyAdmin):
    """Written only by `hub.signing`: viewing yes, never the private half."""

    list_display = ("kind", "active", "created_at")
    exclude = ("key_pem",)

"""`manage.py pki status|init|rotate-ca|retire-ca FINGERPRINT|refresh-crl`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services import Actor
from devices import identity
from devices.models import CertificateAuthority, HubKey
from hub.models import SigningKey


class Command(BaseCommand):
    help = "The hub's CA and keys: show them, create missing ones, rotate or retire a CA, refresh CRLs."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="CAs, hub keys, CRL next updates")
        sub.add_parser("init", help="create the CA, server certificate and keys if missing; write the listeners' files")
        sub.add_parser("rotate-ca", help="a new active CA; the old one stays trusted until retired")
        retire = sub.add_parser("retire-ca", help="stop trusting a non-active CA")
        retire.add_argument("fingerprint")
        sub.add_parser("refresh-crl", help="re-sign every trusted CA's CRL now")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system("manage.py")
        action = options["action"]
        try:
            if action == "init":
                files = identity.ensure_hub_identity()
                self.stdout.write(f"hub identity ready; listener files in {files.server_chain.parent}")
            elif action == "rotate-ca":
                ca = identity.rotate_ca(actor)
                identity.ensure_hub_identity()
                self.stdout.write(f"new active CA {ca.fingerprint}")
            elif action == "retire-ca":
                retiring = CertificateAuthority.objects.filter(fingerprint=options["fingerprint"]).first()
                if retiring is None:
                    raise CommandError(f"no CA with fingerprint {options['fingerprint']}")
                identity.retire_ca(actor, retiring)
                identity.ensure_hub_identity()
                self.stdout.write(f"retired CA {retiring.fingerprint}")
            elif action == "refresh-crl":
                self.stdout.write(f"refreshed the CRLs of {identity.refresh_crls()} CAs")
        except identity.IdentityError as exc:
            raise CommandError(exc.reason) from None
        identity.active_ca()
        for ca in CertificateAuthority.objects.order_by("created_at"):
            state = "active" if ca.active else ("trusted" if ca.trusted else "retired")
            self.stdout.write(
                f"CA {ca.fingerprint} {state}, expires {ca.not_after:%Y-%m-%d}, CRL #{ca.crl_number} next update {ca.crl_next_update:%Y-%m-%d %H:%M}"
            )
        keys: list[HubKey | SigningKey] = [*HubKey.objects.filter(active=True), *SigningKey.objects.filter(active=True)]
        for key in sorted(keys, key=lambda k: k.kind):
            self.stdout.write(f"key {key.kind}: {'private half on this hub' if key.key_pem else 'public only'}, since {key.created_at:%Y-%m-%d}")

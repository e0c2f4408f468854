import getpass
import json
import os
import sys

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from failsafe.exceptions import FailsafeError
from licensing.exceptions import LicensingError
from raos.bootstrap import BootstrapResult, bootstrap


class Command(BaseCommand):
    help = (
        "First-run set-up: the SuperAdmin, the server license passkey, the failsafe's "
        "archive keyset and its default schedules (safe to run again; never creates a "
        "keyset while backups exist, never changes a schedule that exists)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--superadmin", required=True, metavar="USERNAME")
        parser.add_argument("--email", default="")
        parser.add_argument("--demo", type=int, default=0, metavar="N", help="add N demo users")
        parser.add_argument("--rotate-passkey", action="store_true")
        parser.add_argument(
            "--make-owner",
            action="store_true",
            help="name this SuperAdmin the server license's owner: the one the failsafe "
            "commands act as when several SuperAdmins exist",
        )
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--no-input", "--noinput", action="store_false", dest="interactive")

    def handle(self, *args, **options):
        if options["demo"] < 0:
            raise CommandError("--demo must be 0 or more")
        try:
            result = bootstrap(
                username=options["superadmin"],
                email=options["email"],
                password=self._superadmin_password(options),
                demo=options["demo"],
                rotate_passkey=options["rotate_passkey"],
                make_owner=options["make_owner"],
            )
        except ValidationError as exc:
            raise CommandError("SuperAdmin password refused: " + " ".join(exc.messages)) from None
        except (LicensingError, FailsafeError) as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self._print_json(result)
        else:
            self._print_text(result, demo=options["demo"])

    def _superadmin_password(self, options) -> str | None:
        password = os.environ.get("RAOS_SUPERADMIN_PASSWORD") or None
        if password is not None or not (options["interactive"] and sys.stdin.isatty()):
            return password
        # Only ask when there is someone to create; an existing SuperAdmin is left alone.
        if get_user_model().objects.filter(username=options["superadmin"]).exists():
            return None
        entered = getpass.getpass("Password for the new SuperAdmin (empty: generate one): ")
        return entered or None

    def _print_json(self, result: BootstrapResult):
        # Nothing else goes to stdout here, so a script can parse it whole.
        printed = {
            "SuperAdmin": {
                "Username": result.username,
                "Created": result.superadmin_created,
                "OneTimePassword": result.generated_password,
            },
            "ServerLicensePasskey": result.passkey,
            "DemoUsersCreated": result.demo_users_created,
            "DemoLicensesCreated": result.demo_licenses_created,
            "FailsafeKeysetCreated": result.keyset_created,
            "SchedulesCreated": result.schedules_created,
            "Notes": result.notes,
        }
        self.stdout.write(json.dumps(printed, indent=2))

    def _print_text(self, result: BootstrapResult, *, demo: int):
        if result.owner_changed:
            self.stdout.write(f"{result.username} owns the server license now.")
        if result.superadmin_created:
            self.stdout.write(self.style.SUCCESS(f"SuperAdmin created: {result.username}"))
            if result.generated_password:
                self.stdout.write(
                    "One-time password (change it at first login): "
                    f"{result.generated_password}"
                )
        else:
            self.stdout.write(f"SuperAdmin {result.username} already exists; left unchanged.")
        if result.passkey:
            self.stdout.write(
                self.style.WARNING(
                    f"Server license passkey (shown once, keep it safe): {result.passkey}"
                )
            )
        else:
            self.stdout.write(
                "Server license passkey already issued (use --rotate-passkey to replace it)."
            )
        if result.keyset_created:
            self.stdout.write(f"Failsafe archive keyset created: {result.keyset_created}")
        if result.schedules_created:
            self.stdout.write(
                "Failsafe schedules created (change or turn them off in the admin, under "
                "Periodic tasks): " + ", ".join(result.schedules_created)
            )
        else:
            self.stdout.write("Failsafe schedules already exist; left as they are.")
        for note in result.notes:
            self.stdout.write(self.style.WARNING(note))
        if demo:
            self.stdout.write(
                f"Demo data: {result.demo_users_created} users and "
                f"{result.demo_licenses_created} licenses added."
            )

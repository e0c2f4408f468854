import getpass
import json
import os
import sys

from django.core.management.base import BaseCommand, CommandError

from licensing.bootstrap import bootstrap


class Command(BaseCommand):
    help = "First-run set-up: the SuperAdmin and the server license passkey (safe to run again)."

    def add_arguments(self, parser):
        parser.add_argument("--superadmin", required=True, metavar="USERNAME")
        parser.add_argument("--email", default="")
        parser.add_argument("--demo", type=int, default=0, metavar="N", help="add N demo users")
        parser.add_argument("--rotate-passkey", action="store_true")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        if options["demo"] < 0:
            raise CommandError("--demo must be 0 or more")
        password = os.environ.get("RAOS_SUPERADMIN_PASSWORD") or None
        if password is None and options["interactive"] and sys.stdin.isatty():
            password = getpass.getpass("Password for the new SuperAdmin (empty: generate one): ")
            password = password or None
        try:
            result = bootstrap(
                username=options["superadmin"],
                email=options["email"],
                password=password,
                demo=options["demo"],
                rotate_passkey=options["rotate_passkey"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self._ensure_failsafe_keys()

        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "SuperAdmin": {
                            "Username": result.username,
                            "Created": result.superadmin_created,
                            "OneTimePassword": result.generated_password,
                        },
                        "ServerLicensePasskey": result.passkey,
                        "DemoUsersCreated": result.demo_users_created,
                        "DemoLicensesCreated": result.demo_licenses_created,
                    },
                    indent=2,
                )
            )
            return
        if result.superadmin_created:
            self.stdout.write(self.style.SUCCESS(f"SuperAdmin created: {result.username}"))
            if result.generated_password:
                self.stdout.write(f"One-time password (change it at first login): {result.generated_password}")
        else:
            self.stdout.write(f"SuperAdmin {result.username} already exists; left unchanged.")
        if result.passkey:
            self.stdout.write(self.style.WARNING(f"Server license passkey (shown once, keep it safe): {result.passkey}"))
        else:
            self.stdout.write("Server license passkey already issued (use --rotate-passkey to replace it).")
        if options["demo"]:
            self.stdout.write(
                f"Demo data: {result.demo_users_created} users and "
                f"{result.demo_licenses_created} licenses added."
            )

    def _ensure_failsafe_keys(self):
        try:
            from failsafe.keys import ensure_keyset_file
        except ImportError:
            return
        created = ensure_keyset_file()
        if created:
            self.stdout.write(f"Failsafe archive keyset created: {created}")

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.add_argument("--no-input", "--noinput", action="store_false", dest="interactive")
        return parser

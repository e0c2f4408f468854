from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text

ACTIONS = ("status", "rotate", "export", "import")


class Command(FailsafeCommand):
    help = (
        "The failsafe's key material: status (which keys the backups need), rotate (a new "
        "primary key, old keys kept), export FILE / import FILE (every key in one file "
        "sealed under a recovery passphrase, for keeping offline). Rotate, export and import "
        "need the failsafe password."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("action", choices=ACTIONS)
        parser.add_argument(
            "file",
            nargs="?",
            metavar="FILE",
            help="export: the recovery file to create; import: the recovery file to read",
        )
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the failsafe password from stdin (its first line)",
        )
        parser.add_argument(
            "--passphrase-stdin",
            action="store_true",
            help="read the recovery passphrase from stdin (after the password line, when "
            "both come from stdin)",
        )

    def acting(self, options) -> services.Actor:
        if options["action"] != "import":
            return super().acting(options)
        # A new installation has no SuperAdmin yet: the import is then the system's own,
        # from this shell.
        return services.key_import_actor(options.get("user"))

    def run(self, actor, *, action, file, password_stdin, passphrase_stdin, **options):
        if action in ("export", "import") and not file:
            raise CommandError(f"failsafe_keys {action} needs the recovery FILE")
        if action in ("status", "rotate") and file:
            raise CommandError(f"failsafe_keys {action} takes no FILE")
        if action == "status":
            result = services.key_status(actor=actor)
            self.emit(seed.keys_status(result), text.keys_status(result))
        elif action == "rotate":
            result = services.rotate_keys(actor=actor, password=self._password(password_stdin))
            self.emit(seed.keys_rotated(result), text.keys_rotated(result))
        elif action == "export":
            password = self._password(password_stdin)
            result = services.export_keys(
                actor=actor,
                password=password,
                passphrase=self._passphrase(passphrase_stdin, confirm=True),
                destination=file,
            )
            self.emit(seed.keys_exported(result), text.keys_exported(result))
        else:
            # Before a failsafe password exists (a new installation) there is none to ask.
            password = (
                self._password(password_stdin) if services.failsafe_password_is_set() else None
            )
            result = services.import_keys(
                actor=actor,
                source=file,
                passphrase=self._passphrase(passphrase_stdin, confirm=False),
                password=password,
            )
            self.emit(seed.keys_imported(result), text.keys_imported(result))

    def _password(self, from_stdin: bool) -> str:
        return self.read_secret("Failsafe password: ", from_stdin=from_stdin)

    def _passphrase(self, from_stdin: bool, *, confirm: bool) -> str:
        return self.read_secret("Recovery passphrase: ", from_stdin=from_stdin, confirm=confirm)

import sys

from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = "Delete a backup and its manifest; failsafe_gc then frees the chunks it alone held."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("backup_id")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument("--password-stdin", action="store_true")
        parser.add_argument(
            "--force",
            action="store_true",
            help="also delete the only safe backup, or one left RUNNING by a dead process",
        )

    def run(self, actor, *, backup_id, yes, force, password_stdin, **options):
        if not yes:
            if not sys.stdin.isatty():
                raise CommandError("No terminal to confirm on: pass --yes to delete")
            answer = input(f"Delete backup {backup_id}? Type 'yes' to go on: ")
            if answer.strip().lower() != "yes":
                raise CommandError("Deletion cancelled; nothing was changed")
        password = self.read_secret("Failsafe password: ", from_stdin=password_stdin)
        result = services.delete_backup(
            actor=actor, backup_id=backup_id, password=password, force=force
        )
        self.emit(seed.deleted(result), self.style.SUCCESS(text.deleted(result)))

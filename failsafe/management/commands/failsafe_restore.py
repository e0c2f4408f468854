from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Restore the captured models from a backup, all or nothing (needs the failsafe password)."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("backup_id")
        parser.add_argument(
            "--dry-run", action="store_true", help="show the changes, write nothing"
        )
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument("--password-stdin", action="store_true")
        parser.add_argument(
            "--allow-cascade",
            action="store_true",
            help="accept deleting data outside the backup that depends on removed records",
        )

    def run(self, actor, *, backup_id, dry_run, yes, password_stdin, allow_cascade, **options):
        if dry_run:
            with self.progress() as progress:
                result = services.restore(
                    actor=actor, backup_id=backup_id, dry_run=True, progress=progress
                )
            self.emit(seed.restore(result), text.restore(result))
            return
        if not yes:
            with self.progress() as progress:
                preview = services.restore(
                    actor=actor, backup_id=backup_id, dry_run=True, progress=progress
                )
            self.stdout.write(text.restore(preview))
            if input("Restore this backup? Type 'yes' to go on: ").strip().lower() != "yes":
                raise CommandError("Restore cancelled; nothing was changed")
        password = self.read_secret("Failsafe password: ", from_stdin=password_stdin)
        with self.progress() as progress:
            result = services.restore(
                actor=actor,
                backup_id=backup_id,
                password=password,
                allow_cascade=allow_cascade,
                progress=progress,
            )
        self.emit(seed.restore(result), text.restore(result))

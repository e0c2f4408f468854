import sys

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
        parser.add_argument(
            "--without-pre-restore-backup",
            action="store_true",
            help="restore although the backup of the current state cannot be written (a full "
            "disk): keeps no copy of the current state; asks for the backup id to confirm",
        )
        parser.add_argument(
            "--confirm",
            metavar="BACKUP_ID",
            default="",
            help="with --without-pre-restore-backup, the confirmation without a prompt",
        )

    def run(
        self,
        actor,
        *,
        backup_id,
        dry_run,
        yes,
        password_stdin,
        allow_cascade,
        without_pre_restore_backup,
        confirm,
        **options,
    ):
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
            self.stdout.write(text.restore_plan(preview))
            if input("Restore this backup? Type 'yes' to go on: ").strip().lower() != "yes":
                raise CommandError("Restore cancelled; nothing was changed")
        if without_pre_restore_backup and not confirm:
            if not sys.stdin.isatty():
                raise CommandError(
                    "--without-pre-restore-backup needs the backup id typed to confirm: "
                    "pass --confirm BACKUP_ID"
                )
            confirm = input(
                "No copy of the current state will be kept. Type the backup id to confirm: "
            )
        password = self.read_secret("Failsafe password: ", from_stdin=password_stdin)
        with self.progress() as progress:
            result = services.restore(
                actor=actor,
                backup_id=backup_id,
                password=password,
                allow_cascade=allow_cascade,
                without_pre_restore_backup=without_pre_restore_backup,
                confirmation=confirm,
                progress=progress,
            )
        self.emit(seed.restore(result), text.restore(result))

import sys

from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Restore the captured models from a backup, all or nothing, or only selected records "
        "(--only, --damage, --undo-actor with --since); needs the failsafe password."
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
        parser.add_argument(
            "--only",
            action="append",
            metavar="MODEL:KEY,KEY",
            help="restore only these records, everything else stays (accounts.user:alice,bob; "
            "#42 for a primary key); repeat for more models",
        )
        parser.add_argument(
            "--damage",
            action="append",
            nargs="?",
            const="",
            metavar="KINDS",
            help="restore only the records the backup and the live data differ in, of these "
            "kinds: removed, modified, added (default removed,modified)",
        )
        parser.add_argument(
            "--undo-actor",
            metavar="USERNAME",
            help="restore only the records this user changed since --since, as the audit "
            "trail, the admin log and (PostgreSQL) the change journal record it",
        )
        parser.add_argument(
            "--since",
            metavar="ISO_TIME",
            help="with --undo-actor: undo the changes made since this moment "
            "(2026-12-03T14:00:00Z; without an offset, UTC)",
        )
        parser.add_argument(
            "--at",
            metavar="ISO_TIME",
            help="with --only, PostgreSQL: restore those records as the change journal had "
            "them at this moment (after the backup), else as the backup has them",
        )
        parser.add_argument(
            "--accept-conflicts",
            action="store_true",
            help="restore selected records even if they changed again after the damage",
        )
        parser.add_argument(
            "--force-password-reset",
            action="store_true",
            help="the accounts whose password, role, active flag or groups the restore "
            "changes must change their password at their next login",
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
        only,
        damage,
        accept_conflicts,
        force_password_reset,
        undo_actor,
        since,
        at,
        **options,
    ):
        selection = {
            "only": only,
            "damage": None if damage is None else [kinds for kinds in damage if kinds],
            "undo_actor": undo_actor,
            "since": since,
            "at": at,
        }
        if dry_run:
            with self.progress() as progress:
                result = services.restore(
                    actor=actor, backup_id=backup_id, dry_run=True, progress=progress, **selection
                )
            self.emit(seed.restore(result), text.restore(result))
            return
        if not yes:
            with self.progress() as progress:
                preview = services.restore(
                    actor=actor, backup_id=backup_id, dry_run=True, progress=progress, **selection
                )
            self.stdout.write(text.restore_plan(preview))
            question = "Restore these records?" if preview.selective else "Restore this backup?"
            if input(f"{question} Type 'yes' to go on: ").strip().lower() != "yes":
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
                accept_conflicts=accept_conflicts,
                force_password_reset=force_password_reset,
                **selection,
            )
        self.emit(seed.restore(result), text.restore(result))

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text

PASSWORD_PROMPT = "Failsafe password: "


class Command(FailsafeCommand):
    help = (
        "Forget the backups the retention policy (FAILSAFE['RETENTION']) no longer keeps and "
        "collect their chunks, listing every backup with the rule that decided it; or pin, "
        "unpin or acknowledge one backup."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--dry-run", action="store_true", help="show what would be forgotten, change nothing"
        )
        parser.add_argument("--password-stdin", action="store_true")
        one_backup = parser.add_mutually_exclusive_group()
        one_backup.add_argument(
            "--acknowledge",
            metavar="BACKUP_ID",
            help="record that you reviewed this emergency backup (needs the failsafe password)",
        )
        one_backup.add_argument(
            "--pin", metavar="BACKUP_ID", help="never let retention forget this backup"
        )
        one_backup.add_argument(
            "--unpin",
            metavar="BACKUP_ID",
            help="let retention treat this backup by its rules (needs the failsafe password)",
        )

    def run(self, actor, *, dry_run, password_stdin, acknowledge, pin, unpin, **options):
        if acknowledge:
            password = self.read_secret(PASSWORD_PROMPT, from_stdin=password_stdin)
            backup = services.acknowledge(actor=actor, backup_id=acknowledge, password=password)
            self.emit(seed.acknowledged(backup), self.style.SUCCESS(text.acknowledged(backup)))
            return
        if pin or unpin:
            password = None if pin else self.read_secret(PASSWORD_PROMPT, from_stdin=password_stdin)
            backup = services.pin(
                actor=actor, backup_id=pin or unpin, pinned=bool(pin), password=password
            )
            self.emit(seed.pinned(backup), self.style.SUCCESS(text.pinned(backup)))
            return
        password = None if dry_run else self.read_secret(PASSWORD_PROMPT, from_stdin=password_stdin)
        result = services.prune(actor=actor, dry_run=dry_run, password=password)
        lines = [self.style.ERROR(line) if alarm else line for line, alarm in text.prune(result)]
        self.emit(seed.prune(result), "\n".join(lines))

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = "Delete the archive chunks no backup uses any more (never while a backup runs)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
        )
        parser.add_argument("--password-stdin", action="store_true")

    def run(self, actor, *, dry_run, password_stdin, **options):
        password = (
            None
            if dry_run
            else self.read_secret("Failsafe password: ", from_stdin=password_stdin)
        )
        report = services.collect_garbage(actor=actor, password=password, dry_run=dry_run)
        lines = [
            self.style.ERROR(line) if alarm else line for line, alarm in text.garbage(report)
        ]
        self.emit(seed.garbage(report), "\n".join(lines))

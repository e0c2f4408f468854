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

    def run(self, actor, *, dry_run, **options):
        report = services.collect_garbage(actor=actor, dry_run=dry_run)
        lines = [
            self.style.ERROR(line) if alarm else line for line, alarm in text.garbage(report)
        ]
        self.emit(seed.garbage(report), "\n".join(lines))

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Mark a backup as safe: the baseline for future comparisons (needs the failsafe "
        "password)."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("backup_id")
        parser.add_argument("--password-stdin", action="store_true")
        parser.add_argument(
            "--accept-issues",
            action="store_true",
            help="mark it safe although its comparison with the last safe backup has issues",
        )

    def run(self, actor, *, backup_id, password_stdin, accept_issues, **options):
        password = self.read_secret("Failsafe password: ", from_stdin=password_stdin)
        backup = services.mark_safe(
            actor=actor, backup_id=backup_id, password=password, accept_issues=accept_issues
        )
        self.emit(seed.marked_safe(backup), self.style.SUCCESS(text.marked_safe(backup)))

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = "Mark a backup as safe: the baseline for future comparisons."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("backup_id")

    def run(self, actor, *, backup_id, **options):
        backup = services.mark_safe(actor=actor, backup_id=backup_id)
        self.emit(seed.marked_safe(backup), self.style.SUCCESS(text.marked_safe(backup)))

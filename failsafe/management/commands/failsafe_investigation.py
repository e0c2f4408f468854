from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Show the investigation kept with an emergency backup (taken by a trigger or by the "
        "drift watch), as it was when the backup was taken."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("backup_id", help="the emergency backup's id (or a unique prefix)")

    def run(self, actor, *, backup_id, **options):
        report = services.stored_investigation(actor=actor, backup_id=backup_id)
        self.emit(seed.investigation(report), text.investigation(report))

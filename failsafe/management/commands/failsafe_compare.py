from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Compare a backup (default: the live database) against another backup, the live "
        "database, or (default) the last safe backup."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("backup_id", nargs="?", default=None, help="a backup id, or 'live'")
        parser.add_argument("--against", metavar="BACKUP_ID|live", default=None)

    def run(self, actor, *, backup_id, against, **options):
        with self.progress() as progress:
            result = services.compare(
                actor=actor, backup_id=backup_id, against=against, progress=progress
            )
        self.emit(seed.comparison(result), text.comparison(result))

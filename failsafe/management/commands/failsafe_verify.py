from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = "Check backups: checksum, decryption, every record decoded."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("backup_id", nargs="?", default=None, help="default: the newest")
        parser.add_argument("--all", action="store_true", dest="all_backups")

    def run(self, actor, *, backup_id, all_backups, **options):
        with self.progress() as progress:
            results = services.verify(
                actor=actor, backup_id=backup_id, all_backups=all_backups, progress=progress
            )
        self.emit(seed.verification(results), text.verification(results))
        bad = sum(1 for r in results if not r.ok)
        if bad:
            raise CommandError(f"{bad} of {len(results)} backups failed verification")

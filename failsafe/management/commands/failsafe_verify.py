from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand


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
        payload = {
            "Valid": all(r.ok for r in results),
            "Checked": len(results),
            "Backups": [r.to_seed_json() for r in results],
        }
        lines = [
            f"{r.backup.id}  OK ({sum(r.counts.values())} records)"
            if r.ok
            else f"{r.backup.id}  CORRUPT: {r.error}"
            for r in results
        ]
        self.emit(payload, "\n".join(lines))
        if not payload["Valid"]:
            bad = sum(1 for r in results if not r.ok)
            raise CommandError(f"{bad} of {len(results)} backups failed verification")

from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Check backups: checksum, decryption, every record decoded. With --repair, rewrite "
        "damaged chunks from the live rows that still hold them and name the backups that "
        "stay damaged."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "backup_id", nargs="?", default=None, help="default: the newest (with --repair: all)"
        )
        parser.add_argument("--all", action="store_true", dest="all_backups")
        parser.add_argument(
            "--repair",
            action="store_true",
            help="rewrite the damaged chunks of failing backups from live data, then verify "
            "them again",
        )
        parser.add_argument(
            "--replica",
            metavar="NAME",
            help="check the copies this replica of the store holds instead of the primary's",
        )

    def run(self, actor, *, backup_id, all_backups, repair, replica, **options):
        if replica:
            if repair:
                raise CommandError("--repair repairs the primary: it does not take --replica")
            self.verify_replica(actor, replica, backup_id=backup_id, all_backups=all_backups)
            return
        if repair:
            self.repair(actor, backup_id=None if all_backups else backup_id)
            return
        with self.progress() as progress:
            results = services.verify(
                actor=actor, backup_id=backup_id, all_backups=all_backups, progress=progress
            )
        self.emit(seed.verification(results), text.verification(results))
        bad = sum(1 for r in results if not r.ok)
        if bad:
            raise CommandError(f"{bad} of {len(results)} backups failed verification")

    def repair(self, actor, *, backup_id):
        with self.progress() as progress:
            result = services.repair(actor=actor, backup_id=backup_id, progress=progress)
        self.emit(seed.repair(result), text.repair(result))
        damaged = result.still_damaged
        if damaged:
            raise CommandError(
                f"{len(damaged)} of {len(result.results)} backups stay damaged after repair"
            )

    def verify_replica(self, actor, replica, *, backup_id, all_backups):
        with self.progress() as progress:
            result = services.verify_replica(
                actor=actor,
                replica=replica,
                backup_id=backup_id,
                all_backups=all_backups,
                progress=progress,
            )
        self.emit(seed.replica_verification(result), text.replica_verification(result))
        bad = sum(1 for r in result.results if not r.ok)
        if bad:
            raise CommandError(
                f"{bad} of {len(result.results)} backups failed verification on replica "
                f"{result.replica}"
            )

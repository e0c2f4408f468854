from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Copy to the replicas of the store every backup they lack or whose copy failed, and "
        "read each copy back; says which replica failed and why."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--replica", metavar="NAME", help="only this replica (default: every one)"
        )

    def run(self, actor, *, replica, **options):
        result = services.replicate(actor=actor, replica=replica)
        self.emit(seed.replication(result), text.replication(result))
        if result.failed:
            raise CommandError(
                f"{len(result.failed)} of {len(result.rows)} backup copies failed to replicate"
            )
        if result.problems:
            name, problem = result.problems[0]
            raise CommandError(f"Replica {name} failed: {problem}")

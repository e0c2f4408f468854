
from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Rebuild the catalog of backups (their rows, safe marks included) from a storage "
        "alone: the primary store or a replica (file://, s3://, sftp:// URL). Copies what "
        "the backups need into the configured store. Needs the failsafe password once one "
        "is set; on a new installation it runs as the system."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--from", dest="source", required=True, metavar="URL", help="the storage to read"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="read and check everything, change nothing"
        )
        parser.add_argument("--password-stdin", action="store_true")

    def acting(self, options) -> services.Actor:
        # A new installation has no SuperAdmin yet: the recovery is then the system's own,
        # from this shell, as the key import before it.
        return services.recovery_actor(options.get("user"))

    def run(self, actor, *, source, dry_run, password_stdin, **options):
        password = None
        if not dry_run and services.failsafe_password_is_set():
            password = self.read_secret("Failsafe password: ", from_stdin=password_stdin)
        with self.progress() as progress:
            result = services.recover(
                actor=actor, source=source, dry_run=dry_run, password=password, progress=progress
            )
        self.emit(seed.recovery(result), text.recovery(result))

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = "Show whether the failsafe is ready: password, backups, the last safe backup."

    def run(self, actor, **options):
        status = services.status(actor=actor)
        self.emit(seed.status(status), text.status(status))

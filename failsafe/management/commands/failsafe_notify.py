from django.core.management.base import CommandError

from failsafe import notify, services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Show where the failsafe's notifications go; with --test, send a test message to "
        "every channel and say how each took it (non-zero exit if any did not)."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--test", action="store_true", help="send a test message to every channel now"
        )

    def run(self, actor, *, test, **options):
        if not test:
            channels = services.notification_channels()
            self.emit(
                seed.notification_channels(channels),
                text.notification_channels(channels, how_to_configure=notify.HOW_TO_CONFIGURE),
            )
            return
        notification = services.send_test_notification(actor=actor)
        undelivered = notify.undelivered(notification)
        self.emit(
            seed.notification_test(notification, undelivered=undelivered),
            text.notification_test(notification, undelivered=undelivered),
        )
        if undelivered:
            raise CommandError(
                undelivered[0]
                if len(undelivered) == 1
                else f"{len(undelivered)} channels did not deliver the test message"
            )

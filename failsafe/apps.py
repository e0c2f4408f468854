from django.apps import AppConfig


class FailsafeConfig(AppConfig):
    name = "failsafe"
    verbose_name = "Failsafe"

    def ready(self):
        from . import checks  # noqa: F401 - registers the deployment checks

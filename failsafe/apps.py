from django.apps import AppConfig


class FailsafeConfig(AppConfig):
    name = "failsafe"
    verbose_name = "Failsafe"

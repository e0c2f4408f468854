from django.apps import AppConfig


class FailsafeConfig(AppConfig):
    name = "failsafe"
    verbose_name = "Failsafe"

    def ready(self):
        from axes.signals import user_locked_out
        from django.contrib.auth.signals import user_login_failed

        # checks registers the deployment checks by being imported.
        from . import checks, logins, signals  # noqa: F401

        # Failed logins and lockouts at every login door go to the audit trail.
        user_login_failed.connect(logins.audit_failed_login, dispatch_uid="failsafe.login")
        user_locked_out.connect(logins.audit_lockout, dispatch_uid="failsafe.lockout")
        # ...and a lockout tells someone.
        user_locked_out.connect(signals.notify_login_lockout, dispatch_uid="failsafe.notify")

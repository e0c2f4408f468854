from django.core.exceptions import PermissionDenied


class LicensingError(Exception):
    """Base of every licensing refusal; the message is shown to the user as is."""


class InvalidPasskey(LicensingError, PermissionDenied):
    """The server license passkey given does not match."""

    def __init__(self, message="Invalid server license passkey"):
        super().__init__(message)


class PasskeyNotIssued(LicensingError):
    """No server license passkey has been issued yet."""

    def __init__(self, message="Server license passkey not issued. Run manage.py raos_bootstrap"):
        super().__init__(message)


class FailsafePasswordNotSet(LicensingError):
    """An operation needs the failsafe password, and none is set."""

    def __init__(self, message="Failsafe password not set"):
        super().__init__(message)


class InvalidFailsafePassword(LicensingError, PermissionDenied):
    """The failsafe password given does not match."""

    def __init__(self, message="Invalid failsafe password"):
        super().__init__(message)


class WeakFailsafePassword(LicensingError):
    """The new failsafe password is refused by the length rule or Django's validators."""

    def __init__(self, messages: str | list[str]):
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        super().__init__(" ".join(self.messages))


class SuperAdminNameTaken(LicensingError):
    """Bootstrap was asked for a SuperAdmin whose username belongs to another role."""

    def __init__(self, username: str):
        super().__init__(
            f"User {username!r} exists and is not a SuperAdmin; choose another SuperAdmin name"
        )

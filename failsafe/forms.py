"""The forms of the admin pages and the terminal page.

They only collect input: the rules (length, validators, the current password) live in the
services, whose one-line refusals the views show. Secret fields never strip or re-render
what was typed.
"""

from django import forms

from .models import Backup

LAST_SAFE = ""
LIVE = "live"


def _secret_field(label: str, *, required: bool = True, autocomplete: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=required,
        strip=False,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": autocomplete, "spellcheck": "false"}
        ),
    )


class FailsafePasswordForm(forms.Form):
    """Set the failsafe password (twice), or change it (with the current one)."""

    current_password = _secret_field(
        "Current failsafe password", required=False, autocomplete="current-password"
    )
    password = _secret_field("New failsafe password", autocomplete="new-password")
    confirmation = _secret_field("Confirm the new failsafe password", autocomplete="new-password")

    def __init__(self, *args, changing: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.changing = changing
        if changing:
            self.fields["current_password"].required = True
        else:
            del self.fields["current_password"]
            self.fields["password"].label = "Failsafe password"
            self.fields["confirmation"].label = "Confirm the failsafe password"

    def clean(self):
        cleaned = super().clean()
        password, confirmation = cleaned.get("password"), cleaned.get("confirmation")
        if password is not None and confirmation is not None and password != confirmation:
            raise forms.ValidationError("The two passwords do not match; nothing was changed.")
        return cleaned


class TriggerForm(forms.Form):
    passkey = _secret_field("Server license passkey", autocomplete="off")
    reason = forms.CharField(
        label="Reason", required=False, max_length=500, help_text="Kept with the backup."
    )


class RestoreForm(forms.Form):
    failsafe_password = _secret_field("Failsafe password", autocomplete="current-password")
    allow_cascade = forms.BooleanField(
        label="Also delete the records listed above outside the backup",
        required=False,
    )
    without_pre_restore_backup = forms.BooleanField(
        label="Restore without a backup of the current state (only when it cannot be written)",
        required=False,
    )
    confirmation = forms.CharField(
        label="Backup id, typed to confirm restoring without a pre-restore backup",
        required=False,
        max_length=64,
    )
    force_password_reset = forms.BooleanField(
        label="Make the accounts listed above change their password at their next login",
        required=False,
    )
    accept_conflicts = forms.BooleanField(
        label="Restore the selected records despite the conflicts",
        required=False,
    )


class MarkSafeForm(forms.Form):
    failsafe_password = _secret_field("Failsafe password", autocomplete="current-password")
    accept_issues = forms.BooleanField(
        label="Mark it safe even if its comparison with the last safe backup has issues",
        required=False,
    )


class PasswordConfirmForm(forms.Form):
    """An admin action that lets retention delete what it kept (unpin, acknowledge)."""

    failsafe_password = _secret_field("Failsafe password", autocomplete="current-password")


class CompareForm(forms.Form):
    """The other side of a comparison: the last safe backup, the live database or a backup."""

    against = forms.ChoiceField(label="Compare with", required=False)

    def __init__(self, *args, backup: Backup, **kwargs):
        super().__init__(*args, **kwargs)
        others = Backup.objects.filter(status=Backup.Status.COMPLETE).exclude(pk=backup.pk)
        self.fields["against"].choices = [
            (LAST_SAFE, "The last safe backup"),
            (LIVE, "The live database"),
        ] + [(str(other.pk), _backup_label(other)) for other in others.order_by("-created_at")]


def _backup_label(backup: Backup) -> str:
    safe = ", safe" if backup.is_safe else ""
    return f"{backup.get_type_display()} {backup.created_at:%Y-%m-%d %H:%M:%S}{safe} ({backup.pk})"

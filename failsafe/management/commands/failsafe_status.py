from failsafe import services
from failsafe.management.base import FailsafeCommand


class Command(FailsafeCommand):
    help = "Show whether the failsafe is ready: password, backups, the last safe backup."

    def run(self, actor, **options):
        status = services.status(actor=actor)
        lines = [
            f"Failsafe password: {'set' if status.failsafe_password_set else 'NOT SET'}",
            f"Backups: {status.total_backups} ({status.safe_backups} safe)",
            f"Last safe backup: {status.last_safe_backup_id or 'none'}",
            f"Last backup at: {status.last_backup_at or 'never'}",
            f"System status: {status.system_status}",
        ]
        lines += [
            f"LOCKED: {lock['Action']} until {lock['LockedUntil']}" for lock in status.lockouts
        ]
        self.emit(status.to_seed_json(), "\n".join(lines))

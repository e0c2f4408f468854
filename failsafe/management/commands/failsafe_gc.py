from failsafe import services
from failsafe.management.base import FailsafeCommand


class Command(FailsafeCommand):
    help = "Delete the archive chunks no backup uses any more (never while a backup runs)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
        )

    def run(self, actor, *, dry_run, **options):
        report = services.collect_garbage(actor=actor, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        lines = [
            f"{report.deleted} unused chunks {verb} ({report.bytes_freed} bytes); "
            f"{report.referenced} of {report.chunks} chunks in use by {report.manifests} "
            f"manifests; {report.kept_recent} unused but younger than "
            f"{report.grace_seconds} s kept"
        ]
        if report.temp_files_deleted:
            lines.append(f"{report.temp_files_deleted} leftover temporary files {verb}")
        if report.missing:
            lines.append(
                self.style.ERROR(
                    f"{report.missing} chunks named by manifests are missing: "
                    "run failsafe_verify --all"
                )
            )
        if report.missing_manifests:
            lines.append(
                self.style.ERROR(
                    "Backups whose manifest is missing: " + ", ".join(report.missing_manifests)
                )
            )
        if report.orphan_manifests:
            lines.append(
                "Manifests no backup row points at (kept): " + ", ".join(report.orphan_manifests)
            )
        self.emit(report.to_seed_json(), "\n".join(lines))

"""The project's settings plus django-dbbackup, for the benchmark's dbbackup/dbrestore steps only.

django-dbbackup is an anchor of the benchmark, not part of RaOS: only the two child processes
that run its commands use this module (DJANGO_SETTINGS_MODULE=bench.settings), so every other
step measures the project exactly as it is configured. Its files go to BENCH_DBBACKUP_DIR, a
directory of the run's work directory: its backups in store/, its temporary files in tmp/.
"""

import os
from pathlib import Path

from raos.settings import *  # noqa: F403
from raos.settings import INSTALLED_APPS, STORAGES

INSTALLED_APPS = [*INSTALLED_APPS, "dbbackup"]
STORAGES = {
    **STORAGES,
    "dbbackup": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(Path(os.environ["BENCH_DBBACKUP_DIR"]) / "store")},
    },
}
# Its temporary files in the run's work directory too, never in a shared /tmp.
DBBACKUP_TMP_DIR = str(Path(os.environ["BENCH_DBBACKUP_DIR"]) / "tmp")
# It mails the ADMINS when a command fails; a benchmark reports the failure itself.
DBBACKUP_SEND_EMAIL = False

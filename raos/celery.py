"""The Celery application: `celery -A raos worker --beat` runs the failsafe's schedules.

Settings come from Django's (`CELERY_*`); tasks are found in each app's `tasks.py`.
"""

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "raos.settings")

app = Celery("raos")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# kombu's filesystem transport neither creates its folders nor says clearly that they are
# missing: whatever process first uses the app (a worker, beat, or one sending a task)
# creates them, private to its user, wherever CELERY_QUEUE_DIR points.
_FILESYSTEM_FOLDERS = ("data_folder_in", "data_folder_out", "control_folder")


@app.on_after_configure.connect
def _create_filesystem_broker_folders(sender, source, **kwargs) -> None:
    if not str(source.broker_url or "").startswith("filesystem://"):
        return
    options = source.broker_transport_options or {}
    for key in _FILESYSTEM_FOLDERS:
        if options.get(key):
            Path(options[key]).mkdir(mode=0o700, parents=True, exist_ok=True)

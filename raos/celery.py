"""The Celery application: `celery -A raos worker --beat` runs the failsafe's schedules.

Settings come from Django's (`CELERY_*`); tasks are found in each app's `tasks.py`.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "raos.settings")

app = Celery("raos")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

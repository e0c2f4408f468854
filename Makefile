# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
SUPERADMIN ?= superadmin
HOST ?= 127.0.0.1:8000

.PHONY: run test setup dev-setup migrate lint bench clean browser

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Two independent random keys: the audit chain's must not be derivable from SECRET_KEY.
.env:
	$(PYTHON) -c "import secrets; print('SECRET_KEY=' + secrets.token_urlsafe(50)); print('FAILSAFE_AUDIT_KEY=' + secrets.token_urlsafe(50))" > .env
	chmod 600 .env

var:
	mkdir -p var/static var/backups var/celery/queue var/celery/control

setup: $(VENV)/.installed .env var

migrate: setup
	$(PY) manage.py migrate --noinput

# The schedules (failsafe backups, retention, drift watch, drills...) run in one Celery
# worker with beat inside it, on the broker CELERY_BROKER_URL names (by default folders
# under var/celery, nothing to install); it stops when the web server does.
WORKER := $(VENV)/bin/celery -A raos worker --beat --scheduler django_celery_beat.schedulers:DatabaseScheduler -l info --concurrency 1

run: migrate
	$(PY) manage.py raos_bootstrap --superadmin $(SUPERADMIN) --no-input
	@echo "Serving on http://$(HOST)/ (admin at http://$(HOST)/admin/), schedules in a Celery worker"
	@$(WORKER) & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker' EXIT; \
	trap 'exit 130' INT TERM; \
	$(PY) manage.py runserver $(HOST)

# The browser tests drive Debian's Chromium: installed here when missing and running as
# root, else one line saying what to install. Never skipped.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq chromium; \
		else \
			echo "make test needs Chromium for the browser tests: sudo apt-get install -y chromium (or CHROMIUM=/path/to/chromium)" >&2; \
			exit 1; \
		fi; \
	fi

test: setup $(VENV)/.dev-installed browser
	CHROMIUM=$(CHROMIUM) $(PY) -m pytest

# The benchmark against its anchors, pg_dump/pg_restore, django-dbbackup and dumpdata/loaddata
# (bench/README.md): make bench ARGS="--rows 1000000"
bench: $(VENV)/.dev-installed .env var
	$(PY) bench/run.py $(ARGS)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

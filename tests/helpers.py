import io
import sys

from django.core.management import call_command


def run(name, *args, stdin=""):
    """Run a manage.py command with `stdin` as its standard input; return what it printed."""
    out = io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command(name, *args, stdout=out)
    finally:
        sys.stdin = old_stdin
    return out.getvalue()

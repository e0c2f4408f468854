"""The failsafe benchmark: ours against the tools a user would pick instead, on the same data.

    make bench                                   # 100 000 users on a fresh SQLite file
    make bench ARGS="--rows 1000000"
    make bench ARGS="--database-url postgres://postgres@127.0.0.1:5432/x"
    .venv/bin/python bench/run.py --rows 300 --json

Builds a fresh database (a SQLite file under var/bench/, or a new raos_bench_* database on
the PostgreSQL server of --database-url / DATABASE_URL; the database named in the URL is
never touched), then runs every measurement in its own child process and prints a table of
ratios against the targets of issue 14: pg_dump -Fc / pg_restore (PostgreSQL), django-dbbackup
and dumpdata/loaddata are the anchors. It exits 0 even when a target is missed (--strict
makes that exit 1) and 2 when a step fails. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Run as a script, this file's directory is on sys.path, not the project's.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_ROWS = 100_000
MIN_ROWS = 100


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=DEFAULT_ROWS,
        help="users to build (licenses: a third of that); default %(default)s",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or "sqlite",
        help="a postgres:// URL to run on that server in a fresh raos_bench_* "
        "database; anything else runs on a fresh SQLite file "
        "(default: DATABASE_URL, else SQLite)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=[
            *("dumpdata", "loaddata", "pg_dump", "pg_restore", "dbbackup", "dbrestore"),
            "replica",
        ],
        help="leave out an anchor or the replica step (dumpdata also drops loaddata, pg_dump "
        "pg_restore, dbbackup dbrestore)",
    )
    parser.add_argument(
        "--hashes",
        choices=["unique", "shared"],
        default="unique",
        help="password hashes: unique per user, as on a real server (default), or one shared "
        "by all users, which is unrealistic but shows what the hashes cost in the archive",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    parser.add_argument(
        "--json-out", type=Path, metavar="FILE", help="also write the JSON result to FILE"
    )
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="the --json (or --json-out) result of an earlier, smaller run: checks that the "
        "time per million rows of backup, compare and restore stayed flat and that peak "
        "memory grew at most 1.2x since",
    )
    parser.add_argument(
        "--memory-baseline",
        type=Path,
        metavar="FILE",
        help="as --baseline, for the peak memory only",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="FILE",
        help="run nothing: print the table of an earlier --json result (with --markdown, "
        "as in docs/benchmarks.md)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the database and the work directory under var/bench/",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="STEP",
        help="run STEP (e.g. backup, restore, compare_1pct) under pyinstrument; "
        "the text profile goes to var/bench/profiles/ (its timings then include "
        "the profiler's overhead)",
    )
    # Internal: the parent runs each step as `run.py --child STEP`.
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser


def _memory_baseline(path: Path) -> dict:
    from bench import report

    earlier = json.loads(path.read_text())
    _step, peak = report.our_peak(earlier["measurements"], "data_peak_rss_bytes")
    return {"rows": earlier["rows"], "peak_rss_bytes": peak, "file": str(path)}


def _time_baseline(path: Path) -> dict:
    from bench import report

    earlier = json.loads(path.read_text())
    return {
        "rows": earlier["rows"],
        "seconds": {
            name: earlier["measurements"][name]["seconds"]
            for name in report.SCALING_STEPS
            if name in earlier["measurements"]
        },
        "file": str(path),
    }


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        import django

        # Set up before bench.steps is imported: it imports models at its top.
        django.setup()
        from bench import steps

        steps.run_child(step=args.child, workdir=args.workdir, result_path=args.result)
        return 0

    from bench import runner

    if args.render:
        doc = json.loads(args.render.read_text())
        return _print(doc, args)

    if args.rows < MIN_ROWS:
        print(f"--rows must be at least {MIN_ROWS}", file=sys.stderr)
        return 2
    run = runner.Run(
        rows=args.rows,
        seed=args.seed,
        hashes=args.hashes,
        database_url=args.database_url,
        skip=set(args.skip),
        keep=args.keep,
        progress=not args.quiet,
        profile=set(args.profile),
    )
    try:
        doc = run.execute()
    except runner.BenchError as exc:
        print(exc, file=sys.stderr)
        return 2
    doc["command"] = runner.command_line(argv)
    return _print(doc, args)


def _print(doc: dict, args: argparse.Namespace) -> int:
    from bench import report

    if args.baseline:
        doc["memory_baseline"] = _memory_baseline(args.baseline)
        doc["time_baseline"] = _time_baseline(args.baseline)
    if args.memory_baseline:
        doc["memory_baseline"] = _memory_baseline(args.memory_baseline)
    # Worked out afresh from the measurements, so --render applies today's targets.
    doc["targets"] = report.targets(doc)
    doc["all_targets_met"] = report.all_met(doc["targets"])
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"$ {doc['command']}")
        print(report.render(doc, markdown=args.markdown))
    return report.exit_code(doc["targets"], strict=args.strict)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Turns a run's measurements into the target table (text, markdown or JSON rows).

Pure functions over the run document, with no Django, so the tests can render a table from
any document and the parent process stays small. The targets are issue 14's: each anchor
(pg_dump -Fc / pg_restore on PostgreSQL, dumpdata/loaddata on SQLite) is measured in the
same run on the same data and every ratio is printed; django-dbbackup's ratios are info.
"""

from __future__ import annotations

MB = 1_000_000

# PostgreSQL: ours against the tools a DBA would use.
PG_DUMP_FACTOR = 2
PG_RESTORE_FACTOR = 3
# SQLite: ours against Django's own dump and load.
SQLITE_BACKUP_SPEEDUP = 100
SQLITE_RESTORE_SPEEDUP = 50
SCATTERED_SHARE = 0.10
CLUSTERED_SHARE = 0.02
FLOOR_FACTOR = 1.3
ZSTD_JSON_SHARE = 0.7
DATA_PEAK_LIMIT = 100 * MB
PROCESS_PEAK_LIMIT = 200 * MB
PEAK_MEMORY_GROWTH = 1.2
TIME_PER_ROW_GROWTH = 1.2
COMPARE_LIVE_FACTOR = 1.0
COMPARE_SHARE = 0.10
MILLION = 1_000_000

# Our steps whose memory the peak-memory target covers.
OUR_STEPS = (
    "backup",
    "mark_safe",
    "backup_unchanged",
    "backup_unchanged_reverify",
    "backup_with_replica",
    "backup_after_clustered",
    "compare_live",
    "compare_1pct",
    "trigger",
    "backup_after_scattered",
    "backup_after_everywhere",
    "compare_everywhere",
    "restore",
)
# Whose time per million rows must stay flat from a --baseline run to this one.
SCALING_STEPS = ("backup", "compare_live", "restore")

RESULT_TEXT = {True: "pass", False: "FAIL", None: "info"}


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms"


def bytes_text(size: int | None) -> str:
    if size is None:
        return "—"
    if size >= 10 * MB:
        return f"{size / MB:.0f} MB"
    if size >= MB:
        return f"{size / MB:.1f} MB"
    if size >= 1000:
        return f"{size / 1000:.1f} kB"
    return f"{size} B"


def _step_text(step: dict | None) -> str:
    if not step:
        return "skipped"
    return f"{seconds_text(step['seconds'])}, {bytes_text(step.get('peak_rss_bytes'))}"


def _row(
    what,
    *,
    ours,
    ours_text,
    baseline=None,
    baseline_text="—",
    ratio=None,
    ratio_text="—",
    target="—",
    passed=None,
) -> dict:
    return {
        "what": what,
        "ours": ours,
        "ours_text": ours_text,
        "baseline": baseline,
        "baseline_text": baseline_text,
        "ratio": ratio,
        "ratio_text": ratio_text,
        "target": target,
        "passed": passed,
    }


def _skipped_text(doc: dict, name: str) -> str:
    reason = doc.get("skipped", {}).get(name)
    return f"{name} skipped: {reason}" if reason else f"{name} skipped"


def _speed_row(
    doc: dict,
    what: str,
    ours: dict,
    anchor_name: str,
    speedup: float | None,
) -> dict:
    """How many times faster ours is than the anchor; checked unless `speedup` is None."""
    target = f"≥ {speedup:g}× faster than {anchor_name}" if speedup else "— (info)"

    def ratio_of(ours_seconds: float, anchor_seconds: float) -> tuple[float, str, bool | None]:
        ratio = anchor_seconds / ours_seconds
        text = f"{ratio:.1f}× faster" if ratio >= 1 else f"{1 / ratio:.1f}× slower"
        return ratio, text, None if speedup is None else ratio >= speedup

    return _anchor_row(doc, what, ours, anchor_name, target, ratio_of)


def _time_factor_row(
    doc: dict, what: str, ours: dict, anchor_name: str, factor: float | None
) -> dict:
    """Ours as a multiple of the anchor's time; checked against `factor` unless None."""
    target = f"≤ {factor:g}× {anchor_name}" if factor else "— (info)"

    def ratio_of(ours_seconds: float, anchor_seconds: float) -> tuple[float, str, bool | None]:
        ratio = ours_seconds / anchor_seconds
        return ratio, f"{ratio:.2f}× {anchor_name}'s time", None if factor is None else (
            ratio <= factor
        )

    return _anchor_row(doc, what, ours, anchor_name, target, ratio_of)


def _anchor_row(doc: dict, what: str, ours: dict, anchor_name: str, target: str, ratio_of):
    """Ours against an anchor measured in the same run; the anchor's skip reason if none."""
    anchor = doc["measurements"].get(anchor_name)
    if not anchor:
        return _row(
            what,
            ours=ours["seconds"],
            ours_text=_step_text(ours),
            baseline_text=_skipped_text(doc, anchor_name),
            target=target,
        )
    ratio, ratio_text, passed = ratio_of(ours["seconds"], anchor["seconds"])
    return _row(
        what,
        ours=ours["seconds"],
        ours_text=_step_text(ours),
        baseline=anchor["seconds"],
        baseline_text=_step_text(anchor),
        ratio=ratio,
        ratio_text=ratio_text,
        target=target,
        passed=passed,
    )


def _share_row(
    what: str,
    ours: int,
    whole: int | None,
    whole_text: str,
    share: float | None,
    *,
    target_text: str | None = None,
) -> dict:
    """`ours` as a share of `whole`; checked against `share` unless it is None."""
    if not whole:
        return _row(
            what,
            ours=ours,
            ours_text=bytes_text(ours),
            baseline_text=whole_text,
            target=target_text or "—",
        )
    ratio = ours / whole
    return _row(
        what,
        ours=ours,
        ours_text=bytes_text(ours),
        baseline=whole,
        baseline_text=whole_text,
        ratio=ratio,
        ratio_text=f"{ratio:.1%}" if ratio < 1 else f"{ratio:.2f}×",
        target=target_text or (f"≤ {share:.0%}" if share is not None else "— (info)"),
        passed=None if share is None else ratio <= share,
    )


def _info_row(what: str, step: dict | None, note: str = "—") -> dict:
    return _row(
        what, ours=step["seconds"] if step else None, ours_text=_step_text(step), target=note
    )


def our_peak(measurements: dict, key: str = "peak_rss_bytes") -> tuple[str, int]:
    """The step of ours with the highest peak resident memory, and that peak.

    `key` "data_peak_rss_bytes" leaves out the argon2 secret checks (see bench/steps.py).
    """
    peaks = {
        name: measurements[name].get(key) or measurements[name]["peak_rss_bytes"]
        for name in OUR_STEPS
        if name in measurements
    }
    name = max(peaks, key=peaks.get)
    return name, peaks[name]


def targets(doc: dict) -> list[dict]:
    m = doc["measurements"]
    on_postgres = doc["database"]["vendor"] == "postgresql"
    rows = _anchor_rows(doc, on_postgres=on_postgres)
    rows += _size_rows(doc)
    rows += _memory_rows(doc)
    rows += _scaling_rows(doc)
    rows.append(
        _time_factor_row(
            doc,
            "compare live vs the safe backup (after the clustered 1% change) vs the backup",
            m["compare_live"],
            "backup",
            COMPARE_LIVE_FACTOR,
        )
    )
    ratio = m["compare_1pct"]["seconds"] / m["compare_everywhere"]["seconds"]
    rows.append(
        _row(
            "compare two backups 1% apart vs two that differ everywhere",
            ours=m["compare_1pct"]["seconds"],
            ours_text=_step_text(m["compare_1pct"]),
            baseline=m["compare_everywhere"]["seconds"],
            baseline_text=_step_text(m["compare_everywhere"]),
            ratio=ratio,
            ratio_text=f"{ratio:.1%}",
            target=f"≤ {COMPARE_SHARE:.0%}",
            passed=ratio <= COMPARE_SHARE,
        )
    )
    rows += [
        _info_row("emergency trigger end to end (backup, compare, investigate)", m["trigger"]),
        _info_row("mark safe (verifies the whole archive)", m["mark_safe"]),
        _info_row("2nd backup after the clustered 1% change: time", m["backup_after_clustered"]),
    ]
    rows += _reverification_rows(m)
    rows += _replica_rows(doc)
    return rows


def _anchor_rows(doc: dict, *, on_postgres: bool) -> list[dict]:
    """Ours against each tool a user would pick instead. On PostgreSQL the targets are set
    against pg_dump/pg_restore, on SQLite against dumpdata/loaddata; the others are info."""
    m = doc["measurements"]
    backup, restore = m["backup"], m["restore"]
    restore_what = "restore into an emptied scope (incl. pre-restore backup, verify)"
    rows = []
    if on_postgres:
        rows += [
            _time_factor_row(
                doc,
                f"backup vs {_pg_dump_name(m)} of the same tables",
                backup,
                "pg_dump",
                # The target is set against -Fc; an older plain dump's ratio is info.
                PG_DUMP_FACTOR if _pg_dump_name(m) == "pg_dump -Fc" else None,
            ),
            _time_factor_row(
                doc,
                f"{restore_what} vs pg_restore into an empty copy of the schema",
                restore,
                "pg_restore",
                PG_RESTORE_FACTOR,
            ),
        ]
    rows += [
        _speed_row(
            doc,
            "backup (create_backup) vs dumpdata",
            backup,
            "dumpdata",
            None if on_postgres else SQLITE_BACKUP_SPEEDUP,
        ),
        _speed_row(
            doc,
            f"{restore_what} vs loaddata",
            restore,
            "loaddata",
            None if on_postgres else SQLITE_RESTORE_SPEEDUP,
        ),
        _speed_row(doc, "backup vs django-dbbackup's dbbackup", backup, "dbbackup", None),
        _speed_row(doc, f"{restore_what} vs dbrestore", restore, "dbrestore", None),
    ]
    return rows


def _pg_dump_name(m: dict) -> str:
    # Results from before issue 14 hold a plain --data-only dump: named as such.
    if "pg_dump" in m and m["pg_dump"].get("format") != "custom":
        return "pg_dump --data-only (plain, before issue 14)"
    return "pg_dump -Fc"


def _size_rows(doc: dict) -> list[dict]:
    m = doc["measurements"]
    full_bytes = m["backup"]["bytes_written"]
    full_text = f"{bytes_text(full_bytes)} (full backup)"
    realistic = doc["dataset"].get("password_hashes", "unique") == "unique"
    rows = [
        _share_row(
            "2nd backup after a scattered 1% update: bytes written",
            m["backup_after_scattered"]["bytes_written"],
            full_bytes,
            full_text,
            SCATTERED_SHARE,
        ),
        _share_row(
            "2nd backup after the clustered 1% change: bytes written",
            m["backup_after_clustered"]["bytes_written"],
            full_bytes,
            full_text,
            CLUSTERED_SHARE,
        ),
    ]
    floor = doc["dataset"].get("incompressible_floor")
    if floor:
        rows.append(
            _share_row(
                "archive size vs the incompressible floor of the data",
                full_bytes,
                floor["bytes"],
                f"{bytes_text(floor['bytes'])} (floor)",
                FLOOR_FACTOR if realistic else None,
                target_text=f"≤ {FLOOR_FACTOR:g}× (unique hashes)",
            )
        )
    dump = m.get("dumpdata")
    rows.append(
        _share_row(
            "archive size vs dumpdata's JSON through zstd -3",
            full_bytes,
            dump and dump["zstd_bytes"],
            bytes_text(dump["zstd_bytes"]) if dump else _skipped_text(doc, "dumpdata"),
            ZSTD_JSON_SHARE if realistic else None,
            target_text=f"≤ {ZSTD_JSON_SHARE:.0%} (unique hashes)",
        )
    )
    for anchor, label in (
        ("dumpdata", "dumpdata's JSON"),
        ("pg_dump", _pg_dump_name(m)),
        ("dbbackup", "django-dbbackup's file (whole database)"),
    ):
        step = m.get(anchor)
        if step:
            rows.append(
                _share_row(
                    f"archive size vs {label}",
                    full_bytes,
                    step["bytes"],
                    bytes_text(step["bytes"]),
                    None,
                )
            )
    return rows


def _memory_rows(doc: dict) -> list[dict]:
    m = doc["measurements"]
    anchors = [m[name] for name in ("dumpdata", "loaddata") if name in m]
    anchor_peak = max((step["peak_rss_bytes"] for step in anchors), default=None)
    anchor_text = f"{bytes_text(anchor_peak)} (dumpdata/loaddata)" if anchor_peak else "—"
    rows = []
    for what, key, limit in (
        ("peak memory without the argon2 secret check", "data_peak_rss_bytes", DATA_PEAK_LIMIT),
        ("peak memory, whole process", "peak_rss_bytes", PROCESS_PEAK_LIMIT),
    ):
        peak_step, peak = our_peak(m, key)
        rows.append(
            _row(
                f"{what} (highest: {peak_step})",
                ours=peak,
                ours_text=bytes_text(peak),
                baseline=anchor_peak,
                baseline_text=anchor_text,
                target=f"≤ {limit // MB} MB",
                passed=peak <= limit,
            )
        )
    earlier = doc.get("memory_baseline")
    if earlier:
        _step, peak = our_peak(m, "data_peak_rss_bytes")
        growth = peak / earlier["peak_rss_bytes"]
        rows.append(
            _row(
                f"peak memory without argon2, growth from {earlier['rows']:,} rows",
                ours=peak,
                ours_text=bytes_text(peak),
                baseline=earlier["peak_rss_bytes"],
                baseline_text=bytes_text(earlier["peak_rss_bytes"]),
                ratio=growth,
                ratio_text=f"{growth:.2f}×",
                target=f"≤ {PEAK_MEMORY_GROWTH}×",
                passed=growth <= PEAK_MEMORY_GROWTH,
            )
        )
    return rows


def _per_million(seconds: float, rows: int) -> float:
    return seconds / rows * MILLION


def _scaling_rows(doc: dict) -> list[dict]:
    """Time per million rows against a --baseline run's: flat means linear."""
    earlier = doc.get("time_baseline")
    if not earlier:
        return []
    rows = []
    for name in SCALING_STEPS:
        then = earlier["seconds"].get(name)
        step = doc["measurements"].get(name)
        if not (then and step):
            continue
        now_rate = _per_million(step["seconds"], doc["rows"])
        then_rate = _per_million(then, earlier["rows"])
        growth = now_rate / then_rate
        rows.append(
            _row(
                f"{name}: time per million rows, from {earlier['rows']:,} to {doc['rows']:,} rows",
                ours=now_rate,
                ours_text=f"{seconds_text(now_rate)} / 1M rows",
                baseline=then_rate,
                baseline_text=f"{seconds_text(then_rate)} / 1M rows",
                ratio=growth,
                ratio_text=f"{growth:.2f}×",
                target=f"≤ {TIME_PER_ROW_GROWTH}× (flat)",
                passed=growth <= TIME_PER_ROW_GROWTH,
            )
        )
    return rows


def _reverification_rows(m: dict) -> list[dict]:
    """What trusting no stored chunk blindly costs a backup that reuses every chunk: with
    the chunk index fresh (a stat per chunk), and re-reading every one (the index stale)."""
    fresh, reread = m.get("backup_unchanged"), m.get("backup_unchanged_reverify")
    if not (fresh and reread):
        return []  # a result from before these steps existed
    full = m["backup"]
    of_full = fresh["seconds"] / full["seconds"]
    cost = reread["seconds"] / fresh["seconds"]
    return [
        _row(
            "2nd backup of unchanged data, chunk index fresh (no chunk read)",
            ours=fresh["seconds"],
            ours_text=_step_text(fresh),
            baseline=full["seconds"],
            baseline_text=f"{_step_text(full)} (full backup)",
            ratio=of_full,
            ratio_text=f"{of_full:.0%} of the full backup",
        ),
        _row(
            f"verify-on-reuse: 2nd backup of unchanged data re-reading all "
            f"{reread.get('chunks_reverified', '?')} reused chunks (CHUNK_REVERIFY_SECONDS=0)",
            ours=reread["seconds"],
            ours_text=_step_text(reread),
            baseline=fresh["seconds"],
            baseline_text=f"{_step_text(fresh)} (index fresh)",
            ratio=cost,
            ratio_text=f"{cost:.2f}× the index-fresh time",
        ),
    ]


def _replica_rows(doc: dict) -> list[dict]:
    """What one file:// replica adds to a backup: the same unchanged backup with and
    without it. The replica starts empty, so that backup copies every chunk it names."""
    m = doc["measurements"]
    with_replica, without = m.get("backup_with_replica"), m.get("backup_unchanged")
    if not (with_replica and without):
        return []
    cost = with_replica["seconds"] / without["seconds"]
    return [
        _row(
            "backup with one file:// replica (empty at first) vs the same without",
            ours=with_replica["seconds"],
            ours_text=_step_text(with_replica),
            baseline=without["seconds"],
            baseline_text=f"{_step_text(without)} (backup_unchanged)",
            ratio=cost,
            ratio_text=f"{cost:.2f}× the time",
        ),
        _share_row(
            "bytes that backup wrote to the replica vs the full backup's",
            with_replica["replica_bytes_written"],
            m["backup"]["bytes_written"],
            f"{bytes_text(m['backup']['bytes_written'])} (full backup)",
            None,
        ),
    ]


def all_met(rows: list[dict]) -> bool:
    return all(row["passed"] is not False for row in rows)


def exit_code(rows: list[dict], *, strict: bool) -> int:
    return 1 if strict and not all_met(rows) else 0


def _grid(headers: list[str], lines: list[list[str]], *, markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(cells[i]) for cells in [headers, *lines]) for i in range(len(headers))]
    render = [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in [headers, *lines]
    ]
    render.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(render)


def target_table(rows: list[dict], *, markdown: bool = False) -> str:
    headers = ["what", "ours", "baseline", "ratio", "target", "result"]
    lines = [
        [
            row["what"],
            row["ours_text"],
            row["baseline_text"],
            row["ratio_text"],
            row["target"],
            RESULT_TEXT[row["passed"]],
        ]
        for row in rows
    ]
    return _grid(headers, lines, markdown=markdown)


def step_table(measurements: dict, *, markdown: bool = False) -> str:
    headers = ["step", "time", "process", "peak RSS", "without argon2", "bytes written"]
    lines = [
        [
            name,
            seconds_text(step["seconds"]),
            seconds_text(step.get("process_seconds")),
            bytes_text(step.get("peak_rss_bytes")),
            bytes_text(step.get("data_peak_rss_bytes"))
            if step.get("data_peak_rss_bytes") != step.get("peak_rss_bytes")
            else "same",
            bytes_text(step.get("bytes_written", step.get("bytes"))),
        ]
        for name, step in measurements.items()
    ]
    return _grid(headers, lines, markdown=markdown)


def machine_lines(doc: dict) -> list[str]:
    machine, database = doc["machine"], doc["database"]
    memory = machine.get("memory_bytes")
    return [
        f"machine: {machine['cpu']}, {machine['cores']} cores, "
        f"{memory / 1e9:.1f} GB RAM, {machine['os']}"
        if memory
        else machine["cpu"],
        f"python {machine['python']}, django {database.get('django')}, "
        f"database {database['vendor']} {database.get('version')}",
        *_code_line(doc.get("code")),
    ]


def _code_line(code: dict | None) -> list[str]:
    if not code:
        return []
    return [f"code: commit {code['commit']} with {code['modified_files']} modified files"]


def render(doc: dict, *, markdown: bool = False) -> str:
    dataset = doc["dataset"]
    parts = [
        *machine_lines(doc),
        f"rows: {dataset['users']:,} users, {dataset['licenses']:,} licenses, "
        f"{dataset['groups']} groups, {dataset['user_groups']:,} user-group links, "
        f"{dataset.get('password_hashes', 'unique')} password hashes "
        f"(built in {seconds_text(dataset['build_seconds'])})",
        "",
        "The 1% change:",
        *(f"  {change['definition']}" for change in doc["changes"].values()),
        "",
        target_table(doc["targets"], markdown=markdown),
        "",
        "Time is the operation inside its own process; process adds interpreter and Django",
        'start-up. Peak RSS is each child process\'s own high-water mark; "without argon2"',
        "leaves out the 100 MB the passkey or failsafe-password check allocates.",
        "",
        step_table(doc["measurements"], markdown=markdown),
    ]
    for name, reason in doc.get("skipped", {}).items():
        parts.append(f"skipped {name}: {reason}")
    for name, step in doc["measurements"].items():
        if step.get("profile"):
            parts.append(f"profiled {name} (its numbers include the profiler): {step['profile']}")
    return "\n".join(parts)

"""Turns a run's measurements into the target table (text, markdown or JSON rows).

Pure functions over the run document, with no Django, so the tests can render a table from
any document and the parent process stays small.
"""

from __future__ import annotations

MB = 1_000_000

BACKUP_SPEEDUP = 30
RESTORE_SPEEDUP = 20
PEAK_MEMORY_LIMIT = 150 * MB
PEAK_MEMORY_GROWTH = 1.5
ARCHIVE_SHARE = 0.05
INCREMENTAL_SHARE = 0.05
COMPARE_SHARE = 0.10

# Our steps whose memory the peak-memory target covers.
OUR_STEPS = (
    "backup",
    "mark_safe",
    "backup_unchanged",
    "backup_unchanged_reverify",
    "backup_after_clustered",
    "compare_live",
    "compare_1pct",
    "trigger",
    "backup_after_scattered",
    "backup_after_everywhere",
    "compare_everywhere",
    "restore",
)

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


def _speed_row(
    what: str, ours: dict, baseline: dict | None, baseline_name: str, speedup: float
) -> dict:
    target = f"≥ {speedup:g}× faster than {baseline_name}"
    if not baseline:
        return _row(
            what,
            ours=ours["seconds"],
            ours_text=_step_text(ours),
            baseline_text=f"{baseline_name} skipped",
            target=target,
        )
    ratio = baseline["seconds"] / ours["seconds"]
    return _row(
        what,
        ours=ours["seconds"],
        ours_text=_step_text(ours),
        baseline=baseline["seconds"],
        baseline_text=_step_text(baseline),
        ratio=ratio,
        ratio_text=f"{ratio:.1f}× faster",
        target=target,
        passed=ratio >= speedup,
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
        ratio_text=f"{ratio:.1%}",
        target=target_text or (f"≤ {share:.0%}" if share is not None else "—"),
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
    dump, load, pg = m.get("dumpdata"), m.get("loaddata"), m.get("pg_dump")
    full_bytes = m["backup"]["bytes_written"]
    rows = [
        _speed_row("backup (create_backup)", m["backup"], dump, "dumpdata", BACKUP_SPEEDUP),
        _speed_row(
            "restore into an emptied scope (incl. pre-restore backup, verify)",
            m["restore"],
            load,
            "loaddata",
            RESTORE_SPEEDUP,
        ),
    ]
    if pg:
        ratio = m["backup"]["seconds"] / pg["seconds"]
        rows.append(
            _row(
                "backup vs pg_dump of the same tables (the floor)",
                ours=m["backup"]["seconds"],
                ours_text=_step_text(m["backup"]),
                baseline=pg["seconds"],
                baseline_text=_step_text(pg),
                ratio=ratio,
                ratio_text=f"{ratio:.1f}× pg_dump's time",
                target="— (floor)",
            )
        )
    baseline_peak = max((s["peak_rss_bytes"] for s in (dump, load) if s), default=None)
    for what, key in (
        ("peak memory, whole process", "peak_rss_bytes"),
        ("peak memory without the argon2 secret check", "data_peak_rss_bytes"),
    ):
        peak_step, peak = our_peak(m, key)
        rows.append(
            _row(
                f"{what} (highest: {peak_step})",
                ours=peak,
                ours_text=bytes_text(peak),
                baseline=baseline_peak,
                baseline_text=f"{bytes_text(baseline_peak)} (dumpdata/loaddata)"
                if baseline_peak
                else "—",
                target=f"≤ {PEAK_MEMORY_LIMIT // MB} MB (at 1M rows)",
                passed=peak <= PEAK_MEMORY_LIMIT,
            )
        )
    earlier = doc.get("memory_baseline")
    if earlier:
        _step, peak = our_peak(m, "data_peak_rss_bytes")
        growth = peak / earlier["peak_rss_bytes"]
        rows.append(
            _row(
                f"peak memory growth from {earlier['rows']:,} rows",
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
    rows.append(
        _share_row(
            "archive size vs dumpdata's JSON",
            full_bytes,
            dump and dump["bytes"],
            bytes_text(dump["bytes"]) if dump else "dumpdata skipped",
            ARCHIVE_SHARE,
        )
    )
    if dump:
        rows.append(
            _share_row(
                "archive size vs dumpdata's JSON through zstd -3",
                full_bytes,
                dump["zstd_bytes"],
                bytes_text(dump["zstd_bytes"]),
                None,
            )
        )
    rows.append(
        _share_row(
            "2nd backup after the clustered 1% change: bytes written",
            m["backup_after_clustered"]["bytes_written"],
            full_bytes,
            f"{bytes_text(full_bytes)} (full backup)",
            INCREMENTAL_SHARE,
        )
    )
    rows.append(
        _share_row(
            "2nd backup after a scattered 1% update: bytes written",
            m["backup_after_scattered"]["bytes_written"],
            full_bytes,
            f"{bytes_text(full_bytes)} (full backup)",
            None,
            target_text="— (the 5% target is for the clustered change)",
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
        _info_row(
            "compare live vs the safe backup after the clustered 1% change", m["compare_live"]
        ),
        _info_row("emergency trigger end to end (backup, compare, investigate)", m["trigger"]),
        _info_row("mark safe (verifies the whole archive)", m["mark_safe"]),
        _info_row("2nd backup after the clustered 1% change: time", m["backup_after_clustered"]),
    ]
    rows += _reverification_rows(m)
    return rows


def _reverification_rows(m: dict) -> list[dict]:
    """What trusting no stored chunk blindly costs a backup that reuses every chunk: with
    the chunk index fresh (a stat per chunk), and re-reading every one (the index stale)."""
    fresh, reread = m.get("backup_unchanged"), m.get("backup_unchanged_reverify")
    if not (fresh and reread):
        return []  # a result from before these steps existed
    full = m["backup"]
    of_full = fresh["seconds"] / full["seconds"]
    extra = reread["seconds"] / fresh["seconds"] - 1
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
            f"2nd backup of unchanged data re-reading all {reread.get('chunks_reverified', '?')} "
            "reused chunks (CHUNK_REVERIFY_SECONDS=0)",
            ours=reread["seconds"],
            ours_text=_step_text(reread),
            baseline=fresh["seconds"],
            baseline_text=f"{_step_text(fresh)} (index fresh)",
            ratio=extra,
            ratio_text=f"{extra:+.0%} time",
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

"""What changed in a page's numbers since its committed version, said on the page itself.

A page is regenerated whenever its summary changes (new code, a rebuild from a clean folder).
A reader, and a reviewer of a refactor that must not change results, wants to know whether the
numbers moved without diffing markdown by hand. :func:`compare_pages` reads the tables of the
previous page and of the new one and says, in one line, whether every number is the same;
timing columns (latency, speed-up, wall seconds) are wall-clock measurements that vary from run
to run, so they are left out of the comparison and named as such.
"""

from __future__ import annotations

import re

# Wall-clock columns: measured again on every run, never expected to repeat exactly.
TIMING = re.compile(r"latency|speedup|_ms$|wall|_s$")
COMMIT = re.compile(r"^- commit: `([0-9a-f]{7,40})`", re.M)


def tables(markdown: str) -> dict[tuple[str, str], list[list[str]]]:
    """Every markdown table of a page as rows of cells, keyed by (the heading above it, its header row)."""
    found: dict[tuple[str, str], list[list[str]]] = {}
    heading, header, rows = "", None, []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = " | ".join(cells)
            elif not all(set(c) <= {"-", ":"} for c in cells):
                rows.append(cells)
            continue
        if header is not None:
            found[(heading, header)] = rows
            header, rows = None, []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return found


def compare_pages(old: str, new: str) -> str:
    """One line for the page's header: its numbers against those of the committed page ``old``."""
    since = COMMIT.search(old)
    where = f"the committed page (made at `{since.group(1)[:12]}`)" if since else "the committed page"
    before, after = tables(old), tables(new)
    changed, timing, compared, first = 0, 0, 0, None
    for key in after.keys() & before.keys():
        columns = key[1].split(" | ")
        old_rows, new_rows = before[key], after[key]
        if len(old_rows) != len(new_rows):
            changed += 1
            first = first or f"table '{key[0]}' has {len(new_rows)} rows, was {len(old_rows)}"
            continue
        for old_row, new_row in zip(old_rows, new_rows):
            for column, a, b in zip(columns, old_row, new_row):
                if TIMING.search(column):
                    timing += a != b
                    continue
                compared += 1
                if a != b:
                    changed += 1
                    first = first or f"table '{key[0]}', row '{' '.join(new_row[:2])}', {column}: {a} -> {b}"
    gone = len(before.keys() - after.keys()) + len(after.keys() - before.keys())
    timing_note = (f" ({timing} timing cells differ: latency and speed-up are wall-clock, measured again on every run)"
                   if timing else "")
    if not changed and not gone:
        return f"- numbers: every one of the {compared} non-timing cells equals {where}'s{timing_note}"
    tables_note = f"; {gone} table(s) added or removed" if gone else ""
    return (f"- numbers: {changed} of {compared} non-timing cells differ from {where}'s (first: {first})"
            f"{tables_note}{timing_note}")

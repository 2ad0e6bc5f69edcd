"""The pipeline's pages: results/<name>/summary + plots -> docs/results/<page>.md and the
figures beside it in docs/results/<page>/ (the workflow's ``pages`` rule).

One page per config set: the base config alone is page ``<name>`` (results/<name>/summary,
plots); a base config with overlays, which share its experiment name and so its trained models,
is page ``<name>_<overlays>`` with its own results/<name>/summary_<overlays>, plots_<overlays>
(``page_name``, ``page_folder``), so the base grid's page and each overlay's never overwrite
one another.

A page holds only what the pipeline wrote (the summary's tables, its plots, its
provenance.json), headed by the command that reproduces it, the commit, the machine and the
time the jobs took, so that a number in the docs can always be traced to a run. Built by
the workflow's ``pages`` rule (``make pages CONFIG=...``), which reruns when the summary changes.
The micro-benchmarks' page, docs/results/microbench.md, is made the same way from
bench/results (``make bench-page``; its rules in :mod:`seqcomp.publish.bench`).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import yaml

from seqcomp.errors import ConfigError, SeqcompError, shown
from seqcomp.io import atomic_path, read_json
from seqcomp.publish.compare import compare_pages
from seqcomp.publish.markdown import duration, header
from seqcomp.publish.record import git, machine_line, workflow_command
from seqcomp.summary import PLOTS

# summary tables in page order; each file's title becomes its section heading; an empty file
# (sweep.md of a config whose passes sweep no sizes, transfer.md of one without pre-trained
# models, experts.md of one without mixture-of-experts models) is no section
SECTIONS = ("headline.md", "published.md", "transfer.md", "compression.md", "experts.md", "sweep.md", "results.md")
# What a config file's name may hold: an overlay's becomes a folder (results/<name>/summary_<stem>), a
# Snakemake output pattern (where { } are wildcards) and a page file (docs/results/<page>.md).
CONFIG_STEM = re.compile(r"[A-Za-z0-9_.+ -]+")


def config_name(config_files: list[str]) -> str:
    """The experiment name of a --configfile list: the last file that sets ``name`` wins, as in Snakemake."""
    name = None
    for path in config_files:
        if not Path(path).is_file():
            raise SeqcompError(f"config file {path} does not exist")
        name = (yaml.safe_load(Path(path).read_text()) or {}).get("name", name)
    if name is None:
        raise SeqcompError(f"none of {', '.join(config_files)} sets `name`")
    return name


def overlay_tag(config_files: list[str], name: str) -> str:
    """The overlays of a --configfile list, after its first file: their stems less a leading
    ``<name>_``, joined by ``+`` (``long+compress``); empty for one file. A file name with a character
    other than letters, digits, spaces and ``_ . + -`` is refused, naming the file."""
    for file in config_files:
        if not CONFIG_STEM.fullmatch(Path(file).stem):
            raise ConfigError(f"config file {shown(str(file))}: its name becomes part of the page, a folder "
                              "(results/<name>/summary_<file name>) and Snakemake patterns; rename it using only "
                              "letters, digits, spaces and _ . + -")
    return "+".join(Path(f).stem.removeprefix(f"{name}_") for f in config_files[1:])


def page_name(config_files: list[str], name: str | None = None) -> str:
    """The page of a --configfile list: ``etth1`` for [etth1.yaml], ``etth1_compress`` for
    [etth1.yaml, etth1_compress.yaml]. ``name``: the experiment name (read from the files if not given)."""
    name = name or config_name(config_files)
    tag = overlay_tag(config_files, name)
    return f"{name}_{tag}" if tag else name


def page_folder(base: str | Path, config_files: list[str], name: str) -> str:
    """Where a config set's summary (or plots) go: ``base`` (results/<name>/summary) for the base
    config alone, ``<base>_<overlays>`` with overlays."""
    tag = overlay_tag(config_files, name)
    return f"{base}_{tag}" if tag else str(base)


def page_header(page: str, source: str, prov: dict[str, Any], numbers: str | None = None) -> str:
    """The page's opening: how to reproduce it, from which commit, on which machine, how long it
    took and how busy it kept the cores. ``source``: the results folders it was generated from;
    ``numbers``: how its numbers compare with the previous page's (:func:`.compare.compare_pages`)."""
    files = shlex.join(prov["config_files"])  # a name with a space stays one argument
    m, times = prov["machine"], prov["times"]
    facts = [
        f"- commit: `{prov['commit']}`" + (" (with uncommitted changes)" if prov["dirty"] == "True" else ""),
        f"- machine: {machine_line({**m, 'load_1min': None})}; {m['os']}"
        + (f"; load average {m['load_1min']} when the summary ran" if m.get("load_1min") is not None else ""),
    ]
    if times.get("jobs"):
        commits = [c for c in times["commits"] if c != prov["commit"]]
        facts += time_lines(times)
        if commits:
            facts.append(f"- some jobs ran at earlier commits ({', '.join(f'`{c[:12]}`' for c in commits)}); Snakemake "
                         "reruns a job whose code changed (code stamps), so theirs equals this commit's")
    else:
        facts.append(f"- wall time: not recorded ({times['source']})")
    facts.append(f"- summary written: {prov['written']}" + ("" if numbers else "\n"))
    if numbers:
        facts.append(numbers + "\n")
    commands = [f"{workflow_command(prov['config_files'], 'pages')}   # or: make pages CONFIG=\"{files}\""]
    return header(f"Results: {page}", source, f"the workflow's `pages` rule (`make pages CONFIG=\"{files}\"`)",
                  commands, facts)


def time_lines(times: dict[str, Any]) -> list[str]:
    """Wall time, the jobs' seconds and the scheduling yardstick (wall time over the jobs' benchmark
    seconds per core) from provenance ``times``; a summary written before benchmarks were read
    has only the first two."""
    pauses = times.get("pauses", 0)
    less = (f", less {pauses} stretch{'es' if pauses > 1 else ''} of 5 min or more in which none of these jobs ran "
            f"(a pause between invocations, or jobs of another page; span {duration(times['span_s'])})") if pauses else ""
    wall = (f"- wall time: {duration(times['wall_s'])} from the first job's start ({times['first_start']}) to "
            f"the last one's end ({times['last_end']}){less}; the {times['jobs']} train/compress/evaluate jobs' "
            f"runs were open {duration(times['jobs_s'])} in all (tracking journals)")
    if "bench_s" not in times:
        return [wall + ". Not counted: data preparation and each job's start-up before its run opens."]
    missing = f"; {times['bench_missing']} without one, not counted" if times["bench_missing"] else ""
    lines = [wall + f", their whole commands took {duration(times['bench_s'])} (Snakemake benchmark files{missing})."]
    ratio = times.get("wall_over_bench_per_core")
    if ratio is None:
        why = times.get("no_ratio") or ("no benchmark files" if not times["bench_files"]
                                        else "Snakemake's core count unknown (a cluster)")
        lines.append(f"- wall time over the jobs' benchmark seconds per core: not computed ({why})")
    else:
        lines.append(
            f"- wall time / (benchmark seconds / {times['cores']} cores) = **{ratio:.2f}** (1.0 = the cores never "
            "idle; the scheduling overhead seqcomp aims at is <= 1.25). Not counted: data preparation."
        )
    return lines


def section(markdown: str, name: str) -> str:
    """A summary table file as a page section: its title (less the ``<name>: `` prefix) as the
    section heading, its other headings one level down."""
    title, _, body = markdown.partition("\n")
    heading = title.removeprefix("# ").removeprefix(f"{name}: ")
    lines = ["#" + line if line.startswith("#") else line for line in body.splitlines()]
    return f"## {heading[:1].upper()}{heading[1:]}\n" + "\n".join(lines) + "\n"


def write_page(results_dir: Path, docs_dir: Path, config_files: list[str]) -> Path:
    """docs_dir/<page>.md and docs_dir/<page>/<plot>.png from the summary and plots folders of the
    config set ``config_files`` under results_dir (= results/<name>)."""
    name = results_dir.name
    page = page_name(config_files, name)
    summary, plots = (Path(page_folder(results_dir / base, config_files, name)) for base in ("summary", "plots"))
    if not (summary / "provenance.json").is_file():
        raise SeqcompError(f"{summary}/provenance.json not found: run the workflow for {' '.join(config_files)} first")
    prov = read_json(summary / "provenance.json")
    written_for = page_name(prov["config_files"], name) if prov["config_files"] else page
    if written_for != page:  # a summary of another config set (written before pages were per set)
        raise SeqcompError(f"{summary}/provenance.json is of config files {' '.join(prov['config_files'])} "
                           f"(page {written_for}), not of {' '.join(config_files)}: rerun their summary")
    sections = [section(text, name) for text in ((summary / file).read_text() for file in SECTIONS) if text.strip()]
    out = docs_dir / f"{page}.md"
    # against the page as last committed (None outside a checkout, or for a new page): the same
    # answer however often the page is regenerated before it is committed
    previous = git(out.parent, "show", f"HEAD:./{out.name}") if out.parent.is_dir() else None
    numbers = compare_pages(previous, "\n".join(sections)) if previous else None
    parts = [page_header(page, f"`results/{name}/{summary.name}/` and `{plots.name}/`", prov, numbers), *sections]
    figures = docs_dir / page
    if figures.exists():
        shutil.rmtree(figures)  # figures of plots no longer registered must not linger
    figures.mkdir(parents=True)
    parts.append("## Figures\n")
    for plot_name, plot in PLOTS.items():
        shutil.copyfile(plots / f"{plot_name}.png", figures / f"{plot_name}.png")
        link = f"{page}/{plot_name}.png"
        parts.append(f"### {plot.title}\n\n![{plot.title}]({f'<{link}>' if ' ' in link else link})\n")
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(parts))
    return out


def write_bench_page(results_dir: Path, docs_dir: Path, root: Path) -> Path:
    """docs_dir/microbench.md from the micro-benchmarks' results_dir (bench/results) of the checkout at root."""
    from seqcomp.publish.bench import page as bench_page

    out = docs_dir / "microbench.md"
    with atomic_path(out) as tmp:
        tmp.write_text(bench_page(results_dir, root))
    return out


def write_index(docs_dir: Path, out: Path) -> Path:
    """``out`` (docs/benchmarks.md), the index of the pages in docs_dir (:mod:`seqcomp.publish.index`)."""
    from seqcomp.publish.index import index

    with atomic_path(out) as tmp:
        tmp.write_text(index(docs_dir))
    return out

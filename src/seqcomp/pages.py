"""Generated result pages: results/<name>/summary + plots -> docs/results/<name>.md and the
figures beside it in docs/results/<name>/.

A page holds only what the pipeline wrote (the summary's tables, its plots, its
provenance.json), headed by the command that reproduces it, the commit, the machine and the
time the jobs took, so that a number in the docs can always be traced to a run. Run by
``make pages CONFIG=...`` (``python -m seqcomp pages --config ...``) after the workflow.
The micro-benchmarks' page, docs/results/microbench.md, is made the same way from
bench/results (``make bench-page``; its rules in ``seqcomp.summary.microbench``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from seqcomp.errors import SeqcompError
from seqcomp.io import atomic_path, read_json
from seqcomp.summary import PLOTS

# summary tables in page order; each file's title becomes its section heading
SECTIONS = ("headline.md", "published.md", "compression.md", "results.md")
PROFILE = "workflow/profiles/default"


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


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s"


def header(name: str, prov: dict[str, Any]) -> str:
    """The page's opening: how to reproduce it, from which commit, on which machine, how long it took."""
    files = " ".join(prov["config_files"])
    m, times = prov["machine"], prov["times"]
    gpus = ", ".join(m["gpus"]) or "none"
    lines = [
        f"# Results: {name}\n",
        f"Generated from `results/{name}/` by `make pages CONFIG=\"{files}\"`; do not edit by hand. To reproduce:\n",
        "```sh",
        f"snakemake --workflow-profile {PROFILE} --configfile {files}   # or: make run CONFIG=\"{files}\"",
        f"make pages CONFIG=\"{files}\"",
        "```\n",
        f"- commit: `{prov['commit']}`" + (" (with uncommitted changes)" if prov["dirty"] == "True" else ""),
        f"- machine: {m['cpu']}, {m['cores']} cores, GPUs: {gpus}; {m['os']}"
        + (f"; load average {m['load_1min']} when the summary ran" if m.get("load_1min") is not None else ""),
    ]
    if times.get("jobs"):
        commits = [c for c in times["commits"] if c != prov["commit"]]
        lines += [
            f"- wall time: {_duration(times['wall_s'])} from the first job's start ({times['first_start']}) to the "
            f"last one's end ({times['last_end']}); the {times['jobs']} train/compress/evaluate jobs' runs were "
            f"open {_duration(times['jobs_s'])} in all. Source: {times['source']}. Not counted: data preparation "
            "and each job's start-up (imports) before its run opens; counted: any pause between invocations.",
        ]
        if commits:
            lines.append(f"- some jobs ran at other commits: {', '.join(f'`{c[:12]}`' for c in commits)}")
    else:
        lines.append(f"- wall time: not recorded ({times['source']})")
    lines.append(f"- summary written: {prov['written']}\n")
    return "\n".join(lines)


def section(markdown: str, name: str) -> str:
    """A summary table file as a page section: its title (less the ``<name>: `` prefix) as the
    section heading, its other headings one level down."""
    title, _, body = markdown.partition("\n")
    heading = title.removeprefix("# ").removeprefix(f"{name}: ")
    lines = ["#" + line if line.startswith("#") else line for line in body.splitlines()]
    return f"## {heading[:1].upper()}{heading[1:]}\n" + "\n".join(lines) + "\n"


def write_page(results_dir: Path, docs_dir: Path) -> Path:
    """docs_dir/<name>.md and docs_dir/<name>/<plot>.png from results_dir (= results/<name>)."""
    name, summary = results_dir.name, results_dir / "summary"
    if not (summary / "provenance.json").is_file():
        raise SeqcompError(f"{summary}/provenance.json not found: run the workflow for {name} first")
    prov = read_json(summary / "provenance.json")
    parts = [header(name, prov)]
    parts += [section((summary / file).read_text(), name) for file in SECTIONS]
    figures = docs_dir / name
    if figures.exists():
        shutil.rmtree(figures)  # figures of plots no longer registered must not linger
    figures.mkdir(parents=True)
    parts.append("## Figures\n")
    for plot_name, plot in PLOTS.items():
        shutil.copyfile(results_dir / "plots" / f"{plot_name}.png", figures / f"{plot_name}.png")
        parts.append(f"### {plot.title}\n\n![{plot.title}]({name}/{plot_name}.png)\n")
    page = docs_dir / f"{name}.md"
    with atomic_path(page) as tmp:
        tmp.write_text("\n".join(parts))
    return page


def write_bench_page(results_dir: Path, docs_dir: Path, root: Path) -> Path:
    """docs_dir/microbench.md from the micro-benchmarks' results_dir (bench/results) of the checkout at root."""
    from seqcomp.summary.microbench import page as bench_page

    out = docs_dir / "microbench.md"
    with atomic_path(out) as tmp:
        tmp.write_text(bench_page(results_dir, root))
    return out

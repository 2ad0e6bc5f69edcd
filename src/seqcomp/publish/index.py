"""docs/benchmarks.md, the index of the generated pages: one row per config set, its headline
read from its page (docs/results/<page>.md), so no number in the index is typed by hand.

A page's headline is its fp32 models ranked by test MSE (averaged over horizons) at the base
lookback, per dataset, and, from its header, how many jobs it took and how long, with the
per-core yardstick; the micro-benchmarks' row says how many of its results are current.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from seqcomp.publish.markdown import table

# One row per config set, in the order a reader meets them: the config files, what they measure.
@dataclass(frozen=True)
class Entry:
    config: str
    what: str
    page: str | None  # docs/results/<page>.md; None: not run on the reference machine (``why``)
    why: str = ""


ENTRIES = (
    Entry("`config/smoke.yaml`", "every stage end to end on a few hundred generated rows (the tests' run)", "smoke"),
    Entry("`config/config.yaml`", "the default offline run: every model and 3 passes on a generated 4-channel series",
          "default"),
    Entry("`config/etth1.yaml`", "ETTh1, lookback 96, horizons 96-720, every model against the published numbers of "
          "`config/published/ett.yaml`", "etth1"),
    Entry("`config/etth1_linear.yaml`", "`etth1.yaml` with only the models a 2-core CPU fits in minutes",
          "etth1_linear"),
    Entry("`+ config/etth1_compress.yaml`", "every compression pass (and fp32) on every ETTh1 model at horizon 96",
          "etth1_compress"),
    Entry("`+ config/etth1_long_cpu.yaml`", "lookbacks 96-720 and 3 seeds for the closed-form models and DLinear "
          "(the CPU part of `etth1_long.yaml`)", "etth1_long_cpu"),
    Entry("`+ config/etth1_long.yaml`", "the same for PatchTST, S4D, S4, Mamba and S-Mamba too", None,
          "GPU work: `make etth1-long PROFILE=gpu`"),
    Entry("`+ config/etth1_group_bits.yaml`", "per-group bit-widths (GPTQ 4-bit, recurrent/ssm/linear/other groups)",
          None, "no page yet: `make pages CONFIG=\"config/etth1.yaml config/etth1_group_bits.yaml\"`"),
    Entry("`+ config/etth1_mp_pareto.yaml`", "uniform RTN/GPTQ against mixed precision at 2, 3 and 4 bits",
          None, "no page yet: `make pages CONFIG=\"config/etth1.yaml config/etth1_mp_pareto.yaml\"`"),
    Entry("`config/synthetic.yaml`", "selective copying, induction heads (accuracy) and AR(4) (MSE against the "
          "optimal forecast)", "synthetic"),
)
JOBS = re.compile(r"the (\d+) train/compress/evaluate jobs")
WALL = re.compile(r"- wall time: (.+?) from the first job's start")
RATIO = re.compile(r"= \*\*([\d.]+)\*\*")
CURRENT = re.compile(r"(\d+ of \d+ results current)")


def section_table(markdown: str, heading: str) -> list[dict[str, str]]:
    """The first table under the ``## <heading>...`` section of a page, as rows of {column: cell}."""
    body = markdown.split(f"\n## {heading}", 1)[1] if f"\n## {heading}" in markdown else ""
    lines = [line for line in body.split("\n\n", 2)[1].splitlines() if line.startswith("|")] if body.count("\n\n") else []
    if len(lines) < 2:
        return []
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def ranking(markdown: str) -> str:
    """Per dataset, the fp32 models by test MSE at the base lookback, from the page's headline table."""
    rows = section_table(markdown, "Headline")
    if not rows:
        return "no fp32 forecasting results"
    base = next(c for c in rows[0] if c.startswith("mse_L"))
    parts = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        for column, where in ((base, base.removeprefix("mse_")), ("mse_val_chosen", "the validation-chosen lookback")):
            scored = sorted((float(r[column]), r["model"]) for r in mine if r.get(column))
            if scored and (column == base or any(r["mse_val_chosen"] != r[base] for r in mine)):
                parts.append(f"{dataset}, test MSE at {where}: " + ", ".join(f"{m} {mse:.4g}" for mse, m in scored))
    return "; ".join(parts) or "no MSE (accuracy tasks only)"


def headline(markdown: str) -> str:
    """A page's one-line headline: its ranking, then its jobs, wall time and per-core yardstick."""
    jobs, wall, ratio = JOBS.search(markdown), WALL.search(markdown), RATIO.search(markdown)
    cost = f"{jobs[1]} jobs in {wall[1]}" if jobs and wall else "wall time not recorded"
    return ranking(markdown) + f" ({cost}" + (f", wall / (jobs' seconds / cores) = {ratio[1]})" if ratio else ")")


def index(docs: Path) -> str:
    """The markdown of docs/benchmarks.md from the pages in ``docs`` (docs/results)."""
    rows = []
    for e in ENTRIES:
        page = docs / f"{e.page}.md" if e.page else None
        if page is None or not page.is_file():
            rows.append([e.config, e.what, f"not run ({e.why or 'no page'})", "-"])
        else:
            rows.append([e.config, e.what, headline(page.read_text()), f"[{e.page}](results/{e.page}.md)"])
    bench = docs / "microbench.md"
    current = CURRENT.search(bench.read_text()) if bench.is_file() else None
    return "\n".join([
        "# Results and benchmarks: the index\n",
        "Generated from the pages in `docs/results/` by `python -m seqcomp pages --index` (run by `make pages` and "
        "`make bench-page`); do not edit by hand. Every number in these docs is on one of those pages: each starts "
        "with the commands that rebuild it, the commit, the machine and the wall time. A headline here is the page's "
        "fp32 ranking at the base lookback and its cost; the page has the rest (compression, published numbers, "
        "lookback choice, seeds).\n",
        table(["config", "what it measures", "headline", "page"], rows),
        "Micro-benchmarks (training throughput, sequence-length scaling of the scans and kernels, int8 latency, the "
        "memory-delay task, FP8 on a GPU, what a pipeline's jobs cost): [microbench](results/microbench.md), from "
        f"`make bench`, `make bench-gpu` and `make bench-extra`; {current[1] if current else 'not generated yet'}.\n",
        "Elsewhere: S4's kernel against state-spaces/s4, its cost and the delay task ([s4.md](s4.md)); the Slurm "
        "tests ([slurm.md](slurm.md)).\n",
    ])

"""The micro-benchmarks: their results' provenance and their page, bench/results/*.json ->
docs/results/microbench.md.

Every result a bench script writes carries a ``provenance`` block (the command line, commit,
whether its code was uncommitted, machine and wall seconds: :func:`write_bench_result`). The page
shows a result as current only when it was made by the command registered here (the one
``make bench``, ``make bench-gpu`` or ``make bench-extra`` runs), from committed code, at a commit
whose code (:attr:`Bench.code`: src/seqcomp less this page's code, pyproject.toml, the script; for
a workflow's job costs also the workflow and its configs) equals HEAD's, and, for a GPU benchmark,
on a machine with a GPU. Anything else is listed as what it is (missing, stale, made by another
command...), with the command that makes it, so no number on the page passes for current by accident.

This module lives outside seqcomp/summary on purpose: that folder is the summary jobs' code
stamp (``seqcomp.jobs``), and an edit of this page must not rerun every config's summary.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seqcomp.errors import SeqcompError
from seqcomp.io import atomic_path
from seqcomp.summary.provenance import machine

ROOT = Path(__file__).resolve().parents[2]


def _code(*page_code: str) -> tuple[str, ...]:
    """Git pathspecs of the package and pyproject.toml, less ``page_code`` (files that only make pages)."""
    return ("src/seqcomp", *(f":(exclude){path}" for path in page_code), "pyproject.toml")


# What a result depends on besides its script: editing the page's code must not make every result stale.
CODE = _code("src/seqcomp/bench.py", "src/seqcomp/pages.py", "src/seqcomp/cli.py")
# A workflow's job costs time every job's `python -m seqcomp` (cli.py) and its rules, which
# import seqcomp.pages; and the workflow's rules, profiles and configs decide which jobs run.
WORKFLOW_CODE = (*_code("src/seqcomp/bench.py"), "Snakefile", "rules", "workflow", "config")


@dataclass(frozen=True)
class Bench:
    """One result file: the script and command that make it, the make target that runs it."""

    script: str  # bench/<name>.py
    out: str  # file name under bench/results
    command: str  # as the Makefile runs it; a glob or a $VARIABLE stands for what the shell expands
    target: str  # the make target that runs the command, or how to get its input
    gpu: bool = False
    code: tuple[str, ...] = CODE  # git pathspecs of the code the result depends on, besides the script

    @property
    def code_paths(self) -> tuple[str, ...]:
        """The pathspecs whose change makes the result stale, and whose uncommitted edit makes it dirty."""
        return (*self.code, self.script)


BENCHES = (
    Bench("bench/seq_scaling.py", "seq_scaling_cpu.json",
          "python bench/seq_scaling.py --out bench/results/seq_scaling_cpu.json", "make bench"),
    Bench("bench/train_throughput.py", "train_cpu.json",
          "python bench/train_throughput.py --device cpu --out bench/results/train_cpu.json", "make bench"),
    Bench("bench/train_throughput.py", "train_cuda_b32.json",
          "python bench/train_throughput.py --device cuda --out bench/results/train_cuda_b32.json", "make bench-gpu",
          gpu=True),
    Bench("bench/train_throughput.py", "train_cuda_b256.json",
          "python bench/train_throughput.py --device cuda --batch 256 --steps 30 --out bench/results/train_cuda_b256.json",
          "make bench-gpu", gpu=True),
    Bench("bench/train_throughput.py", "train_cuda_ssm_b32.json",
          "python bench/train_throughput.py --device cuda --models s4d,mamba --lookbacks 96,720 --steps 20 "
          "--out bench/results/train_cuda_ssm_b32.json", "make bench-gpu", gpu=True),
    Bench("bench/train_throughput.py", "train_cuda_ssm_b256.json",
          "python bench/train_throughput.py --device cuda --models s4d,mamba --lookbacks 96,720 --steps 20 --batch 256 "
          "--out bench/results/train_cuda_ssm_b256.json", "make bench-gpu", gpu=True),
    Bench("bench/int8_latency.py", "int8_latency_default.json",
          "python bench/int8_latency.py --models results/default/train/*/*/L96-H48/seed0/model.pt "
          "--out bench/results/int8_latency_default.json", "make bench (after make run)"),
    Bench("bench/int8_latency.py", "int8_latency_cpu.json",
          "python bench/int8_latency.py --models results/etth1/train/etth1/*/L96-H96/seed0/model.pt "
          "--out bench/results/int8_latency_cpu.json", "make bench-extra (after make etth1)"),
    Bench("bench/gpu_fp8.py", "gpu_fp8.json",
          "python bench/gpu_fp8.py --data results/etth1/data/etth1 --models results/etth1/train/etth1/*/L96-H96/seed0/model.pt "
          "--out bench/results/gpu_fp8.json", "make bench-gpu (after make etth1)", gpu=True),
    Bench("bench/memory_delay.py", "memory_delay.json",
          "python bench/memory_delay.py --out bench/results/memory_delay.json", "make bench"),
    Bench("bench/memory_delay.py", "memory_delay_lag192.json",
          "python bench/memory_delay.py --lag 192 --out bench/results/memory_delay_lag192.json", "make bench"),
    Bench("bench/s4_reference_check.py", "s4_reference_check.json",
          "python bench/s4_reference_check.py --reference /tmp/s4/models/s4/s4.py --out bench/results/s4_reference_check.json",
          "make bench-extra (after git clone https://github.com/state-spaces/s4 /tmp/s4; needs einops)"),
    Bench("bench/linear_family.py", "linear_family.json",
          "python bench/linear_family.py run --data results/etth1/data/etth1 --out bench/results/linear_family.jsonl",
          "make bench-extra (after make etth1)"),
    Bench("bench/job_costs.py", "job_costs_smoke.json",
          "python bench/job_costs.py --run config/smoke.yaml --cores 2 --out bench/results/job_costs_smoke.json",
          "make bench", code=WORKFLOW_CODE),
    Bench("bench/job_costs.py", "job_costs_default.json",
          "python bench/job_costs.py --run config/config.yaml --cores 2 --out bench/results/job_costs_default.json",
          "make bench-extra", code=WORKFLOW_CODE),
    Bench("bench/job_costs.py", "job_costs_etth1_linear.json",
          "python bench/job_costs.py --results results/etth1_linear --wall-s $WALL_S --cores 2 "
          "--out bench/results/job_costs_etth1_linear.json",
          "by hand after `make run CONFIG=config/etth1_linear.yaml` from a clean results/etth1_linear, WALL_S its wall seconds",
          code=WORKFLOW_CODE),
    Bench("bench/job_costs.py", "job_costs_etth1.json",
          "python bench/job_costs.py --results results/etth1 --wall-s $WALL_S --cores 2 "
          "--out bench/results/job_costs_etth1.json",
          "by hand after `make etth1` from a clean results/etth1, WALL_S its wall seconds (before any overlay)",
          code=WORKFLOW_CODE),
    Bench("bench/job_costs.py", "job_costs_etth1_compress.json",
          "python bench/job_costs.py --results results/etth1 --since $SINCE --wall-s $WALL_S --cores 2 "
          "--out bench/results/job_costs_etth1_compress.json",
          "by hand after `make etth1-compress` (SINCE its start as a Unix time, WALL_S its wall seconds)",
          code=WORKFLOW_CODE),
    Bench("bench/job_costs.py", "job_costs_etth1_long_cpu.json",
          "python bench/job_costs.py --results results/etth1 --since $SINCE --wall-s $WALL_S --cores 2 "
          "--out bench/results/job_costs_etth1_long_cpu.json",
          "by hand after `make etth1-long-cpu` (SINCE its start as a Unix time, WALL_S its wall seconds)",
          code=WORKFLOW_CODE),
)
# files a registered command writes beside its result (not results themselves)
COMPANIONS = {"linear_family.jsonl": "linear_family.json"}


def what_it_measures(script: Path) -> str:
    """The first paragraph of the script's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(script.read_text()))
    if not doc:
        raise SeqcompError(f"{script} has no docstring to say what it measures")
    return " ".join(doc.split("\n\n")[0].split())


def same_command(registered: str, recorded: str) -> bool:
    """Whether ``recorded`` (a provenance command line) is ``registered`` once the shell has
    expanded it: a glob token matches one or more tokens, a ``$VARIABLE`` exactly one."""
    want, got = shlex.split(registered), shlex.split(recorded)

    def match(i: int, j: int) -> bool:
        if i == len(want):
            return j == len(got)
        if j == len(got):
            return False
        token = want[i]
        if token.startswith("$"):
            return match(i + 1, j + 1)
        if any(c in token for c in "*?["):
            k = j
            while k < len(got) and fnmatch.fnmatchcase(got[k], token):
                k += 1
                if match(i + 1, k):
                    return True
            return False
        return token == got[j] and match(i + 1, j + 1)

    return match(0, 0)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


def code_changes(root: Path, commit: str, bench: Bench) -> list[str] | None:
    """Files of the result's code that differ between ``commit`` and HEAD; None if the commit is unknown here."""
    out = _git(root, "diff", "--name-only", commit, "HEAD", "--", *bench.code_paths)
    return out.stdout.split() if out.returncode == 0 else None


def code_dirty(root: Path, paths: tuple[str, ...]) -> str:
    """"True" when the checkout at ``root`` has uncommitted changes under the pathspecs ``paths``
    (a result's code: an edit elsewhere, a README's, says nothing about it), "unknown" without git."""
    try:
        out = _git(root, "status", "--porcelain", "--", *paths)
    except OSError:  # no git binary
        return "unknown"
    return str(bool(out.stdout.strip())) if out.returncode == 0 else "unknown"


def running_code(argv0: str, root: Path = ROOT) -> tuple[str, ...]:
    """The code pathspecs of the bench script ``argv0`` (as run): those of its registered results
    (a script's results share them); the package's, and the script's if it is in the checkout,
    when none is registered."""
    path = Path(argv0).resolve()
    if not path.is_relative_to(root):
        return CODE
    script = path.relative_to(root).as_posix()
    registered = [b.code_paths for b in BENCHES if b.script == script]
    return registered[0] if registered else (*CODE, script)


def bench_provenance(started: float) -> dict[str, Any]:
    """How a micro-benchmark's result was made: its command line, commit, whether its code was
    uncommitted, machine and wall seconds since ``started`` (``time.perf_counter()`` at its start)."""
    from seqcomp.tracking import git_state

    return {
        "command": shlex.join(["python", *sys.argv]),
        "commit": git_state()["seqcomp.git_commit"],
        "dirty": code_dirty(ROOT, running_code(sys.argv[0])),
        "machine": machine(),
        "wall_s": round(time.perf_counter() - started, 1),
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def write_bench_result(path: Path, result: dict[str, Any], started: float) -> None:
    """``result`` plus its ``provenance`` block, written atomically to ``path`` (a bench script's output)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({**result, "provenance": bench_provenance(started)}, indent=2) + "\n")


def gpu_missing(bench: Bench, result: dict[str, Any]) -> bool:
    """A GPU benchmark's result whose provenance says the machine had no GPU: its numbers mean nothing."""
    return bench.gpu and "provenance" in result and not result["provenance"]["machine"]["gpus"]


def state(bench: Bench, result: dict[str, Any] | None, root: Path) -> tuple[bool, str]:
    """(current, the reason it is not or the line that says it is) of one result."""
    if result is None:
        return False, "not measured: the file is missing"
    prov = result.get("provenance")
    if prov is None:
        return False, "made before results carried provenance: command, commit and machine unknown"
    if gpu_missing(bench, result):
        return False, "needs a GPU, and the machine that wrote it had none"
    if not same_command(bench.command, prov["command"]):
        return False, f"made by another command: `{prov['command']}`"
    if prov["dirty"] != "False":
        return False, f"made from uncommitted code (dirty: {prov['dirty']}) at `{prov['commit'][:12]}`"
    changed = code_changes(root, prov["commit"], bench)
    if changed is None:
        return False, f"made at commit `{prov['commit'][:12]}`, which this checkout does not have"
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return False, f"made at commit `{prov['commit'][:12]}`; its code changed since ({shown})"
    return True, f"current: made at commit `{prov['commit'][:12]}`, whose code HEAD still has"


def machine_words(prov: dict[str, Any]) -> str:
    m = prov["machine"]
    load = f", load {m['load_1min']}" if m.get("load_1min") is not None else ""
    return f"{m['cpu']}, {m['cores']} cores, GPUs: {', '.join(m['gpus']) or 'none'}{load}"


# ---- tables: one renderer per script, from its JSON ----

def fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, float):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3e}" if 0 < abs(x) < 1e-3 else f"{x:.4g}"


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _model_name(row: dict[str, Any]) -> str:
    """The pipeline's model name (results/<name>/train/<dataset>/<model>/...) where a path says it, else the row's."""
    parts = Path(row.get("path", "")).parts
    return parts[-4] if len(parts) >= 4 and parts[-1] == "model.pt" else row["model"]


def seq_scaling_tables(d: dict[str, Any]) -> str:
    steps = list(dict.fromkeys(k for row in d["layers"] for k, v in row.items() if isinstance(v, dict)))
    cells = [[row["L"]] + [(row[s].get("skipped") and "skipped") or f"{fmt(row[s]['min_ms'])} / {fmt(row[s]['peak_mib'])}"
                           if s in row else None for s in steps] + [row.get("auto_picks")] for row in d["layers"]]
    out = "Forward + backward, min ms / peak MiB, batch {batch}, d_model {d_model}:\n\n".format(**d["setup"])
    out += md_table(["L", *steps, "auto picks"], cells) if d["layers"] else "(layers part not run)\n"
    if d["crossover"]:
        out += "\nThe scan alone, min ms:\n\n" + md_table(
            ["batch", "L", "state B·E·N", "sequential", "chunked", "faster", "auto picks"],
            [[r["batch"], r["L"], r["state"], r["sequential"], r["chunked"], r["faster"], r["auto_picks"]]
             for r in d["crossover"]])
    return out


def train_tables(d: dict[str, Any]) -> str:
    rows = [[r["model"], r.get("lookback"), r.get("batch_size"), r.get("steps"), r.get("samples_per_s"),
             r.get("peak_gpu_mib") if r.get("peak_gpu_mib") is not None else r.get("peak_rss_mib"), r.get("params"),
             r.get("skipped")] for r in d["rows"]]
    return f"Device {d['env']['device']}, {d['env']['threads']} threads:\n\n" + md_table(
        ["model", "lookback", "batch", "steps", "samples/s", "peak MiB", "params", "skipped"], rows)


def int8_tables(d: dict[str, Any]) -> str:
    env = d["env"]
    out = f"{env['threads']} thread(s), median of {env['repeats']} calls after {env['warmup']}, engine {env['engine']}:\n\n"
    out += md_table(["model", "batch", "fp32 ms", "int8 ms", "speedup", "int8 layers"],
                    [[_model_name(r), r["batch"], r["fp32_ms"], r["int8_ms"], r["speedup"], r["int8_layers"]]
                     for r in d["models"]])
    return out + "\nSingle layers:\n\n" + md_table(
        ["linear", "rows", "fp32 ms", "int8 ms", "speedup"],
        [[r["linear"], r["rows"], r["fp32_ms"], r["int8_ms"], r["speedup"]] for r in d["linear_layers"]])


def fp8_tables(d: dict[str, Any]) -> str:
    out = f"Device {d['device']}. Square GEMMs:\n\n" + md_table(
        ["n", "bf16 TFLOP/s", "fp8 TFLOP/s"], [[g["n"], g["bf16_tflops"], g["fp8_tflops"]] for g in d["gemm"]])
    keys = list(dict.fromkeys(k for m in d["models"] for k in m["latency_ms"]))
    rows = [[_model_name(m), *(m["test_mse"].get(p) for p in ("fp32", "bf16", "fp8")),
             *(m["latency_ms"].get(k) for k in keys), len(m.get("bf16_layers", []))] for m in d["models"]]
    return out + "\nModels (latency in ms, precision_batch):\n\n" + md_table(
        ["model", "MSE fp32", "MSE bf16", "MSE fp8", *keys, "layers kept bf16"], rows)


def memory_delay_tables(d: dict[str, Any]) -> str:
    s = d["setup"]
    return (f"Length {s['length']}, lag {s['lag']}, {s['steps']} steps of batch {s['batch']}, "
            f"d_model {s['d_model']}, d_state {s['d_state']}:\n\n"
            + md_table(["layer", "NMSE", "train s", "params"],
                       [[name, r["nmse"], r["train_s"], r["params"]] for name, r in d["results"].items()]))


def s4_reference_tables(d: dict[str, Any]) -> str:
    return "Max |difference| over the kernel's peak |K|:\n\n" + md_table(
        ["init", "L", "H", "N", "ours vs dense", "reference vs dense", "ours vs reference"],
        [[r["init"], r["L"], r["H"], r["N"], r["ours_vs_dense"], r["reference_vs_dense"], r["ours_vs_reference"]]
         for r in d["rows"]])


def linear_family_tables(d: dict[str, Any]) -> str:
    horizons = [f"H = {h}" for h in d["horizons"]]
    return (f"Lookbacks {', '.join(map(str, d['lookbacks']))}; {d['variants_per_horizon']} variants per horizon; "
            "test MSE of the chosen variant(s):\n\n"
            + md_table(["selection rule", *horizons, "avg"], [[r["rule"], *r["test_mse"], r["avg"]] for r in d["selection"]]))


def job_costs_tables(d: dict[str, Any]) -> str:
    cols = ("jobs", "wall_s", "cpu_s", "startup_s", "work_s")
    rows = [[stage, *(s[c] for c in cols)] for stage, s in d["stages"].items()] + [["**all**", *(d["total"][c] for c in cols)]]
    ratio = d.get("wall_over_job_seconds_per_core")
    extra = (f"; wall over the jobs' seconds per core {fmt(ratio)}, over their work per core "
             f"{fmt(d.get('wall_over_work_per_core'))}" if ratio else "")
    return (f"Source `{d['source']}`; workflow wall {fmt(d['workflow_wall_s'])} s on {d['cores']} cores{extra}; "
            f"a bare `import torch` takes {fmt(d['torch_import_s'])} s.\n\n"
            + md_table(["stage", "jobs", "job wall s", "CPU s", "start-up s", "work s"], rows))


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "bench/seq_scaling.py": seq_scaling_tables,
    "bench/train_throughput.py": train_tables,
    "bench/int8_latency.py": int8_tables,
    "bench/gpu_fp8.py": fp8_tables,
    "bench/memory_delay.py": memory_delay_tables,
    "bench/s4_reference_check.py": s4_reference_tables,
    "bench/linear_family.py": linear_family_tables,
    "bench/job_costs.py": job_costs_tables,
}


def table(bench: Bench, result: dict[str, Any], path: Path) -> str:
    """The tables of ``result`` (read from ``path``) by its script's renderer."""
    try:
        return TABLES[bench.script](result)
    except KeyError as exc:
        raise SeqcompError(f"{path}: no key {exc} that the table of {bench.script} needs (a result in an older "
                           f"format? rerun `{bench.command}`)") from exc


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SeqcompError(f"{path}: not valid JSON ({exc})") from exc


def overview_row(bench: Bench, result: dict[str, Any] | None, current: bool) -> list[Any]:
    """The page's opening table row of a result: a link to its section, its state, commit, machine, wall."""
    prov = (result or {}).get("provenance")
    return [f"[{bench.out}](#{bench.out.replace('.', '')})", "current" if current else "**not current**",
            f"`{prov['commit'][:12]}`" if prov else None, machine_words(prov) if prov else None,
            prov["wall_s"] if prov else None]


def page(results: Path, root: Path, benches: tuple[Bench, ...] = BENCHES) -> str:
    """The page's markdown from the result files in ``results`` (bench/results), code and git at ``root``."""
    results_of = {b.out: _read(results / b.out) for b in benches}
    states = {b.out: state(b, results_of[b.out], root) for b in benches}
    head = _git(root, "rev-parse", "HEAD").stdout.strip() or "unknown"
    current = sum(ok for ok, _ in states.values())
    parts = [
        "# Micro-benchmarks\n",
        "Generated from `bench/results/` by `make bench-page` (`python -m seqcomp pages --bench`); do not edit by hand. "
        "To reproduce:\n",
        "```sh",
        "make bench         # CPU: scan scaling, training throughput, the delay task, smoke job costs, int8 latency",
        "make bench-gpu     # GPU only (skips without CUDA): CUDA training throughput, FP8 matmuls",
        "make bench-extra   # needs inputs from other runs (ETTh1 models and data, state-spaces/s4), or a full workflow",
        "make bench-page",
        "```\n",
        f"Page written at commit `{head[:12]}`: {current} of {len(benches)} results current. A result is current when "
        "it was made by the command below, from committed code, at a commit whose code HEAD still has (src/seqcomp "
        "less the page's code, pyproject.toml, the script; for job costs also cli.py, pages.py, the Snakefile, "
        "rules/, workflow/ and config/), and a GPU benchmark on a machine with a GPU.\n",
        md_table(["result", "state", "commit", "machine", "wall s"],
                 [overview_row(b, results_of[b.out], states[b.out][0]) for b in benches]),
    ]
    for script in dict.fromkeys(b.script for b in benches):
        parts.append(f"## {script}\n\n{what_it_measures(root / script)}\n")
        for b in (b for b in benches if b.script == script):
            ok, why = states[b.out]
            parts.append(f"### {b.out}\n\nRun by {b.target}: `{b.command}`\n")
            parts.append(f"- {why}" if ok else f"- **Not current**: {why}")
            result = results_of[b.out]
            if result is not None and "provenance" in result:
                prov = result["provenance"]
                parts.append(f"- written {prov['written']}, {prov['wall_s']} s, on {machine_words(prov)}")
            parts.append("")
            if result is not None and not gpu_missing(b, result):
                parts.append(table(b, result, results / b.out))
    known = {b.out for b in benches} | set(COMPANIONS)
    others = sorted(p.name for p in results.iterdir() if p.is_file() and p.name not in known) if results.is_dir() else []
    if others:
        parts.append("## Other files in bench/results\n\nNot written by a command above (earlier variants of these "
                     "benchmarks, kept for the notes that cite them); not shown here:\n")
        parts += [f"- `{name}`" for name in others] + [""]
    return "\n".join(parts)

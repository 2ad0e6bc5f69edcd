"""The micro-benchmarks: their registry (the only list of their commands), how each runs, and
their page, bench/results/*.json -> docs/results/microbench.md.

Every result a bench script writes carries a ``provenance`` record (:func:`write_bench_result`,
:mod:`seqcomp.publish.record`). The page shows a result as current only when it was made by the
command registered here (the one ``python -m seqcomp bench --group ...`` runs), from committed
code, at a commit whose code (:attr:`Bench.code`: src/seqcomp less the pages' code,
pyproject.toml, the script; for a workflow's job costs also the workflow and its configs) equals
HEAD's, and, for a GPU benchmark, on a machine with a GPU. Anything else is listed as what it is
(missing, stale, made by another command...), with the command that makes it, so no number on
the page passes for current by accident.
"""

from __future__ import annotations

import ast
import fnmatch
import glob
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqcomp.errors import SeqcompError
from seqcomp.io import atomic_path
from seqcomp.publish.bench_tables import render
from seqcomp.publish.markdown import header, table
from seqcomp.publish.markdown import readable as fmt
from seqcomp.publish.record import ROOT, code_changes, head_commit, machine_line, record

# The code that only makes pages: editing it must not make every result stale.
PAGE_CODE = ("src/seqcomp/publish/bench.py", "src/seqcomp/publish/bench_tables.py")


def _code(*page_code: str) -> tuple[str, ...]:
    """Git pathspecs of the package and pyproject.toml, less ``page_code`` (files that only make pages)."""
    return ("src/seqcomp", *(f":(exclude){path}" for path in page_code), "pyproject.toml")


# What a result depends on besides its script.
CODE = _code(*PAGE_CODE, "src/seqcomp/publish/markdown.py", "src/seqcomp/publish/pages.py", "src/seqcomp/cli.py")
# A workflow's job costs time every job's `python -m seqcomp` (cli.py) and its rules, which
# import the pipeline pages' code; and the workflow's rules, profiles and configs decide which jobs run.
WORKFLOW_CODE = (*_code(*PAGE_CODE), "Snakefile", "rules", "workflow", "config")
# `python -m seqcomp bench --group G` runs a group's commands; the Makefile's targets call it.
GROUPS = {"cpu": "make bench", "gpu": "make bench-gpu", "extra": "make bench-extra"}


@dataclass(frozen=True)
class Bench:
    """One result file: the script and command that make it, the group that runs it, what it needs."""

    script: str  # bench/<name>.py
    out: str  # file name under bench/results
    command: str  # as the group runs it in bash; a glob or a $VARIABLE stands for what the shell expands
    group: str | None  # a GROUPS key; None: run by hand (see ``after``)
    after: str = ""  # what must run first (how to get its input), in words
    needs: tuple[str, ...] = ()  # globs of its inputs: without a match the group skips it, saying why
    gpu: bool = False
    code: tuple[str, ...] = CODE  # git pathspecs of the code the result depends on, besides the script

    @property
    def code_paths(self) -> tuple[str, ...]:
        """The pathspecs whose change makes the result stale, and whose uncommitted edit makes it dirty."""
        return (*self.code, self.script)

    @property
    def target(self) -> str:
        """How it is run, in words: its make target (and what must run first), or by hand after what."""
        if self.group is None:
            return f"by hand after {self.after}"
        return GROUPS[self.group] + (f" (after {self.after})" if self.after else "")


DEFAULT_MODELS = "results/default/train/*/*/L96-H48/seed0/model.pt"
ETTH1_MODELS = "results/etth1/train/etth1/*/L96-H96/seed0/model.pt"
ETTH1_COMPRESSED = "results/etth1/compress/etth1/*/L96-H96/seed0/*/model.pt"
S4_REFERENCE = "/tmp/s4/models/s4/s4.py"
BY_HAND_COSTS = "--wall-s $WALL_S --cores 2 --out bench/results/job_costs_{}.json"
BENCHES = (
    Bench("bench/seq_scaling.py", "seq_scaling_cpu.json",
          "python bench/seq_scaling.py --out bench/results/seq_scaling_cpu.json", "cpu"),
    Bench("bench/seq_scaling.py", "seq_scaling_cpu_s4.json",
          "python bench/seq_scaling.py --steps s4,s4d,s4_kernel,s4d_kernel --parts layers "
          "--out bench/results/seq_scaling_cpu_s4.json", "extra"),
    Bench("bench/train_throughput.py", "train_cpu.json",
          "python bench/train_throughput.py --device cpu --out bench/results/train_cpu.json", "cpu"),
    Bench("bench/train_throughput.py", "train_cuda_b32.json",
          "python bench/train_throughput.py --device cuda --out bench/results/train_cuda_b32.json", "gpu", gpu=True),
    Bench("bench/train_throughput.py", "train_cuda_b256.json",
          "python bench/train_throughput.py --device cuda --batch 256 --steps 30 --out bench/results/train_cuda_b256.json",
          "gpu", gpu=True),
    Bench("bench/train_throughput.py", "train_cuda_ssm_b32.json",
          "python bench/train_throughput.py --device cuda --models s4d,mamba --lookbacks 96,720 --steps 20 "
          "--out bench/results/train_cuda_ssm_b32.json", "gpu", gpu=True),
    Bench("bench/train_throughput.py", "train_cuda_ssm_b256.json",
          "python bench/train_throughput.py --device cuda --models s4d,mamba --lookbacks 96,720 --steps 20 --batch 256 "
          "--out bench/results/train_cuda_ssm_b256.json", "gpu", gpu=True),
    Bench("bench/int8_latency.py", "int8_latency_default.json",
          f"python bench/int8_latency.py --models {DEFAULT_MODELS} --out bench/results/int8_latency_default.json",
          "cpu", "make run", needs=(DEFAULT_MODELS,)),
    Bench("bench/int8_latency.py", "int8_latency_cpu.json",
          f"python bench/int8_latency.py --models {ETTH1_MODELS} --out bench/results/int8_latency_cpu.json",
          "extra", "make etth1", needs=(ETTH1_MODELS,)),
    Bench("bench/gpu_fp8.py", "gpu_fp8.json",
          f"python bench/gpu_fp8.py --data results/etth1/data/etth1 --models {ETTH1_MODELS} "
          "--out bench/results/gpu_fp8.json", "gpu", "make etth1", needs=(ETTH1_MODELS,), gpu=True),
    Bench("bench/decode_cost.py", "decode_cost.json",
          f"python bench/decode_cost.py --compressed {ETTH1_COMPRESSED} --out bench/results/decode_cost.json",
          "extra", "make etth1-lowbit", needs=(ETTH1_COMPRESSED,)),
    Bench("bench/corpus_throughput.py", "corpus_cpu.json",
          "python bench/corpus_throughput.py --out bench/results/corpus_cpu.json", "cpu"),
    Bench("bench/pretrain_throughput.py", "pretrain_cpu.json",
          "python bench/pretrain_throughput.py --also moe:96:tokens=point --out bench/results/pretrain_cpu.json", "cpu"),
    Bench("bench/memory_delay.py", "memory_delay.json",
          "python bench/memory_delay.py --out bench/results/memory_delay.json", "cpu"),
    Bench("bench/memory_delay.py", "memory_delay_lag192.json",
          "python bench/memory_delay.py --lag 192 --out bench/results/memory_delay_lag192.json", "cpu"),
    Bench("bench/s4_reference_check.py", "s4_reference_check.json",
          f"python bench/s4_reference_check.py --reference {S4_REFERENCE} --out bench/results/s4_reference_check.json",
          "extra", "git clone https://github.com/state-spaces/s4 /tmp/s4; needs einops", needs=(S4_REFERENCE,)),
    Bench("bench/linear_family.py", "linear_family.json",
          "python bench/linear_family.py run --data results/etth1/data/etth1 --out bench/results/linear_family.jsonl",
          "extra", "make etth1", needs=(ETTH1_MODELS,)),
    Bench("bench/job_costs.py", "job_costs_smoke.json",
          "python bench/job_costs.py --run config/smoke.yaml --cores 2 --out bench/results/job_costs_smoke.json",
          "cpu", code=WORKFLOW_CODE),
    Bench("bench/job_costs.py", "job_costs_default.json",
          "python bench/job_costs.py --run config/config.yaml --cores 2 --out bench/results/job_costs_default.json",
          "extra", code=WORKFLOW_CODE),
    Bench("bench/job_costs.py", "job_costs_etth1_linear.json",
          "python bench/job_costs.py --results results/etth1_linear " + BY_HAND_COSTS.format("etth1_linear"), None,
          "`make run CONFIG=config/etth1_linear.yaml` from a clean results/etth1_linear, WALL_S its wall seconds",
          code=WORKFLOW_CODE),
    Bench("bench/job_costs.py", "job_costs_etth1.json",
          "python bench/job_costs.py --results results/etth1 " + BY_HAND_COSTS.format("etth1"), None,
          "`make etth1` from a clean results/etth1, WALL_S its wall seconds (before any overlay)", code=WORKFLOW_CODE),
    Bench("bench/job_costs.py", "job_costs_etth1_compress.json",
          "python bench/job_costs.py --results results/etth1 --since $SINCE " + BY_HAND_COSTS.format("etth1_compress"),
          None, "`make etth1-compress` (SINCE its start as a Unix time, WALL_S its wall seconds)", code=WORKFLOW_CODE),
    Bench("bench/job_costs.py", "job_costs_etth1_long_cpu.json",
          "python bench/job_costs.py --results results/etth1 --since $SINCE " + BY_HAND_COSTS.format("etth1_long_cpu"),
          None, "`make etth1-long-cpu` (SINCE its start as a Unix time, WALL_S its wall seconds)", code=WORKFLOW_CODE),
)
# files a registered command writes beside its result (not results themselves)
COMPANIONS = {"linear_family.jsonl": "linear_family.json"}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_group(group: str, root: Path = ROOT) -> list[str]:
    """Run the registered commands of ``group`` in bash at ``root``, in registry order; return the
    results skipped for a missing input (each said on stdout, with what makes it). A GPU group
    without CUDA runs nothing. A failing command stops the group, naming it."""
    if group not in GROUPS:
        raise SeqcompError(f"bench: no group {group!r}; the groups are {', '.join(GROUPS)}")
    benches = [b for b in BENCHES if b.group == group]
    if any(b.gpu for b in benches) and not _cuda():
        print(f"bench --group {group}: no CUDA device here, nothing run")
        return [b.out for b in benches]
    # the commands say `python`: this interpreter's, as when `make` puts the venv first on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    skipped = []
    for b in benches:
        missing = [g for g in b.needs if not glob.glob(g if Path(g).is_absolute() else str(root / g))]
        if missing:
            print(f"{b.out} skipped: nothing at {missing[0]} (first {b.after})")
            skipped.append(b.out)
            continue
        print(f"+ {b.command}", flush=True)
        done = subprocess.run(["bash", "-c", b.command], cwd=root, env=env, check=False)
        if done.returncode:
            raise SeqcompError(f"bench {b.out}: `{b.command}` failed (exit {done.returncode}); see its output above")
    return skipped


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


def write_bench_result(path: Path, result: dict[str, Any], started: float) -> None:
    """``result`` plus its ``provenance`` record (dirty over the script's code; wall seconds since
    ``started``, ``time.perf_counter()`` at its start), written atomically to ``path``."""
    prov = record(shlex.join(["python", *sys.argv]), running_code(sys.argv[0]), started)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({**result, "provenance": prov}, indent=2) + "\n")


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
    changed = code_changes(root, prov["commit"], bench.code_paths)
    if changed is None:
        return False, f"made at commit `{prov['commit'][:12]}`, which this checkout does not have"
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return False, f"made at commit `{prov['commit'][:12]}`; its code changed since ({shown})"
    return True, f"current: made at commit `{prov['commit'][:12]}`, whose code HEAD still has"


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
            f"`{prov['commit'][:12]}`" if prov else None, machine_line(prov["machine"]) if prov else None,
            prov["wall_s"] if prov else None]


def page(results: Path, root: Path, benches: tuple[Bench, ...] = BENCHES) -> str:
    """The page's markdown from the result files in ``results`` (bench/results), code and git at ``root``."""
    results_of = {b.out: _read(results / b.out) for b in benches}
    states = {b.out: state(b, results_of[b.out], root) for b in benches}
    head = head_commit(root)
    current = sum(ok for ok, _ in states.values())
    commands = [
        "make bench         # CPU: scan scaling, training throughput, the delay task, smoke job costs, int8 latency",
        "make bench-gpu     # GPU only (skips without CUDA): CUDA training throughput, FP8 matmuls",
        "make bench-extra   # needs inputs from other runs (ETTh1 models and data, state-spaces/s4), or a full workflow",
        "make bench-page",
    ]
    facts = [
        f"Page written at commit `{head[:12]}`: {current} of {len(benches)} results current. A result is current when "
        "it was made by the command below, from committed code, at a commit whose code HEAD still has (src/seqcomp "
        "less the pages' code, pyproject.toml, the script; for job costs also cli.py, the pipeline pages' code, the "
        "Snakefile, rules/, workflow/ and config/), and a GPU benchmark on a machine with a GPU.\n",
        table(["result", "state", "commit", "machine", "wall s"],
              [overview_row(b, results_of[b.out], states[b.out][0]) for b in benches], fmt),
    ]
    parts = [header("Micro-benchmarks", "`bench/results/`",
                    "`make bench-page` (`python -m seqcomp pages --bench`)", commands, facts)]
    for script in dict.fromkeys(b.script for b in benches):
        parts.append(f"## {script}\n\n{what_it_measures(root / script)}\n")
        for b in (b for b in benches if b.script == script):
            ok, why = states[b.out]
            parts.append(f"### {b.out}\n\nRun by {b.target}: `{b.command}`\n")
            parts.append(f"- {why}" if ok else f"- **Not current**: {why}")
            result = results_of[b.out]
            if result is not None and "provenance" in result:
                prov = result["provenance"]
                parts.append(f"- written {prov['written']}, {prov['wall_s']} s, on {machine_line(prov['machine'])}")
            parts.append("")
            if result is not None and not gpu_missing(b, result):
                parts.append(render(b.script, b.command, result, results / b.out))
    known = {b.out for b in benches} | set(COMPANIONS)
    others = sorted(p.name for p in results.iterdir() if p.is_file() and p.name not in known) if results.is_dir() else []
    if others:
        parts.append("## Other files in bench/results\n\nNot written by a command above (earlier variants of these "
                     "benchmarks, kept for the notes that cite them); not shown here:\n")
        parts += [f"- `{name}`" for name in others] + [""]
    return "\n".join(parts)

"""The provenance record every published result carries, and the one git reader.

A record says how a result was made: the command, the commit, whether the code that made it had
uncommitted edits (``dirty``, over that code's pathspecs only: an edited README or an untracked
results folder says nothing about a result), the machine with its load, the wall seconds and
when it was written. Pipeline summaries and micro-benchmark results write the same record.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]

# What a pipeline result depends on: the package, its pinned dependencies and the workflow.
PIPELINE_CODE = ("src/seqcomp", "pyproject.toml", "Snakefile", "rules", "workflow")


def git(root: Path, *args: str) -> str | None:
    """``git <args>``'s stdout in the checkout at ``root``; None without git, outside a checkout or on failure."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except OSError:  # no git binary
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def head_commit(root: Path = ROOT) -> str:
    """HEAD's commit id, or "unknown" (no git, not a checkout: an installed wheel, a copied tree)."""
    return git(root, "rev-parse", "HEAD") or "unknown"


def code_dirty(root: Path, paths: tuple[str, ...]) -> str:
    """"True" when the checkout at ``root`` has uncommitted changes under the pathspecs ``paths``,
    "False" when it has none, "unknown" without git (a clean answer there would be a false claim)."""
    status = git(root, "status", "--porcelain", "--", *paths)
    return "unknown" if status is None else str(bool(status))


def code_changes(root: Path, commit: str, paths: tuple[str, ...]) -> list[str] | None:
    """Files under ``paths`` that differ between ``commit`` and HEAD; None if the commit is unknown here."""
    out = git(root, "diff", "--name-only", commit, "HEAD", "--", *paths)
    return None if out is None else out.split()


def machine() -> dict[str, Any]:
    """This machine in words: OS, CPU model and cores, the GPUs nvidia-smi lists, the 1-minute load."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False)
        gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    # a shared machine's load explains slow or noisy timings (latency, wall time)
    load = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
    return {"os": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "load_1min": load}


def machine_line(m: dict[str, Any]) -> str:
    """A record's machine on one line: CPU, cores, GPUs and, where recorded, the load."""
    load = f", load {m['load_1min']}" if m.get("load_1min") is not None else ""
    return f"{m['cpu']}, {m['cores']} cores, GPUs: {', '.join(m['gpus']) or 'none'}{load}"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def record(command: str, code: tuple[str, ...], started: float | None = None, root: Path = ROOT) -> dict[str, Any]:
    """The provenance record of a result made now by ``command`` from the code under the pathspecs
    ``code``; ``wall_s`` since ``started`` (``time.perf_counter()`` at the start), where given."""
    rec: dict[str, Any] = {"command": command, "commit": head_commit(root), "dirty": code_dirty(root, code),
                           "machine": machine()}
    if started is not None:
        rec["wall_s"] = round(time.perf_counter() - started, 1)
    return rec | {"written": now()}


PROFILE = "workflow/profiles/default"


def workflow_command(config_files: list[str], target: str = "") -> str:
    """The command that reruns the workflow of a --configfile list up to ``target`` (all by default).
    The target goes first: --configfile takes every word after it (a name with a space stays one)."""
    return f"snakemake {target + ' ' if target else ''}--workflow-profile {PROFILE} --configfile {shlex.join(config_files)}"


def summary_record(config_files: list[str], runs: list[Any] | None, jobs: set[str], benchmarks: list[str],
                   cores: int | None) -> dict[str, Any]:
    """A summary's provenance.json: the record of the workflow that made it (dirty over the
    pipeline's code), its ``config_files`` and the jobs' ``times`` (:func:`.timing.summary_times`:
    ``runs`` the journals' current runs or None, ``jobs`` the summary's job keys, ``benchmarks``
    their benchmark files, ``cores`` Snakemake's)."""
    from seqcomp.publish.timing import summary_times

    return {"config_files": config_files, **record(workflow_command(config_files), PIPELINE_CODE),
            "times": summary_times(runs, jobs, benchmarks, cores, overlay=len(config_files) > 1)}

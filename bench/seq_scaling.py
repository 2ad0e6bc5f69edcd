"""Sequence-length scaling on CPU: S4's and S4D's FFT convolutions and Mamba's two scans, forward + backward.

Part 1 (``layers``): one S4 layer, one S4D layer and one Mamba mixer (the sequence-mixing blocks,
without the forecaster's head), input (batch, L, d_model), loss = mean square of the output, timed
for forward + backward at each L: S4 and S4D (FFT convolution, expected ~ L log L; their kernels
alone too, ``s4_kernel``: Cauchy sums over L/2 + 1 roots of unity, ``s4d_kernel``: a
Vandermonde product), Mamba with the sequential
loop and with the chunked scan, and the two scans alone at the mixer's shape (E = 2 d_model).
Peak memory is the process's resident-set high-water mark over
one forward + backward, minus the resident set before it (Linux: reset through
/proc/self/clear_refs, after releasing the heap's free pages), so it counts
everything the step allocated, autograd's saved tensors included. The sequential loop is skipped at longer lengths once one call exceeds ``--seq-cap-s``.

Part 2 (``crossover``): the scan alone (seqcomp.models.selective_scan), sequential vs chunked,
over lengths and per-step state sizes B*E*N, to check what ``scan: auto`` picks on this CPU.

One thread (torch.set_num_threads(1)); min over repeats after a warm-up call. The load average
is recorded: on a shared machine timings are noisy.

    python bench/seq_scaling.py --out bench/results/seq_scaling_cpu.json
    python bench/seq_scaling.py --steps s4,s4d,s4_kernel,s4d_kernel --parts layers --out bench/results/seq_scaling_cpu_s4.json
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from seqcomp.evaluate.memory import peak_mib
from seqcomp.models.mamba import MambaMixer
from seqcomp.models.s4 import S4Layer
from seqcomp.models.s4d import S4DLayer
from seqcomp.models.selective_scan import chunked_is_default, scan_chunked, scan_sequential
from seqcomp.publish.bench import write_bench_result

LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
# glibc mmaps blocks above M_MMAP_THRESHOLD (-3); by default the threshold rises with the first
# large frees, up to 32 MiB, after which freed tensors are reused from the heap. Timings run in
# that steady state, fixed from the start.
STEADY_MMAP_THRESHOLD = 32 * 2**20


def timed(step: Callable[[], None], reps: int, budget_s: float) -> dict:
    """Min and median ms over ``reps`` calls after one timed warm-up (fewer when over budget),
    with the package's timer."""
    from seqcomp.evaluate.metrics import call_ms

    (warm,) = call_ms([step], 0, 1)
    (times,) = call_ms([step], 0, reps, budget_s - warm[0] / 1e3)
    return {"min_ms": round(min(times), 2), "median_ms": round(sorted(times)[len(times) // 2], 2),
            "calls": len(times), "warmup_ms": round(warm[0], 2)}


def fwd_bwd(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()

    return step


def kernel_step(layer: torch.nn.Module, length: int) -> Callable[[], None]:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        layer.kernel(length).square().mean().backward()

    return step


def layer_rows(lengths: list[int], batch: int, d_model: int, d_state_s4d: int, d_state_mamba: int,
               reps: int, budget_s: float, seq_cap_s: float, only: set[str] | None = None) -> list[dict]:
    torch.manual_seed(0)
    s4d = S4DLayer(d_model, d_state_s4d)
    s4 = S4Layer(d_model, d_state_s4d)
    mixers = {scan: MambaMixer(d_model, d_state_mamba, 2, 4, max(1, math.ceil(d_model / 16)), 1e-3, 1e-1, scan=scan)
              for scan in ("sequential", "chunked")}
    mixers["chunked"].load_state_dict(mixers["sequential"].state_dict())
    rows, seq_over_cap = [], None
    for length in lengths:
        x = torch.randn(batch, length, d_model)
        scan_args = scan_inputs(batch, length, 2 * d_model, d_state_mamba)  # the mixer's scan alone
        steps = {
            "s4": fwd_bwd(s4, x),
            "s4d": fwd_bwd(s4d, x),
            "s4_kernel": kernel_step(s4, length),
            "s4d_kernel": kernel_step(s4d, length),
            "mamba_chunked": fwd_bwd(mixers["chunked"], x),
            "mamba_sequential": fwd_bwd(mixers["sequential"], x),
            "scan_chunked": lambda: scan_chunked(*scan_args).square().mean().backward(),
            "scan_sequential": lambda: scan_sequential(*scan_args).square().mean().backward(),
        }
        row = {"L": length}
        for name, step in steps.items():
            if only is not None and name not in only:
                continue
            if name.endswith("sequential") and seq_over_cap is not None:
                row[name] = {"skipped": f"one call took {seq_over_cap:.1f} s at a shorter length (cap {seq_cap_s} s)"}
                continue
            row[name] = {**timed(step, reps, budget_s), "peak_mib": peak_mib(step)}
            if name.endswith("sequential") and row[name]["warmup_ms"] / 1e3 > seq_cap_s:
                seq_over_cap = row[name]["warmup_ms"] / 1e3
        for part in ("mamba", "scan"):
            if f"{part}_sequential" not in row or f"{part}_chunked" not in row:
                continue
            seq = row[f"{part}_sequential"].get("min_ms")
            row[f"{part}_speedup"] = round(seq / row[f"{part}_chunked"]["min_ms"], 2) if seq else None
        row["auto_picks"] = "chunked" if chunked_is_default(x.new_empty(batch, length, 2 * d_model),
                                                             d_state_mamba) else "sequential"
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def scan_inputs(batch: int, length: int, e: int, n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    args = [
        torch.randn(batch, length, e, generator=g),
        0.1 * torch.rand(batch, length, e, generator=g),
        -torch.arange(1, n + 1, dtype=torch.float32).expand(e, n).contiguous(),
        torch.randn(batch, length, n, generator=g),
        torch.randn(batch, length, n, generator=g),
        torch.ones(e),
    ]
    return [a.requires_grad_() for a in args]


def crossover_rows(lengths: list[int], batches: list[int], e: int, n: int, reps: int, budget_s: float) -> list[dict]:
    rows = []
    for batch in batches:
        for length in lengths:
            args = scan_inputs(batch, length, e, n)
            row = {"batch": batch, "L": length, "E": e, "N": n, "state": batch * e * n}
            for name, fn in (("sequential", scan_sequential), ("chunked", scan_chunked)):
                row[name] = timed(lambda fn=fn: fn(*args).square().mean().backward(), reps, budget_s)["min_ms"]
            row["faster"] = "chunked" if row["chunked"] < row["sequential"] else "sequential"
            row["auto_picks"] = "chunked" if chunked_is_default(args[0], n) else "sequential"
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,512,1024,2048,4096,8192")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=16)
    parser.add_argument("--d-state-s4d", type=int, default=64)
    parser.add_argument("--d-state-mamba", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=20.0, help="stop repeating one measurement after this long")
    parser.add_argument("--seq-cap-s", type=float, default=30.0,
                        help="skip the sequential loop at longer lengths once one call takes longer")
    parser.add_argument("--crossover-lengths", default="16,64,256,1024")
    parser.add_argument("--crossover-batches", default="1,4,8,16,64")
    parser.add_argument("--crossover-e", type=int, default=64)
    parser.add_argument("--steps", default=None, help="comma list of layer-part steps to time (default: all)")
    parser.add_argument("--parts", default="layers,crossover", help="which parts to run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(1)
    LIBC.mallopt(-3, STEADY_MMAP_THRESHOLD)
    load_before = os.getloadavg()
    parts = set(args.parts.split(","))
    only = set(args.steps.split(",")) if args.steps else None
    layers = layer_rows([int(v) for v in args.lengths.split(",")], args.batch, args.d_model, args.d_state_s4d,
                        args.d_state_mamba, args.reps, args.budget_s, args.seq_cap_s, only) if "layers" in parts else []
    crossover = crossover_rows([int(v) for v in args.crossover_lengths.split(",")],
                               [int(v) for v in args.crossover_batches.split(",")], args.crossover_e,
                               args.d_state_mamba, args.reps, args.budget_s) if "crossover" in parts else []
    env = {"cpu": platform.processor() or platform.machine(), "cores_visible": os.cpu_count(), "threads": 1,
           "torch": torch.__version__, "load_average_before": load_before, "load_average_after": os.getloadavg(),
           "date": time.strftime("%Y-%m-%d %H:%M"), "mmap_threshold_bytes": STEADY_MMAP_THRESHOLD,
           "peak_memory": "VmHWM - VmRSS over one call, after malloc_trim"}
    setup = {k: v for k, v in vars(args).items() if k != "out"}
    write_bench_result(args.out, {"env": env, "setup": setup, "layers": layers, "crossover": crossover}, started)


if __name__ == "__main__":
    main()

"""CPU latency of torch's real int8 kernels (the `int8_dynamic` pass) against fp32.

Why a benchmark of its own: the evaluation stage times every compressed model once, inside a
busy pipeline, where neighbouring jobs share the cores. Here the machine is meant to be quiet,
threads are fixed, and each measurement is the median of many calls after a warm-up,
alternating fp32 and int8 so slow drifts hit both. Two views:

- each trained model, whole forward pass, fp32 vs the `int8_dynamic` pass's model (the
  pipeline's own `seqcomp.compress.compress`), batch 1 and 32;
- single nn.Linear layers of growing size, fp32 vs dynamic int8, batch 32 rows: where the int8
  GEMM starts to pay for quantizing its input on every call.

    python bench/int8_latency.py --models /path/to/<model>.pt ... --out bench/results/int8_latency_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn


@torch.no_grad()
def paired_latency(a: nn.Module, b: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> tuple[float, float]:
    """Median ms per call of ``a`` and ``b`` on ``x``, calls interleaved (the package's timer)."""
    from seqcomp.evaluate.metrics import call_ms

    times = call_ms([lambda: a(x), lambda: b(x)], warmup, repeats)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)

    from seqcomp.artifacts import load_model, model_spec
    from seqcomp.compress import compress
    from seqcomp.publish.bench import write_bench_result

    rows = []
    for path in args.models:
        net = load_model(path)
        shape = model_spec(path)
        kind, period = shape["kind"], shape["params"].get("cycle")
        int8, _, report = compress("int8_dynamic", {}, load_model(path), None)
        for b in (int(v) for v in args.batches.split(",")):
            x = torch.randn(b, shape["lookback"], shape["channels"])
            if period is not None:  # a cycle model also takes each step's phase
                phase = (torch.arange(shape["lookback"]) % period).float()
                x = torch.cat([x, phase.expand(b, -1)[..., None]], dim=-1)
            fp32_ms, int8_ms = paired_latency(net.eval(), int8.eval(), x, args.warmup, args.repeats)
            row = {"model": kind, "path": str(path), "batch": b, "fp32_ms": round(fp32_ms, 4), "int8_ms": round(int8_ms, 4),
                   "speedup": round(fp32_ms / int8_ms, 3), "int8_layers": report.get("quantized_layers")}
            print(json.dumps(row), flush=True)
            rows.append(row)
    layers = []
    for width in (64, 256, 1024, 3072):
        fp32 = nn.Linear(width, width).eval()
        int8 = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(width, width)), {nn.Linear}, torch.qint8)
        fp32_ms, int8_ms = paired_latency(fp32, int8.eval(), torch.randn(32, width), args.warmup, args.repeats)
        row = {"linear": f"{width}x{width}", "rows": 32, "fp32_ms": round(fp32_ms, 4), "int8_ms": round(int8_ms, 4),
               "speedup": round(fp32_ms / int8_ms, 3)}
        print(json.dumps(row), flush=True)
        layers.append(row)
    env = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": args.threads,
           "warmup": args.warmup, "repeats": args.repeats, "engine": torch.backends.quantized.engine}
    write_bench_result(args.out, {"env": env, "models": rows, "linear_layers": layers}, started)


if __name__ == "__main__":
    main()

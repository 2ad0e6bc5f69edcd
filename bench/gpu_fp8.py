"""Real FP8 matmuls on an H100-class GPU: latency and test error of each trained model with its
Linear layers run by torch's FP8 GEMM (``torch._scaled_mm``, e4m3), against fp32 and bf16.

Why: the pipeline evaluates on CPU, where FP8 can only be simulated (``float_weight_sim``
says ``simulated: true``). Hopper GPUs have FP8 tensor cores, so this is where an FP8 speed
claim can be measured, and where it is not simulated. Per-tensor scales: the weight's at
conversion, the activation's computed on the fly (dynamic). The GEMM needs both of the
weight's dimensions divisible by 16: layers that are not (ETT's 7 channels: every embedding
and output layer that touches them) stay in bf16, and the output lists them. Everything else
runs under bf16 autocast, as in training.

    # the GPU machine needs polars (PreparedSeries.load): install its wheel there first
    python bench/gpu_fp8.py --data results/etth1/data/etth1 --models .gpu/models/*.pt --out $OUT/gpu_fp8.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

E4M3_MAX = 448.0


class Fp8Linear(nn.Module):
    """y = x W^T + b with x and W in float8_e4m3fn, per-tensor scales, bf16 output."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        self.register_buffer("w_scale", (w.abs().max().clamp(min=1e-12) / E4M3_MAX).reshape(()))
        self.register_buffer("weight", (w / self.w_scale).to(torch.float8_e4m3fn))  # (out, in) row-major
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k).float().contiguous()  # a permuted input can reshape to a column-major view
        rows = x2.shape[0]
        if rows % 16:  # cuBLASLt's FP8 GEMM rejects some row counts (seen: 7 at batch 1): pad with zeros
            x2 = torch.nn.functional.pad(x2, (0, 0, 0, 16 - rows % 16))
        a_scale = x2.abs().amax().clamp(min=1e-12) / E4M3_MAX
        xq = (x2 / a_scale).to(torch.float8_e4m3fn)
        # mat2 must be column-major: the transpose of the row-major (out, in) weight is.
        y = torch._scaled_mm(xq, self.weight.t(), scale_a=a_scale, scale_b=self.w_scale, bias=self.bias,
                             out_dtype=torch.bfloat16)
        return y[:rows].reshape(*lead, -1)


def to_fp8(model: nn.Module) -> tuple[list[str], list[str]]:
    """Swap every eligible nn.Linear for Fp8Linear in place; (converted, kept in bf16) names."""
    converted, kept = [], []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is not nn.Linear:
                continue
            full = f"{name}.{child_name}" if name else child_name
            if child.in_features % 16 or child.out_features % 16:
                kept.append(f"{full} ({child.in_features}->{child.out_features})")
                continue
            setattr(module, child_name, Fp8Linear(child))
            converted.append(full)
    return converted, kept


@torch.no_grad()
def latency(fn, example: torch.Tensor, warmup: int = 10, repeats: int = 50) -> float:  # noqa: ANN001
    """Median ms per call, the GPU synchronised around each call (the package's timer)."""
    from seqcomp.evaluate.metrics import call_ms

    return statistics.median(call_ms([lambda: fn(example)], warmup, repeats, cuda=example.is_cuda)[0])


def gemm_tflops(n: int, device: str) -> dict:
    """Square n x n x n GEMM throughput, bf16 vs FP8 (the ceiling the small models never reach)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    one = torch.ones((), device=device)
    a8, b8 = a.to(torch.float8_e4m3fn), b.t().contiguous().to(torch.float8_e4m3fn).t()
    a16, b16 = a.bfloat16(), b.bfloat16()
    bf_ms = latency(lambda _: a16 @ b16, a)
    f8_ms = latency(lambda _: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16), a)
    flops = 2 * n**3
    return {"n": n, "bf16_tflops": flops / bf_ms / 1e9, "fp8_tflops": flops / f8_ms / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder (results/etth1/data/etth1)")
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="model.pt files (L96, H96)")
    parser.add_argument("--batches", default="1,32,1024")
    parser.add_argument("--gemm-sizes", default="1024,4096,8192")
    parser.add_argument("--device", default="cuda", help="cpu only to test this script")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    device = args.device

    from seqcomp.artifacts import load_model, model_spec
    from seqcomp.data.windows import PreparedSeries, job_windows
    from seqcomp.publish.bench import write_bench_result
    from seqcomp.scores import forecast_errors

    series = PreparedSeries.load(args.data)
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else device, "torch": torch.__version__,
              "gemm": [gemm_tflops(int(n), device) for n in args.gemm_sizes.split(",")], "models": []}
    for path in args.models:
        net = load_model(path).to(device).eval()
        test = job_windows(series, model_spec(path), "test")
        row = {"model": path.stem, "path": str(path), "latency_ms": {}, "test_mse": {}}
        for precision in ("fp32", "bf16", "fp8"):
            if precision == "fp8":
                row["fp8_layers"], row["bf16_layers"] = to_fp8(net)
            autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision != "fp32")

            def call(x: torch.Tensor) -> torch.Tensor:
                with autocast:
                    return net(x)

            with torch.no_grad():
                row["test_mse"][precision] = forecast_errors(_Wrapped(call), test, device=device)["mse"]
            for b in (int(v) for v in args.batches.split(",")):
                example = torch.stack([test[i][0] for i in range(b)]).to(device)
                row["latency_ms"][f"{precision}_b{b}"] = round(latency(call, example), 4)
        result["models"].append(row)
        print(json.dumps(row), flush=True)
    write_bench_result(args.out, result, started)


class _Wrapped(nn.Module):
    def __init__(self, fn):  # noqa: ANN001
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


if __name__ == "__main__":
    main()

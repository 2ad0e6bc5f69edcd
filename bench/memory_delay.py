"""A memory task where the HiPPO bases differ: reproduce the input delayed by a fixed lag.

How to Train Your HiPPO: LegT and FouT keep a sliding window of the input (their state
reconstructs the last 1/dt steps, so u(t - lag) is the window's far end when 1/dt = lag), while
LegS keeps the whole history with exponentially decaying resolution, so an old value is
blurred. Each model is one sequence layer between a linear map 1 -> d_model and d_model -> 1
(no nonlinearity: a delay is linear, and an LTI SSM does it exactly if its kernel can be a
delta at the lag), trained with Adam on fresh white-noise batches; the score is the test MSE
over positions t >= lag divided by the target's variance (1.0 = predicting zero).

    python bench/memory_delay.py --out bench/results/memory_delay.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from seqcomp.models.mamba import MambaMixer
from seqcomp.models.s4 import S4Layer
from seqcomp.models.s4d import S4DLayer
from seqcomp.publish.bench import write_bench_result


class Probe(nn.Module):
    """u (B, L) -> y (B, L): linear in, one sequence layer, linear out."""

    def __init__(self, layer: nn.Module, d_model: int):
        super().__init__()
        self.inp, self.layer, self.out = nn.Linear(1, d_model), layer, nn.Linear(d_model, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.out(self.layer(self.inp(u[..., None])))[..., 0]


def layers(d_model: int, d_state: int, length: int) -> dict[str, Callable[[], nn.Module]]:
    """Every layer gets the same timescale range: 1/dt in [10, L] steps (the HTTYH default)."""
    dt_min, dt_max = 1 / length, 0.1
    s4 = {f"s4_{m}": (lambda m=m: S4Layer(d_model, d_state, m, "bilinear", dt_min, dt_max))
          for m in ("legs", "legt", "fout")}
    return {
        **s4,
        "s4d_lin": lambda: S4DLayer(d_model, d_state, "lin", dt_min, dt_max),
        "s4d_legs": lambda: S4DLayer(d_model, d_state, "legs", dt_min, dt_max),
        "mamba": lambda: MambaMixer(d_model, 16, 2, 4, max(1, math.ceil(d_model / 16)), dt_min, dt_max, scan="chunked"),
    }


def delayed(batch: int, length: int, lag: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.randn(batch, length, generator=g)
    y = torch.zeros_like(u)
    y[:, lag:] = u[:, :-lag]
    return u, y


def train_one(make: Callable[[], nn.Module], args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = Probe(make(), args.d_model)
    # SSM dynamics at their tagged lr (seqcomp.models: ``_optim``), the rest at the probe's lr.
    tagged = [p for p in model.parameters() if hasattr(p, "_optim")]
    rest = [p for p in model.parameters() if not hasattr(p, "_optim")]
    opt = torch.optim.AdamW([{"params": rest, "lr": args.lr, "weight_decay": 0.0}]
                            + [{"params": [p], **p._optim} for p in tagged])
    g = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for _ in range(args.steps):
        u, y = delayed(args.batch, args.length, args.lag, g)
        loss = (model(u) - y)[:, args.lag:].square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    u, y = delayed(256, args.length, args.lag, torch.Generator().manual_seed(10_000 + args.seed))
    with torch.no_grad():
        mse = (model(u) - y)[:, args.lag:].square().mean().item()
    return {"nmse": round(mse / y[:, args.lag:].var().item(), 4), "train_s": round(time.perf_counter() - start, 1),
            "params": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--lag", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=16)
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=None, help="comma list (default: all)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(1)
    makers = layers(args.d_model, args.d_state, args.length)
    names = args.models.split(",") if args.models else list(makers)
    rows = {}
    for name in names:
        rows[name] = train_one(makers[name], args)
        print(json.dumps({name: rows[name]}), flush=True)
    env = {"cpu": platform.processor() or platform.machine(), "threads": 1, "torch": torch.__version__,
           "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")}
    setup = {k: v for k, v in vars(args).items() if k != "out"}
    write_bench_result(args.out, {"env": env, "setup": setup, "results": rows}, started)


if __name__ == "__main__":
    main()

"""Training throughput of every model through the real training module (Lightning + Forecaster).

Measures wall time and samples/s of a fixed number of optimizer steps, on CPU (fp32) or CUDA
(bf16 mixed precision, the pipeline's GPU path), after an untimed warm-up, plus peak memory
(GPU: allocated; CPU: resident-set growth over the timed steps, see seqcomp.evaluate.memory).
Imports nothing beyond torch + lightning + seqcomp so it runs on a bare GPU box.

    python bench/train_throughput.py --device cpu --out bench/results/train_cpu.json
    python bench/train_throughput.py --device cuda --out bench/results/train_cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from seqcomp.data.split import window_starts
from seqcomp.data.synthetic import SyntheticConfig, SyntheticSource
from seqcomp.data.windows import WindowDataset
from seqcomp.errors import ConfigError
from seqcomp.evaluate.memory import peak_mib
from seqcomp.models import MODELS, SeriesShape, build_model
from seqcomp.publish.bench import write_bench_result
from seqcomp.train.module import Forecaster


def series(channels: int, n_steps: int) -> torch.Tensor:
    values = torch.from_numpy(SyntheticSource(SyntheticConfig(n_steps=n_steps, channels=channels)).values())
    return (values - values.mean(0)) / values.std(0)  # (T, C)


def measure(kind: str, lookback: int, horizon: int, device: str, steps: int, batch: int, channels: int) -> dict:
    values = series(channels, lookback + horizon + steps * batch + 1)
    data = WindowDataset(values, window_starts((len(values), len(values), len(values)), "train", lookback, horizon),
                         lookback, horizon)
    L.seed_everything(0, verbose=False)
    try:
        net = build_model(kind, {}, SeriesShape(lookback, horizon, channels))
    except ConfigError as exc:  # a default that does not fit this lookback (TTM's patch of 64 at L=96)
        return {"model": kind, "skipped": str(exc)}
    if not any(p.requires_grad for p in net.parameters()):
        return {"model": kind, "skipped": "no trainable parameters"}
    gpu = device == "cuda"
    trainer_kw = dict(accelerator="gpu" if gpu else "cpu", devices=1, precision="bf16-mixed" if gpu else "32-true",
                      logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0)
    module = Forecaster(net, lr=1e-3, weight_decay=0.0)
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    L.Trainer(max_steps=3, **trainer_kw).fit(module, loader)  # warm-up: kernels, allocator, autotuning
    def fit() -> None:
        L.Trainer(max_steps=steps, **trainer_kw).fit(module, loader)

    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if gpu:
        fit()
        torch.cuda.synchronize()
    else:
        rss_mib = peak_mib(fit)  # resident-set growth at the peak of the timed steps
    wall = time.perf_counter() - start
    return {
        "model": kind, "lookback": lookback, "horizon": horizon, "batch_size": batch, "steps": steps,
        "wall_s": round(wall, 3), "samples_per_s": round(steps * batch / wall, 1),
        "params": sum(p.numel() for p in net.parameters()),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if gpu else None,
        "peak_rss_mib": None if gpu else rss_mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--models", default=",".join(n for n in MODELS.names() if n not in ("naive", "linear")))
    parser.add_argument("--lookbacks", default="96")
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    rows = []
    for lookback in (int(v) for v in args.lookbacks.split(",")):
        for kind in args.models.split(","):
            row = measure(kind, lookback, args.horizon, args.device, args.steps, args.batch, args.channels)
            print(json.dumps(row), flush=True)
            rows.append(row)
    env = {"device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "threads": args.threads}
    write_bench_result(args.out, {"env": env, "rows": rows}, started)


if __name__ == "__main__":
    main()

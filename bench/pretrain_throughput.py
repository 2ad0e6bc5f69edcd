"""Pre-training throughput: windows per second of each model a pre-training config names, fitted
by the pipeline's own code on a small corpus made from the config's own corpus entries.

Each row is one pre-training job of the config (``seqcomp.jobs.pretrain_spec``: its model, context,
horizon, batch size and train settings) run through ``seqcomp.train.sgd.fit_sgd`` for one epoch
capped at ``--steps`` batches, after an untimed warm-up fit of ``--warmup`` batches on the same
model (kernels, allocator, Lightning's first-fit costs). ``samples_per_s`` is fit_sgd's own
``train_samples_per_s``, the number a pre-training job's run.json reports: it includes what each
fit pays once around its batches (Lightning's set-up, one validation pass, kept to one batch here,
the checkpoint writes), which a job spreads over 100 batches an epoch and this short fit over a
few. So a second timed fit of ``--warmup`` batches runs too, and the difference of the two gives
the batches' own rate, ``step_samples_per_s``, and that once-per-fit cost, ``fit_overhead_s``.
The corpus is each
``pretrain.corpus`` dataset of the config with ``n_series`` cut to ``--series`` (and its mixes in
proportion), prepared by the data stage (``run_data``), windowed by ``corpus_windows``. Threads
default to 1, what a pre-training job gets.

    python bench/pretrain_throughput.py --out bench/results/pretrain_cpu.json
    python bench/pretrain_throughput.py --config config/pretrain_gpu.yaml --device cuda --out ...

``--also MODEL:CONTEXT:KEY=VALUE,...`` adds a row for a pre-trained model at another context with
some parameters changed (the point-token variant of a patch-token model, say).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from seqcomp.config import load_config
from seqcomp.config_files import read_config_files
from seqcomp.data.stage import run_data
from seqcomp.data.windows import PreparedSeries
from seqcomp.errors import SeqcompError
from seqcomp.jobs import pretrain_spec
from seqcomp.models import SeriesShape, build_model
from seqcomp.publish.bench import write_bench_result
from seqcomp.publish.record import ROOT
from seqcomp.train.pretrain import corpus_windows, evenly
from seqcomp.train.sgd import fit_sgd


def small_corpus(source: dict[str, Any], series: int) -> dict[str, Any]:
    """The config ``source`` with each corpus dataset that has ``n_series`` cut to ``series``
    (its ``mixes`` in proportion): the same kind of series, few enough to make in seconds."""
    for name in source["pretrain"]["corpus"]:
        entry = source["datasets"][name]
        if "n_series" in entry:
            mixes = entry.get("mixes", 0)
            entry["mixes"] = min(mixes, max(1, round(mixes * series / entry["n_series"]))) if mixes else 0
            entry["n_series"] = series
    return source


def parse_also(text: str) -> tuple[str, int, dict[str, Any]]:
    """``moe:96:tokens=point`` -> ("moe", 96, {"tokens": "point"}); values read as YAML scalars."""
    try:
        model, context, changes = text.split(":", 2)
        params = dict(item.split("=", 1) for item in changes.split(",") if item)
        return model, int(context), {k: yaml.safe_load(v) for k, v in params.items()}
    except ValueError as exc:
        raise SeqcompError(f"--also {text!r}: expected MODEL:CONTEXT:KEY=VALUE,... ({exc})") from exc


def measure(spec: dict[str, Any], corpus: list[PreparedSeries], steps: int, warmup: int, device: str,
            work: Path) -> dict[str, Any]:
    """One row: ``spec``'s model fitted for ``steps`` batches after ``warmup`` untimed ones."""
    lookback, horizon, batch = spec["lookback"], spec["horizon"], spec["train"]["batch_size"]
    train = corpus_windows(corpus, "train", lookback, horizon, spec["stride"])
    val = evenly(corpus_windows(corpus, "val", lookback, horizon, spec["stride"]), batch)
    if steps <= warmup:
        raise SeqcompError(f"--steps {steps}: must exceed --warmup {warmup} (the short fit it is compared with)")
    if len(train) < steps * batch:
        raise SeqcompError(f"{spec['model']} at context {lookback}: {len(train)} train windows, fewer than "
                           f"{steps} batches of {batch}; raise --series")
    torch.manual_seed(spec["seed"])
    net = build_model(spec["kind"], spec["params"], SeriesShape(lookback, horizon, 1), where=f"models.{spec['model']}")
    accelerator = {"cpu": "cpu", "cuda": "gpu"}[device]

    def fit(batches: int, name: str) -> dict[str, Any]:
        settings = {**spec["train"], "max_epochs": 1, "limit_train_batches": batches, "accelerator": accelerator}
        return fit_sgd(net, train, val, {**spec, "train": settings}, settings, work / f"{spec['model']}-L{lookback}-{name}")[1]

    fit(warmup, "warmup")
    short, info = fit(warmup, "short"), fit(steps, "timed")
    # the two timed fits differ only in their batches: what each fit pays once cancels out
    per_batch = (info["fit_wall_s"] - short["fit_wall_s"]) / (steps - warmup)
    return {"model": spec["model"], "kind": spec["kind"], "tokens": spec["params"].get("tokens"),
            "context": lookback, "horizon": horizon, "batch_size": batch, "steps": steps,
            "params": sum(p.numel() for p in net.parameters()), "train_windows": len(train),
            "precision": info["precision"], "fit_wall_s": round(info["fit_wall_s"], 3),
            "samples_per_s": round(info["train_samples_per_s"], 1),
            "step_samples_per_s": round(batch / per_batch, 1) if per_batch > 0 else None,
            "fit_overhead_s": round(short["fit_wall_s"] - warmup * per_batch, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config/pretrain.yaml"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--models", help="comma-separated pretrain.models to run (default: all of them)")
    parser.add_argument("--also", action="append", default=[], metavar="MODEL:CONTEXT:KEY=VALUE,...")
    parser.add_argument("--steps", type=int, default=10, help="timed batches per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches before them")
    parser.add_argument("--batch", type=int, help="batch size (default: the config's pretrain.train.batch_size)")
    parser.add_argument("--series", type=int, default=8, help="n_series of each generated corpus dataset")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("pretrain_throughput --device cuda: no CUDA device here, nothing run")
        return
    torch.set_num_threads(args.threads)
    source, _ = read_config_files([args.config])
    cfg = load_config(small_corpus(source, args.series), base_dir=ROOT)
    models = args.models.split(",") if args.models else cfg["pretrain"]["models"]
    jobs = [pretrain_spec(cfg, m, context) for m in models for context in cfg["pretrain"]["contexts"]]
    for model, context, changes in map(parse_also, args.also):
        spec = pretrain_spec(cfg, model, context)
        jobs.append({**spec, "params": {**spec["params"], **changes}})
    if args.batch:
        jobs = [{**spec, "train": {**spec["train"], "batch_size": args.batch}} for spec in jobs]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = []
        for name in cfg["pretrain"]["corpus"]:
            run_data(cfg["datasets"][name], Path(tmp) / "data" / name, ROOT, name)
            corpus.append(PreparedSeries.load(Path(tmp) / "data" / name))
        for spec in jobs:
            rows.append(measure(spec, corpus, args.steps, args.warmup, args.device, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    env = {"device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "threads": args.threads, "config": str(args.config),
           "corpus_series": args.series, "corpus_channels": sum(p.channels for p in corpus),
           "warmup_steps": args.warmup}
    write_bench_result(args.out, {"env": env, "rows": rows}, started)


if __name__ == "__main__":
    main()

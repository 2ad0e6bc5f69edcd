"""The ETTh1 lookback x seed grid on a GPU, through the pipeline's own training code.

Why a benchmark and not the workflow: the lent GPU machine has torch and Lightning but no
Snakemake, MLflow or polars, and the long lookbacks and extra seeds of
`config/etth1_long.yaml` are hours of 2-core CPU for the SSMs. What is the same as the
pipeline: the job specs (built by `seqcomp.jobs.train_spec` from the same config files), the
model builder, the fit (`seqcomp.train.fit`: closed form, or Lightning with early stopping on
validation MSE, best checkpoint restored, seeded shuffling) and the scores (`seqcomp.evaluate.metrics.scores`,
fp32 on CPU, every window of the split). What differs: bf16 mixed precision on CUDA (the
pipeline's GPU path), no MLflow record, no compression passes, several jobs at once on one GPU.

    # here: the prepared series and the job list (needs the workflow's prepare_data output)
    python bench/etth1_gpu.py export --config config/etth1.yaml config/etth1_long.yaml --out .gpu/etth1
    #   (add --done bench/results/etth1_gpu.jsonl to run only the jobs that file has no result for)
    # on the GPU machine: jobs in priority order until the deadline, one JSON line per job
    python bench/etth1_gpu.py run --jobs .gpu/etth1 --workers 12 --deadline-s 420 --out $OUT/etth1_gpu.jsonl
    # here: the headline table (validation-chosen lookback, mean +- std over seeds, paired tests)
    python bench/etth1_gpu.py table bench/results/etth1_gpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import queue
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SGD_MODELS = ("linear", "dlinear", "patchtst", "s4d", "s4", "mamba", "smamba")


def export(configs: list[Path], out: Path, models: list[str], done: Path | None = None,
           lookbacks: list[int] | None = None) -> None:
    """series.pt (scaled values, borders, meta) and jobs.json (train specs, most wanted first),
    leaving out the jobs with a result in ``done`` (an earlier run's JSON lines: drop a
    model's lines there first when its code changed)."""
    import yaml
    from snakemake.utils import update_config

    from seqcomp import jobs
    from seqcomp.config import load_config
    from seqcomp.data.windows import PreparedSeries

    merged: dict[str, Any] = {}
    for path in configs:  # Snakemake's own merge of --configfile a.yaml b.yaml
        update_config(merged, yaml.safe_load(path.read_text()))
    cfg = load_config(merged)
    points = [p for p in jobs.grid(cfg) if p["model"] in models and (lookbacks is None or p["lookback"] in lookbacks)]
    specs = {tuple(p[k] for k in ("dataset", "model", "lookback", "horizon", "seed")) for p in points}
    if done is not None:
        rows = [json.loads(line) for line in done.read_text().splitlines()]
        specs -= {tuple(r[k] for k in ("dataset", "model", "lookback", "horizon", "seed")) for r in rows if "mse" in r}
    # Tiers: the lookback-96 seeds first (the headline), then the other lookbacks seed by seed.
    base = min(cfg["lookbacks"])
    order = sorted(specs, key=lambda s: (s[2] != base, s[4], models.index(s[1]), s[2], s[3]))
    out.mkdir(parents=True, exist_ok=True)
    (dataset,) = {s[0] for s in order}
    series = PreparedSeries.load(Path(jobs.paths(cfg)["data"].format(dataset=dataset)))
    torch.save({"values": series.values, "borders": series.borders, "meta": series.meta}, out / "series.pt")
    (out / "jobs.json").write_text(json.dumps([jobs.train_spec(cfg, *s) for s in order], indent=1))
    print(f"{len(order)} jobs for {', '.join(models)} -> {out}")


def fit_one(series: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Train one spec as the pipeline would (closed form or SGD) and score val and test in fp32 on CPU."""
    import lightning as L

    from seqcomp.evaluate.metrics import scores
    from seqcomp.models import SeriesShape, build_model
    from seqcomp.models.cycle import cycle_of
    from seqcomp.train import fit

    L.seed_everything(spec["seed"], workers=True, verbose=False)
    shape = SeriesShape(spec["lookback"], spec["horizon"], series.channels)
    net = build_model(spec["kind"], spec["params"], shape, where=f"models.{spec['model']}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _, info = fit(net, series, spec, Path(tmp), logger=False)
    info["job_wall_s"] = time.perf_counter() - start
    net = net.cpu().float().eval()
    val = scores(net, series.windows("val", shape.lookback, shape.horizon, cycle_of(net)), "forecast")
    test = scores(net, series.windows("test", shape.lookback, shape.horizon, cycle_of(net)), "forecast")
    keys = ("dataset", "model", "lookback", "horizon", "seed")
    return {**{k: spec[k] for k in keys}, "pass_kind": "fp32", "val_mse": val["mse"], "val_mae": val["mae"],
            "mse": test["mse"], "mae": test["mae"], "n_test_windows": test["n_windows"],
            "n_params": sum(p.numel() for p in net.parameters()),
            **{k: info.get(k) for k in ("method", "accelerator", "precision", "epochs", "fit_wall_s",
                                         "train_samples_per_s", "job_wall_s")}}


def _worker(job_dir: str, todo: Any, done: Any, stop_at: float) -> None:
    from seqcomp.data.windows import PreparedSeries

    torch.set_num_threads(1)
    saved = torch.load(Path(job_dir) / "series.pt", weights_only=False)
    series = PreparedSeries(values=saved["values"], borders=tuple(saved["borders"]), meta=saved["meta"])
    while (spec := todo.get()) is not None:
        if time.time() > stop_at:  # too late to start: say so rather than drop it silently
            done.put({k: spec[k] for k in ("model", "lookback", "horizon", "seed")} | {"skipped": "deadline"})
            continue
        try:
            done.put(fit_one(series, spec))
        except Exception as exc:  # noqa: BLE001 - one failed job is a result line, not a lost grid
            done.put({k: spec[k] for k in ("model", "lookback", "horizon", "seed")} | {"error": repr(exc)})


def run(job_dir: Path, out: Path, workers: int, start_deadline_s: float, deadline_s: float) -> None:
    """Jobs in order on ``workers`` processes; none starts after ``start_deadline_s``, and at
    ``deadline_s`` the unfinished ones are stopped (each finished job is already on disk)."""
    specs = json.loads((job_dir / "jobs.json").read_text())
    ctx = mp.get_context("spawn")  # CUDA in forked children is not allowed
    todo, done = ctx.Queue(), ctx.Queue()
    for spec in specs:
        todo.put(spec)
    begin = time.time()
    procs = [ctx.Process(target=_worker, args=(str(job_dir), todo, done, begin + start_deadline_s)) for _ in range(workers)]
    for p in procs:
        todo.put(None)
        p.start()
    header = {"host": platform.node(), "torch": torch.__version__, "workers": workers,
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "jobs": len(specs)}
    received = 0
    with out.open("w") as fh:
        fh.write(json.dumps({"header": header}) + "\n")
        while received < len(specs) and time.time() < begin + deadline_s:
            try:
                row = done.get(timeout=1.0)
            except queue.Empty:
                continue
            received += 1
            row["finished_after_s"] = round(time.time() - begin, 1)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(json.dumps(row), flush=True)
    for p in procs:
        p.terminate() if p.is_alive() else None
    print(f"{received}/{len(specs)} jobs reported in {time.time() - begin:.0f} s")


def table(path: Path) -> str:
    """Markdown: per (model, lookback) mean test MSE per horizon over seeds, then the headline."""
    import polars as pl

    from seqcomp.report import headline_markdown

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    frame = pl.DataFrame([r for r in rows if "mse" in r])
    grid = (frame.group_by("model", "lookback", "horizon").agg(pl.col("mse").mean(), pl.col("mse").std().alias("sd"),
                                                              pl.len().alias("seeds"), pl.col("fit_wall_s").mean())
            .sort("model", "lookback", "horizon"))
    lines = ["| model | L | " + " | ".join(f"H{h}" for h in sorted(frame["horizon"].unique())) + " | seeds | mean fit s |",
             "|---|---|" + "---|" * (frame["horizon"].n_unique() + 2)]
    for (model, lookback), g in grid.group_by("model", "lookback", maintain_order=True):
        cells = [f"{m:.3f} ± {s:.3f}" if s is not None else f"{m:.3f}" for m, s in zip(g["mse"], g["sd"])]
        fit = g["fit_wall_s"].mean()
        lines.append(f"| {model} | {lookback} | " + " | ".join(cells) + f" | {g['seeds'].min()} | "
                     + (f"{fit:.0f}" if fit is not None else "-") + " |")
    skipped = [r for r in rows if "skipped" in r or "error" in r]
    devices = sorted({r["header"]["device"] for r in rows if "header" in r}) or ["device not recorded"]
    title = f"ETTh1 ({', '.join(devices)})"
    return "\n".join(lines) + f"\n\n{len(skipped)} jobs skipped or failed\n\n" + headline_markdown(frame, title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export")
    p.add_argument("--config", nargs="+", type=Path, required=True)
    p.add_argument("--models", default=",".join(SGD_MODELS))
    p.add_argument("--done", type=Path, help="results of an earlier run: their jobs are left out")
    p.add_argument("--lookbacks", help="only these lookbacks (comma-separated); default: the configs' own")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("run")
    p.add_argument("--jobs", type=Path, required=True)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--start-deadline-s", type=float, default=360)
    p.add_argument("--deadline-s", type=float, default=420)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("table")
    p.add_argument("results", type=Path)
    args = parser.parse_args()
    if args.command == "export":
        lookbacks = [int(v) for v in args.lookbacks.split(",")] if args.lookbacks else None
        export(args.config, args.out, args.models.split(","), args.done, lookbacks)
    elif args.command == "run":
        run(args.jobs, args.out, args.workers, args.start_deadline_s, args.deadline_s)
    else:
        print(table(args.results))


if __name__ == "__main__":
    main()
